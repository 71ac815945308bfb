//! The proxy listener: accept loop, connection cap, optional TLS / mTLS, graceful drain.
//! What happens on a connection once it is accepted is the `connection` module's.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{Notify, Semaphore};
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
            upstream: Upstream::new(&config.upstream).map_err(SetupError::Tls)?,
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
    // Wakes every idle connection once draining starts, so it closes instead of waiting.
    let drain = Arc::new(Notify::new());
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
        let drained = drain.clone().notified_owned();
        let tls = tls.clone();
        tokio::spawn(async move {
            connection(stream, addr, tls, gateway, drained).await;
            drop(permit);
        });
    }

    // Connections finishing a request see this and close after its answer.
    gateway.ready.store(false, Ordering::Release);
    drain.notify_waiters();
    drop(listener);
    pruner.abort();
    let grace = gateway.config.listen.shutdown_grace;
    let all = u32::try_from(listen.max_connections).unwrap_or(u32::MAX);
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        connections = listen.max_connections - slots.available_permits(),
        "draining: no new connections, finishing in-flight requests"
    );
    // Every connection holds a permit until it ends: all permits back means all done.
    if tokio::time::timeout(grace, slots.acquire_many(all))
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

/// One caller connection: the TLS handshake if configured (bounded by `header_read_timeout`),
/// then HTTP/1.1 until it closes. The TLS path is boxed so that a plain connection's task is
/// not sized for a TLS session: idle keep-alive connections are what most of the gateway's
/// memory holds.
async fn connection(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
    drained: OwnedNotified,
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
        return crate::connection::serve(stream, peer, gateway, drained).await;
    };
    Box::pin(serve_tls(
        stream, addr, in_cidrs, acceptor, gateway, drained,
    ))
    .await;
}

async fn serve_tls(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    in_cidrs: bool,
    acceptor: TlsAcceptor,
    gateway: Arc<Gateway>,
    drained: OwnedNotified,
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
    crate::connection::serve(stream, peer, gateway, drained).await;
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
