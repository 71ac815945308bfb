//! Named callers (SPEC §10) on the real binary: each named caller's own share, the routes it
//! may use, `unknown_callers = "deny"` refusing an unnamed caller before its body is read,
//! `kwikid_gateway_caller_requests_total` with `other` for every unnamed caller, and `check`
//! printing the callers or refusing a bad `[[callers]]` in one line.
//!
//! Every gateway logs at `trace`; all it writes is scanned for the token. Sharing a named
//! caller's rate across replicas through Redis is in `tests/shared_limits.rs`.

mod support;

use support::*;

const STATUS: &str = "/verification/v2/digilocker/status";

/// The two refusals of a caller, byte for byte.
const ROUTE_REFUSED_BODY: &str = r#"{"error":"This caller is not allowed to use this route."}"#;
const NOT_NAMED_BODY: &str =
    r#"{"error":"This caller is not one of the gateway's named callers."}"#;

/// A gateway in front of `upstream` logging at `trace`, with `extra` config (TOML).
fn gateway(upstream: &Upstream, extra: &str) -> Gateway {
    Gateway::start(&upstream.config(&format!("[log]\nlevel = \"trace\"\n{extra}")))
}

/// `kwikid_gateway_caller_requests_total{caller, outcome}`, 0 when absent.
fn caller_count(metrics: &str, caller: &str, outcome: &str) -> f64 {
    metric(
        metrics,
        &format!(
            "kwikid_gateway_caller_requests_total{{caller=\"{caller}\",outcome=\"{outcome}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

/// The `caller` label values exposed.
fn caller_labels(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("kwikid_gateway_caller_requests_total{caller=\""))
        .filter_map(|l| l.split_once('"').map(|(name, _)| name.to_owned()))
        .collect()
}

/// The token appears nowhere in what the gateway wrote.
fn assert_no_token(gw: &Gateway) {
    let all = format!("{}\n{}", gw.stdout.text(), gw.stderr.text());
    assert_token_absent(&all, TOKEN, "the gateway's output");
}

/// Guards against a named caller getting the default share instead of its own, a named caller
/// without a rate not getting the default, unnamed callers sharing one bucket, and a caller
/// adding a label value of its own choosing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_callers_get_their_own_share_and_everyone_else_the_default() {
    let upstream = Upstream::start().await;
    let gw = gateway(
        &upstream,
        "[rate_limit]\nglobal = { per_second = 1000, burst = 1000 }\n\
         per_caller = { per_second = 0.001, burst = 1 }\n\
         [[callers]]\nname = \"orders-svc\"\nper_second = 0.001\nburst = 3\n\
         [[callers]]\nname = \"billing-svc\"\n",
    );
    // Before any request: every named caller, and `other`, from 0.
    let before = metrics(gw.admin).await;
    for caller in ["orders-svc", "billing-svc", "other"] {
        for outcome in [
            "forwarded",
            "rate_limited",
            "caller_not_allowed",
            "client_closed",
        ] {
            let series = format!(
                "kwikid_gateway_caller_requests_total{{caller=\"{caller}\",outcome=\"{outcome}\"}}"
            );
            assert_eq!(metric(&before, &series), Some(0.0), "{series}:\n{before}");
        }
    }

    for n in 1..=3 {
        assert_eq!(
            init_as(gw.addr, "orders-svc").await.status,
            200,
            "orders {n}"
        );
    }
    let limited = init_as(gw.addr, "orders-svc").await;
    limited.assert_error(429, "rate_limited");
    assert!(limited.retry_after() >= 1);
    assert_eq!(init_as(gw.addr, "billing-svc").await.status, 200);
    init_as(gw.addr, "billing-svc")
        .await
        .assert_error(429, "rate_limited");
    for n in 0..20 {
        let stranger = format!("stranger-{n}");
        assert_eq!(init_as(gw.addr, &stranger).await.status, 200, "{stranger}");
    }
    init_as(gw.addr, "stranger-0")
        .await
        .assert_error(429, "rate_limited");
    assert_eq!(upstream.mock().received().len(), 24);

    // Counted before the access-log line is written.
    gw.stdout.wait_count(27, HANG_GUARD);
    let after = metrics(gw.admin).await;
    for (caller, outcome, n) in [
        ("orders-svc", "forwarded", 3.0),
        ("orders-svc", "rate_limited", 1.0),
        ("billing-svc", "forwarded", 1.0),
        ("billing-svc", "rate_limited", 1.0),
        ("other", "forwarded", 20.0),
        ("other", "rate_limited", 1.0),
    ] {
        assert_eq!(
            caller_count(&after, caller, outcome),
            n,
            "{caller} {outcome}"
        );
    }
    assert_eq!(
        caller_labels(&after).into_iter().collect::<Vec<_>>(),
        ["billing-svc", "orders-svc", "other"],
        "only named callers and `other`: {after}"
    );
    assert_eq!(
        metric(
            &after,
            "kwikid_gateway_rate_limited_total{scope=\"caller\"}"
        ),
        Some(3.0)
    );
    assert_eq!(gw.access_line(4)["caller"], "orders-svc");
    assert_eq!(gw.access_line(4)["outcome"], "rate_limited");
    assert_no_token(&gw);
}

/// Guards against a named caller using a route outside its `routes` (or being kept from its
/// own), and against unnamed callers being held to any list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_caller_keeps_to_its_routes() {
    let upstream = Upstream::start().await;
    let gw = gateway(
        &upstream,
        &format!(
            "[[routes]]\nmethod = \"POST\"\npath = \"{INIT}\"\n\
             [[routes]]\nmethod = \"POST\"\npath = \"{STATUS}\"\n\
             [[callers]]\nname = \"orders-svc\"\nroutes = [\"{INIT}\"]\n\
             [[callers]]\nname = \"reports-svc\"\nroutes = [\"{STATUS}\"]\n"
        ),
    );
    let as_caller = |target: &str, caller: &str| post(target, "{}", &[("x-caller-id", caller)]);

    let refused = send(gw.addr, as_caller(STATUS, "orders-svc")).await;
    refused.assert_error(403, "caller_not_allowed");
    assert_eq!(refused.text(), ROUTE_REFUSED_BODY);
    let refused = send(gw.addr, as_caller(INIT, "reports-svc")).await;
    refused.assert_error(403, "caller_not_allowed");
    assert_eq!(refused.text(), ROUTE_REFUSED_BODY);
    assert!(
        upstream.mock().received().is_empty(),
        "no refusal reached KwikID"
    );

    let answer = send(gw.addr, as_caller(INIT, "orders-svc")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock_ok_body(upstream.mock(), 1));
    // The mock serves only init: KwikID's own 404, passed through, is not the gateway's.
    for caller in ["reports-svc", "stranger"] {
        let answer = send(gw.addr, as_caller(STATUS, caller)).await;
        assert_eq!(answer.status, 404, "{caller}: {}", answer.text());
        assert!(answer.gateway_error().is_none(), "{caller}");
    }
    assert_eq!(upstream.mock().received().len(), 3);

    let line = gw.access_line(1);
    assert_eq!(line["caller"], "orders-svc", "{line}");
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(line["outcome"], "caller_not_allowed", "{line}");
    assert_eq!(line["path"], STATUS, "{line}");
    gw.stdout.wait_count(5, HANG_GUARD);
    let exposition = metrics(gw.admin).await;
    assert_eq!(
        caller_count(&exposition, "orders-svc", "caller_not_allowed"),
        1.0
    );
    assert_eq!(caller_count(&exposition, "other", "forwarded"), 1.0);
    assert_no_token(&gw);
}

/// Guards against `unknown_callers = "deny"` letting an unnamed caller through, reading its
/// body first (it would wait for it, then answer 408), or refusing a caller named by its peer
/// IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_deny_an_unnamed_caller_is_refused_before_its_body_is_read() {
    let upstream = Upstream::start().await;
    let gw = gateway(
        &upstream,
        "[rate_limit]\nunknown_callers = \"deny\"\n\
         global = { per_second = 1000, burst = 1000 }\n\
         per_caller = { per_second = 1000, burst = 1000 }\n\
         [[callers]]\nname = \"orders-svc\"\n\
         [[callers]]\nname = \"127.0.0.1\"\n",
    );
    // Announces 1000 bytes, sends 10 and waits: the answer cannot have waited for the body.
    let mut conn = RawConn::connect(gw.addr).await;
    let head = format!(
        "POST {INIT} HTTP/1.1\r\nhost: gw\r\nx-caller-id: stranger\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"handsha"
    );
    let refused = conn.round_trip(head.as_bytes()).await;
    assert_gateway_answer(&refused, 403, "caller_not_allowed", NOT_NAMED_BODY);
    drop(conn);

    let answer = init_as(gw.addr, "orders-svc").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // No caller header: named by its peer address, which is listed.
    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    init_as(gw.addr, "billing-svc")
        .await
        .assert_error(403, "caller_not_allowed");
    assert_eq!(upstream.mock().received().len(), 2);

    let line = gw.access_line(1);
    assert_eq!(line["caller"], "stranger", "{line}");
    assert_eq!(line["outcome"], "caller_not_allowed", "{line}");
    assert_eq!(line["bytes_in"], 0, "the body was never read: {line}");
    assert_eq!(gw.access_line(3)["caller"], "127.0.0.1");
    gw.stdout.wait_count(4, HANG_GUARD);
    let exposition = metrics(gw.admin).await;
    assert_eq!(
        caller_count(&exposition, "other", "caller_not_allowed"),
        2.0
    );
    assert_eq!(caller_count(&exposition, "127.0.0.1", "forwarded"), 1.0);
    assert_eq!(caller_count(&exposition, "orders-svc", "forwarded"), 1.0);
    assert_no_token(&gw);
}

/// Guards against an untrusted peer being counted as the named caller it claims to be: its
/// 403 counts as `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_never_counts_as_a_named_caller() {
    let upstream = Upstream::start().await;
    let gw = gateway(
        &upstream,
        "[listen]\naddr = \"127.0.0.1:0\"\nallow_cidrs = [\"10.0.0.0/8\"]\n\
         [[callers]]\nname = \"orders-svc\"\n",
    );
    init_as(gw.addr, "orders-svc")
        .await
        .assert_error(403, "caller_not_allowed");
    assert_eq!(gw.access_line(1)["caller"], "orders-svc");
    let exposition = metrics(gw.admin).await;
    assert_eq!(
        caller_count(&exposition, "other", "caller_not_allowed"),
        1.0
    );
    assert_eq!(
        caller_count(&exposition, "orders-svc", "caller_not_allowed"),
        0.0
    );
    assert!(upstream.mock().received().is_empty());
}

/// Guards against `check` hiding who is named and with what share, and against a bad
/// `[[callers]]` passing or being reported in anything but one line naming the key.
#[test]
fn check_prints_the_callers_and_refuses_bad_ones() {
    let base =
        "[upstream]\nbase_url = \"https://verify.test.getkwikid.com\"\n[log]\nlevel = \"trace\"\n";
    let scratch = Scratch::new();
    let good = scratch.write(
        "good.toml",
        &format!(
            "{base}[rate_limit]\nunknown_callers = \"deny\"\n\
             [[callers]]\nname = \"orders-svc\"\nper_second = 10\nburst = 20\nroutes = [\"{INIT}\"]\n\
             [[callers]]\nname = \"billing-svc\"\n"
        ),
    );
    let out = check_config(&good);
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "# callers: 2 named; callers not named are refused (403 caller_not_allowed)\n",
        &format!("#   orders-svc: 10/s, burst 20 (own share); routes: {INIT}\n"),
        "#   billing-svc: 5/s, burst 10 (rate_limit.per_caller); routes: every route\n",
        "unknown_callers = \"deny\"",
        "[[callers]]\nname = \"orders-svc\"",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    assert_token_absent(
        &format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        TOKEN,
        "check",
    );

    for (extra, expected) in [
        (
            "[[callers]]\nname = \"a\"\n[[callers]]\nname = \"a\"\n",
            "callers[1].name: duplicates callers[0].name",
        ),
        (
            "[[callers]]\nname = \"a\"\nroutes = [\"/verification/v2/digilocker/status\"]\n",
            "callers[0].routes[0]: is not the path of a configured route",
        ),
        (
            "[[callers]]\nname = \"a\"\n[[callers]]\nname = \"b\"\n[[callers]]\nname = \"c\"\nper_second = 0\n",
            "callers[2].per_second: must be a number above 0",
        ),
        (
            "[[callers]]\nname = \"a\"\nburst = 0\n",
            "callers[0].burst: must be at least 1",
        ),
        (
            "[rate_limit]\nunknown_callers = \"deny\"\n",
            "rate_limit.unknown_callers: is \"deny\" but no [[callers]] are listed",
        ),
    ] {
        let path = scratch.write("bad.toml", &format!("{base}{extra}"));
        let out = check_config(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_exit(&out, 2);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
        assert!(out.stdout.is_empty());
    }
}
