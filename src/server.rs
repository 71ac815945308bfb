//! The proxy listener: accept loop, connection cap, optional TLS / mTLS, HTTP/1 settings,
//! graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rate_limit::RateLimits;
use crate::secret::{Token, TokenStore};
use crate::stack::Peer;
use crate::upstream::Upstream;

/// How often the per-caller store drops callers whose buckets are full again, and the
/// upstream pool its stale connections.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub config: Config,
    pub token: TokenStore,
    pub limits: RateLimits,
    pub upstream: Upstream,
    pub access_log: AccessLog,
    pub metrics: Metrics,
    /// True while the proxy accepts traffic; `/readyz` answers 503 otherwise.
    pub ready: AtomicBool,
}

impl Gateway {
    pub fn new(
        config: Config,
        token: &Token,
        access_log: AccessLog,
    ) -> Result<Arc<Self>, SetupError> {
        let metrics = Metrics::new();
        metrics.token_in_use(&token.fingerprint());
        let limits = RateLimits::new(&config.rate_limit).map_err(|_| SetupError::Redis)?;
        metrics.limit_backend(limits.preferred_backend());
        Ok(Arc::new(Self {
            token: TokenStore::new(token),
            limits,
            upstream: Upstream::new(&config.upstream, &config.routes).map_err(SetupError::Tls)?,
            access_log,
            metrics,
            ready: AtomicBool::new(false),
            config,
        }))
    }
}

/// What can stop a gateway from being set up once its config is valid.
#[derive(Debug)]
pub enum SetupError {
    Tls(rustls::Error),
    /// The Redis client could not be created (the URL is never part of the message).
    Redis,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "cannot set up TLS to the upstream: {e}"),
            Self::Redis => f.write_str("cannot set up the Redis client for rate_limit.redis_url"),
        }
    }
}

impl std::error::Error for SetupError {}

/// Serves the proxy on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (up to `listen.shutdown_grace`) and closes idle connections.
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
    let tls = listen
        .tls
        .as_ref()
        .map(|t| TlsAcceptor::from(t.server.clone()));
    let pruner = tokio::spawn(prune_forever(gateway.clone()));
    gateway.ready.store(true, Ordering::Release);

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
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
        let gateway = gateway.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            connection(stream, addr, tls, gateway, watcher).await;
            drop(permit);
        });
    }

    gateway.ready.store(false, Ordering::Release);
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

/// One caller connection: the TLS handshake if configured (bounded by `header_read_timeout`,
/// which hyper does not cover), then HTTP/1 until it closes. The TLS path is boxed so that a
/// plain connection's task is not sized for a TLS session: idle keep-alive connections are
/// what most of the gateway's memory holds.
async fn connection(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    watcher: Watcher,
) {
    let _ = stream.set_nodelay(true);
    let listen = &gateway.config.listen;
    let in_cidrs = crate::trusted::is_trusted(&listen.allow_cidrs, addr.ip());
    let Some(acceptor) = tls else {
        let peer = Peer {
            addr,
            trusted: in_cidrs,
            certificate_name: None,
        };
        return serve_http(TokioIo::new(stream), peer, gateway, watcher).await;
    };
    Box::pin(serve_tls(
        stream, addr, in_cidrs, acceptor, gateway, watcher,
    ))
    .await;
}

async fn serve_tls(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    in_cidrs: bool,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    watcher: Watcher,
) {
    let listen = &gateway.config.listen;
    let Ok(Ok(stream)) =
        tokio::time::timeout(listen.header_read_timeout, acceptor.accept(stream)).await
    else {
        return;
    };
    let mutual = listen.tls.as_ref().is_some_and(|t| t.mutual);
    let certificate_name = if mutual {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| crate::trusted::certificate_name(leaf))
            .map(Arc::<str>::from)
    } else {
        None
    };
    let peer = Peer {
        addr,
        trusted: in_cidrs && (!mutual || certificate_name.is_some()),
        certificate_name,
    };
    serve_http(TokioIo::new(stream), peer, gateway, watcher).await;
}

async fn serve_http<I>(io: I, peer: Peer, gateway: Arc<Gateway>, watcher: Watcher)
where
    I: Read + Write + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(gateway.config.listen.header_read_timeout)
        // A DigiLocker init needs a few hundred bytes of head. Past 64 headers or 16 KiB of
        // head (HAProxy's default), the caller gets 431 and the connection is closed.
        .max_headers(64)
        .max_header_size(16 * 1024)
        .keep_alive(true);
    // hyper keeps one slot per connection sized for the service's future, for the
    // connection's whole life. Boxing the request's future keeps that slot a pointer, so an
    // idle keep-alive connection does not hold a request-sized block of memory.
    let service = service_fn(move |req| {
        let gateway = gateway.clone();
        let peer = peer.clone();
        let handled: Pin<Box<dyn Future<Output = _> + Send>> =
            Box::pin(async move { Ok::<_, Infallible>(gateway.handle(req, &peer).await) });
        handled
    });
    let _ = watcher.watch(http.serve_connection(io, service)).await;
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
