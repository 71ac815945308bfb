//! SPEC §4, row by row: what a request that fails each check gets, and that nothing reached
//! KwikID when the gateway answered itself.

mod support;

use support::*;

/// Sends `wire` (a request with `Connection: close`) on a new connection and asserts the
/// gateway's own answer exactly (see `assert_refused_then_closed`): status, `x-gateway-error`,
/// JSON content type, the body byte for byte and `connection: close`; then that the
/// connection is closed. An empty or partial reply fails.
async fn assert_raw_refusal(gw: &Gateway, wire: &[u8], status: u16, code: &str, body: &str) {
    // Names the request in a failing test's output.
    eprintln!("{:?}", String::from_utf8_lossy(&wire[..wire.len().min(80)]));
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(wire).await.unwrap();
    assert_refused_then_closed(&mut conn, status, code, body).await;
}

/// Row 1: a peer outside `allow_cidrs` gets 403, whatever it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_gets_403() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(
        "[listen]\naddr = \"127.0.0.1:0\"\nallow_cidrs = [\"10.0.0.0/8\", \"192.0.2.7\"]\n",
    ));
    let answer = send(
        gw.addr,
        post(INIT, "{}", &[("x-forwarded-for", "10.1.1.1")]),
    )
    .await;
    answer.assert_error(403, "caller_not_allowed");
    assert_eq!(gw.access_line(1)["outcome"], "caller_not_allowed");
    assert!(upstream.mock().received().is_empty());
}

/// Row 2: anything but the exact route is 404; only the method differing is 405 with Allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_exact_and_tricky_paths_are_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));

    let answer = send(
        gw.addr,
        http::Request::get(INIT)
            .header("host", "gw")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    answer.assert_error(405, "method_not_allowed");
    assert_eq!(answer.headers["allow"], "POST");

    for path in [
        "/",
        "/verification/v2/digilocker/init/",
        "/verification/v2/digilocker/initx",
        "/verification/v2/digilocker/status",
        "/verification/v2/digilocker/./init",
        "/verification/v2/digilocker/x/../init",
        "/verification/v2/digilocker/%2e%2e/digilocker/init",
        "/verification/v2/digilocker%2Finit",
        "/verification/v2/digilocker%5cinit",
        "//verification/v2/digilocker/init",
        "/verification//v2/digilocker/init",
        "/verification/v2/digilocker/init%2E",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        assert_raw_refusal(&gw, request.as_bytes(), 404, "no_route", NO_ROUTE_BODY).await;
    }
    // A raw backslash: a path no route has.
    assert_raw_refusal(
        &gw,
        b"POST /verification\\v2/digilocker/init HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        404,
        "no_route",
        NO_ROUTE_BODY,
    )
    .await;
    assert!(upstream.mock().received().is_empty());
}

/// Row 3: bodies over `max_body_bytes` get 413, announced by Content-Length or streamed
/// chunked, without the gateway buffering past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_even_when_chunked() {
    let upstream = Upstream::start().await;
    let gw =
        Gateway::start(&upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nmax_body_bytes = 64\n"));

    let big = format!("{{\"handshake_id\":\"{}\"}}", "x".repeat(100));
    init(gw.addr, &big)
        .await
        .assert_error(413, "body_too_large");

    // Chunked, no Content-Length: 3 chunks of 40 bytes, the limit passes in the second.
    let chunk = format!("28\r\n{}\r\n", "a".repeat(40));
    let chunked = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    assert_raw_refusal(
        &gw,
        chunked.as_bytes(),
        413,
        "body_too_large",
        TOO_LARGE_BODY,
    )
    .await;

    // A huge announced body is refused before it is sent (no 100-continue wait, no buffering).
    let announced = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\n"
    );
    assert_raw_refusal(
        &gw,
        announced.as_bytes(),
        413,
        "body_too_large",
        TOO_LARGE_BODY,
    )
    .await;

    // Exactly at the limit is fine.
    let exact = format!("{{\"handshake_id\":\"{}\"}}", "y".repeat(64 - 19));
    assert_eq!(exact.len(), 64);
    assert_eq!(init(gw.addr, &exact).await.status, 200);
    assert_eq!(upstream.mock().received().len(), 1);
}

/// Row 4: the body must be a JSON object whose known fields are strings or null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bodies_get_400() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    for body in [
        "",
        "[]",
        "null",
        "{",
        "{} trailing",
        r#"{"handshake_id": 5}"#,
        r#"{"callback_url": ["x"]}"#,
        r#"{"handshake_id":"a","handshake_id":"b"}"#,
    ] {
        let answer = init(gw.addr, body).await;
        answer.assert_error(400, "invalid_body");
        assert!(
            !answer.text().contains("trailing"),
            "the body is never echoed"
        );
    }
    for body in [
        "{}",
        r#"{"handshake_id": null, "callback_url": null, "extra": 1}"#,
    ] {
        assert_eq!(init(gw.addr, body).await.status, 200, "{body}");
    }
    assert_eq!(upstream.mock().received().len(), 2);
}

/// Row 5: with `callback_hosts`, callback_url must be https on an allowed host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_policy_gets_422() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(
        &upstream.config("[policy]\ncallback_hosts = [\"app.example.com\", \"*.example.org\"]\n"),
    );
    for url in [
        "http://app.example.com/cb",
        "https://evil.example/cb",
        "https://example.org/cb",
        "not a url",
    ] {
        init(gw.addr, &format!("{{\"callback_url\":\"{url}\"}}"))
            .await
            .assert_error(422, "callback_not_allowed");
    }
    for url in [
        "https://APP.example.com:8443/cb",
        "https://x.y.example.org/cb",
    ] {
        assert_eq!(
            init(gw.addr, &format!("{{\"callback_url\":\"{url}\"}}"))
                .await
                .status,
            200,
            "{url}"
        );
    }
    assert_eq!(
        init(gw.addr, "{}").await.status,
        200,
        "no callback_url: the account default applies"
    );
    assert_eq!(upstream.mock().received().len(), 3);
}

/// Row 5, without `callback_hosts`: any https host, never plain http (KwikID asks for HTTPS
/// callbacks in production) unless `allow_http_callbacks` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_callbacks_need_allow_http_callbacks() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    for url in ["http://app.example.com/cb", "javascript:alert(1)", "/cb"] {
        init(gw.addr, &format!("{{\"callback_url\":\"{url}\"}}"))
            .await
            .assert_error(422, "callback_not_allowed");
    }
    let https = init(gw.addr, r#"{"callback_url":"https://any.example/cb"}"#).await;
    assert_eq!(https.status, 200);
    assert_eq!(upstream.mock().received().len(), 1);

    // Every peer trusted: allowed, and warned about at start, naming the key.
    let open = Gateway::start(&upstream.config(
        "[policy]\nallow_http_callbacks = true\n[listen]\naddr = \"127.0.0.1:0\"\nallow_cidrs = [\"0.0.0.0/0\"]\n",
    ));
    let warning = open.stderr.wait_for("the config warning", HANG_GUARD, |l| {
        l.contains("listen.allow_cidrs: 0.0.0.0/0 trusts every IPv4 peer")
    });
    assert!(
        warning.contains("WARN") || warning.contains("\"warn"),
        "{warning}"
    );
    let http = init(open.addr, r#"{"callback_url":"http://app.example.com/cb"}"#).await;
    assert_eq!(http.status, 200);
    assert_eq!(upstream.mock().received().len(), 2);
}

/// Row 6: the caller's bucket first, then the global one; 429 with a whole-second
/// Retry-After of at least 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(
        "[rate_limit]\nglobal = { per_second = 0.2, burst = 3 }\nper_caller = { per_second = 0.5, burst = 2 }\n",
    ));
    let call = |caller: &'static str| init_as(gw.addr, caller);
    assert_eq!(call("a").await.status, 200);
    assert_eq!(call("a").await.status, 200);
    let refused = call("a").await;
    refused.assert_error(429, "rate_limited");
    assert_eq!(
        refused.headers["retry-after"], "2",
        "0.5/s: the next permit is 2 s away"
    );

    assert_eq!(
        call("b").await.status,
        200,
        "b has its own share; the account has one permit left"
    );
    let global = call("c").await;
    global.assert_error(429, "rate_limited");
    assert_eq!(global.headers["retry-after"], "5", "0.2/s: 5 s");
    assert_eq!(upstream.mock().received().len(), 3);
    let last = gw.access_line(5);
    assert_eq!(
        (last["caller"].as_str(), last["outcome"].as_str()),
        (Some("c"), Some("rate_limited"))
    );
}

/// `max_wait`: a request that finds its caller's bucket empty waits inside the gateway for
/// the next permit and is then forwarded, instead of getting 429. Guards against `max_wait`
/// being ignored (or the wait being spent before the request is counted in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_lets_a_request_wait_for_a_permit() {
    let upstream = Upstream::start().await;
    // One permit, the next 5 s later: the second request cannot find one waiting for it.
    let gw = Gateway::start(&upstream.config(
        "[rate_limit]\nglobal = { per_second = 1000, burst = 1000 }\nper_caller = { per_second = 0.2, burst = 1 }\nmax_wait = \"30s\"\n",
    ));
    assert_eq!(init(gw.addr, "{}").await.status, 200, "the only permit");
    let addr = gw.addr;
    let second = tokio::spawn(async move { init(addr, "{}").await });
    // The event that shows the wait: the second request is in flight in the gateway while
    // KwikID has still seen only the first.
    eventually(
        "the second request held in the gateway",
        HANG_GUARD,
        || async {
            metric(&metrics(gw.admin).await, "kwikid_gateway_in_flight") == Some(1.0)
                && upstream.mock().served() == 1
        },
    )
    .await;
    let answer = tokio::time::timeout(HANG_GUARD, second)
        .await
        .expect("the permit comes within max_wait")
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.gateway_error().is_none(), "{}", answer.text());
    assert_eq!(upstream.mock().served(), 2);
    let metrics = metrics(gw.admin).await;
    for scope in ["caller", "global", "upstream"] {
        let series = format!("kwikid_gateway_rate_limited_total{{scope=\"{scope}\"}}");
        assert_eq!(
            metric(&metrics, &series),
            Some(0.0),
            "nothing was rate limited:\n{metrics}"
        );
    }
    let outcomes: Vec<String> = gw
        .stdout
        .wait_count(2, HANG_GUARD)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["outcome"].to_string())
        .collect();
    assert_eq!(outcomes, ["\"forwarded\"", "\"forwarded\""]);
}

/// A body that never arrives: `request_timeout` fires, and the caller gets 408
/// `body_timeout` and a closed connection; the access log says `body_timeout`. Guards
/// against a slow body holding a slot for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(&upstream.upstream_table("1s", "500ms")));
    let request = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nX-Request-Id: slow-body\r\nContent-Length: 10\r\nConnection: close\r\n\r\n{{"
    );
    assert_raw_refusal(
        &gw,
        request.as_bytes(),
        408,
        "body_timeout",
        BODY_TIMEOUT_BODY,
    )
    .await;
    let line = gw.access_line(1);
    assert_eq!(
        (&line["request_id"], &line["status"], &line["outcome"]),
        (
            &serde_json::json!("slow-body"),
            &serde_json::json!(408),
            &serde_json::json!("body_timeout")
        ),
        "{line}"
    );
    assert_eq!(upstream.mock().served(), 0);
}
