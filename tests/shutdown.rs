//! The end of the drain (SPEC §7): requests still in flight when `listen.shutdown_grace`
//! ends, or when a second SIGTERM / SIGINT comes, are answered `503 shutting_down` on both
//! protocols, each with its access-log line; the warning names them; the exit is 1. A slow
//! KwikID (the mock's delay) holds the requests.

mod support;

use std::time::Duration;

use support::h2_caller::{H2, for_h2};
use support::mock::Fault;
use support::*;

/// A gateway in front of a KwikID that answers after two minutes, with this grace, logging
/// at trace.
async fn behind_a_slow_kwikid(grace: &str) -> (Upstream, Gateway) {
    let upstream = Upstream::start().await;
    upstream
        .mock()
        .set_fault(Fault::Delay(Duration::from_secs(120)));
    let gw = Gateway::start(&upstream.config(&format!(
        "{}[listen]\naddr = \"127.0.0.1:0\"\nshutdown_grace = \"{grace}\"\n[log]\nlevel = \"trace\"\n",
        upstream.upstream_table("1s", "120s")
    )));
    (upstream, gw)
}

/// An HTTP/2 init with this request id, sent on its own stream: its answer's status, code
/// and body, or the error.
fn h2_init(h2: &H2, id: &str) -> tokio::task::JoinHandle<Result<Answer, String>> {
    let mut sender = h2.sender.clone();
    let request = for_h2(post(INIT, "{}", &[("x-request-id", id)]));
    tokio::spawn(async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::BodyExt::collect(body)
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    })
}

/// The drain's closing warning, parsed.
fn drain_warning(gw: &Gateway) -> serde_json::Value {
    let line = gw.stderr.wait_for("the drain's warning", HANG_GUARD, |l| {
        l.contains("drain ended with requests in flight")
    });
    serde_json::from_str(&line).unwrap()
}

/// Asserts the access-log line of request `id`: 503 `shutting_down`.
fn assert_logged_503(gw: &Gateway, id: &str) {
    let line = gw.access_line_with(&format!("{id}'s line"), &format!("\"request_id\":\"{id}\""));
    assert_eq!(line["status"], 503, "{line}");
    assert_eq!(line["outcome"], "shutting_down", "{line}");
}

/// The token in no output, at trace level.
fn assert_no_token(gw: &Gateway) {
    assert!(
        !gw.stdout.text().contains(TOKEN),
        "the token in the access log"
    );
    assert!(!gw.stderr.text().contains(TOKEN), "the token on stderr");
}

/// HTTP/1.1 and HTTP/2 callers both waiting on KwikID when the grace ends each get the exact
/// 503 with their request id, and their line; the warning counts both and names them; exit
/// 1. Guards against HTTP/2 streams being reset (the caller cannot tell whether to retry)
/// while HTTP/1.1 ones are answered, or the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protocols_get_503_when_the_grace_ends() {
    let (upstream, gw) = behind_a_slow_kwikid("1s").await;
    let mut h1 = RawConn::connect(gw.addr).await;
    h1.send(&raw_init_with_id("h1-held")).await.unwrap();
    let h2 = H2::plain(gw.addr).await;
    let h2_answer = h2_init(&h2, "h2-held");
    eventually("both requests at KwikID", HANG_GUARD, || async {
        upstream.mock().received().len() == 2
    })
    .await;

    gw.signal("TERM");
    let answer = h1.next_response().await;
    assert_gateway_answer(&answer, 503, "shutting_down", SHUTTING_DOWN_BODY);
    assert_eq!(answer.header("x-request-id").as_deref(), Some("h1-held"));
    let answer = tokio::time::timeout(HANG_GUARD, h2_answer)
        .await
        .expect("an answer on the HTTP/2 stream")
        .unwrap()
        .expect("an answer, not a reset");
    answer.assert_error(503, "shutting_down");
    assert_eq!(answer.text(), SHUTTING_DOWN_BODY);
    assert_eq!(answer.headers["x-request-id"], "h2-held");
    tokio::time::timeout(HANG_GUARD, h2.driver)
        .await
        .expect("the HTTP/2 connection ends")
        .unwrap()
        .expect("with GOAWAY, not a reset");

    let (code, gw) = gw.exited().await;
    assert_eq!(code, Some(1), "{}", gw.stderr.text());
    let warning = drain_warning(&gw);
    assert_eq!(warning["shutting_down"], 2, "{warning}");
    let mut ids: Vec<_> = warning["request_ids"]
        .as_str()
        .unwrap()
        .split(',')
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["h1-held", "h2-held"], "{warning}");
    assert_eq!(warning["ended_by"], "shutdown_grace", "{warning}");
    assert_logged_503(&gw, "h1-held");
    assert_logged_503(&gw, "h2-held");
    assert_no_token(&gw);
}

/// A second SIGTERM during a long grace ends the drain at once with the same answers and
/// lines, and the warning says so; a request id that is the token is named `[REDACTED]`.
/// Guards against an operator who must stop the gateway now having to SIGKILL it (the
/// requests then vanish), and against the warning leaking what a caller put in its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_ends_the_drain_at_once() {
    let (upstream, gw) = behind_a_slow_kwikid("300s").await;
    let mut h1 = RawConn::connect(gw.addr).await;
    h1.send(&raw_init_with_id(TOKEN)).await.unwrap();
    let h2 = H2::plain(gw.addr).await;
    let h2_answer = h2_init(&h2, "h2-second-signal");
    eventually("both requests at KwikID", HANG_GUARD, || async {
        upstream.mock().received().len() == 2
    })
    .await;

    gw.signal("TERM");
    eventually("the drain to begin", HANG_GUARD, || async {
        admin_get(gw.admin, "/readyz").await.status == 503
    })
    .await;
    gw.signal("TERM");
    let answer = h1.next_response().await;
    assert_gateway_answer(&answer, 503, "shutting_down", SHUTTING_DOWN_BODY);
    let answer = tokio::time::timeout(HANG_GUARD, h2_answer)
        .await
        .expect("an answer on the HTTP/2 stream")
        .unwrap()
        .expect("an answer, not a reset");
    answer.assert_error(503, "shutting_down");

    let (code, gw) = gw.exited().await;
    assert_eq!(code, Some(1), "{}", gw.stderr.text());
    gw.stderr
        .wait_for("the second signal noted", HANG_GUARD, |l| {
            l.contains("second signal: ending the drain now")
        });
    let warning = drain_warning(&gw);
    assert_eq!(warning["ended_by"], "second_signal", "{warning}");
    assert_eq!(warning["shutting_down"], 2, "{warning}");
    let ids = warning["request_ids"].as_str().unwrap();
    assert!(
        ids.contains("[REDACTED]") && ids.contains("h2-second-signal"),
        "{warning}"
    );
    assert_logged_503(&gw, "h2-second-signal");
    assert_logged_503(&gw, "[REDACTED]");
    assert_no_token(&gw);
}
