//! An upstream failure says why: the warning names KwikID's `host:port` and the cause in
//! plain words (the resolver's answer, the socket error, rustls's reason), and a cause already
//! written stays quiet for a minute. The caller still gets the same 502 / 504 and the metric
//! the same kind. `check --connect` reaches KwikID as a request would, sends nothing, and on
//! failure says why in the same words.

mod support;

use std::time::Duration;

use base64::Engine;
use support::mock::Fault;
use support::*;

const TRACE: &str = "[log]\nlevel = \"trace\"\n";

/// Neither the token (nor its base64 forms) nor `needle` appears in anything the gateway wrote.
fn assert_never_written(gw: &Gateway, needle: &str) {
    let written = format!("{}\n{}", gw.stdout.text(), gw.stderr.text());
    let bearer = format!("Bearer {TOKEN}");
    let engine = base64::engine::general_purpose::STANDARD;
    for secret in [
        TOKEN.to_owned(),
        engine.encode(TOKEN).trim_end_matches('=').to_owned(),
        engine.encode(&bearer).trim_end_matches('=').to_owned(),
        needle.to_owned(),
    ] {
        assert!(!written.contains(&secret), "{secret:?} was written");
    }
}

/// KwikID down: each caller gets 502 and the metric counts each failure, but the cause is
/// written once, naming KwikID's host:port and the refused addresses. A second, different
/// cause (KwikID back up, answering garbage) gets its own line at once; stderr being one
/// ordered stream, seeing it means the first cause's repeats would have been seen too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_written_once_with_its_address() {
    let mut upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(TRACE));
    let port = upstream.addr.port();
    upstream.down().await;

    for _ in 0..2 {
        init(gw.addr, "{}")
            .await
            .assert_error(502, "upstream_unavailable");
    }
    upstream.up().await;
    upstream.mock().set_fault(Fault::Garbage);
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    let garbage = gw.upstream_warning("garbage");
    assert_eq!(
        garbage["cause"], "KwikID's answer was not HTTP",
        "{garbage}"
    );

    let refused: Vec<_> = gw
        .upstream_warnings()
        .into_iter()
        .filter(|w| w["kind"] == "connect")
        .collect();
    assert_eq!(refused.len(), 1, "one line for two failures: {refused:?}");
    let line = &refused[0];
    assert_eq!(line["upstream"], format!("localhost:{port}"), "{line}");
    assert_eq!(line["count"], 1, "{line}");
    let cause = line["cause"].as_str().unwrap();
    assert!(
        cause.starts_with(&format!("connection refused (127.0.0.1:{port})"))
            || cause.starts_with(&format!("connection refused ([::1]:{port})")),
        "{cause}"
    );
    let metrics = metrics(gw.admin).await;
    for (kind, n) in [("connect", 2.0), ("garbage", 1.0)] {
        let series = format!("kwikid_gateway_upstream_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(metric(&metrics, &series), Some(n), "{series}");
    }
    // KwikID's garbage bytes are an answer's body: never in a log line.
    assert_never_written(&gw, "this is not HTTP");
}

/// A host the resolver does not know: the warning quotes the resolver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_named_with_the_resolvers_answer() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&config_for(
        "https://kwikid.invalid",
        &upstream.ca_file,
        TRACE,
    ));
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    let line = gw.upstream_warning("dns");
    assert_eq!(line["upstream"], "kwikid.invalid:443", "{line}");
    let cause = line["cause"].as_str().unwrap();
    assert!(
        cause.starts_with("DNS lookup of kwikid.invalid failed: "),
        "{cause}"
    );
    assert_never_written(&gw, "redirection_url");
}

/// A certificate the gateway does not trust (no `ca_file` for the mock's private CA): the
/// warning gives rustls's reason and where trust comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_named() {
    let upstream = Upstream::start().await;
    let table = upstream_table_for(&upstream.base_url(), None, "1s", "2s");
    let gw = Gateway::start(&upstream.config(&format!("{table}{TRACE}")));
    init(gw.addr, "{}")
        .await
        .assert_error(502, "upstream_unavailable");
    let line = gw.upstream_warning("tls");
    assert_eq!(
        line["cause"],
        "certificate refused: unknown issuer (not signed by a trusted CA; see upstream.ca_file)",
        "{line}"
    );
    assert_eq!(upstream.mock().served(), 0);
    assert_never_written(&gw, "redirection_url");
}

/// KwikID slower than `request_timeout`: 504, and the warning names the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_names_the_request_timeout() {
    let upstream = Upstream::start().await;
    upstream
        .mock()
        .set_fault(Fault::Delay(Duration::from_secs(5)));
    let table = upstream.upstream_table("1s", "500ms");
    let gw = Gateway::start(&upstream.config(&format!("{table}{TRACE}")));
    init(gw.addr, "{}")
        .await
        .assert_error(504, "upstream_timeout");
    let line = gw.upstream_warning("timeout");
    assert_eq!(
        line["cause"], "no whole answer within upstream.request_timeout (500ms)",
        "{line}"
    );
    assert_never_written(&gw, "redirection_url");
}

/// `check --connect` completes DNS, TCP and the TLS handshake with KwikID and sends no
/// request: the mock saw a connection and not one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_completes_the_handshake_and_sends_no_request() {
    let upstream = Upstream::start().await;
    let scratch = Scratch::new();
    let config = scratch.write("gateway.toml", &upstream.config(""));
    let out = check_connect(&config, &[]).await;
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let port = upstream.addr.port();
    assert!(
        stdout.contains(&format!(
            "# upstream: reached KwikID at localhost:{port}: TLSv1_3 handshake complete, certificate verified, HTTP/2; no request sent"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("# proxy: none"), "{stdout}");
    assert_eq!(upstream.mock().connections(), 1);
    assert_eq!(upstream.mock().served(), 0);
    assert!(upstream.mock().received().is_empty());
    assert!(!stdout.contains(TOKEN));
}

/// `check --connect` against a KwikID it cannot reach or trust: exit 2, one line on stderr
/// naming the file, the host and the cause in the warning's words; nothing on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_failures_are_one_line_naming_the_cause() {
    let mut upstream = Upstream::start().await;
    let port = upstream.addr.port();
    let scratch = Scratch::new();
    let untrusting = upstream_table_for(&upstream.base_url(), None, "1s", "2s");
    let cases = [
        (
            "untrusted.toml",
            upstream.config(&untrusting),
            "certificate refused: unknown issuer",
        ),
        ("down.toml", upstream.config(""), "connection refused ("),
    ];
    for (i, (name, config, cause)) in cases.into_iter().enumerate() {
        if i == 1 {
            upstream.down().await;
        }
        let path = scratch.write(name, &config);
        let out = check_connect(&path, &[]).await;
        assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "exactly one line: {stderr}");
        let wanted = format!(
            "{}: upstream: cannot reach KwikID at localhost:{port}: {cause}",
            path.display()
        );
        assert!(stderr.starts_with(&wanted), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!stderr.contains(TOKEN));
    }
}
