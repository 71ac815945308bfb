//! Hostile callers against the real gateway binary, in raw bytes: request smuggling, header
//! floods, slow bodies, pipelined floods and thousands of abandoned connections. After each
//! attack the gateway must still serve an honest caller, and nothing the attacker hid may
//! reach KwikID.

mod support;

use std::time::{Duration, Instant};

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

/// Reads the answer to a request the gateway must refuse: a 4xx, or the connection closed
/// without one.
async fn refused(conn: &mut RawConn) -> Option<RawResponse> {
    match conn.read_response(Duration::from_secs(10)).await {
        Ok(Some(answer)) => {
            assert!(
                (400..500).contains(&answer.status),
                "not refused: {}",
                answer.head
            );
            Some(answer)
        }
        Ok(None) => None,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => panic!("no answer: {e}"),
        Err(_) => None, // reset: refused too
    }
}

async fn still_serves(gw: &Gateway) {
    let answer = init(gw.addr, "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// Content-Length and Transfer-Encoding together, in both orders: Transfer-Encoding frames
/// the body (RFC 9112 §6.3), exactly one request with the chunked body reaches KwikID, and
/// the connection is closed after the answer, so the bytes past the chunked body (a whole
/// second request) are never read as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_one_request_then_close() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    for (n, te_first) in [(1, false), (2, true)] {
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
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: clte-{n}\r\n{first}{second}\r\n{rest}"
        );
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(request.as_bytes()).await.unwrap();
        let answer = conn
            .read_response(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("an answer");
        assert!(
            answer.status == 200 || answer.status == 400,
            "{}",
            answer.head
        );
        assert_eq!(
            conn.closed_within(Duration::from_secs(5)).await,
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
                    .is_some_and(|v| v == format!("clte-{n}").as_str())
            })
            .collect();
        if answer.status == 200 {
            assert_eq!(reached.len(), 1);
            assert_eq!(
                &reached[0].body[..],
                b"{}",
                "the chunked body, not the CL one"
            );
        } else {
            assert!(reached.is_empty());
        }
    }
    assert!(!smuggled_reached(&upstream));
    assert_eq!(upstream.mock().served(), 2);
    still_serves(&gw).await;
}

/// Two different Content-Lengths (as two lines or one list): 400, nothing forwarded.
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
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(request.as_bytes()).await.unwrap();
        let answer = conn
            .read_response(Duration::from_secs(10))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("closed without an answer: {lengths:?}"));
        assert_eq!(answer.status, 400, "{lengths:?}: {}", answer.head);
        assert_eq!(conn.closed_within(Duration::from_secs(5)).await, Ok(true));
    }
    assert_eq!(upstream.mock().served(), 0, "nothing was forwarded");
    still_serves(&gw).await;
}

/// Obfuscated Transfer-Encoding, which another parser might read differently: refused (400
/// or closed), never forwarded, never split into two requests.
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
        let mut conn = RawConn::connect(gw.addr).await;
        conn.send(request.as_bytes()).await.unwrap();
        refused(&mut conn).await;
        assert!(
            conn.closed_within(Duration::from_secs(5)).await.is_ok(),
            "nothing but the refusal: {headers:?}"
        );
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
        refused(&mut conn).await;
        assert!(conn.closed_within(Duration::from_secs(5)).await.is_ok());
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
        conn.send(request.as_bytes()).await.unwrap();
        let answer = conn
            .read_response(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("an answer");
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

/// More than 64 headers, or headers larger than the read buffer: 431 (or closed), nothing
/// forwarded, and the gateway keeps serving others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_floods_get_431_or_close() {
    let upstream = Upstream::start().await;
    // A long header_read_timeout, so a starved machine cannot turn a 431 into a 408.
    let gw = Gateway::start(
        &upstream.config("[listen]\naddr = \"127.0.0.1:0\"\nheader_read_timeout = \"30s\"\n"),
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
        let request = format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{flood}Content-Length: 2\r\n\r\n{{}}"
        );
        // The gateway may answer and close before it has read everything: write in the
        // background and ignore a broken pipe.
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let write = tokio::spawn(async move {
            let _ = writer.write_all(request.as_bytes()).await;
            writer
        });
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut buf),
        )
        .await
        .expect("the connection is answered and closed");
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 431"),
            "{what}: {read:?}: {:?}",
            &text[..text.len().min(300)]
        );
        drop(write.await);
        still_serves(&gw).await;
    }
    assert_eq!(upstream.mock().served(), 3, "only the honest requests");
}

/// SPEC §3 says nothing of a header size limit; like a production proxy (nginx 8 KiB a line,
/// HAProxy 16 KiB) the gateway caps the request head at 16 KiB: a 20 KiB header gets 431 (or
/// a closed connection) and never reaches KwikID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_kib_header_gets_431() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let request = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Big: {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        "a".repeat(20 * 1024)
    );
    let answer = raw(gw.addr, request.as_bytes()).await;
    assert!(
        answer.is_empty() || raw_status(&answer) == 431,
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert_eq!(
        upstream.mock().served(),
        0,
        "a 20 KiB header reached KwikID"
    );
}

/// A chunked body whose data is tiny but whose chunk lines are huge (long extensions) is
/// bounded on the wire, not only by its data: 413 or a reset, never an unbounded buffer,
/// and nothing forwarded.
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
    // The gateway may stop reading (and reset) before all of it is written.
    let _ = conn.send(request.as_bytes()).await;
    if let Some(answer) = refused(&mut conn).await {
        assert_eq!(answer.status, 413, "{}", answer.head);
    }
    assert_eq!(upstream.mock().served(), 0, "nothing was forwarded");
    still_serves(&gw).await;
}

/// A body trickled slower than request_timeout gets 408 body_timeout on time, while others
/// are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_on_time() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(&upstream.upstream_table("1s", "1s")));
    let conn = RawConn::connect(gw.addr).await;
    let (mut reader, mut writer) = conn.stream.into_split();
    let head = format!(
        "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 150 ms: 40 bytes would take 6 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    still_serves(&gw).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut reader, &mut chunk),
        )
        .await
        .expect("an answer within 5 s")
        .expect("an answer, not a reset");
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&buf);
    assert_eq!(raw_status(&text), 408, "{text}");
    assert!(text.contains("x-gateway-error: body_timeout"), "{text}");
    assert!(took < Duration::from_secs(2), "408 after {took:?}");
    trickle.abort();
    assert_eq!(upstream.mock().served(), 1, "only the honest request");
    still_serves(&gw).await;
}

/// 200 requests pipelined in one write: all answered, in order (or the connection closed
/// cleanly part-way), and the gateway stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_flood_is_answered_in_order() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let mut wire = String::new();
    for i in 0..200 {
        wire.push_str(&format!(
            "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Request-Id: pipe-{i}\r\nContent-Length: 2\r\n\r\n{{}}"
        ));
    }
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(wire.as_bytes()).await.unwrap();
    let mut answered = 0;
    for i in 0..200 {
        match conn.read_response(Duration::from_secs(30)).await {
            Ok(Some(answer)) => {
                assert_eq!(answer.status, 200, "#{i}: {}", answer.head);
                assert_eq!(
                    answer.header("x-request-id").as_deref(),
                    Some(format!("pipe-{i}").as_str()),
                    "answers come in request order"
                );
                answered += 1;
            }
            Ok(None) => break,
            Err(e) => panic!("after {answered} answers: {e}"),
        }
    }
    eprintln!("{answered} of 200 pipelined requests answered");
    assert!(answered > 0, "not even the first request was answered");
    assert_eq!(upstream.mock().served(), answered as u64);
    still_serves(&gw).await;
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
    let started = Instant::now();
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
    let opening = started.elapsed();

    // Every abandoned connection is gone within a bounded wait.
    let margin = 4 + 8; // the upstream pool's idle connections, plus slack
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = fd_count(pid);
    while now > baseline + margin {
        assert!(
            Instant::now() < deadline,
            "gateway fds: baseline {baseline}, peak {peak}, still {now} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = fd_count(pid);
    }
    eprintln!(
        "{TOTAL} connections in batches of {batch} in {opening:?}; gateway fds: baseline {baseline}, peak {peak}, after {now}"
    );
    assert!(gw.stderr.text().lines().all(|l| !l.contains("panicked")));
    still_serves(&gw).await;
    let health = admin_get(gw.admin, "/healthz").await;
    assert_eq!(health.status, 200);
}
