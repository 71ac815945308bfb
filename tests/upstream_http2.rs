//! HTTP/2 to KwikID. When KwikID's ALPN picks `h2` and `upstream.http2` is `"auto"` (the
//! default), the gateway sends over HTTP/2 and multiplexes requests on one connection; with
//! `"never"`, or in front of a KwikID that speaks only HTTP/1.1, it sends HTTP/1.1. Either
//! way the caller gets KwikID's answer byte for byte. Also the mock's own switch for it
//! (`Options::http2`, `kwikid-mock --http1-only`), which these tests rely on.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::mock::{Mock, Options, Received};
use support::*;

/// Hang guard for anything awaited here: generous, so a busy machine is never a failure.
const WITHIN: Duration = Duration::from_secs(30);

fn init_body(session: &str) -> String {
    format!(r#"{{"handshake_id":"{session}","callback_url":"https://app.example.com/dl/cb"}}"#)
}

/// Sends one init through the gateway and asserts that the caller got KwikID's `n`th answer
/// byte for byte, and that KwikID got the caller's body with the gateway's token. Returns
/// what KwikID received.
async fn init_through(gw: &Gateway, mock: &Mock, session: &str, n: usize) -> Received {
    let body = init_body(session);
    let answer = send(gw.addr, post(INIT, &body, &[("x-caller-id", "orders-svc")])).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.gateway_error().is_none(), "{:?}", answer.headers);
    assert_eq!(answer.body, mock_ok_body(mock, n), "the body KwikID sent");
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(
        answer.headers["content-length"],
        answer.body.len().to_string()
    );
    let seen = mock.received()[n - 1].clone();
    assert_eq!(seen.target, INIT);
    assert_eq!(seen.body, body.as_bytes(), "the caller's body, unchanged");
    let auth: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(auth, [&format!("Bearer {TOKEN}")], "exactly the gateway's");
    assert_eq!(
        seen.host(),
        Some(format!("localhost:{}", mock.addr.port()).as_str()),
        "addressed to KwikID, not to the caller's Host"
    );
    seen
}

/// The token never shows in the gateway's output, whatever protocol carried it.
fn assert_no_token_in_logs(gw: &Gateway, lines: usize) {
    gw.stdout.wait_count(lines, WITHIN);
    assert!(!gw.stdout.text().contains(TOKEN), "token in the access log");
    assert!(!gw.stderr.text().contains(TOKEN), "token on stderr");
}

/// Guards against the gateway never using HTTP/2 towards a KwikID that offers it (or sending
/// a malformed HTTP/2 request: a wrong `:authority`, the token lost, the body changed): by
/// default KwikID receives the init over HTTP/2 and the caller gets its 200 byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_offering_h2_gets_the_init_over_http2_by_default() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));

    let seen = init_through(&gw, upstream.mock(), "session-h2", 1).await;
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(
        seen.authority,
        Some(format!("localhost:{}", upstream.addr.port())),
        ":authority is KwikID's"
    );
    assert_eq!(gw.access_line(1)["status"], 200);
    assert_no_token_in_logs(&gw, 1);
}

/// Guards `upstream.http2 = "never"` being ignored: KwikID offers `h2`, yet receives
/// HTTP/1.1 with its own Host, and the caller still gets its answer byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_never_sends_http1_to_a_kwikid_offering_h2() {
    let upstream = Upstream::start().await;
    let extra = format!("{}http2 = \"never\"\n", upstream.upstream_table("1s", "2s"));
    let gw = Gateway::start(&upstream.config(&extra));

    for n in 1..=2 {
        let seen = init_through(&gw, upstream.mock(), &format!("session-h1-{n}"), n).await;
        assert_eq!(seen.version, Version::HTTP_11, "request {n}");
        assert_eq!(seen.authority, None, "request {n}");
        assert_eq!(
            seen.headers["host"],
            format!("localhost:{}", upstream.addr.port())
        );
    }
    assert_no_token_in_logs(&gw, 2);
}

/// Guards the gateway insisting on HTTP/2 (or failing) when KwikID's ALPN offers only
/// `http/1.1`: with the default `"auto"` it speaks HTTP/1.1 and the caller gets 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_only_kwikid_gets_http1_under_auto() {
    let cert = kwikid_gateway::tls::throwaway_server_cert(&["localhost", "127.0.0.1"]).unwrap();
    let scratch = Scratch::new();
    let ca_file = scratch.write("ca.pem", &cert.ca_pem);
    let tls = kwikid_gateway::tls::server_config(cert.chain, cert.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = Options {
        http2: false,
        ..Options::default()
    };
    let mock = Mock::start_with(listener, TOKEN, Some(tls), options).unwrap();
    let base_url = format!("https://localhost:{}", mock.addr.port());
    let gw = Gateway::start(&config_for(&base_url, &ca_file, ""));

    for n in 1..=2 {
        let seen = init_through(&gw, &mock, &format!("session-{n}"), n).await;
        assert_eq!(seen.version, Version::HTTP_11, "request {n}");
        assert_eq!(
            seen.headers["host"],
            format!("localhost:{}", mock.addr.port())
        );
    }
    assert_no_token_in_logs(&gw, 2);
}

/// Guards HTTP/2 to KwikID serialising callers, opening a connection per request, or mixing
/// up answers between streams: once a connection is open, several callers at once are all
/// sent on that one connection, and each gets the answer to its own request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inits_share_one_http2_connection_and_each_gets_its_own_answer() {
    const CALLERS: usize = 8;
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream.config(""));
    let first = init_through(&gw, upstream.mock(), "session-warm", 1).await;
    assert_eq!(first.version, Version::HTTP_2);

    let mut callers = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let addr = gw.addr;
        callers.spawn(async move {
            let body = init_body(&format!("session-many-{i}"));
            let caller = format!("caller-{i}");
            let answer = send(addr, post(INIT, &body, &[("x-caller-id", &caller)])).await;
            (body, answer)
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = tokio::time::timeout(WITHIN, callers.join_next())
        .await
        .expect("every caller answered")
    {
        answers.push(done.unwrap());
    }
    assert_eq!(answers.len(), CALLERS);

    let mock = upstream.mock();
    let received = mock.received();
    assert_eq!(received.len(), CALLERS + 1, "each init reached KwikID once");
    for seen in &received {
        assert_eq!(seen.version, Version::HTTP_2, "{:?}", seen.target);
        assert_eq!(
            seen.connection, first.connection,
            "multiplexed on the one connection"
        );
    }
    // The mock's nth answer carries n: the caller with that answer is the one whose body
    // KwikID received as its nth request.
    let mut matched = [false; CALLERS + 2];
    for (body, answer) in &answers {
        assert_eq!(answer.status, 200, "{}", answer.text());
        let n = (2..=CALLERS + 1)
            .find(|&n| answer.body == mock_ok_body(mock, n))
            .unwrap_or_else(|| panic!("not one of KwikID's answers: {}", answer.text()));
        assert!(!matched[n], "answer {n} went to two callers");
        matched[n] = true;
        assert_eq!(
            received[n - 1].body,
            body.as_bytes(),
            "the answer to this caller's own request"
        );
    }
    assert_no_token_in_logs(&gw, CALLERS + 1);
}

/// A client config that trusts only the certificates in `ca_file` (PEM) and offers `h2`
/// and `http/1.1`, as the gateway does.
fn offering_h2(ca_file: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(kwikid_gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Connects to `localhost` at `addr` offering `h2` and `http/1.1`, sends one init with
/// `bearer` in the protocol ALPN chose, and returns that protocol and the answer's status.
async fn init_by_alpn(addr: SocketAddr, ca_file: &Path, bearer: &str) -> (Vec<u8>, u16) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(offering_h2(ca_file)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let io = TokioIo::new(tls);
    let request = |uri: &str| {
        Request::post(uri)
            .header("content-type", "application/json")
            .header("authorization", bearer)
            .body(Full::new(Bytes::from(init_body("session-cli"))))
            .unwrap()
    };
    let response = if alpn == b"h2" {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        let uri = format!("https://localhost:{}{INIT}", addr.port());
        sender.send_request(request(&uri)).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let mut req = request(INIT);
        req.headers_mut().insert(
            "host",
            format!("localhost:{}", addr.port()).parse().unwrap(),
        );
        sender.send_request(req).await.unwrap()
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("redirection_url"),
        "{body:?}"
    );
    (alpn, status)
}

/// Starts `kwikid-mock` on a free loopback port with `args`; its bound address from the
/// "listening on" line.
fn mock_process(token: &str, args: &[&std::ffi::OsStr]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kwikid-mock"))
        .args(["--listen", "127.0.0.1:0", "--token", token])
        .args(args)
        .env_remove("KWIKID_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kwikid-mock");
    let stdout = Lines::from_stream(child.stdout.take().unwrap());
    let line = stdout.wait_for("the listening line", WITHIN, |l| {
        l.starts_with("kwikid-mock listening on https://")
    });
    let addr = line
        .trim_start_matches("kwikid-mock listening on https://")
        .parse()
        .unwrap();
    (child, addr)
}

/// Guards `kwikid-mock --http1-only` (the switch benchmarks and by-hand trials use to stand
/// for an HTTP/1.1-only KwikID): without it a client offering `h2` gets HTTP/2 and a 200 over
/// it; with it, ALPN picks `http/1.1` and the 200 comes over HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kwikid_mock_serves_h2_unless_http1_only() {
    let token = "mock-h2-token-51c0";
    let bearer = format!("Bearer {token}");
    let scratch = Scratch::new();
    for (flag, expected) in [(None, &b"h2"[..]), (Some("--http1-only"), b"http/1.1")] {
        let ca_out = scratch.0.join(format!("ca-{}.pem", flag.is_some()));
        let mut args = vec!["--ca-out".as_ref(), ca_out.as_os_str()];
        if let Some(flag) = flag {
            args.push(flag.as_ref());
        }
        let (mut child, addr) = mock_process(token, &args);
        let (alpn, status) = tokio::time::timeout(WITHIN, init_by_alpn(addr, &ca_out, &bearer))
            .await
            .expect("an answer within 30 s");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(alpn, expected, "ALPN with {flag:?}");
        assert_eq!(status, 200, "with {flag:?}");
    }
}

/// Guards the in-process mock's plain-HTTP listener: it serves HTTP/2 with prior knowledge
/// (and records it as such), and with `http2: false` it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_serves_h2c_with_prior_knowledge_unless_http1_only() {
    for http2 in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = Options {
            http2,
            ..Options::default()
        };
        let mock = Mock::start_with(listener, TOKEN, None, options).unwrap();
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(mock.addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let request = Request::post(format!("http://localhost:{}{INIT}", mock.addr.port()))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            sender
                .send_request(request)
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        };
        let outcome = tokio::time::timeout(WITHIN, exchange)
            .await
            .expect("an outcome within 30 s");
        if http2 {
            assert_eq!(outcome, Ok(200));
            let received = mock.received();
            assert_eq!(received.len(), 1);
            assert_eq!(received[0].version, Version::HTTP_2);
        } else {
            assert!(outcome.is_err(), "HTTP/1.1 only, yet {outcome:?}");
            assert!(mock.received().is_empty());
        }
    }
}
