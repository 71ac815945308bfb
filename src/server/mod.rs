//! The proxy listener: accept loop, connection cap, optional TLS / mTLS, hyper's HTTP/1.1
//! and HTTP/2 server (hyper-util's auto builder), graceful drain.
//!
//! - [`gateway`]: the running gateway's shared pieces.
//! - [`protocol`]: which protocol a connection speaks, and hyper's builder for each.
//! - [`tls`]: the handshake and the caller's identity from its certificate.

mod gateway;
mod protocol;
mod tls;

pub use gateway::{Gateway, SetupError};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;

use crate::proxy::Peer;
use crate::rules::trusted;
use protocol::{Builders, Protocol, sniff};

/// How often the per-caller store drops callers whose buckets are full again, and the
/// upstream pool its stale connections.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// A request head is at most 64 fields (431 past that) and 16 KiB (HAProxy's default); a
/// DigiLocker init needs a few hundred bytes.
pub(crate) const MAX_HEADERS: usize = 64;
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves the proxy on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to `listen.shutdown_grace`: HTTP/1.1 answers carry
/// `Connection: close`, HTTP/2 connections get GOAWAY) and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    let listen = &gateway.config.listen;
    // A permit per connection, taken *before* accept: past the cap, callers wait in the
    // kernel's backlog instead of being accepted and starved.
    let slots = Arc::new(Semaphore::new(listen.max_connections));
    let graceful = GracefulShutdown::new();
    let builders = Builders::new(&gateway);
    let tls = listen
        .tls
        .as_ref()
        .map(|t| TlsAcceptor::from(t.server.clone()));
    let pruner = tokio::spawn(prune_forever(gateway.clone()));
    gateway.set_ready(true);

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning or giving up.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = Connection {
            gateway: gateway.clone(),
            builders: builders.clone(),
            watcher: graceful.watcher(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            connection.run(stream, addr, tls).await;
            drop(permit);
        });
    }

    gateway.set_ready(false);
    drop(listener);
    pruner.abort();
    let grace = gateway.config.listen.shutdown_grace;
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        connections = graceful.count(),
        "draining: no new connections, finishing in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed with requests still in flight");
    }
}

async fn prune_forever(gateway: Arc<Gateway>) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        gateway.limits.prune();
        gateway.upstream.evict_idle();
    }
}

/// One caller connection's task.
struct Connection {
    gateway: Arc<Gateway>,
    builders: Builders,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Connection {
    /// The TLS handshake if configured, then HTTP/1.1 or HTTP/2 until the connection closes.
    /// The TLS path is boxed so that a plain connection's task is not sized for a TLS
    /// session: idle keep-alive connections are what most of the gateway's memory holds.
    async fn run(self, stream: TcpStream, addr: SocketAddr, tls: Option<TlsAcceptor>) {
        let _ = stream.set_nodelay(true);
        let listen = &self.gateway.config.listen;
        let in_cidrs = trusted::is_trusted(&listen.allow_cidrs, addr.ip());
        let Some(acceptor) = tls else {
            let peer = Peer {
                addr,
                trusted: in_cidrs,
                certificate_name: None,
            };
            let first_bytes = listen.header_read_timeout;
            let Ok(Ok(protocol)) = tokio::time::timeout(first_bytes, sniff(&stream)).await else {
                self.gateway.metrics.connection_error("header_timeout");
                return;
            };
            return self.serve(stream, peer, protocol).await;
        };
        let mutual = listen.tls.as_ref().is_some_and(|t| t.mutual);
        let timeout = listen.header_read_timeout;
        Box::pin(async move {
            let Some(stream) = tls::accept(&acceptor, stream, timeout).await else {
                return;
            };
            let peer = tls::peer(&stream, addr, in_cidrs, mutual);
            // RFC 7301: the caller chose in the handshake.
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            self.serve(stream, peer, protocol).await;
        })
        .await;
    }

    async fn serve<I>(self, io: I, peer: Peer, protocol: Protocol)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let addr = peer.addr;
        let first_request = Arc::new(AtomicBool::new(false));
        let seen = first_request.clone();
        let stack = ServiceBuilder::new()
            .map_request(move |request| {
                seen.store(true, Ordering::Relaxed);
                request
            })
            .service(self.gateway.pipeline.stack(peer));
        let service = TowerToHyperService::new(stack);
        let builder = match protocol {
            Protocol::Http1 => &self.builders.http1,
            Protocol::Http2 => &self.builders.http2,
        };
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let Self {
            gateway, watcher, ..
        } = self;
        let connection = watcher.watch(connection);
        tokio::pin!(connection);
        // hyper's header timeout starts once it knows the protocol, which takes the caller's
        // first bytes: a connection that sends none, or too few to tell, would otherwise hold
        // its slot for ever. The first request must arrive within `header_read_timeout`.
        let first_deadline = tokio::time::sleep(gateway.config.listen.header_read_timeout);
        let ended = tokio::select! {
            biased;
            ended = &mut connection => ended,
            () = first_deadline => {
                if first_request.load(Ordering::Relaxed) {
                    connection.await
                } else {
                    gateway.metrics.connection_error("header_timeout");
                    tracing::debug!(peer = %addr, "caller sent no request in time; closing");
                    return;
                }
            }
        };
        if let Err(e) = ended {
            refused(&gateway, addr, e.as_ref());
        }
    }
}

/// Every kind [`refused`] (and the first-bytes deadline) counts.
pub(crate) const CONNECTION_ERROR_KINDS: [&str; 5] = [
    "headers_too_large",
    "header_timeout",
    "bad_request",
    "incomplete",
    "io",
];

/// hyper answered by itself (a malformed head, one too large, one too slow) or the
/// connection broke: counted, and logged at debug with the peer, never with the bytes.
fn refused(gateway: &Gateway, addr: SocketAddr, error: &(dyn std::error::Error + 'static)) {
    let kind = match error.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_parse_too_large() => "headers_too_large",
        Some(e) if e.is_timeout() => "header_timeout",
        Some(e) if e.is_parse() || e.is_parse_version_h2() => "bad_request",
        Some(e) if e.is_incomplete_message() => "incomplete",
        _ => "io",
    };
    gateway.metrics.connection_error(kind);
    tracing::debug!(peer = %addr, kind, "caller connection ended with an error");
}

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when
/// this is called, not when it is first polled: call it before announcing readiness, or a
/// signal in between would kill the process with the default action.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
