//! `check --connect`: a connection to KwikID made as a request's would be (DNS, TCP, the
//! egress proxy's tunnel, TLS with certificate verification), then closed before anything is
//! sent inside it.

use tokio::io::AsyncWriteExt;

use super::Upstream;

impl Upstream {
    /// Connects to KwikID as a request would (DNS, TCP, the egress proxy's tunnel, TLS)
    /// within `connect_timeout`, then closes the connection without sending a request: what
    /// `check --connect` does. `Ok` says what was reached.
    ///
    /// # Errors
    /// Why KwikID could not be reached, in the words of the warning a request would log.
    pub async fn probe(&self) -> Result<String, String> {
        let target = self.connector.target();
        let proxy = self.connector.proxy();
        let via = proxy
            .as_ref()
            .map_or_else(String::new, |p| format!(" through proxy {p}"));
        let mut tls = self.connector.handshake().await.map_err(|f| {
            // A cause that is the proxy's names it already.
            let via = match &proxy {
                Some(p) if f.cause.contains(p.as_str()) => "",
                _ => via.as_str(),
            };
            format!("cannot reach KwikID at {target}{via}: {}", f.cause)
        })?;
        let session = tls.get_ref().1;
        let version = session
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("TLS");
        let alpn = match session.alpn_protocol() {
            Some(b"h2") => "HTTP/2",
            _ => "HTTP/1.1",
        };
        // close_notify: the server sees a clean close, not a broken connection.
        let _ = tls.shutdown().await;
        Ok(format!(
            "reached KwikID at {target}{via}: {version} handshake complete, certificate \
             verified, {alpn}; no request sent"
        ))
    }
}
