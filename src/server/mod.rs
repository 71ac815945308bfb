//! The proxy listener: accept loop, connection cap, optional TLS / mTLS, hyper's HTTP/1.1
//! and HTTP/2 server, idle and slow-head timeouts, and the drain.
//!
//! - [`gateway`]: the running gateway's shared pieces.
//! - [`protocol`]: which protocol a connection speaks, and hyper's builder for each.
//! - [`tls`]: the handshake and the caller's identity from its certificate.
//! - [`connection`]: one connection's task.
//! - [`idle`]: what a connection waits for, and for how long.
//! - [`track`]: each request counted until hyper has taken its answer.
//! - [`drain`]: the drain after SIGTERM / SIGINT, and its report.

mod connection;
mod drain;
mod gateway;
mod idle;
mod protocol;
mod tls;
mod track;

pub use drain::{Drained, TIME_TO_WRITE};
pub use gateway::{Gateway, SetupError};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use connection::Connection;
use drain::Drain;
use protocol::Builders;

/// How often the per-caller store drops callers whose buckets are full again, and the
/// upstream pool its stale connections.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// A request head is at most 64 fields (431 past that) and 16 KiB (HAProxy's default); a
/// DigiLocker init needs a few hundred bytes.
pub(crate) const MAX_HEADERS: usize = 64;
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Serves the proxy on `listener` until the first of `signals`, then drains (SPEC §7): stops
/// accepting, lets in-flight requests finish within `listen.shutdown_grace` (HTTP/1.1 answers
/// carry `Connection: close`, HTTP/2 connections get GOAWAY, idle connections close), and
/// answers `503 shutting_down` to those still in flight when it ends or a second signal
/// comes (see [`drain`]).
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, mut signals: Signals) -> Drained {
    let listen = &gateway.config.listen;
    // A permit per connection, taken *before* accept: past the cap, callers wait in the
    // kernel's backlog instead of being accepted and starved.
    let slots = Arc::new(Semaphore::new(listen.max_connections));
    let drain = Arc::new(Drain::new());
    let builders = Builders::new(&gateway);
    let tls = listen
        .tls
        .as_ref()
        .map(|t| TlsAcceptor::from(t.server.clone()));
    let pruner = tokio::spawn(prune_forever(gateway.clone()));
    gateway.set_ready(true);

    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = signals.recv() => break,
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
            () = signals.recv() => break,
        };
        let connection = Connection {
            gateway: gateway.clone(),
            builders: builders.clone(),
            drain: drain.clone(),
            phase: drain.watch(),
            _permit: permit,
        };
        tokio::spawn(connection.run(stream, addr, tls.clone()));
    }

    gateway.set_ready(false);
    drop(listener);
    pruner.abort();
    drain::run(&drain, &gateway, &mut signals).await
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

/// Every kind [`refused`] (and the watchdog's `header_timeout`) counts.
pub(crate) const CONNECTION_ERROR_KINDS: [&str; 5] = [
    "headers_too_large",
    "header_timeout",
    "bad_request",
    "incomplete",
    "io",
];

/// hyper answered by itself (a malformed head, one too large), an HTTP/2 ping went
/// unanswered, or the connection broke: counted, and logged at debug with the peer, never
/// with the bytes. (Slow heads and silent connections are the watchdog's: `idle`.)
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

/// SIGTERM and SIGINT (Ctrl-C), received one by one: the first starts the drain, a second
/// ends it at once, a third stops waiting for the last answers to be written.
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        match (&mut self.term, &mut self.interrupt) {
            (Some(term), Some(interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// SIGTERM and SIGINT from now on. The handlers are installed when this is called, not when
/// [`Signals::recv`] is first polled: call it before announcing readiness, or a signal in
/// between would kill the process with the default action.
pub fn shutdown_signal() -> Signals {
    use tokio::signal::unix::{SignalKind, signal};
    Signals {
        term: signal(SignalKind::terminate()).ok(),
        interrupt: signal(SignalKind::interrupt()).ok(),
    }
}
