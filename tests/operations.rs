//! Running it: the admin listener, metrics, graceful drain and connection hygiene.

mod support;

use std::time::Duration;

use kwikid_gateway::mock::Fault;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// /healthz and /readyz answer, /metrics has the documented families with bounded labels
/// and never a caller id or the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_metrics() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(
        "[rate_limit]\nglobal = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 0.01, burst = 2 }\n",
    ));
    assert_ne!(gw.admin, gw.addr, "never on the proxy port");
    assert_eq!(admin_get(gw.admin, "/healthz").await.status, 200);
    assert_eq!(admin_get(gw.admin, "/readyz").await.status, 200);
    assert_eq!(
        admin_get(gw.addr, "/metrics").await.status,
        404,
        "the proxy port has no metrics"
    );

    let call = || {
        send(
            gw.addr,
            post(INIT, "{}", &[("x-caller-id", "orders-svc-7f3")]),
        )
    };
    assert_eq!(call().await.status, 200);
    upstream.mock().set_fault(Fault::Garbage);
    assert_eq!(call().await.status, 502);
    assert_eq!(call().await.status, 429);
    assert_eq!(send(gw.addr, post("/other", "{}", &[])).await.status, 404);

    let metrics = admin_get(gw.admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text();
    for expected in [
        "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"200\",outcome=\"forwarded\"} 1",
        "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"502\",outcome=\"upstream_unavailable\"} 1",
        "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"429\",outcome=\"rate_limited\"} 1",
        "kwikid_gateway_requests_total{route=\"none\",status=\"404\",outcome=\"no_route\"} 2",
        "kwikid_gateway_rate_limited_total{scope=\"caller\"} 1",
        "kwikid_gateway_upstream_errors_total{kind=\"garbage\"} 1",
        "kwikid_gateway_request_duration_seconds_count 5",
        "kwikid_gateway_upstream_duration_seconds_count 2",
        "kwikid_gateway_in_flight 0",
        "kwikid_gateway_rate_limiter_keys 1",
        "kwikid_gateway_token_age_seconds",
        "kwikid_gateway_token_info{fingerprint=\"",
        "# EOF",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    assert!(!text.contains("orders-svc-7f3"), "no caller ids in labels");
    assert!(!text.contains("/other"), "no caller-chosen paths in labels");
    assert!(!text.contains(TOKEN));
}

/// SIGTERM: /readyz turns 503, the in-flight request still gets its 200, idle keep-alive
/// connections are closed, no new connection is served, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(
        &upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nshutdown_grace = \"20s\"\n"),
    );

    // An idle keep-alive connection that has served one request.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(
        format!("POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
    )
    .await
    .unwrap();
    let mut first = vec![0u8; 4096];
    let n = idle.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    upstream
        .mock()
        .set_fault(Fault::Delay(Duration::from_millis(1500)));
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { init(addr, r#"{"handshake_id":"drain"}"#).await });
    eventually(
        "the request to reach the mock",
        Duration::from_secs(10),
        || async { upstream.mock().served() == 2 },
    )
    .await;

    gw.signal("TERM");
    eventually("/readyz to turn 503", Duration::from_secs(5), || async {
        admin_get(gw.admin, "/readyz").await.status == 503
    })
    .await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle keep-alive connection was closed");
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "no new connections"
    );

    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let code = tokio::task::spawn_blocking(move || {
        let code = gw.wait_exit();
        (code, gw)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    let gw = code.1;
    let last = gw.access_log().last().cloned().unwrap();
    assert_eq!(
        last["handshake_id"], "drain",
        "the drained request was logged before exit"
    );
    assert_eq!(last["status"], 200);
}

/// Past max_connections, new connections wait in the backlog and are served when a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_makes_extra_callers_wait() {
    let upstream = Upstream::start().await;
    let gw =
        Gateway::start(&upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nmax_connections = 2\n"));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(
            format!("POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let addr = gw.addr;
    let waiting = tokio::spawn(async move { init(addr, "{}").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the third connection waits while two are open"
    );
    drop(held.pop());
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        admin_get(gw.admin, "/healthz").await.status,
        200,
        "the process is fine"
    );
}

/// A client that sends headers too slowly is cut off at header_read_timeout while others are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(
        &upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nheader_read_timeout = \"400ms\"\n"),
    );
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(format!("POST {INIT} HTTP/1.1\r\nHost: gw\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        init(gw.addr, "{}").await.status,
        200,
        "others are served meanwhile"
    );
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow client was disconnected");
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// A caller that hangs up while its request is at KwikID still leaves an access-log line:
/// status 499, outcome client_closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_is_still_logged() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    upstream
        .mock()
        .set_fault(Fault::Delay(Duration::from_secs(2)));
    let mut caller = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    caller
        .write_all(
            format!("POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 26\r\n\r\n{{\"handshake_id\":\"hung-up\"}}")
                .as_bytes(),
        )
        .await
        .unwrap();
    eventually(
        "the request to reach the mock",
        Duration::from_secs(10),
        || async { upstream.mock().served() == 1 },
    )
    .await;
    drop(caller);
    let line = gw.access_line(1);
    assert_eq!(line["status"], 499);
    assert_eq!(line["outcome"], "client_closed");
    assert_eq!(line["handshake_id"], "hung-up");
    let metrics = admin_get(gw.admin, "/metrics").await.text();
    assert!(
        metrics.contains("status=\"499\",outcome=\"client_closed\"} 1"),
        "{metrics}"
    );
}
