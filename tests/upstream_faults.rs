//! When KwikID misbehaves: each fault gets the documented answer, nothing is retried once it
//! may have reached KwikID, and the next request after the fault succeeds.

mod support;

use std::time::{Duration, Instant};

use kwikid_gateway::mock::Fault;
use support::*;

/// Upstream down: 502 upstream_unavailable; back up: 200 again, no restart of the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_then_back() {
    let mut upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    assert_eq!(
        init(gw.addr, "{}").await.status,
        200,
        "a pooled connection now exists"
    );
    upstream.down().await;
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    upstream.up().await;
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    gw.access_line(4);
    let outcomes: Vec<_> = gw
        .access_log()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes[1..3],
        ["upstream_unavailable", "upstream_unavailable"]
    );
    assert!(gw.stderr.text().contains("upstream request failed"));
}

/// KwikID closed the pooled connection while it was idle (a restart, an idle timeout): the
/// next request notices before sending and goes out on a fresh connection, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    let mut upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config("[log]\nlevel = \"trace\"\n"));
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    // Every open connection is closed, and a new KwikID listens at the same address.
    upstream.down().await;
    upstream.up().await;
    for _ in 0..3 {
        let answer = init(gw.addr, "{}").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(
        upstream.mock().received().len(),
        3,
        "each request sent once"
    );
    let stderr = gw.stderr.text();
    assert_eq!(
        stderr.matches("upstream connection opened").count(),
        2,
        "one connection before the restart, one after: {stderr}"
    );
    gw.access_line(4);
    assert!(
        gw.access_log()
            .iter()
            .all(|l| l["status"] == 200 && l["outcome"] == "forwarded")
    );
}

/// Slower than request_timeout: 504 upstream_timeout, on time; then 200 once it is fast again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_then_recovers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(&upstream.upstream_table("1s", "700ms")));
    upstream
        .mock()
        .set_fault(Fault::Delay(Duration::from_secs(3)));
    let started = Instant::now();
    init(gw.addr, "{}")
        .await
        .assert_error(504, "upstream_timeout");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    upstream.mock().set_fault(Fault::None);
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    assert_eq!(
        upstream.mock().served(),
        2,
        "the timed-out request was not retried"
    );
}

/// The connection is torn down mid-request: 502, not retried (it may have reached KwikID).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_gets_502_and_is_not_retried() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    upstream.mock().set_fault(Fault::Reset);
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    assert_eq!(upstream.mock().served(), 1, "not retried");
    upstream.mock().set_fault(Fault::None);
    assert_eq!(init(gw.addr, "{}").await.status, 200);
}

/// KwikID's 500 comes back as 500 with its body, and is never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_500_is_passed_through_not_retried() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    upstream.mock().set_fault(Fault::ServerError);
    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 500);
    assert!(
        answer.gateway_error().is_none(),
        "KwikID's answer, not the gateway's"
    );
    assert_eq!(
        answer.json(),
        serde_json::json!({"error": "Internal Server Error"})
    );
    assert_eq!(upstream.mock().served(), 1);
    upstream.mock().set_fault(Fault::None);
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    assert_eq!(gw.access_line(1)["upstream_status"], 500);
}

/// Bytes that are not HTTP: 502; then 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_502_then_recovers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    upstream.mock().set_fault(Fault::Garbage);
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    assert_eq!(upstream.mock().served(), 1);
    upstream.mock().set_fault(Fault::None);
    assert_eq!(init(gw.addr, "{}").await.status, 200);
}

/// A peer that accepts TCP but never completes TLS: connect_timeout covers the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_peer_hits_connect_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let scratch = Scratch::new();
    let ca = scratch.write("ca.pem", &Upstream::start().await.ca_pem);
    let config = config_for(
        &format!("https://localhost:{port}"),
        &ca,
        &format!(
            "[upstream]\nbase_url = \"https://localhost:{port}\"\nca_file = \"{}\"\nconnect_timeout = \"300ms\"\nrequest_timeout = \"5s\"\n",
            ca.display()
        ),
    );
    let gw = Gateway::start(&config);
    let started = Instant::now();
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    let took = started.elapsed();
    // Two attempts (a connect that never opened is retried once), each bounded by 300 ms.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    hold.abort();
}

/// KwikID's own 429 passes through, and the account is then held closed until its
/// Retry-After: the next caller gets the gateway's 429 without reaching KwikID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_429_holds_the_global_bucket() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    upstream.mock().set_fault(Fault::TooManyRequests {
        retry_after_secs: 3,
    });
    let first = init(gw.addr, "{}").await;
    assert_eq!(first.status, 429);
    assert!(
        first.gateway_error().is_none(),
        "KwikID's own 429 passes through"
    );
    assert_eq!(first.headers["retry-after"], "3");
    upstream.mock().set_fault(Fault::None);
    let held = send(
        gw.addr,
        post(INIT, "{}", &[("x-caller-id", "another-caller")]),
    )
    .await;
    held.assert_error(429, "rate_limited");
    let retry: u64 = held.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert_eq!(
        upstream.mock().served(),
        1,
        "the held request never reached KwikID"
    );
}
