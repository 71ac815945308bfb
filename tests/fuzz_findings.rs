//! What the fuzz targets (fuzz/) found, fixed and pinned as regression tests.

mod support;

use std::path::Path;

use kwikid_gateway::config::Config;
use kwikid_gateway::rules::body::parse_init;
use support::*;

/// fuzz/config_loader: SPEC §2 says a bad config is reported in exactly one line, but a key
/// or a file path that holds a line break (TOML escapes allow both) is printed as is.
#[test]

fn config_errors_stay_on_one_line_whatever_the_keys_and_paths() {
    for text in [
        // A quoted key with an escaped newline: `listen.a<LF>b (line 2): unknown field …`.
        "[listen]\n\"a\\nb\" = 1\n",
        // File paths with a newline: `cannot read x<LF>y: …`.
        "[upstream]\nbase_url = \"https://a.example\"\nca_file = \"x\\ny\"\n",
        "[upstream]\nbase_url = \"https://a.example\"\n[listen.tls]\ncert_file = \"c\\r\\nd\"\nkey_file = \"k\"\n",
        "[upstream]\nbase_url = \"https://a.example\"\nca_file = \"\"\"\nmulti\nline\"\"\"\n",
    ] {
        let error = Config::parse(Path::new("fuzz.toml"), text)
            .map(|_| ())
            .expect_err("an invalid config");
        let line = error.to_string();
        assert!(!line.contains(['\n', '\r']), "{text:?} gives {line:?}");
    }
}

/// The same through the binary: exit 2 and exactly one line on stderr.
#[test]

fn check_prints_one_line_for_a_path_with_a_line_break() {
    let scratch = Scratch::new();
    let config = scratch.write(
        "bad.toml",
        "[upstream]\nbase_url = \"https://a.example\"\nca_file = \"x\\ny\"\n",
    );
    let out = check_config(&config);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
}

/// fuzz/body_validator: a body with bytes that are not UTF-8 inside a value the gateway does
/// not read is not JSON (RFC 8259 §8.1), yet `parse_init` accepted it (serde_json skips ignored
/// values without checking their UTF-8) and the gateway forwarded it to KwikID. Expected:
/// 400 invalid_body, like any other body that is not a JSON object.
#[test]

fn bodies_that_are_not_utf8_are_refused() {
    for body in [
        &b"{\"x\":\"\x96\"}"[..],
        b"{\"handshake_id\":\"s-1\",\"note\":\"caf\xe9\"}",
        b"{\"x\":[\"\xff\xfe\"]}",
    ] {
        assert!(
            parse_init(body).is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(body)
        );
    }
}

/// The same end to end: nothing that is not JSON reaches KwikID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_body_that_is_not_utf8_never_reaches_kwikid() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let body = b"{\"x\":\"\x96\"}";
    let mut request = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let answer = raw(gw.addr, &request).await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(answer.contains("x-gateway-error: invalid_body"), "{answer}");
    assert_eq!(
        upstream.mock().served(),
        0,
        "a body that is not JSON reached KwikID"
    );
}
