//! The secret is sacred: at `trace` level, through successes and every failure, nothing the
//! gateway writes — stdout, stderr, error bodies, `/metrics`, `check` output — contains the token, its
//! base64 forms, a `redirection_url` or any of that URL's base64 query values.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use support::mock::{Fault, redirection_url};
use support::*;

const TRACE: &str = "[log]\nlevel = \"trace\"\nformat = \"json\"\n";

/// Every string whose appearance would be a leak, for this run's `redirection_url`s.
fn forbidden(redirection_urls: &[String]) -> Vec<String> {
    let bearer = format!("Bearer {TOKEN}");
    let mut needles = vec![TOKEN.to_owned()];
    for engine in [STANDARD, URL_SAFE] {
        for secret in [TOKEN, bearer.as_str()] {
            let encoded = engine.encode(secret);
            needles.push(encoded.trim_end_matches('=').to_owned());
        }
    }
    for url in redirection_urls {
        needles.push(url.clone());
        let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
        for pair in query.split('&') {
            if let Some((_, value)) = pair.split_once('=') {
                needles.push(value.trim_end_matches('=').to_owned());
            }
        }
    }
    needles
}

fn assert_clean(what: &str, text: &str, needles: &[String]) {
    for needle in needles {
        assert!(
            !text.contains(needle.as_str()),
            "{what} contains a forbidden value ({} chars)",
            needle.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_written_reveals_the_token_or_redirection_url() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(&format!(
        "{TRACE}{}[listen]\naddr = \"127.0.0.1:0\"\nmax_body_bytes = 256\n",
        upstream.upstream_table("1s", "600ms")
    )));
    let mut urls = Vec::new();
    let mut error_bodies = String::new();

    // Successes, with the token also fed in where a caller could put it.
    for (i, extra) in [
        ("x-caller-id", "orders-svc"),
        ("authorization", "Bearer caller-token"),
        ("x-request-id", TOKEN),
    ]
    .iter()
    .enumerate()
    {
        let body = format!(
            r#"{{"handshake_id":"scrub-{i}","callback_url":"https://app.example.com/cb"}}"#
        );
        let answer = send(gw.addr, post(INIT, &body, &[*extra])).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        urls.push(
            answer.json()["redirection_url"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let fed_in = send(
        gw.addr,
        post(
            INIT,
            &format!(r#"{{"handshake_id":"{TOKEN}"}}"#),
            &[("x-caller-id", TOKEN)],
        ),
    )
    .await;
    assert_eq!(fed_in.status, 200);
    urls.push(
        fed_in.json()["redirection_url"]
            .as_str()
            .unwrap()
            .to_owned(),
    );

    // KwikID's 500, then the gateway's own refusals and upstream failures.
    upstream.mock().set_fault(Fault::ServerError);
    assert_eq!(init(gw.addr, "{}").await.status, 500);
    upstream.mock().set_fault(Fault::None);
    let refusals = [
        init(
            gw.addr,
            &format!(r#"{{"handshake_id":"{}"}}"#, "x".repeat(300)),
        )
        .await,
        init(gw.addr, "[1,2]").await,
        init(
            gw.addr,
            &format!(r#"{{"handshake_id":{TOKEN:?}, "callback_url": 7}}"#),
        )
        .await,
        send(
            gw.addr,
            http::Request::get(INIT)
                .header("host", "gw")
                .body(Default::default())
                .unwrap(),
        )
        .await,
    ];
    for answer in &refusals {
        assert!(answer.gateway_error().is_some(), "{}", answer.text());
        error_bodies.push_str(&answer.text());
    }
    for fault in [
        Fault::Delay(Duration::from_secs(2)),
        Fault::Garbage,
        Fault::Reset,
    ] {
        upstream.mock().set_fault(fault);
        // The failure is logged with the request id, which the caller chose: the token.
        let answer = send(gw.addr, post(INIT, "{}", &[("x-request-id", TOKEN)])).await;
        assert!(
            [502, 504].contains(&answer.status.as_u16()),
            "{fault:?}: {}",
            answer.text()
        );
        error_bodies.push_str(&answer.text());
    }
    upstream.mock().set_fault(Fault::TooManyRequests {
        retry_after_secs: 1,
    });
    assert_eq!(init(gw.addr, "{}").await.status, 429);
    let held = init(gw.addr, "{}").await;
    held.assert_error(429, "rate_limited");
    error_bodies.push_str(&held.text());

    // KwikID's 401: a mock that accepts another token.
    let strict = upstream.another_accepting("some-other-token").await;
    let gw401 = Gateway::start(&config_for(
        &format!("https://localhost:{}", strict.addr.port()),
        &upstream.ca_file,
        TRACE,
    ));
    assert_eq!(init(gw401.addr, "{}").await.status, 401);

    let lines = 4 + 1 + refusals.len() + 3 + 2;
    gw.stdout.wait_count(lines, Duration::from_secs(10));
    gw401.stdout.wait_count(1, Duration::from_secs(10));
    let needles = forbidden(&urls);
    // The mock's own URL shape: make sure the needles match what a leak would look like.
    assert!(
        needles
            .iter()
            .any(|n| redirection_url("h", &format!("Bearer {TOKEN}"), 1).contains(n.as_str()))
    );

    assert!(
        gw.stderr.text().contains(r#""level":"TRACE""#) && gw.stderr.all().len() > 10,
        "trace level logs a lot: {}",
        gw.stderr.text()
    );
    for (name, gateway) in [("gateway", &gw), ("gateway-401", &gw401)] {
        assert_clean(&format!("{name} stdout"), &gateway.stdout.text(), &needles);
        assert_clean(&format!("{name} stderr"), &gateway.stderr.text(), &needles);
    }
    assert_clean("error bodies", &error_bodies, &needles);
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_clean("metrics", &metrics.text(), &needles);
    let redacted = gw
        .access_log()
        .iter()
        .filter(|l| l.to_string().contains("[REDACTED]"))
        .count();
    assert!(redacted >= 2, "fields that carried the token were redacted");

    // `check` at trace level with the same token.
    let out = check_config(&gw.config_path);
    assert!(out.status.success());
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("[REDACTED]"));
    assert_clean("check output", &printed, &needles);
}

/// Tokens whose standard and URL-safe base64 differ: `~` in the third byte of a group encodes
/// to `+` (`-` URL-safe), `?` to `/` (`_`). Runs of three put them at every offset, so the
/// base64 of `Bearer <token>` (7 bytes longer) differs too. Sixteen characters (one more than a
/// multiple of three, so both encodings are padded) keep even the fully percent-encoded forms
/// within the 128 characters a logged field keeps, so a leak would show whole.
const ODD_TOKENS: [&str; 2] = ["kwk~~~live~~~5a9", "kwk???key~~~?7f3"];

/// `text` with every byte outside RFC 3986's unreserved set as `%XX`.
fn percent_encode(text: &str, upper: bool) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// `text` with every byte as `%XX`.
fn percent_encode_all(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Every form of `token` a caller could send, each with what it is: the token and
/// `Bearer <token>`; the standard and URL-safe base64 of both, padded and unpadded, each
/// bare and after `Bearer `; and each of those percent-encoded (upper- and lower-case hex, and
/// every byte). Computed here from the base64 alphabets, not from the gateway's scrubber.
fn token_forms(token: &str) -> Vec<(String, String)> {
    let bearer = format!("Bearer {token}");
    let mut plain = vec![
        ("token".to_owned(), token.to_owned()),
        ("Bearer token".to_owned(), bearer.clone()),
    ];
    for (alphabet, engine) in [("standard", STANDARD), ("url-safe", URL_SAFE)] {
        for (what, secret) in [("token", token), ("Bearer token", bearer.as_str())] {
            let padded = engine.encode(secret);
            let unpadded = padded.trim_end_matches('=').to_owned();
            assert_ne!(padded, unpadded, "{what} is padded in base64");
            for (padding, encoded) in [("padded", padded), ("unpadded", unpadded)] {
                let name = format!("{alphabet} base64 of {what}, {padding}");
                plain.push((format!("Bearer + {name}"), format!("Bearer {encoded}")));
                plain.push((name, encoded));
            }
        }
    }
    let mut forms = plain.clone();
    for (name, form) in &plain {
        forms.push((
            format!("{name}, percent-encoded"),
            percent_encode(form, true),
        ));
        forms.push((
            format!("{name}, percent-encoded in lower case"),
            percent_encode(form, false),
        ));
        forms.push((
            format!("{name}, every byte percent-encoded"),
            percent_encode_all(form),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    forms.retain(|(_, form)| seen.insert(form.clone()));
    forms
}

/// What the gateway keeps of a caller's `x-request-id` or caller header: 1–128 visible ASCII
/// characters (otherwise it makes its own id, or names the caller by its address).
fn kept_as_header(value: &str) -> bool {
    !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic())
}

/// Guards against a scrubber that knows only some encodings of the token: a caller that sends
/// it URL-safe base64-encoded, padded, after `Bearer ` or percent-encoded in the `handshake_id`,
/// `x-request-id`, the caller header, the query string or the path must not get it onto stdout
/// or stderr at `trace` level; and the scrubbing must not touch what KwikID receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoding_of_the_token_in_every_logged_field_is_redacted() {
    let upstream = Upstream::start().await;
    let mut alphabet_differences = Vec::new();
    for token in ODD_TOKENS {
        for secret in [token.to_owned(), format!("Bearer {token}")] {
            let (standard, url_safe) = (STANDARD.encode(&secret), URL_SAFE.encode(&secret));
            assert_ne!(standard, url_safe, "the alphabets differ for {secret:?}");
            alphabet_differences.extend(standard.chars().filter(|c| "+/".contains(*c)));
        }
        scrubs_every_form(&upstream, token).await;
    }
    assert!(alphabet_differences.contains(&'+') && alphabet_differences.contains(&'/'));
}

async fn scrubs_every_form(upstream: &Upstream, token: &str) {
    let mock = upstream.another_accepting(token).await;
    let gw = Gateway::start_with_env(
        &config_for(
            &format!("https://localhost:{}", mock.addr.port()),
            &upstream.ca_file,
            TRACE,
        ),
        &[("KWIKID_API_TOKEN", token)],
    );
    let forms = token_forms(token);
    for (name, form) in &forms {
        assert!(form.len() <= 128, "{name} fits a logged field whole");
    }

    // One init request per form, the form in the handshake_id, x-request-id, the caller
    // header and the query. Each body has its own length, which names its access-log line.
    struct Sent {
        name: String,
        form: String,
        target: String,
        body: String,
        request_id: String,
    }
    let mut sent = Vec::new();
    for (i, (name, form)) in forms.iter().enumerate() {
        let handshake_id = serde_json::to_string(form).unwrap();
        let bare = format!(r#"{{"handshake_id":{handshake_id},"pad":""}}"#);
        let pad = "p".repeat(1000 + i - bare.len());
        let body = format!(r#"{{"handshake_id":{handshake_id},"pad":"{pad}"}}"#);
        // A space cannot be in a request target; the percent-encoded forms stand in for it.
        let target = if form.contains(' ') {
            INIT.to_owned()
        } else {
            format!("{INIT}?ref={form}")
        };
        let answer = send(
            gw.addr,
            post(
                &target,
                &body,
                &[("x-request-id", form), ("x-caller-id", form)],
            ),
        )
        .await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
        let request_id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
        if kept_as_header(form) {
            assert_eq!(&request_id, form, "{name}: the caller's request id is kept");
        } else {
            assert_eq!(request_id.len(), 26, "{name}: a ULID replaces {request_id}");
        }
        sent.push(Sent {
            name: name.clone(),
            form: form.clone(),
            target,
            body,
            request_id,
        });
    }

    // One request per form in the path: no route, answered 404, still logged.
    let mut expected_paths = Vec::new();
    for (name, form) in &forms {
        if form.contains(' ') {
            continue;
        }
        let target = format!("/{form}");
        let answer = send(gw.addr, post(&target, "{}", &[])).await;
        answer.assert_error(404, "no_route");
        let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
        expected_paths.push(if path.contains(form.as_str()) {
            "[REDACTED]".to_owned()
        } else {
            // A raw '?' ends the path: what is left of it is not the token.
            assert!(form.contains('?'), "{name}");
            path.to_owned()
        });
    }

    let total = sent.len() + expected_paths.len();
    gw.stdout.wait_for_count(
        "every access-log line",
        total,
        Duration::from_secs(30),
        |l| l.contains("\"token_id\""),
    );
    gw.stderr.wait_for_count(
        "a trace line for every forwarded request",
        sent.len(),
        Duration::from_secs(30),
        |l| l.contains("forwarding to KwikID"),
    );

    // No form, anywhere.
    let metrics = admin_get(gw.admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    for (output, text) in [
        ("stdout", gw.stdout.text()),
        ("stderr", gw.stderr.text()),
        ("/metrics", metrics.text()),
    ] {
        let leaked: Vec<&str> = forms
            .iter()
            .filter(|(_, form)| text.contains(form.as_str()))
            .map(|(name, _)| name.as_str())
            .collect();
        assert!(
            leaked.is_empty(),
            "{output} reveals the token as: {leaked:#?}"
        );
    }
    assert!(
        gw.stderr
            .all()
            .iter()
            .any(|l| l.contains(r#""level":"TRACE""#) && l.contains(r#""request_id":"[REDACTED]""#)),
        "the trace line names the request id redacted: {}",
        gw.stderr.text()
    );

    // Each field that carried a form shows `[REDACTED]`, the rest as the gateway keeps them.
    let log = gw.access_log();
    assert_eq!(log.len(), total, "one line per request");
    for (i, s) in sent.iter().enumerate() {
        let line = log
            .iter()
            .find(|l| l["bytes_in"] == 1000 + i)
            .unwrap_or_else(|| panic!("{}: no access-log line", s.name));
        assert_eq!(line["status"], 200, "{}: {line}", s.name);
        assert_eq!(line["path"], INIT, "{}: {line}", s.name);
        assert_eq!(line["handshake_id"], "[REDACTED]", "{}: {line}", s.name);
        let (id, caller) = if kept_as_header(&s.form) {
            ("[REDACTED]", "[REDACTED]")
        } else {
            (s.request_id.as_str(), "127.0.0.1")
        };
        assert_eq!(line["request_id"], id, "{}: {line}", s.name);
        assert_eq!(line["caller"], caller, "{}: {line}", s.name);
    }
    let mut logged_paths: Vec<String> = log
        .iter()
        .filter(|l| l["status"] == 404)
        .map(|l| l["path"].as_str().unwrap().to_owned())
        .collect();
    logged_paths.sort();
    expected_paths.sort();
    assert_eq!(logged_paths, expected_paths);

    // KwikID got every request as sent: scrubbing is for logs only.
    let received = mock.received();
    assert_eq!(received.len(), sent.len());
    for s in &sent {
        let got = received
            .iter()
            .find(|r| r.body == s.body.as_bytes())
            .unwrap_or_else(|| panic!("{}: KwikID did not get the body as sent", s.name));
        assert_eq!(got.target, s.target, "{}", s.name);
        assert_eq!(
            got.headers["x-request-id"],
            s.request_id.as_str(),
            "{}",
            s.name
        );
        assert_eq!(
            got.headers["authorization"],
            format!("Bearer {token}").as_str(),
            "{}",
            s.name
        );
        assert!(got.headers.get("x-caller-id").is_none(), "{}", s.name);
    }
}
