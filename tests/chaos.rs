//! Chaos, CI-sized: steady load from a few callers while KwikID flaps or crawls. The gateway
//! never crashes, every request gets an answer (KwikID's 200, or the gateway's own JSON 502 /
//! 504) within request_timeout + 1 s, and it serves 200 again as soon as KwikID is back.
//! `benches/chaos.sh` is the long version against the real `kwikid-mock` process.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kwikid_gateway::mock::Fault;
use support::*;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Every answer must come within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);
const CALLERS: usize = 4;

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    unavailable: usize,
    timeout: usize,
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
        let answer = try_send(
            addr,
            post(INIT, "{}", &[("x-caller-id", name.as_str())]),
            ANSWER_WITHIN,
        )
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

/// KwikID taken down and brought back every ~300 ms for ~3 s under load from 4 callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_flapping_under_load() {
    let mut upstream = Upstream::start().await;
    let mut gw = Gateway::start(&upstream.config(&upstream.upstream_table("500ms", "2s")));
    assert_eq!(init(gw.addr, "{}").await.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let callers = start_callers(gw.addr, &stop);
    let flapping = Instant::now();
    let mut flaps = 0;
    while flapping.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        upstream.down().await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        upstream.up().await;
        flaps += 1;
    }
    let back = Instant::now();
    stop.store(true, Ordering::Relaxed);
    // Back up: 200 again within a second.
    let mut recovery = Tally::default();
    loop {
        let answer = try_send(gw.addr, post(INIT, "{}", &[]), ANSWER_WITHIN)
            .await
            .unwrap_or_else(|e| panic!("after the last up(): {e}"));
        classify(&answer, &mut recovery).unwrap();
        if answer.status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "no 200 within 1 s of KwikID coming back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_in = back.elapsed();
    assert!(recovered_in < Duration::from_secs(1), "{recovered_in:?}");

    let mut tally = join_callers(callers).await;
    tally.add(&recovery);
    eprintln!("{flaps} flaps: {tally:?}; 200 again {recovered_in:?} after the last up()");
    assert!(tally.ok > 0, "{tally:?}");
    assert!(tally.slowest < ANSWER_WITHIN, "{tally:?}");
    assert_alive(&mut gw).await;
    // Every request has its access-log line (+1: the warm-up request).
    gw.stdout
        .wait_count(tally.total() + 1, Duration::from_secs(10));
}

/// KwikID answering in half of request_timeout for ~2 s under load: every request is still
/// answered within request_timeout + 1 s, and the gateway is fine afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_under_load() {
    let upstream = Upstream::start().await;
    let mut gw = Gateway::start(&upstream.config(&upstream.upstream_table("500ms", "2s")));
    assert_eq!(init(gw.addr, "{}").await.status, 200);

    upstream.mock().set_fault(Fault::Delay(REQUEST_TIMEOUT / 2));
    let stop = Arc::new(AtomicBool::new(false));
    let callers = start_callers(gw.addr, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = join_callers(callers).await;
    upstream.mock().set_fault(Fault::None);
    eprintln!("slow upstream: {tally:?}");
    assert!(tally.ok > 0, "{tally:?}");
    assert_eq!(tally.unavailable, 0, "{tally:?}");
    assert!(tally.slowest < ANSWER_WITHIN, "{tally:?}");
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    assert_alive(&mut gw).await;
}
