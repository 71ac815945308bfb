//! What a scraper reads off `/metrics`: a format it can parse (`promtool check metrics` on the
//! live output), every known counter at 0 from the start, the build and the process, and
//! each request counted where an operator looks for it.
//!
//! The `promtool` checks need Debian's `prometheus` package; without it they fail, unless
//! `KWIKID_SKIP_PROMTOOL=1` is set: then each says on stderr that it checked nothing.

mod support;

use support::*;

/// What Prometheus 2.x sends: OpenMetrics first, the text format as a fall-back.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Guards against an exposition that `promtool check metrics` refuses (a family without
/// HELP, a counter not named `_total`, OpenMetrics served to a text-format client), and
/// against Prometheus itself no longer getting OpenMetrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_exposition_passes_promtool_in_the_format_asked_for() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    let method = send(
        gw.addr,
        http::Request::get(INIT)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    method.assert_error(405, "method_not_allowed");
    gw.stdout.wait_count(2, HANG_GUARD);

    // `curl` sends `*/*`: the Prometheus text format, which promtool reads.
    let text = metrics_accepting(gw.admin, "*/*").await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let exposition = text.text();
    assert!(!exposition.contains("# EOF"), "{exposition}");
    assert!(!exposition.contains(TOKEN));
    if let Some(mut promtool) = promtool() {
        promtool.args(["check", "metrics"]);
        let (code, out) = run_with_stdin(promtool, exposition.as_bytes());
        assert_eq!(
            code,
            Some(0),
            "promtool check metrics:\n{out}\n{exposition}"
        );
        assert_eq!(out.trim(), "", "promtool has no complaint");
    }

    // Prometheus prefers OpenMetrics, and gets it.
    let open = metrics_accepting(gw.admin, PROMETHEUS_ACCEPT).await;
    assert!(
        open.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0"),
        "{:?}",
        open.headers
    );
    assert!(open.text().ends_with("# EOF\n"), "{}", open.text());
    assert_eq!(open.headers["vary"], "accept");
}

/// Guards against `rate()` and the alert rules seeing "no data" instead of 0 before the
/// first event, against a missing build or process metric, against a 405 on a configured
/// path counted as if the path were unknown, and against timeouts blurring the latency of
/// forwarded requests (the duration histogram is split by outcome class).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_series_start_at_zero_and_each_request_is_counted_where_looked_for() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let fresh = metrics(gw.admin).await;
    let route = format!("route=\"{INIT}\"");
    for zero in [
        "kwikid_gateway_rate_limited_total{scope=\"upstream\"}".to_owned(),
        "kwikid_gateway_rate_limited_total{scope=\"caller\"}".to_owned(),
        "kwikid_gateway_rate_limited_total{scope=\"global\"}".to_owned(),
        "kwikid_gateway_upstream_errors_total{kind=\"timeout\"}".to_owned(),
        "kwikid_gateway_upstream_errors_total{kind=\"connect\"}".to_owned(),
        "kwikid_gateway_token_reloads_total{result=\"error\"}".to_owned(),
        "kwikid_gateway_token_reloads_total{result=\"ok\"}".to_owned(),
        "kwikid_gateway_connection_errors_total{kind=\"headers_too_large\"}".to_owned(),
        format!(
            "kwikid_gateway_requests_total{{{route},status=\"502\",outcome=\"upstream_unavailable\"}}"
        ),
        format!("kwikid_gateway_requests_total{{{route},status=\"429\",outcome=\"rate_limited\"}}"),
        "kwikid_gateway_requests_total{route=\"none\",status=\"404\",outcome=\"no_route\"}"
            .to_owned(),
        "kwikid_gateway_request_duration_seconds_count{class=\"forwarded\"}".to_owned(),
        "kwikid_gateway_request_duration_seconds_count{class=\"upstream_error\"}".to_owned(),
    ] {
        assert_eq!(metric(&fresh, &zero), Some(0.0), "{zero} at 0:\n{fresh}");
    }
    assert!(
        !fresh.contains("redis_errors_total{"),
        "no Redis series without Redis"
    );
    let build = format!(
        "kwikid_gateway_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&fresh, &build), Some(1.0), "{fresh}");
    assert_eq!(metric(&fresh, "kwikid_gateway_ready"), Some(1.0), "{fresh}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = metric(&fresh, "process_start_time_seconds").expect("start time");
    assert!(
        (now - 600.0..=now + 1.0).contains(&started),
        "{started} {now}"
    );
    let rss = metric(&fresh, "process_resident_memory_bytes").expect("resident memory");
    assert!(rss > 1_000_000.0, "{rss}");
    assert!(metric(&fresh, "process_open_fds").is_some_and(|n| n >= 3.0));
    assert!(metric(&fresh, "process_cpu_seconds_total").is_some());

    // A 405 on the configured path, a 404, a forwarded 200 and a 502.
    let get = http::Request::get(INIT)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    send(gw.addr, get)
        .await
        .assert_error(405, "method_not_allowed");
    send(gw.addr, post("/elsewhere", "{}", &[]))
        .await
        .assert_error(404, "no_route");
    assert_eq!(init(gw.addr, "{}").await.status, 200);
    upstream.mock().set_fault(mock::Fault::Garbage);
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    gw.stdout.wait_count(4, HANG_GUARD);

    let after = metrics(gw.admin).await;
    for (series, count) in [
        (
            format!(
                "kwikid_gateway_requests_total{{{route},status=\"405\",outcome=\"method_not_allowed\"}}"
            ),
            1.0,
        ),
        (
            "kwikid_gateway_requests_total{route=\"none\",status=\"404\",outcome=\"no_route\"}"
                .to_owned(),
            1.0,
        ),
        (
            "kwikid_gateway_request_duration_seconds_count{class=\"forwarded\"}".to_owned(),
            1.0,
        ),
        (
            "kwikid_gateway_request_duration_seconds_count{class=\"refused\"}".to_owned(),
            2.0,
        ),
        (
            "kwikid_gateway_request_duration_seconds_count{class=\"upstream_error\"}".to_owned(),
            1.0,
        ),
    ] {
        assert_eq!(metric(&after, &series), Some(count), "{series}:\n{after}");
    }
    assert!(!after.contains("/elsewhere"), "no caller-chosen paths");
    assert!(!after.contains(TOKEN));
}
