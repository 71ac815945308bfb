//! TLS and mutual TLS on the proxy port: with `client_ca_file`, only callers presenting a
//! certificate that CA signed get through, and the certificate — not a header the caller
//! chooses — names the caller.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;

use rcgen::{CertifiedIssuer, KeyPair};
use rustls_pki_types::ServerName;
use support::pki::{Leaf, ca, leaf};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    server_ca: CertifiedIssuer<'static, KeyPair>,
    client_ca: CertifiedIssuer<'static, KeyPair>,
    scratch: Scratch,
}

impl Pki {
    fn new() -> Self {
        Self {
            server_ca: ca("gateway server CA"),
            client_ca: ca("internal callers CA"),
            scratch: Scratch::new(),
        }
    }

    /// `[listen]` with TLS, and mTLS when `mutual`.
    fn listen_table(&self, mutual: bool) -> String {
        self.listen_table_allowing(mutual, None)
    }

    /// Like [`Self::listen_table`], with `listen.allow_cidrs` when given.
    fn listen_table_allowing(&self, mutual: bool, allow_cidrs: Option<&str>) -> String {
        let server = leaf(
            &self.server_ca,
            &["localhost", "127.0.0.1"],
            "gateway",
            false,
        );
        let cert = self.scratch.write("server.pem", &server.chain_pem);
        let key = self.scratch.write("server.key", &server.key_pem);
        let client_ca = self.scratch.write("clients.pem", &self.client_ca.pem());
        let mut t = String::from("[listen]\naddr = \"127.0.0.1:0\"\n");
        if let Some(cidrs) = allow_cidrs {
            t.push_str(&format!("allow_cidrs = {cidrs}\n"));
        }
        t.push_str(&format!(
            "[listen.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ));
        if mutual {
            t.push_str(&format!("client_ca_file = \"{}\"\n", client_ca.display()));
        }
        t
    }

    fn client_config(&self, identity: Option<&Leaf>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(kwikid_gateway::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match identity {
            Some(leaf) => builder
                .with_client_auth_cert(leaf.chain.clone(), leaf.key.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        }
    }
}

/// An init as `caller` (`x-caller-id`) over TLS with `config`; `Err` when the handshake or the
/// exchange fails.
async fn init_over_tls(
    addr: std::net::SocketAddr,
    config: rustls::ClientConfig,
    caller: &str,
) -> Result<Answer, String> {
    try_send_tls(addr, config, init_request_as(caller), HANG_GUARD).await
}

/// The gateway's 403 exactly as a caller sees it: status, `x-gateway-error:
/// caller_not_allowed`, the fixed JSON sentence (nothing the caller sent echoed), its length,
/// and a request id that the access log names with the same status and outcome.
fn assert_exact_403(gw: &Gateway, answer: &Answer) {
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(
        answer.gateway_error(),
        Some("caller_not_allowed"),
        "{:?}",
        answer.headers
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(
        answer.text(),
        r#"{"error":"This caller is not allowed to use the gateway."}"#
    );
    assert_eq!(
        answer.headers["content-length"],
        answer.body.len().to_string()
    );
    let id = answer
        .headers
        .get("x-request-id")
        .expect("a 403 carries x-request-id")
        .to_str()
        .unwrap();
    assert!(!id.is_empty());
    let line = gw.access_line_with(
        "the access-log line of the 403",
        &format!("\"request_id\":\"{id}\""),
    );
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(line["outcome"], "caller_not_allowed", "{line}");
    assert!(line["upstream_status"].is_null(), "{line}");
}

/// TLS without client certificates: callers are still named by the caller header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_on_the_proxy_port() {
    let upstream = Upstream::start().await;
    let pki = Pki::new();
    let gw = Gateway::start(&upstream.config(&pki.listen_table(false)));
    let answer = init_over_tls(gw.addr, pki.client_config(None), "orders-svc")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock_ok_body(upstream.mock(), 1));
    assert_eq!(gw.access_line(1)["caller"], "orders-svc");

    // Plain HTTP on a TLS port gets no HTTP answer: at most a TLS alert, then the close.
    let mut plain = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    plain
        .write_all(
            format!("POST {INIT} HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    // A reset instead of a clean close is a close too, so the read's own result is not checked.
    let _ = tokio::time::timeout(Duration::from_secs(30), plain.read_to_end(&mut got))
        .await
        .expect("the gateway closes a connection that does not speak TLS");
    // Content type 21 (alert), TLS 1.2 record version, two bytes: level 2 (fatal) and a code.
    assert!(
        got.is_empty() || (got.len() == 7 && got[..6] == [21, 3, 3, 0, 2, 2]),
        "only a fatal TLS alert, if anything: {got:?}"
    );
    assert_eq!(
        upstream.mock().received().len(),
        1,
        "nothing from the plain connection reached KwikID"
    );
}

/// mTLS: the certificate's first DNS SAN (else its CN) names the caller; the caller header
/// cannot override it; no certificate gets 403; a certificate from another CA gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_names_the_caller_and_refuses_strangers() {
    let upstream = Upstream::start().await;
    let pki = Pki::new();
    let gw = Gateway::start(&upstream.config(&format!(
        "{}[rate_limit]\nglobal = {{ per_second = 1000, burst = 1000 }}\nper_caller = {{ per_second = 0.01, burst = 1 }}\n",
        pki.listen_table(true)
    )));

    let orders = leaf(&pki.client_ca, &["orders-svc"], "ignored-cn", true);
    let answer = init_over_tls(gw.addr, pki.client_config(Some(&orders)), "billing-svc")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock_ok_body(upstream.mock(), 1));
    assert_eq!(
        gw.access_line(1)["caller"],
        "orders-svc",
        "the certificate, not the header"
    );

    // The per-caller bucket follows the certificate: a new header value does not reset it.
    let again = init_over_tls(gw.addr, pki.client_config(Some(&orders)), "someone-else")
        .await
        .unwrap();
    again.assert_error(429, "rate_limited");

    let cn_only = leaf(&pki.client_ca, &[], "billing-svc", true);
    let answer = init_over_tls(gw.addr, pki.client_config(Some(&cn_only)), "x")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.body, mock_ok_body(upstream.mock(), 2));
    assert_eq!(gw.access_line(3)["caller"], "billing-svc");

    let anonymous = init_over_tls(gw.addr, pki.client_config(None), "orders-svc")
        .await
        .unwrap();
    assert_exact_403(&gw, &anonymous);
    assert_eq!(
        upstream.mock().received().len(),
        2,
        "the 403 never reached KwikID"
    );

    let stranger_ca = ca("someone else's CA");
    let stranger = leaf(&stranger_ca, &["orders-svc"], "orders-svc", true);
    assert!(
        init_over_tls(gw.addr, pki.client_config(Some(&stranger)), "orders-svc")
            .await
            .is_err()
    );
    assert_eq!(
        upstream.mock().received().len(),
        2,
        "only the two verified callers reached KwikID"
    );
}

/// mTLS narrows `allow_cidrs`, it does not replace it: a caller with a good certificate from
/// an address outside the trusted networks still gets the exact 403, and KwikID sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_certificate_from_an_untrusted_address_gets_403() {
    let upstream = Upstream::start().await;
    let pki = Pki::new();
    let gw = Gateway::start(
        &upstream.config(&pki.listen_table_allowing(true, Some(r#"["10.0.0.0/8"]"#))),
    );
    let orders = leaf(&pki.client_ca, &["orders-svc"], "orders-svc", true);
    let answer = init_over_tls(gw.addr, pki.client_config(Some(&orders)), "orders-svc")
        .await
        .unwrap();
    assert_exact_403(&gw, &answer);
    assert_eq!(upstream.mock().received().len(), 0);
}

/// ALPN `h2` on the mTLS listener: the caller speaks HTTP/2 and is still named by its
/// certificate, never by the caller header; an HTTP/1.1-only client on the same listener is
/// served too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_mtls_keeps_the_callers_identity() {
    let upstream = Upstream::start().await;
    let pki = Pki::new();
    let gw = Gateway::start(&upstream.config(&pki.listen_table(true)));
    let orders = leaf(&pki.client_ca, &["orders-svc"], "ignored-cn", true);
    let mut config = pki.client_config(Some(&orders));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut request = init_request_as("billing-svc");
    *request.uri_mut() = format!("https://localhost{INIT}").parse().unwrap();
    request.headers_mut().remove("host");
    let response = tokio::time::timeout(HANG_GUARD, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let line = gw.access_line(1);
    assert_eq!(line["caller"], "orders-svc", "{line}");

    let answer = init_over_tls(gw.addr, pki.client_config(Some(&orders)), "x")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
}

/// `[[callers]]` with mTLS: a caller is named by its certificate, so a caller header cannot
/// borrow a named caller's name; with `unknown_callers = "deny"` a certificate whose name is
/// not listed gets the 403 of an unnamed caller (SPEC §10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_callers_are_named_by_their_certificate() {
    let upstream = Upstream::start().await;
    let pki = Pki::new();
    let gw = Gateway::start(&upstream.config(&format!(
        "{}[rate_limit]\nunknown_callers = \"deny\"\n[[callers]]\nname = \"orders-svc\"\n",
        pki.listen_table(true)
    )));
    let orders = leaf(&pki.client_ca, &["orders-svc"], "ignored-cn", true);
    let answer = init_over_tls(gw.addr, pki.client_config(Some(&orders)), "stranger")
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());

    let billing = leaf(&pki.client_ca, &["billing-svc"], "billing-svc", true);
    let refused = init_over_tls(gw.addr, pki.client_config(Some(&billing)), "orders-svc")
        .await
        .unwrap();
    refused.assert_error(403, "caller_not_allowed");
    assert_eq!(
        refused.text(),
        r#"{"error":"This caller is not one of the gateway's named callers."}"#
    );
    assert_eq!(gw.access_line(2)["caller"], "billing-svc");
    assert_eq!(upstream.mock().received().len(), 1);
}
