//! One caller connection's task: the TLS handshake if configured, then hyper's HTTP/1.1 or
//! HTTP/2 server over the stack until the connection closes, its timer fires
//! ([`super::idle`]) or the drain closes it ([`super::drain`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use super::drain::{Drain, Phase};
use super::idle::{Activity, Wait, Watchdog, Watched};
use super::protocol::{Builders, Protocol, sniff};
use super::track::Track;
use super::{Gateway, refused, tls};
use crate::proxy::Peer;
use crate::rules::trusted;

/// What a connection's task needs from the server.
pub(super) struct Connection {
    pub(super) gateway: Arc<Gateway>,
    pub(super) builders: Builders,
    pub(super) drain: Arc<Drain>,
    /// Taken at accept, so the drain counts the connection from then on (its handshake
    /// included) and sees every phase change.
    pub(super) phase: tokio::sync::watch::Receiver<Phase>,
    /// The connection's place under `listen.max_connections`, given back when its task ends.
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Connection {
    /// The TLS handshake if configured, then HTTP/1.1 or HTTP/2 until the connection closes:
    /// the connection's task.
    ///
    /// Idle keep-alive connections are what most of the gateway's memory holds, and each one
    /// holds this future whole, so it is kept small: 1,792 bytes with tokio's task header
    /// (jemalloc's 1,792-byte size class), where it was 3,072 with hyper-util's connection, an
    /// `async fn` per step and a block around it for the permit (`benches/idle_conns.py`:
    /// ~1.3 KiB less per idle caller). The TLS path and HTTP/2 are boxed, so a plain HTTP/1.1
    /// connection's task is not sized for them; `run`, `serve` and `watch` return `async
    /// move` blocks instead of being `async fn`s, which keep each argument twice, as given
    /// and as the body's own binding (rust-lang/rust#62958); `serve` and `watch` borrow the
    /// connection's parts, which stay in this future.
    // An `async fn` here would hold every argument twice: see above.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run(
        mut self,
        stream: TcpStream,
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) -> impl Future<Output = ()> {
        async move {
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
                let Ok(Ok(protocol)) = tokio::time::timeout(first_bytes, sniff(&stream)).await
                else {
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
    }

    /// hyper's connection for `protocol` over `io`, pinned here and watched by [`Self::watch`]
    /// until it ends.
    #[allow(clippy::manual_async_fn)] // As `run`: each argument held once.
    fn serve<I>(&mut self, io: I, peer: Peer, protocol: Protocol) -> impl Future<Output = ()>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let addr = peer.addr;
            let activity = Arc::new(Activity::default());
            let http1 = protocol == Protocol::Http1;
            let stack = Track {
                inner: self.gateway.pipeline.stack(peer),
                activity: activity.clone(),
                drain: self.drain.clone(),
                keep_alive: http1.then(|| self.builders.keep_alive.clone()),
            };
            let io = TokioIo::new(Watched::new(io, activity.clone()));
            let service = TowerToHyperService::new(stack);
            if http1 {
                let connection = pin!(self.builders.http1.serve_connection(io, service));
                self.watch(connection, |c| c.graceful_shutdown(), &activity, addr, true)
                    .await;
            } else {
                // Boxed: hyper's HTTP/2 connection is 1,760 bytes against 912 for HTTP/1.1,
                // and would otherwise size every HTTP/1.1 connection's task too.
                let http2 = self.builders.http2.clone();
                Box::pin(async move {
                    let connection = pin!(http2.serve_connection(io, service));
                    self.watch(
                        connection,
                        |c| c.graceful_shutdown(),
                        &activity,
                        addr,
                        false,
                    )
                    .await;
                })
                .await;
            }
        }
    }

    /// Drives hyper's `connection` until it ends, its timer fires ([`super::idle`]) or the
    /// drain closes it; `close` is hyper's graceful shutdown for its protocol.
    #[allow(clippy::manual_async_fn)] // As `run`: each argument held once.
    fn watch<C>(
        &mut self,
        mut connection: Pin<&mut C>,
        close: fn(Pin<&mut C>),
        activity: &Activity,
        addr: SocketAddr,
        http1: bool,
    ) -> impl Future<Output = ()>
    where
        C: Future<Output = hyper::Result<()>>,
    {
        async move {
            let Self {
                gateway,
                drain,
                phase,
                ..
            } = self;
            let listen = &gateway.config.listen;
            let timer = tokio::time::sleep(listen.header_read_timeout);
            tokio::pin!(timer);
            let mut dog = Watchdog::new(
                listen.header_read_timeout,
                listen.idle_timeout,
                http1,
                timer.as_mut(),
            );
            let mut shutting = false;
            loop {
                let event = tokio::select! {
                    biased;
                    event = Guarded {
                        connection: connection.as_mut(),
                        dog: &mut dog,
                        timer: timer.as_mut(),
                        activity,
                    } => event,
                    Ok(()) = phase.changed() => Event::Phase(*phase.borrow_and_update()),
                    () = activity.went_idle.notified(), if !http1 => Event::Look,
                };
                match event {
                    Event::Look => {}
                    Event::Ended(Ok(())) => return,
                    Event::Ended(Err(e)) => return refused(gateway, addr, e.as_ref()),
                    // The first request, or a head that started, is too slow: closed without an
                    // answer, as hyper's own header timeout does.
                    Event::Timeout(Wait::Head) => {
                        gateway.metrics.connection_error("header_timeout");
                        tracing::debug!(peer = %addr, "a request head did not arrive in time; closing");
                        return;
                    }
                    Event::Timeout(_) => {
                        tracing::debug!(peer = %addr, "caller connection idle; closing");
                        if activity.write_blocked() {
                            // It does not read what it was sent: nothing to wait for.
                            return;
                        }
                        dog.closing();
                        if !std::mem::replace(&mut shutting, true) {
                            close(connection.as_mut());
                        }
                    }
                    Event::Phase(Phase::Cut) => {
                        if http1 && activity.write_blocked() {
                            drain.note_cut(activity.last_answered());
                        }
                        return;
                    }
                    Event::Phase(Phase::Serving) => {}
                    Event::Phase(Phase::Draining) => {
                        if !std::mem::replace(&mut shutting, true) {
                            close(connection.as_mut());
                        }
                    }
                }
            }
        }
    }
}

/// What ends a wait on the connection.
enum Event {
    Ended(Result<(), Box<dyn std::error::Error + Send + Sync>>),
    Timeout(Wait),
    Phase(Phase),
    /// Something changed outside the connection's poll: look again.
    Look,
}

/// Polls the connection, then lets the watchdog see what that poll did (a request came, an
/// answer left, bytes arrived) and polls its timer: events happen only inside the
/// connection's poll, so the timer is always armed for what the connection waits for now.
struct Guarded<'a, C> {
    connection: Pin<&'a mut C>,
    dog: &'a mut Watchdog,
    timer: Pin<&'a mut Sleep>,
    activity: &'a Activity,
}

impl<C, E> Future for Guarded<'_, C>
where
    C: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Event;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event> {
        let this = &mut *self;
        if let Poll::Ready(ended) = this.connection.as_mut().poll(cx) {
            return Poll::Ready(Event::Ended(ended.map_err(Into::into)));
        }
        this.dog.observe(this.activity, this.timer.as_mut());
        // A timer that fired before a deadline moved later is re-armed there and polled again.
        while this.dog.armed() && this.timer.as_mut().poll(cx).is_ready() {
            if this.dog.due(this.timer.as_mut()) {
                return Poll::Ready(Event::Timeout(this.dog.wait));
            }
        }
        Poll::Pending
    }
}
