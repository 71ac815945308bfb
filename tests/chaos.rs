//! Chaos, CI-sized: steady load from a few callers while KwikID flaps or crawls. The gateway
//! never crashes, every request gets an answer (KwikID's 200, or the gateway's own JSON 502 /
//! 504) and its access-log line, and it serves 200 again once KwikID is back.
//! `benches/chaos.sh` is the long version against the real `kwikid-mock` process.
//!
//! Each phase lasts until the gateway has been seen doing something in it (answering while
//! KwikID is gone, KwikID serving again), not for a span of wall time, so a busy machine
//! stretches the test instead of failing it. How fast answers come is for `benches/`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::mock::Fault;
use support::*;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const CALLERS: usize = 4;
/// KwikID goes down and comes back this many times.
const FLAPS: usize = 6;
/// Each phase lasts until this many requests were answered in it.
const PER_PHASE: usize = CALLERS;

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    unavailable: usize,
    timeout: usize,
    /// Reported, not asserted: speed is for `benches/`.
    slowest: Duration,
}

impl Tally {
    fn total(&self) -> usize {
        self.ok + self.unavailable + self.timeout
    }

    fn add(&mut self, other: &Tally) {
        self.ok += other.ok;
        self.unavailable += other.unavailable;
        self.timeout += other.timeout;
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// 200 from KwikID, or the gateway's own 502 / 504 with its JSON error.
fn classify(answer: &Answer, tally: &mut Tally) -> Result<(), String> {
    let expected_code = match answer.status.as_u16() {
        200 if answer.gateway_error().is_none() => {
            tally.ok += 1;
            return Ok(());
        }
        502 => "upstream_unavailable",
        504 => "upstream_timeout",
        other => return Err(format!("unexpected {other}: {}", answer.text())),
    };
    if answer.gateway_error() != Some(expected_code) {
        return Err(format!(
            "{} without x-gateway-error {expected_code}: {:?}",
            answer.status, answer.headers
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("error body is not JSON ({e}): {}", answer.text()))?;
    if json["error"].as_str().is_none_or(str::is_empty) || json.as_object().unwrap().len() != 1 {
        return Err(format!("error body is not {{\"error\": ...}}: {json}"));
    }
    if answer.status == 502 {
        tally.unavailable += 1;
    } else {
        tally.timeout += 1;
    }
    Ok(())
}

/// One caller sending requests back to back until `stop`.
async fn caller(
    addr: std::net::SocketAddr,
    id: usize,
    stop: Arc<AtomicBool>,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let name = format!("chaos-{id}");
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let answer = try_send(addr, init_request_as(&name), HANG_GUARD)
            .await
            .map_err(|e| format!("{name} after {} answers: {e}", tally.total()))?;
        tally.slowest = tally.slowest.max(started.elapsed());
        classify(&answer, &mut tally)?;
    }
    Ok(tally)
}

fn start_callers(
    addr: std::net::SocketAddr,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Result<Tally, String>>> {
    (0..CALLERS)
        .map(|id| tokio::spawn(caller(addr, id, stop.clone())))
        .collect()
}

async fn join_callers(callers: Vec<tokio::task::JoinHandle<Result<Tally, String>>>) -> Tally {
    let mut all = Tally::default();
    for caller in callers {
        let tally = caller
            .await
            .expect("the caller task")
            .unwrap_or_else(|e| panic!("{e}"));
        all.add(&tally);
    }
    all
}

async fn assert_alive(gw: &mut Gateway) {
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "the gateway exited; stderr:\n{}",
        gw.stderr.text()
    );
    assert_eq!(admin_get(gw.admin, "/healthz").await.status, 200);
}

/// Waits until the gateway has logged `PER_PHASE` more answers with `status` than so far.
fn wait_for_more_logged(gw: &Gateway, status: u16, what: &str) {
    let needle = format!("\"status\":{status},");
    let logged = |l: &str| l.contains(&needle);
    let wanted = gw.stdout.all().iter().filter(|l| logged(l)).count() + PER_PHASE;
    gw.stdout.wait_for_count(what, wanted, HANG_GUARD, logged);
}

/// Guards against a gateway that crashes, hangs or answers garbage while KwikID flaps, or that
/// stays broken after: KwikID is taken down and brought back 6 times under load from 4 callers;
/// every request is answered (200, or the gateway's JSON 502 / 504) and logged, and once KwikID
/// is back the next request gets KwikID's 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_flapping_under_load() {
    let mut upstream = Upstream::start().await;
    let mut gw = Gateway::start(&upstream.config(&upstream.upstream_table("500ms", "2s")));
    assert_eq!(init(gw.addr, "{}").await.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let callers = start_callers(gw.addr, &stop);
    for flap in 0..FLAPS {
        // Down, until the gateway has answered PER_PHASE more requests with its 502.
        upstream.down().await;
        wait_for_more_logged(&gw, 502, &format!("flap {flap}: 502s while KwikID is down"));
        // Up, until the gateway has answered PER_PHASE more requests with KwikID's 200.
        upstream.up().await;
        wait_for_more_logged(&gw, 200, &format!("flap {flap}: 200s once KwikID is back"));
    }
    stop.store(true, Ordering::Relaxed);
    let tally = join_callers(callers).await;

    // KwikID is back: the next request gets its 200.
    let answer = try_send(gw.addr, post(INIT, "{}", &[]), HANG_GUARD)
        .await
        .unwrap_or_else(|e| panic!("after the last up(): {e}"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.gateway_error().is_none());

    eprintln!("{FLAPS} flaps: {tally:?}");
    assert!(tally.ok >= FLAPS * PER_PHASE, "{tally:?}");
    assert!(tally.unavailable >= FLAPS * PER_PHASE, "{tally:?}");
    assert_alive(&mut gw).await;
    // Every request has its access-log line (+2: the first and the last request).
    gw.stdout.wait_count(tally.total() + 2, HANG_GUARD);
}

/// Guards against a gateway that cuts a slow KwikID short, or breaks under slow load: KwikID
/// answers in half of request_timeout while 4 callers keep it busy; every request is answered
/// with KwikID's 200 or a 504 that really waited request_timeout (never a 502), and the
/// gateway is fine afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_under_load() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(&upstream.config(&upstream.upstream_table("5s", "2s")));
    assert_eq!(init(gw.addr, "{}").await.status, 200);

    upstream.mock().set_fault(Fault::Delay(REQUEST_TIMEOUT / 2));
    let stop = Arc::new(AtomicBool::new(false));
    let callers = start_callers(gw.addr, &stop);
    // Until every caller has had about three slow answers.
    eventually("KwikID to serve slowly under load", HANG_GUARD, || async {
        upstream.mock().served() > (3 * CALLERS) as u64
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let tally = join_callers(callers).await;
    upstream.mock().set_fault(Fault::None);
    eprintln!("slow upstream: {tally:?}");
    assert!(tally.ok > 0, "{tally:?}");
    assert_eq!(tally.unavailable, 0, "{tally:?}");
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    assert_alive(&mut gw).await;
    // A 504 only after request_timeout: the gateway's own clock says how long it waited.
    let lines = gw.stdout.wait_count(tally.total() + 2, HANG_GUARD);
    for line in lines.iter().filter(|l| l.contains("\"status\":504,")) {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let waited = line["upstream_ms"].as_f64().unwrap_or_default();
        assert!(
            waited >= REQUEST_TIMEOUT.as_secs_f64() * 1000.0 - 1.0,
            "a 504 after {waited} ms, before request_timeout: {line}"
        );
    }
}
