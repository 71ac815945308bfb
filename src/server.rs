//! The proxy listener: accept loop, connection cap, HTTP/1 settings, graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::rate_limit::RateLimits;
use crate::secret::{Token, TokenStore};
use crate::stack::Peer;
use crate::upstream::Upstream;

/// How often the per-caller store drops callers whose buckets are full again.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub config: Config,
    pub token: TokenStore,
    pub limits: RateLimits,
    pub upstream: Upstream,
    pub access_log: AccessLog,
}

impl Gateway {
    pub fn new(
        config: Config,
        token: &Token,
        access_log: AccessLog,
    ) -> Result<Arc<Self>, rustls::Error> {
        Ok(Arc::new(Self {
            token: TokenStore::new(token),
            limits: RateLimits::new(&config.rate_limit),
            upstream: Upstream::new(&config.upstream)?,
            access_log,
            config,
        }))
    }
}

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
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(listen.header_read_timeout)
        .max_headers(64)
        .keep_alive(true);

    let pruner = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PRUNE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                gateway.limits.prune();
            }
        })
    };

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
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            addr,
            trusted: crate::trusted::is_trusted(&gateway.config.listen.allow_cidrs, addr.ip()),
        };
        let gateway = gateway.clone();
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(req, peer).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }

    drop(listener);
    pruner.abort();
    let grace = gateway.config.listen.shutdown_grace;
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "draining: no new connections, finishing in-flight requests"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed with requests still in flight");
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). Handlers are installed on the first poll, so call
/// this before serving: until then the default action would kill the process mid-request.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
