//! Callers' keep-alive pools: `listen.idle_timeout` (how long a connection may wait between
//! requests) is apart from `listen.header_read_timeout` (how long a head may take once it
//! started), HTTP/1.1 answers say the idle timeout in `Keep-Alive: timeout=<s>`, and an idle
//! HTTP/2 connection is closed with GOAWAY.
//!
//! The waits here are the behaviour under test (a connection left idle for so long), not
//! synchronisation; bounds are lower bounds only, as a timer never fires early.

mod support;

use std::time::{Duration, Instant};

use support::h2_caller::H2;
use support::*;

/// `kwikid_gateway_connection_errors_total{kind="header_timeout"}`, 0 when absent.
async fn header_timeouts(gw: &Gateway) -> f64 {
    metric(
        &metrics(gw.admin).await,
        "kwikid_gateway_connection_errors_total{kind=\"header_timeout\"}",
    )
    .unwrap_or(0.0)
}

/// A pooled connection left idle for 6 s, three times `header_read_timeout`, still carries
/// the next request; idle past `idle_timeout` it is closed without a word and without being
/// counted as an error; a head that starts on an idle connection must still finish within
/// `header_read_timeout`. Guards against idle waits being held to the slow-head limit (a
/// caller's pool then meets closed connections), against the idle timeout never firing, and
/// against the slowloris guard being lost on kept connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_outlives_header_read_timeout_until_idle_timeout() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(
        "[listen]\naddr = \"127.0.0.1:0\"\nheader_read_timeout = \"2s\"\nidle_timeout = \"10s\"\n",
    ));

    // Its first answer is the gateway's own, made within the poll that read the head.
    let mut pooled = RawConn::connect(gw.addr).await;
    let r = pooled
        .round_trip(b"POST /nope HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(r.status, 404, "{}", r.head);
    assert_eq!(
        r.header("keep-alive").as_deref(),
        Some("timeout=10"),
        "{}",
        r.head
    );
    assert_eq!(r.header("connection"), None, "{}", r.head);

    // Another kept connection whose next head starts, and stalls, once it is idle.
    let mut slow = RawConn::connect(gw.addr).await;
    assert_eq!(
        slow.round_trip(&raw_init_with_id("slow-1")).await.status,
        200
    );
    // Taken before the bytes leave: the gateway cannot see them earlier.
    let stalled = Instant::now();
    slow.send(format!("POST {INIT} HTTP/1.1\r\nHost: gw\r\n").as_bytes())
        .await
        .unwrap();
    assert_408_header_timeout(&gw, &mut slow).await;
    assert!(stalled.elapsed() >= Duration::from_secs(2));
    assert_eq!(header_timeouts(&gw).await, 1.0);

    tokio::time::sleep(Duration::from_secs(6).saturating_sub(stalled.elapsed())).await;
    // Before the request: the gateway's idle wait starts after its answer.
    let answered = Instant::now();
    let r = pooled.round_trip(&raw_init_with_id("after-6s")).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-request-id").as_deref(), Some("after-6s"));

    assert_eq!(
        pooled.closed_within(HANG_GUARD).await,
        Ok(true),
        "idle past idle_timeout: closed, with nothing sent"
    );
    assert!(
        answered.elapsed() >= Duration::from_secs(10),
        "closed after {:?}, before idle_timeout",
        answered.elapsed()
    );
    assert_eq!(header_timeouts(&gw).await, 1.0, "an idle close is no error");
    assert_eq!(upstream.mock().served(), 2);
}

/// `Keep-Alive: timeout=75` (the default `idle_timeout`) on answers that leave the
/// connection open, none on one that closes it. Guards against a pool being told nothing
/// (it then races the gateway's close) or told a connection stays that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_says_the_idle_timeout_only_when_the_connection_stays() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut conn = RawConn::connect(gw.addr).await;
    let r = conn.round_trip(&raw_init_with_id("kept")).await;
    assert_eq!(
        r.header("keep-alive").as_deref(),
        Some("timeout=75"),
        "{}",
        r.head
    );
    let refused = conn
        .round_trip(b"POST /nope HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.header("keep-alive").as_deref(), Some("timeout=75"));
    let last = conn
        .round_trip(
            format!(
                "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(last.status, 200, "{}", last.head);
    assert_eq!(last.header("keep-alive"), None, "{}", last.head);
    assert_eq!(last.header("connection").as_deref(), Some("close"));
}

/// An HTTP/2 connection with no stream for `idle_timeout` gets GOAWAY and is closed, though
/// it answers every ping (sent each `header_read_timeout`), and its answers carry no
/// `Keep-Alive` (RFC 9113 §8.2.2 forbids it). Guards against idle HTTP/2 callers holding
/// their connection for ever, and against a close that is a reset rather than GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_gets_goaway_after_idle_timeout() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(
        "[listen]\naddr = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\nidle_timeout = \"3s\"\n",
    ));
    let mut h2 = H2::plain(gw.addr).await;
    // Before the request: the gateway's idle wait starts after its answer.
    let answered = Instant::now();
    let answer = h2.send(post(INIT, "{}", &[])).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer.headers.get("keep-alive").is_none(),
        "{:?}",
        answer.headers
    );
    let ended = tokio::time::timeout(HANG_GUARD, h2.driver)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    assert_eq!(ended, Ok(()), "GOAWAY, then the close");
    assert!(
        answered.elapsed() >= Duration::from_secs(3),
        "closed after {:?}, before idle_timeout",
        answered.elapsed()
    );
    assert_eq!(header_timeouts(&gw).await, 0.0);
}
