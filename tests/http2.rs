//! Callers speaking HTTP/2: h2c with prior knowledge on the plain listener and ALPN `h2` on
//! the TLS listener, with every rule of SPEC §4 holding as on HTTP/1.1.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use support::h2_caller::{H2, for_h2};
use support::*;

/// Guards against h2c callers being refused or answered differently from HTTP/1.1 ones: the
/// exact body KwikID made, the request id, the access-log line, and the exact JSON of a
/// refusal.
#[tokio::test]
async fn h2c_with_prior_knowledge_is_served() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut h2 = H2::plain(gw.addr).await;

    let answer = h2
        .send(post(
            INIT,
            r#"{"handshake_id":"h2-1"}"#,
            &[("x-request-id", "h2-req-1")],
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock_ok_body(upstream.mock(), 1));
    assert_eq!(answer.headers["x-request-id"], "h2-req-1");
    let received = upstream.mock().received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].headers["authorization"],
        format!("Bearer {TOKEN}")
    );

    let refused = h2.send(post("/other", "{}", &[])).await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.gateway_error(), Some("no_route"));
    assert_eq!(refused.text(), r#"{"error":"No route matches this path."}"#);

    let lines = gw.stdout.wait_count(2, Duration::from_secs(30));
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["request_id"], "h2-req-1");
    assert_eq!(first["status"], 200);
    assert_eq!(first["outcome"], "forwarded");
    assert_eq!(first["handshake_id"], "h2-1");
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["outcome"], "no_route");
    assert_eq!(upstream.mock().received().len(), 1);
    drop(h2.driver);
}

/// Guards against a streamed HTTP/2 body escaping `max_body_bytes`, and against an
/// untrusted HTTP/2 caller reaching KwikID.
#[tokio::test]
async fn the_same_limits_hold_on_h2() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config("[listen]\nmax_body_bytes = 64\n"));
    let mut h2 = H2::plain(gw.addr).await;
    let big = format!(r#"{{"handshake_id":"{}"}}"#, "x".repeat(200));
    let refused = h2.send(post(INIT, &big, &[])).await;
    refused.assert_error(413, "body_too_large");
    // 64 fields pass, the 65th is refused, as hyper holds HTTP/1.1 heads to.
    let fields: Vec<(String, String)> = (0..62).map(|i| (format!("x-f{i}"), "v".into())).collect();
    let mut fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let answer = h2.send(post(INIT, "{}", &fields)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    fields.push(("x-one-too-many", "v"));
    let refused = h2.send(post(INIT, "{}", &fields)).await;
    refused.assert_error(431, "headers_too_large");

    let untrusted = Gateway::start(
        &upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nallow_cidrs = [\"10.0.0.0/8\"]\n"),
    );
    let mut h2 = H2::plain(untrusted.addr).await;
    let refused = h2.send(post(INIT, "{}", &[])).await;
    refused.assert_error(403, "caller_not_allowed");
    // Only the 64-field request reached KwikID.
    assert_eq!(upstream.mock().received().len(), 1);
}

/// Guards against a HEAD answer carrying body bytes (RFC 9110 §9.3.2) on either protocol,
/// and against such an answer desynchronising the HTTP/1.1 connection it came on.
#[tokio::test]
async fn head_gets_405_without_a_body_on_both_protocols() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));

    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(format!("HEAD {INIT} HTTP/1.1\r\nhost: g\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // A HEAD answer's Content-Length is the GET's; its body is absent, so read only the head.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::AsyncReadExt::read(&mut conn.stream, &mut byte),
        )
        .await
        .expect("a head within 30 s")
        .unwrap();
        assert_eq!(
            n,
            1,
            "closed mid-head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert!(
        head.contains("x-gateway-error: method_not_allowed\r\n"),
        "{head}"
    );
    assert!(head.contains("allow: POST\r\n"), "{head}");
    // The next request on the same connection is read from the very next byte: had the HEAD
    // answer carried its body, this would parse the body as a response.
    let body = "{}";
    conn.send(
        format!(
            "POST {INIT} HTTP/1.1\r\nhost: g\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let next = conn
        .read_response(Duration::from_secs(30))
        .await
        .unwrap()
        .expect("an answer to the request after HEAD");
    assert_eq!(next.status, 200, "{}", next.head);
    assert_eq!(next.body, mock_ok_body(upstream.mock(), 1));

    let mut h2 = H2::plain(gw.addr).await;
    let mut head_request = post(INIT, "", &[]);
    *head_request.method_mut() = Method::HEAD;
    let answer = h2.send(head_request).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.gateway_error(), Some("method_not_allowed"));
    assert!(answer.body.is_empty(), "{:?}", answer.body);
}

/// Guards against `listen.max_concurrent_streams` not reaching HTTP/2 callers: the
/// gateway's SETTINGS announce it (RFC 9113 §6.5.2), so a caller opens no more streams.
#[tokio::test]
async fn max_concurrent_streams_is_announced() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config("[listen]\nmax_concurrent_streams = 3\n"));
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = Request::post(format!("http://gateway.internal{INIT}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream.send_data(Bytes::from_static(b"{}"), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    // The server's SETTINGS arrived before its first answer.
    assert_eq!(client.current_max_send_streams(), 3);
}

/// Guards against a drain that cuts an HTTP/2 request in flight, or leaves the connection
/// open: the request is answered, the caller gets GOAWAY, and the gateway exits 0.
#[tokio::test]
async fn drain_answers_h2_requests_in_flight_then_sends_goaway() {
    let upstream = Upstream::start().await;
    upstream.mock().set_fault("delay=1500ms".parse().unwrap());
    let mut gw = Gateway::start(&upstream.config("[listen]\nshutdown_grace = \"60s\"\n"));
    let H2 { sender, driver } = H2::plain(gw.addr).await;
    let mut in_flight = sender.clone();
    let request = tokio::spawn(async move {
        in_flight
            .send_request(for_h2(post(INIT, "{}", &[])))
            .await
            .map(|r| r.status())
    });
    eventually(
        "KwikID to receive the request",
        Duration::from_secs(30),
        || async { upstream.mock().received().len() == 1 },
    )
    .await;
    gw.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("the request in flight is answered")
        .unwrap()
        .expect("an answer, not a reset");
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(30), driver)
        .await
        .expect("GOAWAY ends the connection")
        .unwrap()
        .expect("a clean close, not a reset");
    assert_eq!(gw.wait_exit(), Some(0));
}
