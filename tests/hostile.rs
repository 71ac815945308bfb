//! Hostile callers against the real gateway binary, in raw bytes: request smuggling, header
//! floods, slow bodies, pipelined floods and thousands of abandoned connections. After each
//! attack the gateway must still serve an honest caller, and nothing the attacker hid may
//! reach KwikID.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;

const SMUGGLED_ID: &str = "smuggled-request";

/// A complete second request, to hide inside a first one's body.
fn smuggled() -> String {
    format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Request-Id: {SMUGGLED_ID}\r\n\r\n{{}}"
    )
}

fn smuggled_reached(upstream: &Upstream) -> bool {
    upstream.mock().received().iter().any(|r| {
        r.headers
            .get("x-request-id")
            .is_some_and(|v| v == SMUGGLED_ID)
            || r.target != INIT
    })
}

/// A second handle on `conn`'s socket, for writing a flood in the background while `conn`
/// reads the answer (the gateway may answer before it has read everything).
fn writer_for(conn: &RawConn) -> tokio::net::TcpStream {
    use std::os::fd::AsFd;
    let fd = conn.stream.as_fd().try_clone_to_owned().unwrap();
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)).unwrap()
}

async fn still_serves(gw: &Gateway) {
    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// Content-Length and Transfer-Encoding together, in both orders: the one answer SECURITY.md
/// and the README give. `Transfer-Encoding: chunked` frames the body (RFC 9112 §6.3), so the
/// request is forwarded with the chunked body `{}` and answered 200 with `connection: close`,
/// and the connection is closed: the bytes past the chunked body (a whole second request) are
/// never read as one. Guards against request smuggling by a CL/TE disagreement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_one_request_then_close() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    for (n, te_first) in [(1, false), (2, true)] {
        let id = format!("clte-{n}");
        let rest = format!("2\r\n{{}}\r\n0\r\n\r\n{}", smuggled());
        let (first, second) = (
            format!("Content-Length: {}\r\n", rest.len()),
            "Transfer-Encoding: chunked\r\n".to_owned(),
        );
        let (first, second) = if te_first {
            (second, first)
        } else {
            (first, second)
        };
        let request = format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: {id}\r\n{first}{second}\r\n{rest}"
        );
        let mut conn = RawConn::connect(gw.addr).await;
        let r = conn.round_trip(request.as_bytes()).await;
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(r.header("x-gateway-error").is_none(), "{}", r.head);
        assert_eq!(r.header("x-request-id").as_deref(), Some(id.as_str()));
        assert_eq!(
            r.header("connection").as_deref(),
            Some("close"),
            "{}",
            r.head
        );
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(
            json["redirection_url"].is_string(),
            "KwikID's answer: {json}"
        );
        assert_eq!(
            conn.closed_within(HANG_GUARD).await,
            Ok(true),
            "the connection is closed after a CL+TE request"
        );
        let reached: Vec<_> = upstream
            .mock()
            .received()
            .into_iter()
            .filter(|r| {
                r.headers
                    .get("x-request-id")
                    .is_some_and(|v| v == id.as_str())
            })
            .collect();
        assert_eq!(reached.len(), 1);
        assert_eq!(
            &reached[0].body[..],
            b"{}",
            "the chunked body, not the CL one"
        );
        let line = gw.access_line(n);
        assert_eq!(
            (&line["request_id"], &line["status"], &line["outcome"]),
            (
                &serde_json::json!(id),
                &serde_json::json!(200),
                &serde_json::json!("forwarded")
            ),
            "{line}"
        );
    }
    assert!(!smuggled_reached(&upstream));
    assert_eq!(upstream.mock().served(), 2);
    still_serves(&gw).await;
}

/// Two different Content-Lengths (as two lines or one list), or one that is not plain
/// digits: 400 `bad_request` (see `assert_400_bad_request`), the connection closed, nothing
/// forwarded. Guards against smuggling by a length two parsers read differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_get_400() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let body = format!("{{}}{}", smuggled());
    for lengths in [
        format!("Content-Length: 2\r\nContent-Length: {}\r\n", body.len()),
        format!("Content-Length: {}\r\nContent-Length: 2\r\n", body.len()),
        format!("Content-Length: 2, {}\r\n", body.len()),
        "Content-Length: +2\r\n".to_owned(),
        "Content-Length: 0x2\r\n".to_owned(),
    ] {
        let request = format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{lengths}\r\n{body}"
        );
        eprintln!("{lengths:?}");
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(request.as_bytes()).await.unwrap();
        assert_400_bad_request(&gw, &mut conn).await;
    }
    assert_eq!(upstream.mock().served(), 0, "nothing was forwarded");
    still_serves(&gw).await;
}

/// Obfuscated Transfer-Encoding, which another parser might read differently: 400
/// `bad_request` (see `assert_400_bad_request`) and the connection closed, never forwarded,
/// never split into two requests. A chunked body that overflows its size or runs past it: 400
/// `invalid_body`, the connection closed. Guards against smuggling by a coding two parsers
/// read differently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_transfer_encoding_is_refused() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let body = format!("2\r\n{{}}\r\n0\r\n\r\n{}", smuggled());
    let cl = format!("Content-Length: {}\r\n", body.len());
    for (version, headers) in [
        ("1.1", format!("Transfer-Encoding: xchunked\r\n{cl}")),
        (
            "1.1",
            format!("Transfer-Encoding: chunked, identity\r\n{cl}"),
        ),
        ("1.1", format!("Transfer-Encoding : chunked\r\n{cl}")),
        ("1.1", format!("Transfer-Encoding: identity\r\n{cl}")),
        (
            "1.1",
            format!("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n{cl}"),
        ),
        ("1.1", format!("Transfer-Encoding: \"chunked\"\r\n{cl}")),
        ("1.1", format!("Transfer-Encoding: chunked;q=1\r\n{cl}")),
        ("1.1", format!("Transfer-Encoding:\x0bchunked\r\n{cl}")),
        (
            "1.1",
            format!("X-Pad: 1\r\n Transfer-Encoding: chunked\r\n{cl}"),
        ),
        ("1.1", format!("Transfer-Encoding\r\n : chunked\r\n{cl}")),
        ("1.0", format!("Transfer-Encoding: chunked\r\n{cl}")),
        ("1.1", "Transfer-Encoding: xchunked\r\n".to_owned()),
        ("1.1", "Transfer-Encoding: gzip\r\n".to_owned()),
    ] {
        let request = format!(
            "POST {INIT} HTTP/{version}\r\nHost: gw\r\nContent-Type: application/json\r\n{headers}\r\n{body}"
        );
        eprintln!("{version} {headers:?}");
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(request.as_bytes()).await.unwrap();
        assert_400_bad_request(&gw, &mut conn).await;
        assert_eq!(
            upstream.mock().served(),
            0,
            "{version} {headers:?} was forwarded"
        );
    }
    // A chunk size that overflows, and a chunk whose data runs past its size.
    for body in [
        format!("fffffffffffffffffff2\r\n{{}}\r\n0\r\n\r\n{}", smuggled()),
        format!("1\r\n{{}}\r\n0\r\n\r\n{}", smuggled()),
    ] {
        let request = format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(request.as_bytes()).await.unwrap();
        assert_refused_then_closed(&mut conn, 400, "invalid_body", UNREADABLE_BODY).await;
    }
    assert_eq!(upstream.mock().served(), 0, "nothing was forwarded");
    still_serves(&gw).await;
}

/// A whole request hidden in a body (inside a JSON string's neighbourhood, or inside a chunk)
/// reaches KwikID as the body of one request, never as a request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_inside_a_body_stays_a_body() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    // JSON allows CR LF between tokens, so this body is valid and holds a request line.
    let body = format!("{{\"handshake_id\":\"h\",\r\n\r\n\"x\":{:?}}}", smuggled());
    let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    for (n, framing, wire) in [
        (
            1,
            format!("Content-Length: {}\r\n", body.len()),
            body.clone(),
        ),
        (2, "Transfer-Encoding: chunked\r\n".to_owned(), chunked),
    ] {
        let request = format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: inner-{n}\r\nConnection: close\r\n{framing}\r\n{wire}"
        );
        let mut conn = RawConn::connect(gw.addr).await;
        let answer = conn.round_trip(request.as_bytes()).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    let received = upstream.mock().received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(
            r.body,
            body.as_bytes(),
            "the body arrives whole, as one body"
        );
    }
    assert!(!smuggled_reached(&upstream));
}

/// More than 64 headers, or a head over 16 KiB however it is made up: 431
/// `headers_too_large` (see `assert_431`) and the connection closed, nothing forwarded, and
/// the gateway keeps serving others. Guards against a head buffered without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_get_431_then_close() {
    let upstream = Upstream::start().await;
    // A long header_read_timeout, so a starved machine cannot turn a 431 into a 408.
    let gw = Gateway::start(
        &upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nheader_read_timeout = \"60s\"\n"),
    );
    let many: String = (0..100).map(|i| format!("X-Flood-{i}: {i}\r\n")).collect();
    let huge = format!("X-Huge: {}\r\n", "a".repeat(1024 * 1024));
    let many_medium: String = (0..60)
        .map(|i| format!("X-Wide-{i}: {}\r\n", "b".repeat(8 * 1024)))
        .collect();
    for (what, flood) in [
        ("100 headers", many),
        ("a 1 MiB header", huge),
        ("60 headers of 8 KiB", many_medium),
    ] {
        eprintln!("{what}");
        let request = format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{flood}Content-Length: 2\r\n\r\n{{}}"
        );
        // The gateway answers before it has read everything: write in the background and
        // ignore a broken pipe.
        let mut conn = RawConn::connect(gw.addr).await;
        let mut writer = writer_for(&conn);
        let write = tokio::spawn(async move {
            let _ = writer.write_all(request.as_bytes()).await;
        });
        assert_431(&gw, &mut conn).await;
        drop(conn);
        write.await.unwrap();
        still_serves(&gw).await;
    }
    assert_eq!(upstream.mock().served(), 3, "only the honest requests");
}

/// 64 headers are served; the 65th gets 431 `headers_too_large` (see `assert_431`) and the
/// connection is closed. Guards the documented limit from both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_65th_header_gets_431() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    // Host, Content-Type, X-Request-Id and Content-Length, plus the padding.
    let request = |id: &str, padding: usize| {
        let pad: String = (0..padding)
            .map(|i| format!("X-Pad-{i}: {i}\r\n"))
            .collect();
        format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: {id}\r\n{pad}Content-Length: 2\r\n\r\n{{}}"
        )
    };
    let mut conn = RawConn::connect(gw.addr).await;
    let r = conn.round_trip(request("sixty-four", 60).as_bytes()).await;
    assert_eq!(r.status, 200, "64 headers: {}", r.head);
    assert_eq!(r.header("x-request-id").as_deref(), Some("sixty-four"));

    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(request("sixty-five", 61).as_bytes())
        .await
        .unwrap();
    assert_431(&gw, &mut conn).await;
    assert_eq!(upstream.mock().served(), 1, "only the 64-header request");
}

/// SPEC §3 says nothing of a header size limit; like a production proxy (nginx 8 KiB a line,
/// HAProxy 16 KiB) the gateway caps the request head at 16 KiB: a 20 KiB header gets 431
/// `headers_too_large` (see `assert_431`), the connection is closed, and it never reaches
/// KwikID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_kib_header_gets_431() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let request = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Big: {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        "a".repeat(20 * 1024)
    );
    let mut conn = RawConn::connect(gw.addr).await;
    // The gateway may answer and close before it has read all of it.
    let _ = conn.send(request.as_bytes()).await;
    assert_431(&gw, &mut conn).await;
    assert_eq!(
        upstream.mock().served(),
        0,
        "a 20 KiB header reached KwikID"
    );
    still_serves(&gw).await;
}

/// A chunked body whose data is tiny but whose chunk lines are huge (long extensions) is
/// bounded on the wire, not only by its data: hyper refuses chunk extensions past 16 KiB a
/// body, so the gateway answers 400 `invalid_body` (the body could not be read) and closes
/// the connection; never an unbounded buffer, and nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_extensions_cannot_grow_a_body_without_bound() {
    let upstream = Upstream::start().await;
    let gw =
        Gateway::start(&upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nmax_body_bytes = 64\n"));
    let extension = "x".repeat(3000);
    let chunks: String = (0..64)
        .map(|_| format!("1;e={extension}\r\n \r\n"))
        .collect();
    let request = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}0\r\n\r\n"
    );
    let mut conn = RawConn::connect(gw.addr).await;
    // The gateway stops reading before all of it is written: write in the background and
    // ignore a broken pipe.
    let mut writer = writer_for(&conn);
    let write = tokio::spawn(async move {
        let _ = writer.write_all(request.as_bytes()).await;
    });
    assert_refused_then_closed(&mut conn, 400, "invalid_body", UNREADABLE_BODY).await;
    drop(conn);
    write.await.unwrap();
    assert_eq!(upstream.mock().served(), 0, "nothing was forwarded");
    still_serves(&gw).await;
}

/// A body trickled slower than `request_timeout` allows: the timeout fires and the caller
/// gets 408 `body_timeout` and a closed connection, while others are served meanwhile; the
/// access log says `body_timeout`. Guards against a slow body holding a connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(&upstream.upstream_table("1s", "1s")));
    let mut conn = RawConn::connect(gw.addr).await;
    let head = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: trickle\r\nContent-Length: 10000\r\n\r\n"
    );
    conn.send(head.as_bytes()).await.unwrap();
    // One byte every 100 ms, until the gateway gives up: the body cannot be complete before
    // the timeout fires, however slow the machine.
    let mut writer = writer_for(&conn);
    let trickle = tokio::spawn(async move {
        while writer.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    still_serves(&gw).await;
    assert_refused_then_closed(&mut conn, 408, "body_timeout", BODY_TIMEOUT_BODY).await;
    drop(conn);
    tokio::time::timeout(HANG_GUARD, trickle)
        .await
        .expect("the trickle ends once the gateway has closed")
        .unwrap();
    let line = gw.access_line_with("the trickled request's line", "\"request_id\":\"trickle\"");
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["outcome"], "body_timeout", "{line}");
    assert_eq!(upstream.mock().served(), 1, "only the honest request");
    still_serves(&gw).await;
}

/// 200 requests pipelined in one write: every one answered 200, in request order (each
/// answer carries its request's x-request-id), each forwarded to KwikID once and in order,
/// and the connection is still open after the last. Guards against pipelined requests lost,
/// reordered or answered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_flood_is_answered_in_order() {
    const COUNT: usize = 200;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let ids: Vec<String> = (0..COUNT).map(|i| format!("pipe-{i}")).collect();
    let mut wire = String::new();
    for id in &ids {
        wire.push_str(&format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: {id}\r\nContent-Length: 2\r\n\r\n{{}}"
        ));
    }
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(wire.as_bytes()).await.unwrap();
    let mut answered = Vec::with_capacity(COUNT);
    for (i, id) in ids.iter().enumerate() {
        let r = conn
            .read_response(HANG_GUARD)
            .await
            .unwrap_or_else(|e| panic!("answer #{i} ({id}): {e}"))
            .unwrap_or_else(|| panic!("closed after {i} answers"));
        assert_eq!(r.status, 200, "#{i}: {}", r.head);
        assert!(r.header("connection").is_none(), "#{i}: {}", r.head);
        answered.push(r.header("x-request-id").unwrap_or_default());
    }
    assert_eq!(
        answered, ids,
        "every request answered once, in request order"
    );
    let received: Vec<String> = upstream
        .mock()
        .received()
        .iter()
        .map(|r| r.headers["x-request-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(received, ids, "each forwarded once, in request order");
    // The connection goes on serving after the flood.
    let r = conn.round_trip(
        format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: after-flood\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .as_bytes(),
    ).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("x-request-id").as_deref(), Some("after-flood"));
    let health = admin_get(gw.admin, "/healthz").await;
    assert_eq!(health.status, 200);
}

/// 10,000 connections opened and abandoned, in batches that fit `ulimit -n` (the test and
/// the gateway each hold one descriptor per connection): idle, half a request line, whole
/// headers and no body, or a whole request whose answer is never read (one in a hundred
/// forwarded to KwikID). The gateway keeps
/// serving others throughout, and its descriptor count returns to its baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_abandoned_connections_leak_nothing() {
    const TOTAL: usize = 10_000;
    let upstream = Upstream::start().await;
    let mut upstream_table = upstream.upstream_table("1s", "2s");
    upstream_table.push_str("pool_max_idle_per_host = 4\n");
    let gw = Gateway::start(&upstream.config(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\n{upstream_table}"
    )));
    let pid = gw.child.id();
    still_serves(&gw).await;
    let baseline = fd_count(pid);
    assert!(baseline > 0, "cannot read /proc/{pid}/fd");
    let limit = open_files_soft_limit();
    let batch = ((limit.saturating_sub(256)) / 2).clamp(64, 1000) as usize;

    let full = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    // Answered by the gateway itself (400 invalid_body), an answer nobody reads.
    let refused = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"
    );
    let headers_only = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
    );
    let mut opened = 0;
    let mut peak = baseline;
    while opened < TOTAL {
        let n = batch.min(TOTAL - opened);
        let mut held = Vec::with_capacity(n);
        for i in 0..n {
            let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            let bytes: &[u8] = match (opened + i) % 100 {
                // A few go all the way to KwikID (each may cost the gateway a TLS handshake).
                99 => full.as_bytes(),
                k if k % 4 == 0 => b"",
                k if k % 4 == 1 => b"POST /verification/v2/digi",
                k if k % 4 == 2 => headers_only.as_bytes(),
                _ => refused.as_bytes(),
            };
            if !bytes.is_empty() {
                let _ = stream.write_all(bytes).await;
            }
            held.push(stream);
        }
        opened += n;
        peak = peak.max(fd_count(pid));
        still_serves(&gw).await;
        drop(held);
    }
    // Every abandoned connection is gone (a hang guard, not a speed limit).
    let margin = 4 + 8; // the upstream pool's idle connections, plus slack
    eventually(
        &format!("the gateway's fds back near {baseline} (peak {peak})"),
        Duration::from_secs(60),
        || async { fd_count(pid) <= baseline + margin },
    )
    .await;
    eprintln!(
        "{TOTAL} connections in batches of {batch}; gateway fds: baseline {baseline}, peak {peak}, after {}",
        fd_count(pid)
    );
    assert!(gw.stderr.text().lines().all(|l| !l.contains("panicked")));
    still_serves(&gw).await;
    let health = admin_get(gw.admin, "/healthz").await;
    assert_eq!(health.status, 200);
}
