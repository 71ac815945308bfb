//! The secret is sacred: at `trace` level, through successes and every failure, nothing the
//! gateway writes — stdout, stderr, error bodies, `/metrics`, `check` output — contains the token, its
//! base64 forms, a `redirection_url` or any of that URL's base64 query values.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use kwikid_gateway::mock::{Fault, redirection_url};
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
