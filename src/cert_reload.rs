//! The TLS listener's certificate and key, reloaded without a restart as the token is
//! (`src/reload.rs`): both files are re-read every second and on SIGHUP. A new pair serves
//! the next handshake; open connections keep the session they have. A pair that cannot be
//! read, is not PEM, or whose key does not match the certificate keeps the current one, with
//! a warning naming the file (never its content), and
//! `kwikid_gateway_tls_reloads_total{result="ok"|"error"}` counts each result.
//!
//! [`ListenerCert`] is rustls's [`ResolvesServerCert`] over an [`ArcSwap`]'d
//! [`CertifiedKey`]: a handshake reads the current pair without a lock. mTLS's
//! `client_ca_file` is read once at start.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};

use crate::Gateway;

const POLL_EVERY: Duration = Duration::from_secs(1);

/// The listener's certificate chain and key, swappable while it serves.
pub struct ListenerCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

/// Why a pair could not be loaded: the config key of the file at fault, and a reason that
/// names the file but quotes nothing from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    pub key: &'static str,
    pub reason: String,
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl ListenerCert {
    /// Reads the pair at `cert_file` (PEM chain, leaf first) and `key_file` (PEM PKCS#8,
    /// PKCS#1 or SEC1).
    ///
    /// # Errors
    /// A file cannot be read or holds no PEM item of its kind, or the key does not match
    /// the leaf certificate.
    pub fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<Self, CertError> {
        let (_, pair) = read(&cert_file, &key_file);
        Ok(Self {
            current: ArcSwap::from_pointee(pair?),
            cert_file,
            key_file,
        })
    }

    /// The pair handshakes use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for ListenerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl fmt::Debug for ListenerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// A hash of both files' bytes as read (to notice a change without keeping the key), or
/// the error.
#[derive(Clone, PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Failed(CertError),
}

fn read(cert_file: &Path, key_file: &Path) -> (Seen, Result<CertifiedKey, CertError>) {
    let cert_bytes = std::fs::read(cert_file).map_err(|e| CertError {
        key: "listen.tls.cert_file",
        reason: format!("cannot read {}: {e}", cert_file.display()),
    });
    let key_bytes = std::fs::read(key_file).map_err(|e| CertError {
        key: "listen.tls.key_file",
        reason: format!("cannot read {}: {e}", key_file.display()),
    });
    let (cert_bytes, key_bytes) = match (cert_bytes, key_bytes) {
        (Ok(c), Ok(k)) => (c, zeroize::Zeroizing::new(k)),
        (Err(e), _) | (_, Err(e)) => return (Seen::Failed(e.clone()), Err(e)),
    };
    let hash = Sha256::new()
        .chain_update(&cert_bytes)
        .chain_update([0])
        .chain_update(&*key_bytes)
        .finalize()
        .into();
    match parse(cert_file, &cert_bytes, key_file, &key_bytes) {
        Ok(pair) => (Seen::Content(hash), Ok(pair)),
        Err(e) => (Seen::Failed(e.clone()), Err(e)),
    }
}

fn parse(
    cert_file: &Path,
    cert_bytes: &[u8],
    key_file: &Path,
    key_bytes: &[u8],
) -> Result<CertifiedKey, CertError> {
    let cert_error = |what: &str| CertError {
        key: "listen.tls.cert_file",
        reason: format!("{} {what}", cert_file.display()),
    };
    let chain = CertificateDer::pem_slice_iter(cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| cert_error("is not valid PEM"))?;
    if chain.is_empty() {
        return Err(cert_error("holds no PEM certificate"));
    }
    // The key's own parse errors can quote a line of the file: only the kind is said.
    let key = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|e| CertError {
        key: "listen.tls.key_file",
        reason: match e {
            pem::Error::NoItemsFound => format!("{} holds no PEM private key", key_file.display()),
            _ => format!("{} is not a valid PEM private key", key_file.display()),
        },
    })?;
    CertifiedKey::from_der(chain, key, &crate::tls::provider()).map_err(|e| CertError {
        key: "listen.tls.key_file",
        reason: format!(
            "{} does not go with {}: {e}",
            key_file.display(),
            cert_file.display()
        ),
    })
}

/// Watches the listener's pair until the task is dropped; `None` without `[listen.tls]`.
/// Install before serving: SIGHUP's default action would end the process.
pub fn spawn(gateway: Arc<Gateway>) -> Option<tokio::task::JoinHandle<()>> {
    let cert = gateway.config.listen.tls.as_ref()?.certificate.clone();
    gateway.metrics.tls_reloads_known();
    let hangup = signal(SignalKind::hangup());
    // What the files hold now, read before this returns (see `reload::spawn`).
    let mut seen = read(&cert.cert_file, &cert.key_file).0;
    Some(tokio::spawn(async move {
        let Ok(mut hangup) = hangup else {
            tracing::warn!("cannot listen for SIGHUP; certificate reload on signal is off");
            return;
        };
        let mut every = tokio::time::interval(POLL_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = every.tick() => false,
                _ = hangup.recv() => true,
            };
            let (now, pair) = read(&cert.cert_file, &cert.key_file);
            if now == seen && !forced {
                continue;
            }
            seen = now;
            apply(&gateway, &cert, pair, forced);
        }
    }))
}

fn apply(
    gateway: &Gateway,
    cert: &ListenerCert,
    pair: Result<CertifiedKey, CertError>,
    forced: bool,
) {
    let trigger = if forced { "SIGHUP" } else { "file change" };
    match pair {
        Ok(pair) => {
            let leaf = describe(&pair);
            cert.current.store(Arc::new(pair));
            gateway.metrics.tls_reload(true);
            tracing::info!(
                certificate_sha256 = leaf.0,
                not_after = leaf.1,
                trigger,
                "TLS certificate reloaded; new connections get it"
            );
        }
        Err(e) => {
            gateway.metrics.tls_reload(false);
            let (sha256, _) = describe(&cert.current());
            tracing::warn!(
                key = e.key,
                reason = e.reason,
                certificate_sha256 = sha256,
                trigger,
                "TLS certificate reload failed; keeping the current certificate"
            );
        }
    }
}

/// The leaf's SHA-256 (as `openssl x509 -fingerprint -sha256` prints it, without colons)
/// and its expiry, for the log.
fn describe(pair: &CertifiedKey) -> (String, String) {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok(leaf) = pair.end_entity_cert() else {
        return (String::new(), String::new());
    };
    let sha256 = Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let not_after = X509Certificate::from_der(leaf.as_ref())
        .ok()
        .and_then(|(_, c)| c.validity().not_after.to_rfc2822().ok())
        .unwrap_or_default();
    (sha256, not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(scratch: &Path, name: &str) -> (PathBuf, PathBuf) {
        let made = crate::tls::throwaway_server_cert(&["localhost"]).unwrap();
        let cert = scratch.join(format!("{name}.pem"));
        let key = scratch.join(format!("{name}.key"));
        let chain_pem: String = made
            .chain
            .iter()
            .map(|c| pem_of("CERTIFICATE", c.as_ref()))
            .collect();
        std::fs::write(&cert, chain_pem).unwrap();
        std::fs::write(&key, pem_of("PRIVATE KEY", made.key.secret_der())).unwrap();
        (cert, key)
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<_> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// Guards against a key for another certificate, an empty certificate file or a key
    /// file that is not PEM being taken, and against a reason quoting the key file.
    #[test]
    fn bad_pairs_are_refused_with_the_key_at_fault() {
        let dir = std::env::temp_dir().join(format!("kwikid-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_a, key_a) = pair(&dir, "a");
        let (_, key_b) = pair(&dir, "b");
        assert!(ListenerCert::load(cert_a.clone(), key_a.clone()).is_ok());

        let e = ListenerCert::load(cert_a.clone(), key_b).unwrap_err();
        assert_eq!(e.key, "listen.tls.key_file");
        assert!(e.reason.contains("does not go with"), "{e}");

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = ListenerCert::load(empty, key_a).unwrap_err();
        assert_eq!(e.key, "listen.tls.cert_file");
        assert!(e.reason.ends_with("holds no PEM certificate"), "{e}");

        let garbled = dir.join("garbled.key");
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==?!\n-----END PRIVATE KEY-----\n";
        std::fs::write(&garbled, secret).unwrap();
        let e = ListenerCert::load(cert_a, garbled).unwrap_err();
        assert_eq!(e.key, "listen.tls.key_file");
        assert!(!e.reason.contains("c2VjcmV0"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
