//! Faults found in other proxies' public bug reports, each fixed as a whole kind: header
//! names spelt with underscores, and access-log values that line splitters break apart.

mod support;

use support::*;

/// Guards against a stripped header crossing under its underscore spelling: upstreams that
/// map headers to CGI-style variables read `X_Forwarded_For` as `X-Forwarded-For`, so every
/// name the gateway strips is stripped whatever its case or `_`/`-` spelling (nginx drops
/// such names by default).
#[tokio::test]
async fn underscore_spellings_of_stripped_headers_never_cross() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let answer = send(
        gw.addr,
        post(
            INIT,
            "{}",
            &[
                ("X_Forwarded_For", "203.0.113.7"),
                ("x_real_ip", "203.0.113.7"),
                ("X_Forwarded_Host", "evil.example"),
                ("proxy_authorization", "Basic eDp5"),
                ("x_caller_id", "someone-else"),
                ("x_kept_header", "kept"),
            ],
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let received = upstream.mock().received();
    assert_eq!(received.len(), 1);
    let names: Vec<String> = received[0]
        .headers
        .keys()
        .map(|n| n.as_str().to_owned())
        .collect();
    for stripped in [
        "x_forwarded_for",
        "x_real_ip",
        "x_forwarded_host",
        "proxy_authorization",
        "x_caller_id",
    ] {
        assert!(
            !names.iter().any(|n| n == stripped),
            "{stripped} crossed: {names:?}"
        );
    }
    assert_eq!(received[0].headers["x_kept_header"], "kept");
    assert_eq!(
        received[0].headers["authorization"],
        format!("Bearer {TOKEN}")
    );
}

/// Guards against one request becoming several access-log records under a splitter that
/// treats more than `\n` as a line end (JavaScript, Python's `str.splitlines`, log
/// shippers): every control character and U+2028/U+2029 is escaped in the JSON.
#[tokio::test]
async fn access_log_values_stay_on_one_line_for_every_splitter() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let hostile = "a\u{2028}b\u{2029}c\u{85}d\u{b}e\u{c}f\u{1c}g\u{7f}h\r\ni";
    let body = serde_json::json!({ "handshake_id": hostile }).to_string();
    let answer = send(gw.addr, post(INIT, &body, &[("x-request-id", "one-line")])).await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let line = gw.stdout.wait_for("the access-log line", HANG_GUARD, |l| {
        l.contains("one-line")
    });
    // Every splitter sees exactly one record.
    assert_eq!(line.lines().count(), 1);
    for separator in [
        '\n', '\r', '\u{b}', '\u{c}', '\u{1c}', '\u{1d}', '\u{1e}', '\u{85}', '\u{2028}',
        '\u{2029}',
    ] {
        assert!(
            !line.contains(separator),
            "{separator:?} written raw in {line:?}"
        );
    }
    assert!(!line.chars().any(char::is_control), "{line:?}");
    // And the value is still exactly what the caller sent.
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["handshake_id"], hostile);
}
