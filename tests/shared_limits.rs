//! Several gateway replicas, one KwikID quota: real gateway processes share their rate limits
//! through one real `redis-server`, fall back as `on_redis_error` says when it stops, and share
//! again when it comes back, without a restart.
//!
//! The Redis server is this test's own process on a Unix socket in a scratch directory, so it
//! can be stopped and restarted at the same address without port races. Without
//! `redis-server` installed these tests fail, unless `KWIKID_SKIP_REDIS=1` is set: then each
//! says on stderr that it checked nothing, and returns.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::mock::Fault;
use support::*;

/// Whether `redis-server` can be run at all.
fn redis_installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `redis-server` started for one test.
struct Redis {
    child: Option<Child>,
    socket: PathBuf,
    /// Extra `redis-server` arguments, kept for a restart.
    args: Vec<String>,
    scratch: Scratch,
}

impl Redis {
    /// Starts one. Where redis-server is not installed this panics, unless
    /// `KWIKID_SKIP_REDIS=1`: then it says on stderr that the test is skipped and returns
    /// `None`.
    async fn start() -> Option<Self> {
        Self::start_with(&[]).await
    }

    async fn start_with(args: &[&str]) -> Option<Self> {
        if !redis_installed() {
            let test = std::thread::current()
                .name()
                .unwrap_or("a shared rate-limit test")
                .to_owned();
            if std::env::var("KWIKID_SKIP_REDIS").as_deref() == Ok("1") {
                // Straight to stderr, past the test harness's output capture: a skip is
                // never silent.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED {test}: redis-server is not installed and KWIKID_SKIP_REDIS=1; \
                     nothing was checked"
                );
                return None;
            }
            panic!(
                "{test}: redis-server is not installed. Install it (Debian/Ubuntu: \
                 apt-get install redis-server), or set KWIKID_SKIP_REDIS=1 to skip the shared \
                 rate-limit tests"
            );
        }
        let scratch = Scratch::new();
        let mut redis = Self {
            child: None,
            socket: scratch.0.join("redis.sock"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            scratch,
        };
        redis.up().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// Starts redis-server and waits until its socket accepts connections.
    async fn up(&mut self) {
        let log_path = self.scratch.0.join("redis.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocketperm",
                "700",
            ])
            .arg("--unixsocket")
            .arg(&self.socket)
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run redis-server");
        let socket = &self.socket;
        eventually("redis-server to accept connections", HANG_GUARD, || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "redis-server did not start ({status}):\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            let accepts = std::os::unix::net::UnixStream::connect(socket).is_ok();
            async move { accepts }
        })
        .await;
        self.child = Some(child);
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.down();
    }
}

/// A replica's config. `redis_timeout` is generous: these tests are about sharing, and a
/// busy machine must not turn a slow Redis answer into a fall-back.
fn shared_config(upstream: &Upstream, redis: &Redis, limits: &str, on_error: &str) -> String {
    upstream.config(&format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"5s\"\non_redis_error = \"{on_error}\"\n{limits}",
        redis.url()
    ))
}

/// Redis, the mock KwikID and two replicas that share `limits` through that Redis (falling
/// back to their own buckets); `None` when the test is skipped (see `Redis::start`).
async fn two_replicas(limits: &str) -> Option<(Redis, Upstream, Gateway, Gateway)> {
    let redis = Redis::start().await?;
    let upstream = Upstream::start().await;
    let a = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    let b = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    Some((redis, upstream, a, b))
}

/// The gateway's own 429, and its `Retry-After` in seconds.
fn refused(answer: &Answer) -> u64 {
    answer.assert_error(429, "rate_limited");
    answer.retry_after()
}

/// Guards against replicas that each keep their own account bucket: two replicas together let
/// through one account's `burst + per_second × elapsed`, not twice it, and the refusals tell
/// callers the account's real wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_account_ceiling() {
    // One permit per 100 s after a burst of 4: however slow this machine, the ceiling is
    // 4 + floor(elapsed / 100 s), and each replica alone would let 4 through.
    let limits = "global = { per_second = 0.01, burst = 4 }\nper_caller = { per_second = 1000, burst = 1000 }\n";
    let Some((_redis, upstream, a, b)) = two_replicas(limits).await else {
        return;
    };

    let started = Instant::now();
    let mut ok = [0usize; 2];
    let mut refusals = [0usize; 2];
    let mut retry_afters = Vec::new();
    for i in 0..30 {
        let (gw, n) = if i % 2 == 0 { (&a, 0) } else { (&b, 1) };
        let answer = init_as(gw.addr, &format!("caller-{i}")).await;
        match answer.status.as_u16() {
            200 => ok[n] += 1,
            429 => {
                retry_afters.push(refused(&answer));
                refusals[n] += 1;
            }
            other => panic!("unexpected {other}: {}", answer.text()),
        }
        if i < 4 {
            assert_eq!(answer.status, 200, "call {i} is within the burst");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ceiling = 4 + (elapsed * 0.01).floor() as usize;
    let reached = upstream.mock().received().len();
    assert_eq!(reached, ok[0] + ok[1], "every 200 came from KwikID");
    assert!(
        (4..=ceiling).contains(&reached),
        "{reached} requests reached KwikID in {elapsed:.1} s; one account's share is {ceiling}"
    );
    assert!(ok[0] >= 2 && ok[1] >= 2, "both replicas served: {ok:?}");
    // The next permit is 100 s after the burst, less the time spent.
    let soonest = (100.0 - elapsed).floor().max(1.0) as u64;
    for retry in retry_afters {
        assert!(
            (soonest..=100).contains(&retry),
            "Retry-After {retry}: the account's next permit is {soonest}..=100 s away"
        );
    }

    for (gw, n) in [(&a, 0), (&b, 1)] {
        // Counted before its access-log line is written.
        gw.stdout.wait_count(15, HANG_GUARD);
        let metrics = metrics(gw.admin).await;
        assert_eq!(
            metric(
                &metrics,
                "kwikid_gateway_rate_limit_backend{backend=\"redis\"}"
            ),
            Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                "kwikid_gateway_rate_limited_total{scope=\"global\"}"
            ),
            Some(refusals[n] as f64),
            "{metrics}"
        );
        assert!(
            metric(&metrics, "kwikid_gateway_redis_duration_seconds_count")
                .is_some_and(|n| n >= 15.0),
            "{metrics}"
        );
    }
}

/// Guards against a named caller's own rate (SPEC §10) being per replica, or lost to the
/// default share in the shared script: its burst of 3 is one burst across replicas, while a
/// caller that is not named keeps the generous default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_callers_own_rate_spans_replicas() {
    let limits = "global = { per_second = 1000, burst = 1000 }
                  per_caller = { per_second = 1000, burst = 1000 }
                  [[callers]]
name = \"orders-svc\"
per_second = 0.01
burst = 3
";
    let Some((_redis, upstream, a, b)) = two_replicas(limits).await else {
        return;
    };
    let started = Instant::now();
    for gw in [&a, &b, &a] {
        assert_eq!(init_as(gw.addr, "orders-svc").await.status, 200);
    }
    let retry = refused(&init_as(b.addr, "orders-svc").await);
    // 0.01/s: the fourth permit is 100 s after the first, less the time spent.
    let soonest = (100.0 - started.elapsed().as_secs_f64()).floor() as u64;
    assert!(
        (soonest..=100).contains(&retry),
        "Retry-After {retry}, expected {soonest}..=100"
    );
    for gw in [&a, &b, &a, &b] {
        assert_eq!(init_as(gw.addr, "billing-svc").await.status, 200);
    }
    assert_eq!(upstream.mock().received().len(), 7);
    b.stdout.wait_count(3, HANG_GUARD);
    let metrics = metrics(b.admin).await;
    assert_eq!(
        metric(
            &metrics,
            "kwikid_gateway_caller_requests_total{caller=\"orders-svc\",outcome=\"rate_limited\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "kwikid_gateway_rate_limit_backend{backend=\"redis\"}"
        ),
        Some(1.0),
        "the shared script decided: {metrics}"
    );
}

/// Guards against per-replica caller buckets: a caller's share is one share across replicas,
/// and the refusal says when the caller's next permit comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_share_spans_replicas() {
    let limits = "global = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 0.01, burst = 3 }\n";
    let Some((_redis, upstream, a, b)) = two_replicas(limits).await else {
        return;
    };
    let started = Instant::now();
    for gw in [&a, &b, &a] {
        assert_eq!(init_as(gw.addr, "orders-svc").await.status, 200);
    }
    let retry = refused(&init_as(b.addr, "orders-svc").await);
    // 0.01/s: the fourth permit is 100 s after the first, less the time spent.
    let soonest = (100.0 - started.elapsed().as_secs_f64()).floor() as u64;
    assert!(
        (soonest..=100).contains(&retry),
        "Retry-After {retry}, expected {soonest}..=100"
    );
    assert_eq!(
        upstream.mock().received().len(),
        3,
        "the refusal stayed home"
    );
    assert_eq!(
        init_as(b.addr, "billing-svc").await.status,
        200,
        "another caller has its own share"
    );
}

/// Guards against a 429 hold kept in one replica's memory: KwikID's 429 seen by one replica
/// holds the account closed on the others, including one started after it, and none of them
/// reaches KwikID meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_429_hold_is_shared() {
    let limits = "global = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 1000, burst = 1000 }\n";
    let Some((redis, upstream, a, b)) = two_replicas(limits).await else {
        return;
    };
    // Long, so that even a slow machine sees the hold before it lifts.
    upstream.mock().set_fault(Fault::TooManyRequests {
        retry_after_secs: 60,
    });
    let started = Instant::now();
    let first = init_as(a.addr, "x").await;
    assert_eq!(first.status, 429);
    assert!(
        first.gateway_error().is_none(),
        "KwikID's own 429 passes through"
    );
    assert_eq!(first.headers["retry-after"], "60");
    upstream.mock().set_fault(Fault::None);

    let c = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    for (name, gw) in [("b", &b), ("c", &c), ("a", &a)] {
        let retry = refused(&init_as(gw.addr, "y").await);
        let soonest = (60.0 - started.elapsed().as_secs_f64()).floor() as u64;
        assert!(
            (soonest..=60).contains(&retry),
            "replica {name}: Retry-After {retry}, expected {soonest}..=60"
        );
    }
    assert_eq!(
        upstream.mock().served(),
        1,
        "no held request reached KwikID"
    );
    b.stdout.wait_count(1, HANG_GUARD);
    let metrics = metrics(b.admin).await;
    assert_eq!(
        metric(
            &metrics,
            "kwikid_gateway_rate_limited_total{scope=\"upstream\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// Guards against a shared hold that never lifts, or lifts early: after the `Retry-After` a
/// held caller was given, its next request reaches KwikID, on the replica that did not see
/// the 429 and on the one that did; and no request got through before KwikID's `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_429_hold_lifts_on_every_replica() {
    let limits = "global = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 1000, burst = 1000 }\n";
    let Some((_redis, upstream, a, b)) = two_replicas(limits).await else {
        return;
    };
    const HOLD_SECS: u64 = 2;
    upstream.mock().set_fault(Fault::TooManyRequests {
        retry_after_secs: HOLD_SECS,
    });
    let started = Instant::now();
    let first = init_as(a.addr, "x").await;
    assert_eq!(first.status, 429, "{}", first.text());
    assert!(first.gateway_error().is_none(), "KwikID's own 429");
    upstream.mock().set_fault(Fault::None);

    // Replica b, as a caller that honours Retry-After would use it.
    let held = init_as(b.addr, "y").await;
    let through = if held.status == 429 {
        let retry = refused(&held);
        assert!((1..=HOLD_SECS).contains(&retry), "Retry-After {retry}");
        assert_eq!(upstream.mock().served(), 1, "the held request stayed home");
        // Wall time is what is under test here: the caller waits what it was told.
        tokio::time::sleep(Duration::from_secs(retry)).await;
        init_as(b.addr, "y").await
    } else {
        // This machine was slow enough for the hold to lift already.
        held
    };
    let lifted_after = started.elapsed();
    assert_eq!(
        through.status,
        200,
        "after its Retry-After a held caller reaches KwikID again: {}",
        through.text()
    );
    assert!(
        lifted_after >= Duration::from_secs(HOLD_SECS) - Duration::from_millis(50),
        "a request got through {lifted_after:?} after KwikID asked for {HOLD_SECS} s"
    );
    assert_eq!(
        init_as(a.addr, "x").await.status,
        200,
        "the replica that saw the 429 reaches KwikID again too"
    );
    assert_eq!(upstream.mock().served(), 3);
}

/// Guards against a Redis outage that stalls or breaks requests, or that sticks: each
/// `on_redis_error` behaves as documented while Redis is down (logged once per replica), and
/// when Redis comes back every replica shares the limits again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_then_recovers() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let upstream = Upstream::start().await;
    let limits = "global = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 0.01, burst = 2 }\n";
    let local = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    let allow = Gateway::start(&shared_config(&upstream, &redis, limits, "allow"));
    let deny = Gateway::start(&shared_config(&upstream, &redis, limits, "deny"));
    let replicas = [
        (&local, "local"),
        (&allow, "allow_all"),
        (&deny, "deny_all"),
    ];
    for (i, (gw, _)) in replicas.iter().enumerate() {
        assert_eq!(init_as(gw.addr, &format!("warm-up-{i}")).await.status, 200);
    }

    redis.down();
    // local: the in-process buckets decide (burst 2 for this caller on this replica).
    assert_eq!(init_as(local.addr, "a").await.status, 200);
    assert_eq!(init_as(local.addr, "a").await.status, 200);
    refused(&init_as(local.addr, "a").await);
    // allow: no limit at all.
    for _ in 0..4 {
        assert_eq!(init_as(allow.addr, "a").await.status, 200);
    }
    // deny: everyone waits for Redis.
    refused(&init_as(deny.addr, "a").await);
    assert_eq!(upstream.mock().served(), 3 + 2 + 4);
    for (gw, fallback) in replicas {
        gw.stderr
            .wait_for("the fall-back warning", HANG_GUARD, |l| {
                l.contains("Redis did not answer") && l.contains(fallback)
            });
        let metrics = metrics(gw.admin).await;
        assert_eq!(
            metric(
                &metrics,
                &format!("kwikid_gateway_rate_limit_backend{{backend=\"{fallback}\"}}")
            ),
            Some(1.0),
            "{metrics}"
        );
        assert_eq!(
            metric(
                &metrics,
                "kwikid_gateway_rate_limit_backend{backend=\"redis\"}"
            ),
            Some(0.0),
            "{metrics}"
        );
        let redis_errors: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("kwikid_gateway_redis_errors_total{kind="))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(redis_errors >= 1.0, "{metrics}");
    }

    redis.up().await;
    // Each replica finds Redis again on a request of its own; fresh callers, so that only the
    // backend decides the answer.
    let probes = &std::sync::atomic::AtomicUsize::new(0);
    for (gw, _) in replicas {
        eventually("the replica to use Redis again", HANG_GUARD, move || {
            let n = probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                init_as(gw.addr, &format!("probe-{n}")).await;
                let metrics = metrics(gw.admin).await;
                metric(
                    &metrics,
                    "kwikid_gateway_rate_limit_backend{backend=\"redis\"}",
                ) == Some(1.0)
            }
        })
        .await;
        gw.stderr.wait_for("the recovery line", HANG_GUARD, |l| {
            l.contains("Redis answers again")
        });
        let warnings = gw
            .stderr
            .all()
            .iter()
            .filter(|l| l.contains("Redis did not answer"))
            .count();
        assert_eq!(
            warnings,
            1,
            "the outage is logged once:\n{}",
            gw.stderr.text()
        );
    }
    // Shared again: one caller's share (burst 2) spans the three replicas.
    assert_eq!(init_as(local.addr, "shared-again").await.status, 200);
    assert_eq!(init_as(allow.addr, "shared-again").await.status, 200);
    refused(&init_as(deny.addr, "shared-again").await);
}

/// Guards against a `check` that does not really reach Redis or that prints its password: it
/// exits 0 when Redis answers (URL inline or from a file) without printing the password, and
/// exits 2 with one line when the password is wrong or Redis is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reaches_redis() {
    const PASSWORD: &str = "hunter2-not-shown";
    let Some(mut redis) = Redis::start_with(&["--requirepass", PASSWORD]).await else {
        return;
    };
    let upstream = Upstream::start().await;
    let scratch = Scratch::new();
    let redis_config = |url_setting: &str| {
        upstream.config(&format!(
            "[rate_limit]\nbackend = \"redis\"\n{url_setting}\n"
        ))
    };
    let with_password = format!("{}?pass={PASSWORD}", redis.url());
    let inline = scratch.write(
        "inline.toml",
        &redis_config(&format!("redis_url = \"{with_password}\"")),
    );
    // The URL may also come from a file (a Kubernetes Secret).
    let url_file = scratch.write("redis-url", &format!("{with_password}\n"));
    let from_file = scratch.write(
        "from-file.toml",
        &redis_config(&format!("redis_url_file = \"{}\"", url_file.display())),
    );
    let wrong = scratch.write(
        "wrong.toml",
        &redis_config(&format!(
            "redis_url = \"{}?pass=not-the-password\"",
            redis.url()
        )),
    );
    let printed = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };

    for config in [&inline, &from_file] {
        let out = check_config(config);
        let printed = printed(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {printed}",
            config.display()
        );
        assert!(!printed.contains(PASSWORD), "{printed}");
        assert!(!printed.contains(TOKEN), "{printed}");
    }
    let out = check_config(&inline);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("?[REDACTED]"),
        "the effective config shows where the password was: {}",
        printed(&out)
    );

    let out = check_config(&wrong);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_exit(&out, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("rate_limit.redis_url: Redis does not answer (auth)"),
        "{stderr}"
    );
    assert!(!printed(&out).contains("not-the-password"), "{stderr}");

    redis.down();
    for config in [&inline, &from_file] {
        let out = check_config(config);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_exit(&out, 2);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("rate_limit.redis_url: Redis does not answer"),
            "{stderr}"
        );
        assert!(!printed(&out).contains(PASSWORD), "{stderr}");
    }
}
