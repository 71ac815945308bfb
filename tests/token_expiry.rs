//! The token's health (SPEC §11) on the real binary: the expiry read from a JWT the test makes
//! (near, past, far, or not there at all), the lines at start and on reload, the gauge, what
//! `check` prints, and KwikID's 401s counted and logged once a minute.
//!
//! Each gateway logs at `trace`, and everything it writes (and `check` prints) is scanned for
//! the token and for each of its segments. The hourly reminder and the once-a-minute limit are
//! unit-tested with a clock stepped by hand (`src/token_watch/`); here they are seen at start,
//! on reload and across two 401s.

mod support;

use std::path::PathBuf;

use support::mock::Mock;
use support::*;

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;

/// A gateway holding `token` in a token file, in front of a mock KwikID that accepts exactly
/// that token, logging at `trace`.
struct JwtGateway {
    gw: Gateway,
    mock: Mock,
    file: PathBuf,
    _upstream: Upstream,
    _dir: Scratch,
}

impl JwtGateway {
    async fn start(token: &str) -> Self {
        let upstream = Upstream::start().await;
        let mock = upstream.another_accepting(token).await;
        let dir = Scratch::new();
        let file = dir.write("token", &format!("{token}\n"));
        let config = config_for(
            &base_url_for(mock.addr.port()),
            &upstream.ca_file,
            &format!(
                "[token]\nfile = \"{}\"\n[log]\nlevel = \"trace\"\n",
                file.display()
            ),
        );
        let gw = Gateway::start_with_env(&config, &[]);
        Self {
            gw,
            mock,
            file,
            _upstream: upstream,
            _dir: dir,
        }
    }

    /// `check` on this gateway's config: exit code, stdout, stderr.
    fn check(&self) -> (Option<i32>, String, String) {
        let out = gateway_bin()
            .arg("check")
            .arg("--config")
            .arg(&self.gw.config_path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Waits for the stderr line with `message` that names `token`'s fingerprint and
    /// `trigger`, and returns it parsed.
    fn line(&self, message: &str, token: &str, trigger: &str) -> serde_json::Value {
        let wanted = [
            format!("\"message\":\"{message}\""),
            format!("\"token_id\":\"{}\"", fingerprint_of(token)),
            format!("\"trigger\":\"{trigger}\""),
        ];
        let line = self
            .gw
            .stderr
            .wait_for(&format!("{message:?} on {trigger}"), HANG_GUARD, |l| {
                wanted.iter().all(|w| l.contains(w.as_str()))
            });
        serde_json::from_str(&line).unwrap()
    }

    /// Neither `tokens` nor any of their segments in anything the gateway wrote, nor in `also`.
    fn assert_nothing_reveals(&self, tokens: &[&str], also: &str) {
        let all = format!(
            "{}\n{}\n{also}",
            self.gw.stdout.text(),
            self.gw.stderr.text()
        );
        for token in tokens {
            assert_token_absent(&all, token, "the gateway's output or check");
        }
    }
}

/// The expiry gauge, if exposed.
async fn expiry_gauge(admin: std::net::SocketAddr) -> Option<f64> {
    metric(
        &metrics(admin).await,
        "kwikid_gateway_token_expiry_timestamp_seconds",
    )
}

/// Guards against a token close to its expiry going unannounced, at start or after a rotation
/// to another such token, and against the gauge or `check` showing anything but its `exp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_near_its_expiry_is_warned_about_at_start_and_on_reload() {
    let exp = unix_now() + 2 * DAY + HOUR;
    let token = jwt_expiring_at(exp);
    let jw = JwtGateway::start(&token).await;

    let warned = jw.line("the token in use expires soon; rotate it", &token, "start");
    assert_eq!(warned["level"], "WARN", "{warned}");
    assert_eq!(warned["expires_at"], rfc3339(exp), "{warned}");
    assert_eq!(warned["expires_in"], "2d", "{warned}");
    assert_eq!(expiry_gauge(jw.gw.admin).await, Some(exp as f64));

    // The gateway serves on: KwikID decides, and this KwikID accepts the token.
    let answer = init(jw.gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock_ok_body(&jw.mock, 1));

    let (code, stdout, stderr) = jw.check();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "# token: fingerprint {}, expires {}, in 2d\n",
            fingerprint_of(&token),
            rfc3339(exp)
        )),
        "{stdout}"
    );

    // Rotated to another token that also expires soon: the reload announces it.
    let next_exp = unix_now() + 5 * HOUR + 120;
    let next = jwt_expiring_at(next_exp);
    std::fs::write(&jw.file, format!("{next}\n")).unwrap();
    jw.line("token reloaded", &next, "file change");
    let warned = jw.line(
        "the token in use expires soon; rotate it",
        &next,
        "file change",
    );
    assert_eq!(warned["expires_at"], rfc3339(next_exp), "{warned}");
    assert_eq!(warned["expires_in"], "5h", "{warned}");
    assert_eq!(expiry_gauge(jw.gw.admin).await, Some(next_exp as f64));
    jw.assert_nothing_reveals(&[&token, &next], &format!("{stdout}\n{stderr}"));
}

/// Guards against an expired token stopping the gateway (KwikID decides) or being announced
/// as anything less than an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_an_error_and_the_gateway_still_serves() {
    let exp = unix_now() - 3 * DAY - HOUR;
    let token = jwt_expiring_at(exp);
    let jw = JwtGateway::start(&token).await;

    let line = jw.line(
        "the token in use has expired; KwikID will refuse it",
        &token,
        "start",
    );
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["expired_at"], rfc3339(exp), "{line}");
    assert_eq!(line["expired_ago"], "3d", "{line}");
    assert_eq!(expiry_gauge(jw.gw.admin).await, Some(exp as f64));
    assert_eq!(admin_get(jw.gw.admin, "/readyz").await.status, 200);
    let answer = init(jw.gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "the mock does not read exp");

    let (code, stdout, stderr) = jw.check();
    assert_eq!(
        code,
        Some(0),
        "an expired token is not a bad config: {stderr}"
    );
    assert!(
        stdout.contains(&format!(
            "# token: fingerprint {}, expired {}, 3d ago\n",
            fingerprint_of(&token),
            rfc3339(exp)
        )),
        "{stdout}"
    );
    jw.assert_nothing_reveals(&[&token], &format!("{stdout}\n{stderr}"));
}

/// Guards against a warning for a token with plenty of time left: its expiry is told once,
/// at info.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_far_from_its_expiry_is_told_not_warned() {
    let exp = unix_now() + 30 * DAY + HOUR;
    let token = jwt_expiring_at(exp);
    let jw = JwtGateway::start(&token).await;
    let line = jw.line("token expiry", &token, "start");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["expires_in"], "30d", "{line}");
    assert_eq!(expiry_gauge(jw.gw.admin).await, Some(exp as f64));
    let logs = jw.gw.stderr.text();
    assert!(
        !logs.contains("\"level\":\"WARN\"") && !logs.contains("\"level\":\"ERROR\""),
        "{logs}"
    );
    let (code, stdout, stderr) = jw.check();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(", in 30d\n"), "{stdout}");
    jw.assert_nothing_reveals(&[&token], &format!("{stdout}\n{stderr}"));
}

/// Guards against a segment of the JWT reaching the access log through a field the caller
/// sent (a caller that somehow holds the payload must not get it logged either).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_of_the_token_sent_by_a_caller_is_redacted() {
    let token = jwt_expiring_at(unix_now() + 30 * DAY);
    let jw = JwtGateway::start(&token).await;
    let segments: Vec<&str> = token.split('.').collect();
    for (n, segment) in segments.iter().enumerate() {
        let body = format!(r#"{{"handshake_id":"{segment}"}}"#);
        let answer = send(jw.gw.addr, post(INIT, &body, &[("x-request-id", segment)])).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let line = jw.gw.access_line(n + 1);
        assert_eq!(line["handshake_id"], "[REDACTED]", "{line}");
        assert_eq!(line["request_id"], "[REDACTED]", "{line}");
    }
    jw.assert_nothing_reveals(&[&token], "");
}

/// Guards against a token that is not a JWT with a numeric `exp` being an error, getting a
/// made-up expiry, or leaking: `check` says "no readable expiry", and the running gateway
/// exposes no expiry gauge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_without_a_readable_expiry_are_never_an_error() {
    let good = jwt_expiring_at(unix_now() + 30 * DAY);
    let segments: Vec<&str> = good.split('.').collect();
    let (header, payload, signature) = (segments[0], segments[1], segments[2]);
    let malformed = [
        TOKEN.to_owned(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{signature}.{signature}"),
        format!("{header}.{payload}=.{signature}"),
        format!("{header}.bm90IGpzb24.{signature}"),
        jwt(r#"{"sub":"acct-1","exp":"2030-01-01"}"#),
        jwt(r#"{"sub":"acct-1"}"#),
        jwt(r#"[1801353600]"#),
    ];
    let scratch = Scratch::new();
    let config = scratch.write(
        "gw.toml",
        "[upstream]\nbase_url = \"https://verify.test.getkwikid.com\"\n[log]\nlevel = \"trace\"\n",
    );
    for token in &malformed {
        let out = gateway_bin()
            .arg("check")
            .arg("--config")
            .arg(&config)
            .env("KWIKID_API_TOKEN", token)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{token}: {stderr}");
        assert!(stderr.is_empty(), "{token}: {stderr}");
        let expected = format!(
            "# token: fingerprint {}, no readable expiry\n",
            fingerprint_of(token)
        );
        assert!(stdout.contains(&expected), "{token}: {stdout}");
        assert_token_absent(&format!("{stdout}{stderr}"), token, "check");
    }

    let token = &malformed[4];
    let jw = JwtGateway::start(token).await;
    let line = jw.line(
        "the token has no readable expiry (not a JWT with a numeric exp)",
        token,
        "start",
    );
    assert_eq!(line["level"], "INFO", "{line}");
    let exposition = metrics(jw.gw.admin).await;
    assert!(
        !exposition.contains("token_expiry"),
        "no gauge without a readable exp: {exposition}"
    );
    assert_eq!(init(jw.gw.addr, "{}").await.status, 200);
    jw.assert_nothing_reveals(&[token], "");
}

/// Guards against KwikID's 401s going uncounted, flooding the log (one line per 401), being
/// changed on the way to the caller, or naming the token by anything but its fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_401s_are_counted_and_logged_at_most_once_a_minute() {
    let upstream = Upstream::start().await;
    let other = upstream
        .another_accepting("kwk_live_some-other-token")
        .await;
    let gw = Gateway::start(&config_for(
        &base_url_for(other.addr.port()),
        &upstream.ca_file,
        "[log]\nlevel = \"trace\"\n",
    ));
    for n in 1..=2 {
        let answer = init(gw.addr, "{}").await;
        assert_eq!(answer.status, 401, "request {n}");
        assert_eq!(
            answer.text(),
            KWIKID_401_BODY,
            "request {n}: KwikID's answer"
        );
        assert!(answer.gateway_error().is_none(), "request {n}");
        let line = gw.access_line(n);
        assert_eq!(line["status"], 401, "{line}");
        assert_eq!(line["outcome"], "forwarded", "{line}");
    }
    let exposition = metrics(gw.admin).await;
    assert_eq!(
        metric(&exposition, "kwikid_gateway_upstream_auth_failures_total"),
        Some(2.0),
        "{exposition}"
    );
    // A line the gateway writes after both 401s: every line before it has been read.
    gw.signal("HUP");
    gw.stderr
        .wait_for("the SIGHUP line", HANG_GUARD, |l| l.contains("SIGHUP"));
    let rejected: Vec<serde_json::Value> = gw
        .stderr
        .all()
        .iter()
        .filter(|l| l.contains("KwikID rejected the token in use"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejected.len(), 1, "{}", gw.stderr.text());
    assert_eq!(rejected[0]["level"], "ERROR");
    assert_eq!(rejected[0]["token_id"], fingerprint_of(TOKEN));
    assert_eq!(rejected[0]["expiry"], "no readable expiry");
    let all = format!("{}\n{}", gw.stdout.text(), gw.stderr.text());
    assert_token_absent(&all, TOKEN, "the gateway's output");
}
