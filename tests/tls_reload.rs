//! The TLS listener's certificate and key reload without a restart, as the token does: on a
//! file change (here the atomic symlink swap of a Kubernetes Secret volume) and on SIGHUP.
//! New connections get the new certificate, open ones keep working, and a bad pair keeps
//! the old one with a warning. Certificates are made with rcgen.

mod support;

use std::path::{Path, PathBuf};

use rcgen::{CertifiedIssuer, KeyPair};
use support::pki::{Leaf, ca, client_trusting, leaf, served_leaf};
use support::*;

/// Certificate files in a directory laid out as a Secret volume: `live` is a symlink to one
/// version's directory, swapped atomically.
struct Secret {
    dir: Scratch,
}

impl Secret {
    fn new() -> Self {
        Self {
            dir: Scratch::new(),
        }
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.0.join("live/tls.crt")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.0.join("live/tls.key")
    }

    /// Writes version `name` (`cert` with the key of `key`) and makes it the live one.
    fn publish(&self, name: &str, cert: &Leaf, key: &Leaf) {
        let version = self.dir.0.join(name);
        std::fs::create_dir_all(&version).unwrap();
        std::fs::write(version.join("tls.crt"), &cert.chain_pem).unwrap();
        std::fs::write(version.join("tls.key"), &key.key_pem).unwrap();
        let next = self.dir.0.join("live.next");
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(Path::new(name), &next).unwrap();
        std::fs::rename(&next, self.dir.0.join("live")).unwrap();
    }
}

fn server_leaf(issuer: &CertifiedIssuer<'static, KeyPair>, cn: &str) -> Leaf {
    leaf(issuer, &["localhost", "127.0.0.1"], cn, false)
}

/// `kwikid_gateway_tls_reloads_total{result}` reaches `n`.
async fn reloads(gw: &Gateway, result: &str, n: f64) {
    let series = format!("kwikid_gateway_tls_reloads_total{{result=\"{result}\"}}");
    eventually(&format!("{series} {n}"), HANG_GUARD, || async {
        metric(&metrics(gw.admin).await, &series) == Some(n)
    })
    .await;
}

/// The leaf a new connection gets.
async fn served(gw: &Gateway, issuer: &CertifiedIssuer<'static, KeyPair>) -> Vec<u8> {
    served_leaf(gw.addr, client_trusting(issuer))
        .await
        .expect("a TLS handshake")
        .to_vec()
}

/// Swapped files serve the next connection while an open one keeps working; a key that
/// does not go with its certificate keeps the current pair, with a warning naming the key
/// file and a counted error; SIGHUP reloads even unchanged files. Guards against renewed
/// certificates needing a restart (dropping every caller connection), a bad pair taking the
/// listener down, and a reload that goes unreported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_certificate_files_serve_new_connections() {
    let upstream = Upstream::start().await;
    let issuer = ca("gateway server CA");
    let secret = Secret::new();
    let v1 = server_leaf(&issuer, "gateway v1");
    secret.publish("v1", &v1, &v1);
    let gw = Gateway::start(&upstream.config(&format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[listen.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        secret.cert_file().display(),
        secret.key_file().display()
    )));
    assert_eq!(served(&gw, &issuer).await, v1.chain[0].to_vec());
    let mut open = ClientConn::connect_tls(gw.addr, client_trusting(&issuer))
        .await
        .unwrap();
    let answer = open.send_within(init_request_as("open"), HANG_GUARD).await;
    assert_eq!(answer.unwrap().status, 200);

    let v2 = server_leaf(&issuer, "gateway v2");
    secret.publish("v2", &v2, &v2);
    reloads(&gw, "ok", 1.0).await;
    let line = gw.stderr.wait_for("the reload line", HANG_GUARD, |l| {
        l.contains("TLS certificate reloaded")
    });
    assert!(line.contains("\"trigger\":\"file change\""), "{line}");
    assert_eq!(served(&gw, &issuer).await, v2.chain[0].to_vec());
    let answer = open.send_within(init_request_as("open"), HANG_GUARD).await;
    assert_eq!(
        answer.unwrap().status,
        200,
        "the open connection still works"
    );

    // v3's certificate with v2's key.
    let v3 = server_leaf(&issuer, "gateway v3");
    secret.publish("v3", &v3, &v2);
    reloads(&gw, "error", 1.0).await;
    let warning = gw
        .stderr
        .wait_for("the failed reload's warning", HANG_GUARD, |l| {
            l.contains("TLS certificate reload failed; keeping the current certificate")
        });
    let warning: serde_json::Value = serde_json::from_str(&warning).unwrap();
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["key"], "listen.tls.key_file", "{warning}");
    assert_eq!(served(&gw, &issuer).await, v2.chain[0].to_vec(), "v2 stays");
    assert_eq!(reloads_now(&gw, "ok").await, 1.0);

    secret.publish("v4", &v3, &v3);
    reloads(&gw, "ok", 2.0).await;
    assert_eq!(served(&gw, &issuer).await, v3.chain[0].to_vec());
    gw.signal("HUP");
    reloads(&gw, "ok", 3.0).await;
    gw.stderr
        .wait_for("the SIGHUP reload line", HANG_GUARD, |l| {
            l.contains("TLS certificate reloaded") && l.contains("\"trigger\":\"SIGHUP\"")
        });
    assert_eq!(served(&gw, &issuer).await, v3.chain[0].to_vec());

    let logs = format!("{}\n{}", gw.stdout.text(), gw.stderr.text());
    for key in [&v1, &v2, &v3] {
        let body = key.key_pem.lines().nth(1).unwrap();
        assert!(!logs.contains(body), "key material in the logs");
    }
    assert!(!logs.contains(TOKEN));
}

/// The count of `kwikid_gateway_tls_reloads_total{result}` now, 0 when absent.
async fn reloads_now(gw: &Gateway, result: &str) -> f64 {
    let series = format!("kwikid_gateway_tls_reloads_total{{result=\"{result}\"}}");
    metric(&metrics(gw.admin).await, &series).unwrap_or(0.0)
}

/// A key file that is not PEM at start is refused in one line naming the key, without its
/// content. Guards against a start with no certificate, or a config error quoting the key.
#[test]
fn a_bad_key_at_start_is_one_line_naming_the_key() {
    let issuer = ca("gateway server CA");
    let secret = Secret::new();
    let v1 = server_leaf(&issuer, "gateway v1");
    secret.publish("v1", &v1, &v1);
    std::fs::write(
        secret.dir.0.join("v1/tls.key"),
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==?!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let config = secret.dir.write(
        "gateway.toml",
        &format!(
            "[upstream]\nbase_url = \"https://kwikid.example\"\n[listen.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            secret.cert_file().display(),
            secret.key_file().display()
        ),
    );
    let out = check_config(&config);
    assert_exit(&out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("listen.tls.key_file"), "{stderr}");
    assert!(!stderr.contains("c2VjcmV0"), "{stderr}");
}
