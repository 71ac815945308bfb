//! Property tests: whatever headers a caller sends, KwikID sees exactly one `Authorization`
//! (the gateway's) and none of the headers SPEC §4 removes; whatever headers KwikID answers
//! with, no hop-by-hop header reaches the caller.
//!
//! The request property runs end to end: one gateway process and one mock, started once, and
//! 64 generated header sets sent as raw bytes (so names keep their random case and duplicates
//! stay duplicates), each found at the mock by its unique `x-request-id`.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use kwikid_gateway::rules::headers::strip_response_headers;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Caller headers SPEC §4 removes (hop-by-hop, credentials, topology, the caller header).
/// `transfer-encoding`, `content-length`, `host` and `expect` frame or route the request
/// itself and are exercised in tests/hostile.rs instead.
const REMOVED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "via",
    "x-caller-id",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// Ordinary headers that pass unless a `Connection` header names them.
const ORDINARY: &[&str] = &[
    "accept",
    "user-agent",
    "accept-language",
    "cache-control",
    "x-trace",
    "x-b3-traceid",
];

fn removed(name: &str) -> bool {
    REMOVED.contains(&name) || name.starts_with("x-forwarded-")
}

/// Mixes the case of `name` as a caller might (`X-FORWARDED-for`).
fn random_case(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(REMOVED).prop_map(str::to_owned),
        2 => proptest::sample::select(ORDINARY).prop_map(str::to_owned),
        2 => "x-[a-z0-9]{1,10}(-[a-z0-9]{1,6})?",
        1 => "x-forwarded-[a-z]{1,8}",
    ]
    .prop_filter("the test's own headers", |n| {
        !matches!(n.as_str(), "x-request-id" | "content-type")
    })
}

/// A valid field value: visible ASCII with inner spaces, possibly empty.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!-~]{0,24}",
        "[!-~]{1,8}( [!-~]{1,8}){0,3}",
        Just("Bearer caller-own-token".to_owned()),
        Just("close".to_owned()),
        Just("keep-alive".to_owned()),
    ]
}

#[derive(Debug, Clone)]
struct CallerHeaders {
    /// (name as sent, value), in order; duplicates allowed.
    headers: Vec<(String, String)>,
}

fn caller_headers() -> impl Strategy<Value = CallerHeaders> {
    let plain = (header_name(), header_value(), any::<u64>());
    let listed = proptest::collection::vec((header_name(), any::<u64>()), 1..5);
    let connection = (listed, any::<bool>(), any::<u64>());
    (
        proptest::collection::vec(plain, 0..24),
        proptest::collection::vec(connection, 0..3),
    )
        .prop_map(|(plain, connections)| {
            let mut headers: Vec<(String, String)> = plain
                .into_iter()
                .map(|(n, v, mask)| (random_case(&n, mask), v))
                .collect();
            // Connection lines naming other headers (some present, some not), in random case,
            // with and without spaces after the commas.
            for (i, (names, tight, mask)) in connections.into_iter().enumerate() {
                let list: Vec<String> = names
                    .iter()
                    .map(|(n, m)| random_case(n, m ^ mask))
                    .collect();
                let value = list.join(if tight { "," } else { " , " });
                let at = (mask as usize).wrapping_add(i) % (headers.len() + 1);
                headers.insert(at, (random_case("connection", mask), value));
            }
            CallerHeaders { headers }
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Property (a), end to end.
#[test]
fn kwikid_sees_one_authorization_and_no_removed_header() {
    let rt = runtime();
    let upstream = rt.block_on(Upstream::start());
    let gw = Gateway::start(&upstream.config(""));
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner(64).run(&caller_headers(), |input| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request_id = format!("prop-headers-{n}");
        let mut request = format!(
            "POST {INIT} HTTP/1.1\r\nHost: gateway.internal\r\nContent-Type: application/json\r\nContent-Length: 2\r\nX-Request-Id: {request_id}\r\n"
        );
        for (name, value) in &input.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n{}");
        let answer = rt.block_on(async {
            let mut conn = RawConn::connect(gw.addr).await;
            conn.send(request.as_bytes()).await.unwrap();
            conn.read_response(Duration::from_secs(20)).await
        });
        let answer = answer
            .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?
            .ok_or_else(|| TestCaseError::fail("closed without an answer"))?;
        prop_assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));

        let seen = upstream
            .mock()
            .received()
            .into_iter()
            .find(|r| r.headers.get("x-request-id").is_some_and(|v| v == request_id.as_str()))
            .ok_or_else(|| TestCaseError::fail("the request never reached the mock"))?;
        let authorization: Vec<&[u8]> = seen
            .headers
            .get_all("authorization")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let expected = format!("Bearer {TOKEN}");
        prop_assert_eq!(authorization, vec![expected.as_bytes()]);

        // What must be gone: the removed names, and every name a Connection line listed.
        let mut gone: BTreeSet<String> = BTreeSet::new();
        for (name, value) in &input.headers {
            let lower = name.to_ascii_lowercase();
            if lower == "connection" {
                gone.extend(value.split(',').map(|n| n.trim().to_ascii_lowercase()));
            }
            if removed(&lower) {
                gone.insert(lower);
            }
        }
        for name in seen.headers.keys() {
            let name = name.as_str();
            prop_assert!(
                name == "authorization" || !gone.contains(name),
                "{} reached KwikID",
                name
            );
            prop_assert!(!name.starts_with("x-forwarded-"), "{} reached KwikID", name);
        }
        // What must pass, with every value in order.
        for (name, _) in &input.headers {
            let lower = name.to_ascii_lowercase();
            if gone.contains(&lower) {
                continue;
            }
            let sent: Vec<&str> = input
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(&lower))
                .map(|(_, v)| v.trim())
                .collect();
            let got: Vec<&str> = seen
                .headers
                .get_all(lower.as_str())
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            prop_assert_eq!(got, sent, "values of {}", lower);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Response header names: hop-by-hop ones, framing, and ordinary ones.
const RESPONSE_HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

fn response_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        3 => proptest::sample::select(RESPONSE_HOP_BY_HOP).prop_map(str::to_owned),
        1 => Just("content-length".to_owned()),
        3 => "x-[a-z]{1,8}",
        1 => proptest::sample::select(&["content-type", "retry-after", "set-cookie", "date"][..])
            .prop_map(str::to_owned),
    ];
    let value = prop_oneof![
        3 => "[!-~]{0,16}",
        // A Connection-style list naming other headers, in any case.
        2 => proptest::collection::vec("[xX]-[a-zA-Z]{1,8}|[kK]eep-[aA]live|[cC]lose", 1..4)
            .prop_map(|names| names.join(", ")),
    ];
    proptest::collection::vec((name, value), 0..20)
}

/// Property (b) at function level: `forward::response_headers` keeps no hop-by-hop header, no header
/// a `Connection` line named, no `Content-Length` and no `x-request-id` (the gateway writes
/// those itself); everything else is untouched, values and order included.
#[test]
fn hop_by_hop_response_headers_never_reach_the_caller() {
    let result = runner(256).run(&response_headers(), |input| {
        let mut headers = HeaderMap::new();
        for (name, value) in &input {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut gone: BTreeSet<String> = RESPONSE_HOP_BY_HOP
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        gone.insert("content-length".into());
        gone.insert("x-request-id".into());
        for value in headers.get_all("connection") {
            for listed in value.to_str().unwrap().split(',') {
                gone.insert(listed.trim().to_ascii_lowercase());
            }
        }
        let before = headers.clone();
        let mut headers = headers;
        strip_response_headers(&mut headers);
        for name in headers.keys() {
            prop_assert!(!gone.contains(name.as_str()), "{} was kept", name);
        }
        for name in before.keys() {
            if gone.contains(name.as_str()) {
                continue;
            }
            let was: Vec<_> = before.get_all(name).iter().collect();
            let is: Vec<_> = headers.get_all(name).iter().collect();
            prop_assert_eq!(was, is, "{} changed", name);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// An HTTPS upstream that answers every request with `response` verbatim, trusted through
/// the CA it writes to `ca_file`.
struct ScriptedUpstream {
    addr: std::net::SocketAddr,
    _scratch: Scratch,
    ca_file: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedUpstream {
    async fn start(response: &'static [u8]) -> Self {
        let cert = kwikid_gateway::tls::throwaway_server_cert(&["localhost"]).unwrap();
        let scratch = Scratch::new();
        let ca_file = scratch.write("ca.pem", &cert.ca_pem);
        let tls = kwikid_gateway::tls::server_config(cert.chain, cert.key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    // One request: headers, then the Content-Length body the gateway sets.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + length {
                                break;
                            }
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = tls.write_all(response).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            addr,
            _scratch: scratch,
            ca_file,
            task,
        }
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Property (b) end to end: an upstream answering with every kind of hop-by-hop header (and a
/// chunked body with a trailer) reaches the caller without them, the rest unchanged.
#[test]
fn hop_by_hop_response_headers_are_stripped_end_to_end() {
    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
        Content-Type: application/json\r\n\
        Connection: keep-alive, X-Upstream-Hop, x-second-HOP\r\n\
        Connection: X-Third-Hop\r\n\
        X-Upstream-Hop: secret-1\r\n\
        X-Second-Hop: secret-2\r\n\
        X-Third-Hop: secret-3\r\n\
        Keep-Alive: timeout=5, max=100\r\n\
        Proxy-Connection: keep-alive\r\n\
        Proxy-Authenticate: Basic realm=\"kwikid\"\r\n\
        Upgrade: h2c\r\n\
        Trailer: X-Checksum\r\n\
        Transfer-Encoding: chunked\r\n\
        X-KwikID-Trace: trace-7\r\n\
        Set-Cookie: a=1\r\n\
        Set-Cookie: b=2\r\n\
        \r\n\
        14\r\n{\"redirection_url\":1\r\n1\r\n}\r\n0\r\nX-Checksum: abc\r\n\r\n";
    let rt = runtime();
    let upstream = rt.block_on(ScriptedUpstream::start(RESPONSE));
    let config = config_for(&base_url_for(upstream.addr.port()), &upstream.ca_file, "");
    let gw = Gateway::start(&config);
    let answer = rt
        .block_on(async {
            let mut conn = RawConn::connect(gw.addr).await;
            conn.send(
                format!(
                    "POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            conn.read_response(Duration::from_secs(20)).await
        })
        .unwrap()
        .expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.body, b"{\"redirection_url\":1}");
    for gone in [
        "x-upstream-hop",
        "x-second-hop",
        "x-third-hop",
        "proxy-connection",
        "proxy-authenticate",
        "upgrade",
        "trailer",
        "transfer-encoding",
        "x-checksum",
    ] {
        assert!(
            answer.header(gone).is_none(),
            "{gone} reached the caller:\n{}",
            answer.head
        );
    }
    // The gateway's own Connection and Keep-Alive (the caller's idle timeout) may only manage
    // its own connection: KwikID's `timeout=5, max=100` never passes.
    assert_eq!(
        answer.header_all("keep-alive"),
        ["timeout=75"],
        "{}",
        answer.head
    );
    for value in answer.header_all("connection") {
        assert!(
            value.eq_ignore_ascii_case("keep-alive") || value.eq_ignore_ascii_case("close"),
            "{value}"
        );
    }
    assert_eq!(answer.header("x-kwikid-trace").as_deref(), Some("trace-7"));
    assert_eq!(answer.header_all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(answer.header("content-length").as_deref(), Some("21"));
}
