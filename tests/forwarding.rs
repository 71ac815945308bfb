//! What crosses the gateway: what KwikID receives, and what the caller gets back.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

/// The happy path: KwikID's answer reaches the caller byte for byte, with the token attached
/// upstream and the request id returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_forwarded_with_the_token_and_answered_unchanged() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let body = r#"{"handshake_id":"session-12345","callback_url":"https://app.example.com/dl/cb"}"#;
    let answer = send(
        gw.addr,
        post(
            &format!("{INIT}?lang=en&x=%2F"),
            body,
            &[("x-caller-id", "orders-svc")],
        ),
    )
    .await;

    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.gateway_error().is_none());
    let received = upstream.mock().received();
    assert_eq!(received.len(), 1);
    let seen = &received[0];
    assert_eq!(
        seen.target,
        format!("{INIT}?lang=en&x=%2F"),
        "path and query unchanged"
    );
    assert_eq!(seen.body, body.as_bytes(), "body unchanged");
    let auth: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(auth, [&format!("Bearer {TOKEN}")]);
    assert_eq!(
        seen.headers["host"],
        format!("localhost:{}", upstream.mock().addr.port())
    );

    // The caller gets exactly what the mock made for this request, byte for byte.
    assert_eq!(
        answer.body,
        mock_ok_body(upstream.mock(), 1),
        "the body KwikID sent"
    );
    assert_eq!(
        answer.headers["content-length"],
        answer.body.len().to_string()
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    let url = answer.json()["redirection_url"]
        .as_str()
        .unwrap()
        .to_owned();
    let request_id = answer.headers["x-request-id"].to_str().unwrap();
    assert_eq!(request_id.len(), 26, "a generated ULID");
    assert_eq!(seen.headers["x-request-id"], request_id);

    let line = gw.access_line(1);
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream_status"], 200);
    assert_eq!(line["outcome"], "forwarded");
    assert_eq!(line["caller"], "orders-svc");
    assert_eq!(line["path"], INIT, "no query string in the log");
    assert_eq!(line["handshake_id"], "session-12345");
    assert_eq!(line["request_id"], request_id);
    assert_eq!(line["bytes_in"], body.len());
    assert_eq!(line["bytes_out"], answer.body.len());
    assert_eq!(line["method"], "POST");
    assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(line["token_id"].as_str().unwrap().len(), 8);
    assert!(line["duration_ms"].as_f64().unwrap() >= line["upstream_ms"].as_f64().unwrap());
    assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    assert!(!gw.stdout.text().contains(&url));
    assert!(!gw.stderr.text().contains(&url));
}

/// Caller credentials, hop-by-hop headers, topology and the caller header never reach KwikID;
/// everything else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_credentials_and_topology_are_stripped() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let answer = send(
        gw.addr,
        post(
            INIT,
            "{}",
            &[
                ("authorization", "Bearer caller-own-token"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("cookie", "session=abc"),
                ("forwarded", "for=10.9.9.9"),
                ("x-forwarded-for", "10.9.9.9"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "evil.example"),
                ("x-real-ip", "10.9.9.9"),
                ("via", "1.1 sidecar"),
                ("connection", "x-hop-secret"),
                ("x-hop-secret", "1"),
                ("te", "trailers"),
                ("x-caller-id", "orders-svc"),
                ("x-request-id", "caller-chosen-id-1"),
                ("accept", "application/json"),
                ("user-agent", "orders-svc/1.2"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock_ok_body(upstream.mock(), 1));
    let received = upstream.mock().received();
    assert_eq!(received.len(), 1);
    let seen = &received[0];
    for gone in [
        "proxy-authorization",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "via",
        "x-hop-secret",
        "te",
        "x-caller-id",
    ] {
        assert!(seen.headers.get(gone).is_none(), "{gone} reached KwikID");
    }
    let auth: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(
        auth,
        [&format!("Bearer {TOKEN}")],
        "exactly one Authorization, the gateway's"
    );
    assert_eq!(seen.headers["accept"], "application/json");
    assert_eq!(seen.headers["user-agent"], "orders-svc/1.2");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(seen.headers["x-request-id"], "caller-chosen-id-1");
    assert_eq!(answer.headers["x-request-id"], "caller-chosen-id-1");
}

/// A caller's Host header, an absolute-form target or CONNECT never change where the gateway
/// connects: it is not an open proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_an_open_proxy() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));

    let mut req = post(INIT, "{}", &[]);
    req.headers_mut()
        .insert("host", "evil.example:443".parse().unwrap());
    let answer = send(gw.addr, req).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock_ok_body(upstream.mock(), 1));
    assert_eq!(
        upstream.mock().received()[0].headers["host"],
        format!("localhost:{}", upstream.mock().addr.port())
    );

    let port = upstream.mock().addr.port();
    for (what, request) in [
        (
            "an absolute-form target",
            format!(
                "POST http://127.0.0.1:{port}{INIT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
        ),
        (
            "CONNECT",
            format!(
                "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            ),
        ),
    ] {
        eprintln!("{what}");
        let mut conn = RawConn::connect(gw.addr).await;
        let answer = conn.round_trip(request.as_bytes()).await;
        assert_gateway_answer(&answer, 404, "no_route", NO_ROUTE_BODY);
        assert!(
            answer
                .header("x-request-id")
                .is_some_and(|id| !id.is_empty()),
            "{what}: {}",
            answer.head
        );
    }
    assert_eq!(
        upstream.mock().received().len(),
        1,
        "nothing else reached the upstream"
    );
}

/// KwikID's own error (401 for a token it does not accept) comes back byte for byte, not as
/// the gateway's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_errors_pass_through_unchanged() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with_env(
        &upstream.config(""),
        &[("KWIKID_API_TOKEN", "not-the-right-token")],
    );
    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 401);
    assert!(answer.gateway_error().is_none());
    assert_eq!(
        answer.text(),
        KWIKID_401_BODY,
        "KwikID's body, byte for byte"
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    let received = upstream.mock().received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].headers["authorization"],
        "Bearer not-the-right-token"
    );
    let line = gw.access_line(1);
    assert_eq!(line["outcome"], "forwarded");
    assert_eq!(line["upstream_status"], 401);
}

/// Keep-alive: several requests on one caller connection all succeed, and each gets the body
/// KwikID made for it, not another request's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_carry_many_requests() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut conn = ClientConn::connect(gw.addr).await.unwrap();
    for i in 1..=5 {
        let body = format!("{{\"handshake_id\":\"k{i}\"}}");
        let req = Request::post(INIT)
            .header("host", "gw")
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let answer = conn
            .send_within(req, HANG_GUARD)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(answer.status, 200, "request {i}");
        let received = upstream.mock().received();
        assert_eq!(received.len(), i, "request {i} reached KwikID once");
        assert_eq!(received[i - 1].body, body.as_bytes(), "request {i}");
        assert_eq!(answer.body, mock_ok_body(upstream.mock(), i), "request {i}");
    }
}
