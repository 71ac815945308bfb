//! The gateway's HTTP/1.1 server as a caller sees it, in raw bytes over TCP: keep-alive,
//! pipelining, `Connection: close`, HTTP/1.0, `Expect: 100-continue`, chunked bodies, what
//! happens to a body the gateway never read, malformed heads, response framing, the idle
//! timeout and case-insensitive header stripping. These pin behaviour, not implementation:
//! they must hold whatever parses the bytes.

mod support;

use support::*;
use tokio::io::AsyncReadExt;

/// An honest init (`{}` body) in raw bytes, tagged with `id` so answers and the mock's
/// records can be matched to it; `extra` is more header lines, each ending in CRLF.
fn init_request(version: &str, id: &str, extra: &str) -> String {
    format!(
        "POST {INIT} HTTP/{version}\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: {id}\r\n{extra}Content-Length: 2\r\n\r\n{{}}"
    )
}

/// Reads exactly one response head (status line and headers, CRLF CRLF excluded) byte by
/// byte: `RawConn::read_response` skips 1xx, and the 100-continue cases must see it, and must
/// not swallow what follows it.
async fn read_head_raw(conn: &mut RawConn) -> String {
    let mut head = Vec::new();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout_at(deadline, conn.stream.read(&mut byte))
            .await
            .expect("a response head in time")
            .expect("a response head, not a reset");
        assert_eq!(
            n,
            1,
            "closed mid-head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    head.truncate(head.len() - 4);
    String::from_utf8(head).unwrap()
}

/// The x-request-ids KwikID received, in order: proves only honest requests got through.
fn received_ids(upstream: &Upstream) -> Vec<String> {
    upstream
        .mock()
        .received()
        .iter()
        .map(|r| {
            r.headers
                .get("x-request-id")
                .map_or_else(|| "<none>".to_owned(), |v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

/// A response framed by exactly one Content-Length that matches its body, never chunked.
fn assert_framed(r: &RawResponse) {
    let lengths = r.header_all("content-length");
    assert_eq!(lengths.len(), 1, "one content-length: {}", r.head);
    assert_eq!(lengths[0], r.body.len().to_string(), "{}", r.head);
    assert!(
        r.header_all("transfer-encoding").is_empty(),
        "no transfer-encoding: {}",
        r.head
    );
}

/// One of the gateway's own answers (status, code, JSON content type and the exact body: see
/// `assert_gateway_answer`), framed, with a date and a request id.
fn assert_own_answer(r: &RawResponse, status: u16, code: &str, body: &str) {
    assert_gateway_answer(r, status, code, body);
    assert_framed(r);
    assert!(r.header("date").is_some(), "a date header: {}", r.head);
    assert!(r.header("x-request-id").is_some(), "{}", r.head);
}

/// Either the next response on `conn`, or `None` when the gateway closed (or reset) the
/// connection instead of answering.
async fn answer_or_closed(conn: &mut RawConn) -> Option<RawResponse> {
    match conn.read_response(HANG_GUARD).await {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            panic!("neither answer nor close: {e}")
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => panic!("not HTTP: {e}"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => panic!("{e}"),
        Err(_) => None,
    }
}

/// 1. Keep-alive: three requests one after another on one connection, three 200s, each
/// framed by Content-Length, carrying its x-request-id and not announcing a close; KwikID
/// served all three. Guards against a connection closed (or announced closed) after each
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_requests_one_after_another() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..3 {
        let id = format!("ka-{i}");
        let r = conn
            .round_trip(init_request("1.1", &id, "").as_bytes())
            .await;
        assert_eq!(r.status, 200, "#{i}: {}", r.head);
        assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
        assert_framed(&r);
        assert_eq!(r.header("x-request-id").as_deref(), Some(id.as_str()));
        assert!(r.header("connection").is_none(), "{}", r.head);
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(json["redirection_url"].is_string(), "{json}");
    }
    assert_eq!(upstream.mock().served(), 3);
    assert_eq!(received_ids(&upstream), ["ka-0", "ka-1", "ka-2"]);
}

/// 2. Pipelining: two whole requests in one write get two 200s, in request order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut conn = RawConn::connect(gw.addr).await;
    let wire = init_request("1.1", "pipe-a", "") + &init_request("1.1", "pipe-b", "");
    conn.send(wire.as_bytes()).await.unwrap();
    for id in ["pipe-a", "pipe-b"] {
        let r = conn.next_response().await;
        assert_eq!(r.status, 200, "{id}: {}", r.head);
        assert_framed(&r);
        assert_eq!(r.header("x-request-id").as_deref(), Some(id));
    }
    assert_eq!(received_ids(&upstream), ["pipe-a", "pipe-b"]);
}

/// 3. `Connection: close` from the caller: answered, then closed by the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_answered_then_closed() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut conn = RawConn::connect(gw.addr).await;
    let r = conn
        .round_trip(init_request("1.1", "cc", "Connection: close\r\n").as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_framed(&r);
    // RFC 9112 §9.6: the server SHOULD say it closes; the current build does.
    assert_eq!(
        r.header("connection").as_deref(),
        Some("close"),
        "{}",
        r.head
    );
    assert_eq!(conn.closed_within(HANG_GUARD).await, Ok(true));
    assert_eq!(received_ids(&upstream), ["cc"]);
}

/// 4. HTTP/1.0: without `Connection: keep-alive` one answer and a close; with it, the
/// connection serves a second request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_closes_unless_keep_alive() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));

    let mut conn = RawConn::connect(gw.addr).await;
    let r = conn
        .round_trip(init_request("1.0", "ten", "").as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_framed(&r);
    assert_ne!(
        r.header("connection")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Some("keep-alive"),
        "{}",
        r.head
    );
    assert_eq!(conn.closed_within(HANG_GUARD).await, Ok(true));

    let mut conn = RawConn::connect(gw.addr).await;
    for id in ["ten-ka-1", "ten-ka-2"] {
        let r = conn
            .round_trip(init_request("1.0", id, "Connection: keep-alive\r\n").as_bytes())
            .await;
        assert_eq!(r.status, 200, "{id}: {}", r.head);
        assert_framed(&r);
        assert_eq!(r.header("x-request-id").as_deref(), Some(id));
        // An HTTP/1.0 client keeps the connection only if the answer says so.
        assert_eq!(
            r.header("connection")
                .map(|v| v.to_ascii_lowercase())
                .as_deref(),
            Some("keep-alive"),
            "{}",
            r.head
        );
    }
    assert_eq!(received_ids(&upstream), ["ten", "ten-ka-1", "ten-ka-2"]);
}

/// 5. `Expect: 100-continue`: the gateway sends `100 Continue` for a request it will read,
/// then the final answer; for one it refuses before the body (404, 413), the final answer
/// comes first and no 100 at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue() {
    let upstream = Upstream::start().await;
    let gw =
        Gateway::start(&upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nmax_body_bytes = 64\n"));

    let mut conn = RawConn::connect(gw.addr).await;
    let request = init_request("1.1", "expect", "Expect: 100-continue\r\n");
    let (head, body) = request.split_at(request.len() - 2);
    conn.send(head.as_bytes()).await.unwrap();
    let interim = read_head_raw(&mut conn).await;
    assert!(interim.starts_with("HTTP/1.1 100 "), "{interim:?}");
    assert_eq!(
        upstream.mock().served(),
        0,
        "nothing forwarded before the body"
    );
    let r = conn.round_trip(body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_framed(&r);
    assert_eq!(r.header("x-request-id").as_deref(), Some("expect"));
    let received = upstream.mock().received();
    assert_eq!(received.len(), 1);
    assert_eq!(&received[0].body[..], b"{}");
    // The connection goes on serving.
    conn.send(init_request("1.1", "after-expect", "").as_bytes())
        .await
        .unwrap();
    assert_eq!(conn.next_response().await.status, 200);

    for (target, length, status) in [("/nope", 2, 404), (INIT, 65, 413)] {
        let mut conn = RawConn::connect(gw.addr).await;
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
        );
        conn.send(head.as_bytes()).await.unwrap();
        let first = read_head_raw(&mut conn).await;
        assert!(
            first.starts_with(&format!("HTTP/1.1 {status} ")),
            "{target}: the final answer, no 100: {first:?}"
        );
    }
    assert_eq!(received_ids(&upstream), ["expect", "after-expect"]);
}

/// 6. Chunked bodies: chunks with extensions reassemble to exactly `{}` at KwikID; a trailer
/// section is accepted (and not forwarded) and the connection serves the next request, also
/// when the request arrives one byte at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_with_extensions_and_trailers() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let head = |id: &str| {
        format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: {id}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
    };

    let mut conn = RawConn::connect(gw.addr).await;
    let wire = head("ext") + "1\r\n{\r\n1;ext=1\r\n}\r\n0\r\n\r\n";
    let r = conn.round_trip(wire.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_framed(&r);

    let wire = head("trailer") + "2\r\n{}\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let r = conn.round_trip(wire.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-request-id").as_deref(), Some("trailer"));

    let r = conn
        .round_trip(init_request("1.1", "after-trailer", "").as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-request-id").as_deref(), Some("after-trailer"));

    // The same, one byte per write: every boundary of head, chunk size, extension, data and
    // trailer falls between two reads at least once.
    conn.stream.set_nodelay(true).unwrap();
    let wire = head("bytewise") + "1;ext=\"q\"\r\n{\r\n1\r\n}\r\n0\r\nX-Trailer: 1\r\n\r\n";
    for byte in wire.as_bytes() {
        conn.send(std::slice::from_ref(byte)).await.unwrap();
    }
    let r = conn.next_response().await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-request-id").as_deref(), Some("bytewise"));

    let received = upstream.mock().received();
    assert_eq!(
        received_ids(&upstream),
        ["ext", "trailer", "after-trailer", "bytewise"]
    );
    for r in &received {
        assert_eq!(&r.body[..], b"{}", "{:?}", r.headers);
        assert!(
            r.headers.get("x-trailer").is_none(),
            "trailers are not forwarded"
        );
    }
}

/// 7. A request refused before its body is read (404 `no_route`, 405 `method_not_allowed`):
/// the body, even one that is a whole request, is never read as a request. The next request
/// on the connection is answered 200, or the connection is closed; KwikID only ever sees the
/// honest requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_refused_unread_is_never_a_request() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let hidden = init_request("1.1", "smuggled", "");
    let mut served_next = 0;
    for (n, (method, target, status, code, expected)) in [
        ("POST", "/nope", 404, "no_route", NO_ROUTE_BODY),
        ("GET", INIT, 405, "method_not_allowed", METHOD_BODY),
    ]
    .into_iter()
    .enumerate()
    {
        for (m, body) in ["{}", hidden.as_str()].into_iter().enumerate() {
            for mode in ["after the answer", "pipelined", "body after the answer"] {
                let honest = format!("honest-{n}-{m}-{}", mode.replace(' ', "-"));
                let refused = format!(
                    "{method} {target} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: refused\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let next = init_request("1.1", &honest, "");
                let mut conn = RawConn::connect(gw.addr).await;
                let (refused_head, refused_body) = refused.split_at(refused.len() - body.len());
                match mode {
                    "pipelined" => conn
                        .send((refused.clone() + &next).as_bytes())
                        .await
                        .unwrap(),
                    "after the answer" => conn.send(refused.as_bytes()).await.unwrap(),
                    _ => conn.send(refused_head.as_bytes()).await.unwrap(),
                }
                let r = conn.next_response().await;
                assert_own_answer(&r, status, code, expected);
                assert_eq!(r.header("x-request-id").as_deref(), Some("refused"));
                if status == 405 {
                    assert_eq!(r.header("allow").as_deref(), Some("POST"));
                }
                // The gateway may have closed already: a failed write is a close too.
                match mode {
                    "after the answer" => drop(conn.send(next.as_bytes()).await),
                    "body after the answer" => drop(
                        conn.send((refused_body.to_owned() + &next).as_bytes())
                            .await,
                    ),
                    _ => {}
                }
                let what = format!("{method} {target}, body {m}, {mode}");
                match answer_or_closed(&mut conn).await {
                    Some(r) => {
                        assert_eq!(r.status, 200, "{what}: {}", r.head);
                        assert_eq!(
                            r.header("x-request-id").as_deref(),
                            Some(honest.as_str()),
                            "{what}"
                        );
                        served_next += 1;
                        eprintln!("{what}: the connection served the next request");
                    }
                    None => eprintln!("{what}: the connection was closed"),
                }
            }
        }
    }
    assert_eq!(upstream.mock().served(), served_next);
    let ids = received_ids(&upstream);
    assert!(
        ids.iter().all(|id| id.starts_with("honest-")),
        "only honest requests reached KwikID: {ids:?}"
    );
    for r in upstream.mock().received() {
        assert_eq!(r.target, INIT);
        assert_eq!(&r.body[..], b"{}");
    }
    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 200);
}

/// 8. A Content-Length over `max_body_bytes` gets 413 `body_too_large` before the body is
/// sent, and the connection is closed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_oversized_body_gets_413_then_close() {
    let upstream = Upstream::start().await;
    let gw =
        Gateway::start(&upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nmax_body_bytes = 64\n"));
    for length in [65, 1_000_000_000] {
        let mut conn = RawConn::connect(gw.addr).await;
        let head = format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: big-{length}\r\nContent-Length: {length}\r\n\r\n"
        );
        let r = conn.round_trip(head.as_bytes()).await;
        assert_own_answer(&r, 413, "body_too_large", TOO_LARGE_BODY);
        assert_eq!(
            conn.closed_within(HANG_GUARD).await,
            Ok(true),
            "closed after 413 for Content-Length {length}"
        );
    }
    assert_eq!(upstream.mock().served(), 0);
    assert_eq!(init(gw.addr, "{}").await.status, 200);
}

/// 9. Malformed heads get 400 `bad_request` (see `assert_400_bad_request`), then the
/// connection is closed; none reaches KwikID and the gateway goes on serving honest callers.
/// Guards against a parser that guesses at a broken head, or leaves the connection open after
/// refusing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_are_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    for (i, (what, wire)) in [
        ("garbage", "GARBAGE\r\n\r\n".to_owned()),
        (
            "bad version",
            format!("POST {INIT} HTTP/9.9\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{{}}"),
        ),
        (
            "header without colon",
            format!(
                "POST {INIT} HTTP/1.1\r\nHost: gw\r\nNoColonHere\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
        ),
        (
            "no version",
            format!("POST {INIT}\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{{}}"),
        ),
        (
            "space in target",
            format!("POST {INIT} x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{{}}"),
        ),
        (
            "NUL in header value",
            format!(
                "POST {INIT} HTTP/1.1\r\nHost: gw\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
        ),
        (
            "space before colon",
            format!("POST {INIT} HTTP/1.1\r\nHost: gw\r\nX-A : b\r\nContent-Length: 2\r\n\r\n{{}}"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        eprintln!("{what}");
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(wire.as_bytes()).await.unwrap();
        assert_400_bad_request(&gw, &mut conn).await;
        assert_eq!(upstream.mock().served(), i as u64, "{what} reached KwikID");
        assert_eq!(init(gw.addr, "{}").await.status, 200, "after {what}");
    }
    assert_eq!(upstream.mock().served(), 7);
}

/// 10. Response framing: a forwarded 200 on a keep-alive connection has one Content-Length
/// and no Transfer-Encoding; the gateway's own answers are JSON with a Content-Length and a
/// Date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_framed_by_content_length() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut conn = RawConn::connect(gw.addr).await;
    let r = conn
        .round_trip(init_request("1.1", "framed", "Connection: keep-alive\r\n").as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_framed(&r);
    assert!(r.header("date").is_some(), "{}", r.head);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );

    let refused =
        "POST /nope HTTP/1.1\r\nHost: gw\r\nX-Request-Id: own\r\nContent-Length: 2\r\n\r\n{}";
    let r = conn.round_trip(refused.as_bytes()).await;
    assert_own_answer(&r, 404, "no_route", NO_ROUTE_BODY);
    assert_eq!(received_ids(&upstream), ["framed"]);
}

/// 11. Connections that stopped sending are closed: one that never sent a byte and one that
/// sent half a head after `header_read_timeout` (the half head gets 408 `header_timeout`, see
/// `assert_408_header_timeout`), an idle keep-alive connection after `idle_timeout`, each
/// without a word; new connections are served meanwhile. Guards against a slow or silent
/// caller holding a connection for ever, and against an idle connection being answered with
/// a stray 408. (`tests/keep_alive.rs` shows that the two timeouts are apart.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_are_closed() {
    let upstream = Upstream::start().await;
    // Far below the defaults, so the test does not wait long for them to fire; nothing here
    // depends on how soon they fire.
    let gw = Gateway::start(&upstream.config(
        "[listen]\naddr = \"127.0.0.1:0\"\nheader_read_timeout = \"500ms\"\nidle_timeout = \"1s\"\n",
    ));

    let mut kept = RawConn::connect(gw.addr).await;
    let r = kept
        .round_trip(init_request("1.1", "before-idle", "").as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.header("connection").is_none(), "kept alive: {}", r.head);
    let mut silent = RawConn::connect(gw.addr).await;
    let mut half = RawConn::connect(gw.addr).await;
    half.send(b"POST /verification/v2/digi").await.unwrap();

    assert_eq!(
        init(gw.addr, "{}").await.status,
        200,
        "a fresh connection is served"
    );

    assert_408_header_timeout(&gw, &mut half).await;
    for (what, conn) in [("idle keep-alive", &mut kept), ("silent", &mut silent)] {
        assert_eq!(
            conn.closed_within(HANG_GUARD).await,
            Ok(true),
            "{what}: closed, with no answer"
        );
    }
    assert_eq!(init(gw.addr, "{}").await.status, 200, "still serving");
    assert_eq!(upstream.mock().served(), 3);
}

/// 12. Credentials, topology and hop-by-hop headers are stripped whatever their case; other
/// headers reach KwikID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_stripping_ignores_case() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut conn = RawConn::connect(gw.addr).await;
    let extra = "AUTHORIZATION: Bearer caller\r\n\
                 Proxy-AUTHORIZATION: Basic eDp5\r\n\
                 X-Forwarded-For: 1.2.3.4\r\n\
                 x-FORWARDED-proto: http\r\n\
                 FORWARDED: for=1.2.3.4\r\n\
                 X-REAL-IP: 1.2.3.4\r\n\
                 VIA: 1.1 other\r\n\
                 cOOkie: a=b\r\n\
                 X-CALLER-ID: orders-svc\r\n\
                 Connection: keep-alive, X-HOP\r\n\
                 x-hop: 1\r\n\
                 KEEP-ALIVE: timeout=5\r\n\
                 X-Custom: kept\r\n";
    let r = conn
        .round_trip(init_request("1.1", "strip", extra).as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let received = upstream.mock().received();
    assert_eq!(received.len(), 1);
    let headers = &received[0].headers;
    let authorization: Vec<_> = headers.get_all("authorization").iter().collect();
    assert_eq!(authorization.len(), 1, "{headers:?}");
    assert_eq!(authorization[0], format!("Bearer {TOKEN}").as_str());
    for name in [
        "proxy-authorization",
        "x-forwarded-for",
        "x-forwarded-proto",
        "forwarded",
        "x-real-ip",
        "via",
        "cookie",
        "x-caller-id",
        "x-hop",
        "keep-alive",
    ] {
        assert!(
            headers.get(name).is_none(),
            "{name} reached KwikID: {headers:?}"
        );
    }
    assert!(
        !headers.get_all("connection").iter().any(|v| v
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-hop")),
        "{headers:?}"
    );
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["x-request-id"], "strip");
}
