//! KwikID's certificate is verified. The gateway hands KwikID its API token, so talking to a
//! server whose certificate does not check out would give the token away: each such case must
//! end in `502 upstream_unavailable` before a single request byte reaches that server.
//!
//! Every certificate is made here with rcgen. Each refused case differs from the accepted one
//! (a leaf for `localhost` from a CA that `upstream.ca_file` holds) in exactly one respect.

mod support;

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::mock::Mock;
use support::*;

/// A certificate chain and its key, as a TLS server presents them.
struct Served {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names`, signed by this CA, after `adjust` has had its say
    /// (validity, ...). The chain carries the CA too, as servers commonly send it.
    fn leaf(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Served {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Served {
            chain: vec![cert.der().clone(), self.issuer.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// A leaf for `names` that signed itself: no CA anywhere.
fn self_signed_leaf(names: &[&str]) -> Served {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = params.self_signed(&key).unwrap();
    Served {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// The mock KwikID on an OS-chosen loopback port, presenting `served`.
async fn serve(served: Served) -> Mock {
    let tls = kwikid_gateway::tls::server_config(served.chain, served.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Mock::start(listener, TOKEN, Some(tls), true).unwrap()
}

/// A gateway in front of `mock` (reached as `localhost`), trusting the webpki roots plus
/// `ca_file` when given. The timeouts are generous: only the certificate may fail here.
fn gateway_for(mock: &Mock, ca_file: Option<&Path>) -> Gateway {
    let base_url = base_url_for(mock.addr.port());
    let upstream = upstream_table_for(&base_url, ca_file, "10s", "15s");
    Gateway::start(&config_for(&base_url, Path::new("unused"), &upstream))
}

/// Serves `served` behind a gateway whose `ca_file` holds `trusted` and sends one init: the
/// caller must get exactly the gateway's 502, the handshake must be what failed, and the mock
/// must have received nothing, so the token never left the gateway. The warning names KwikID
/// and gives rustls's reason as `cause` words it.
async fn assert_refused(served: Served, trusted: &Ca, cause: &str) {
    let scratch = Scratch::new();
    let ca_file = scratch.write("ca.pem", &trusted.pem());
    let mock = serve(served).await;
    let gw = gateway_for(&mock, Some(&ca_file));

    let answer = init(gw.addr, r#"{"handshake_id": "hs-1"}"#).await;
    answer.assert_error(502, "upstream_unavailable");
    assert_eq!(answer.text(), UNAVAILABLE_BODY);

    assert_eq!(mock.served(), 0, "a request reached the unverified server");
    assert!(mock.received().is_empty(), "{:?}", mock.received());
    let line = gw.access_line(1);
    assert_eq!(line["status"], 502, "{line}");
    assert_eq!(line["outcome"], "upstream_unavailable", "{line}");
    assert_eq!(
        metric(
            &metrics(gw.admin).await,
            "kwikid_gateway_upstream_errors_total{kind=\"tls\"}"
        ),
        Some(1.0),
        "the TLS handshake is what failed"
    );
    let warning = gw.upstream_warning("tls");
    assert_eq!(
        warning["upstream"],
        format!("localhost:{}", mock.addr.port())
    );
    assert!(
        warning["cause"].as_str().unwrap().starts_with(cause),
        "{warning}"
    );
    let logs = format!("{}\n{}", gw.stdout.text(), gw.stderr.text());
    assert!(!logs.contains(TOKEN), "{logs}");
}

/// What the warning says when the certificate's CA is not trusted.
const UNKNOWN_ISSUER: &str =
    "certificate refused: unknown issuer (not signed by a trusted CA; see upstream.ca_file)";

/// A certificate from a CA the gateway does not trust (the server even sends that CA along):
/// a verifier that accepts any chain would hand the token to whoever answers on KwikID's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_untrusted_ca_is_refused() {
    let trusted = Ca::new("trusted test CA");
    let stranger = Ca::new("untrusted test CA");
    assert_refused(
        stranger.leaf(&["localhost"], |_| {}),
        &trusted,
        UNKNOWN_ISSUER,
    )
    .await;
}

/// The trusted CA, but a certificate for another name than `base_url`'s host: a verifier that
/// checks the chain but not the name would accept any certificate that CA ever signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused() {
    let trusted = Ca::new("trusted test CA");
    assert_refused(
        trusted.leaf(&["verify.test.getkwikid.com"], |_| {}),
        &trusted,
        "certificate refused: not valid for name localhost (it names verify.test.getkwikid.com)",
    )
    .await;
}

/// The trusted CA and the right name, but a certificate that expired: a verifier that ignores
/// validity dates would accept a certificate whose key may long since have leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let trusted = Ca::new("trusted test CA");
    let expired = trusted.leaf(&["localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    assert_refused(
        expired,
        &trusted,
        "certificate refused: expired (not valid after 2021-01-01T00:00:00Z)",
    )
    .await;
}

/// A self-signed leaf for the right name: a verifier that trusts whatever the server presents
/// would accept it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_leaf_is_refused() {
    let trusted = Ca::new("trusted test CA");
    assert_refused(self_signed_leaf(&["localhost"]), &trusted, UNKNOWN_ISSUER).await;
}

/// `upstream.ca_file` adds trust: a CA found only there makes its server's certificate good
/// (200, the request reaches KwikID with the token), and the same server is refused by a
/// gateway without that file. Guards against `ca_file` being ignored, and against the refusals
/// above passing for some reason other than the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_adds_trust_in_its_ca() {
    let private = Ca::new("private test CA");
    let scratch = Scratch::new();
    let ca_file = scratch.write("ca.pem", &private.pem());
    let mock = serve(private.leaf(&["localhost"], |_| {})).await;

    let trusting = gateway_for(&mock, Some(&ca_file));
    let answer = init(trusting.addr, r#"{"handshake_id": "hs-1"}"#).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.gateway_error().is_none());
    assert!(
        answer.json()["redirection_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://localhost:")),
        "{}",
        answer.text()
    );
    let received = mock.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );

    let without = gateway_for(&mock, None);
    let refused = init(without.addr, r#"{"handshake_id": "hs-2"}"#).await;
    refused.assert_error(502, "upstream_unavailable");
    assert_eq!(refused.text(), UNAVAILABLE_BODY);
    assert_eq!(mock.served(), 1, "the refused request never reached KwikID");
    assert_eq!(
        metric(
            &metrics(without.admin).await,
            "kwikid_gateway_upstream_errors_total{kind=\"tls\"}"
        ),
        Some(1.0)
    );
}
