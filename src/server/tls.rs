//! The TLS side of a caller connection: the handshake (bounded by `header_read_timeout`),
//! ALPN, and with mTLS the caller's name from its certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::proxy::Peer;
use crate::rules::trusted;

/// Completes the handshake within `timeout`; `None` when it fails or takes too long (the
/// caller never sent a request, so there is nothing to answer).
pub(super) async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake with a caller failed");
            None
        }
        Err(_) => None,
    }
}

/// The peer of a TLS connection: with mTLS (SPEC §7), trusted only with a verified
/// certificate, and named by its first DNS SAN, else its CN.
pub(super) fn peer(
    stream: &TlsStream<TcpStream>,
    addr: SocketAddr,
    in_cidrs: bool,
    mutual: bool,
) -> Peer {
    let certificate_name = if mutual {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| trusted::certificate_name(leaf))
            .map(Arc::<str>::from)
    } else {
        None
    };
    Peer {
        addr,
        trusted: in_cidrs && (!mutual || certificate_name.is_some()),
        certificate_name,
    }
}
