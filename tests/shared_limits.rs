//! Several gateway replicas, one KwikID quota: two real gateway processes share their rate
//! limits through one real `redis-server`, fall back as `on_redis_error` says when it stops,
//! and share again when it comes back, without a restart.
//!
//! The Redis server is this test's own process on a Unix socket in a scratch directory, so
//! it can be stopped and restarted at the same address without port races.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A `redis-server` started for one test.
struct Redis {
    child: Option<Child>,
    socket: PathBuf,
    _scratch: Scratch,
}

impl Redis {
    /// Starts one, or returns `None` (and says so) where redis-server is not installed, unless
    /// running in CI, where its absence is a failure.
    fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").is_err(),
                "redis-server is not installed (apt-get install redis-server)"
            );
            eprintln!("skipping: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let scratch = Scratch::new();
        let mut redis = Self {
            child: None,
            socket: scratch.0.join("redis.sock"),
            _scratch: scratch,
        };
        redis.up();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
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

fn shared_config(upstream: &Upstream, redis: &Redis, limits: &str, on_error: &str) -> String {
    upstream.config(&format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"200ms\"\non_redis_error = \"{on_error}\"\n{limits}",
        redis.url()
    ))
}

async fn call(gw: &Gateway, caller: &str) -> Answer {
    send(gw.addr, post(INIT, "{}", &[("x-caller-id", caller)])).await
}

/// Two replicas together stay within one account's `burst + per_second × elapsed`, not twice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_account_ceiling() {
    let Some(redis) = Redis::start() else { return };
    let upstream = Upstream::start().await;
    let limits = "global = { per_second = 2, burst = 4 }\nper_caller = { per_second = 1000, burst = 1000 }\n";
    let a = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    let b = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));

    let started = Instant::now();
    let mut refused = 0;
    for i in 0..30 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let answer = call(gw, &format!("caller-{i}")).await;
        match answer.status.as_u16() {
            200 => {}
            429 => {
                answer.assert_error(429, "rate_limited");
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", answer.text()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let reached = upstream.mock().received().len() as f64;
    assert!(reached >= 4.0, "the burst got through: {reached}");
    assert!(
        reached <= 4.0 + 2.0 * elapsed + 1.0,
        "{reached} requests reached KwikID in {elapsed:.2} s: more than one account's share"
    );
    assert!(refused > 0);
    let metrics = admin_get(a.admin, "/metrics").await.text();
    assert!(
        metrics.contains("kwikid_gateway_rate_limit_backend{backend=\"redis\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kwikid_gateway_redis_duration_seconds_count"),
        "{metrics}"
    );
}

/// A caller's share is one share across replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_share_spans_replicas() {
    let Some(redis) = Redis::start() else { return };
    let upstream = Upstream::start().await;
    let limits = "global = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 0.01, burst = 3 }\n";
    let a = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    let b = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    for gw in [&a, &b, &a] {
        assert_eq!(call(gw, "orders-svc").await.status, 200);
    }
    let refused = call(&b, "orders-svc").await;
    refused.assert_error(429, "rate_limited");
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (99..=101).contains(&retry),
        "0.01/s: the next permit is ~100 s away, got {retry}"
    );
    assert_eq!(
        call(&b, "billing-svc").await.status,
        200,
        "another caller has its own share"
    );
}

/// KwikID's own 429 seen by one replica holds the account closed on the other too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_429_hold_is_shared() {
    let Some(redis) = Redis::start() else { return };
    let upstream = Upstream::start().await;
    let limits = "global = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 1000, burst = 1000 }\n";
    let a = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    let b = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    upstream
        .mock()
        .set_fault(kwikid_gateway::mock::Fault::TooManyRequests {
            retry_after_secs: 5,
        });
    assert_eq!(call(&a, "x").await.status, 429);
    upstream.mock().set_fault(kwikid_gateway::mock::Fault::None);
    call(&b, "y").await.assert_error(429, "rate_limited");
    assert_eq!(
        upstream.mock().served(),
        1,
        "replica b never reached KwikID"
    );
}

/// Redis stops: each `on_redis_error` behaves as documented, no request waits for Redis longer
/// than `redis_timeout`, and when Redis comes back the limits are shared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_then_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let upstream = Upstream::start().await;
    let limits = "global = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 0.01, burst = 2 }\n";
    let local = Gateway::start(&shared_config(&upstream, &redis, limits, "local"));
    let allow = Gateway::start(&shared_config(&upstream, &redis, limits, "allow"));
    let deny = Gateway::start(&shared_config(&upstream, &redis, limits, "deny"));
    for (i, gw) in [&local, &allow, &deny].into_iter().enumerate() {
        assert_eq!(call(gw, &format!("warm-up-{i}")).await.status, 200);
    }

    redis.down();
    // The n-th access-log line's duration: how long the request took, Redis wait included.
    let timed = |gw: &Gateway, n: usize| gw.access_line(n)["duration_ms"].as_f64().unwrap();
    // local: the in-process buckets decide (burst 2 for this caller on this replica).
    assert_eq!(call(&local, "a").await.status, 200);
    assert_eq!(call(&local, "a").await.status, 200);
    call(&local, "a").await.assert_error(429, "rate_limited");
    assert!(local.stderr.text().contains("Redis did not answer"));
    let metrics = admin_get(local.admin, "/metrics").await.text();
    assert!(
        metrics.contains("kwikid_gateway_rate_limit_backend{backend=\"local\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kwikid_gateway_redis_errors_total{kind="),
        "{metrics}"
    );
    // allow: no limit at all.
    for _ in 0..4 {
        assert_eq!(call(&allow, "a").await.status, 200);
    }
    // deny: everyone waits for Redis.
    call(&deny, "a").await.assert_error(429, "rate_limited");
    for (gw, lines) in [(&local, 4), (&allow, 5), (&deny, 2)] {
        let ms = timed(gw, lines);
        assert!(
            ms < 200.0 + 500.0,
            "a request waited {ms} ms with Redis down"
        );
    }

    redis.up();
    eventually(
        "the shared limits to come back",
        Duration::from_secs(10),
        || async { call(&deny, "after").await.status == 200 },
    )
    .await;
    assert!(deny.stderr.text().contains("Redis answers again"));
    // Shared again: the caller's share spans replicas once more.
    let first = call(&local, "back").await;
    assert_eq!(
        first.status,
        200,
        "{} {:?}\n{}",
        first.text(),
        first.headers,
        local.stderr.text()
    );
    assert_eq!(call(&deny, "back").await.status, 200);
    eventually(
        "local to use Redis again",
        Duration::from_secs(10),
        || async {
            call(&local, "back").await.status == 429
                && admin_get(local.admin, "/metrics")
                    .await
                    .text()
                    .contains("kwikid_gateway_rate_limit_backend{backend=\"redis\"} 1")
        },
    )
    .await;
}

/// `check` reaches Redis, and never prints a password from the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reaches_redis() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let upstream = Upstream::start().await;
    let config = upstream.config(&format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{}?pass=hunter2-not-shown\"\n",
        redis.url()
    ));
    let scratch = Scratch::new();
    let path = scratch.write("gw.toml", &config);
    // The URL may also come from a file (a Kubernetes Secret).
    let url_file = scratch.write("redis-url", &format!("{}\n", redis.url()));
    let plain = scratch.write(
        "plain.toml",
        &upstream.config(&format!(
            "[rate_limit]\nbackend = \"redis\"\nredis_url_file = \"{}\"\n",
            url_file.display()
        )),
    );
    let out = check_config(&plain);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = check_config(&path);
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!printed.contains("hunter2-not-shown"), "{printed}");

    redis.down();
    let out = check_config(&plain);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("rate_limit.redis_url: Redis does not answer"),
        "{stderr}"
    );
}
