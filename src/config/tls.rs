//! `listen.tls`: the caller-facing certificate (reloadable), mTLS, and ALPN; PEM reading
//! shared with `upstream.ca_file`.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{ConfigError, ListenTls, RawListenTls};
use crate::cert_reload::ListenerCert;

impl RawListenTls {
    pub(super) fn validate(&self, path: &Path, here: &Path) -> Result<ListenTls, ConfigError> {
        // Reloaded on SIGHUP and on file change (`crate::cert_reload`); read here first so
        // that a bad pair stops the start with one line.
        let certificate = ListenerCert::load(here.join(&self.cert_file), here.join(&self.key_file))
            .map(Arc::new)
            .map_err(|e| ConfigError::at(path, e.key, e.reason))?;
        let builder = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::at(path, "listen.tls", e))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certificates(&here.join(ca))
                    .map_err(|e| ConfigError::at(path, "listen.tls.client_ca_file", e))?
                {
                    roots
                        .add(cert)
                        .map_err(|e| ConfigError::at(path, "listen.tls.client_ca_file", e))?;
                }
                // Callers without a certificate complete the handshake and then get a clear
                // 403 caller_not_allowed; a certificate that fails verification never does.
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    std::sync::Arc::new(roots),
                    crate::tls::provider(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| ConfigError::at(path, "listen.tls.client_ca_file", e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder.with_cert_resolver(certificate.clone());
        // RFC 7301: callers pick HTTP/2 or HTTP/1.1; the same limits hold on both.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ListenTls {
            server: Arc::new(server),
            mutual: self.client_ca_file.is_some(),
            certificate,
        })
    }
}

/// Reads every PEM certificate in `file`; an empty file is an error.
pub fn read_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", file.display()));
    }
    Ok(certs)
}
