//! The running gateway: the pieces the steps, the admin listener and the token reload share,
//! built once from a validated config.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::limits::redis::RedisFailure;
use crate::limits::{RateLimits, Scope};
use crate::metrics::{Known, Metrics};
use crate::proxy::{Pipeline, access_log, forward, limits, rescue};
use crate::secret::{Token, TokenStore};
use crate::token_watch::TokenWatch;
use crate::upstream::{Upstream, UpstreamError};

/// The running gateway: the pieces the steps, the admin listener and the token reload share.
pub struct Gateway {
    pub config: Config,
    pub token: Arc<TokenStore>,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
    /// What is said about the token's expiry and KwikID's 401s.
    pub token_watch: Arc<TokenWatch>,
    /// True while the proxy accepts traffic; `/readyz` answers 503 otherwise.
    pub ready: AtomicBool,
    pub(super) upstream: Arc<Upstream>,
    pub(super) pipeline: Pipeline,
}

impl Gateway {
    /// # Errors
    /// The upstream TLS client or the Redis client cannot be set up.
    pub fn new(
        config: Config,
        token: &Token,
        access_log: AccessLog,
    ) -> Result<Arc<Self>, SetupError> {
        let metrics = Arc::new(Metrics::new());
        metrics.token_in_use(&token.fingerprint());
        let limits = Arc::new(RateLimits::new(&config.rate_limit).map_err(|_| SetupError::Redis)?);
        metrics.limit_backend(limits.preferred_backend());
        let token = Arc::new(TokenStore::new(token));
        let token_watch = Arc::new(TokenWatch::new(config.warn_before_expiry, metrics.clone()));
        metrics.token_expiry(token.current().expires);
        let callers = Arc::new(config.callers.clone());
        let names: Vec<_> = callers.listed().iter().map(|c| c.name.clone()).collect();
        metrics.listed_callers(&names, &access_log::outcomes());
        let upstream = Arc::new(Upstream::new(&config.upstream).map_err(SetupError::Tls)?);
        let access_log = Arc::new(access_log);
        let routes: Arc<[_]> = config.routes.clone().into();
        metrics.zero(&Known {
            routes: &routes.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
            codes: rescue::CODES,
            before_route: rescue::BEFORE_ROUTE,
            scopes: &Scope::NAMES,
            upstream_error_kinds: &UpstreamError::KINDS,
            connection_error_kinds: &super::CONNECTION_ERROR_KINDS,
            redis_error_kinds: if config.rate_limit.redis.is_some() {
                &RedisFailure::COUNTED
            } else {
                &[]
            },
        });
        let caller_header = config.rate_limit.caller_header.clone();
        let pipeline = Pipeline {
            recorder: Arc::new(access_log::Recorder {
                sink: access_log.clone(),
                metrics: metrics.clone(),
                token: token.clone(),
                routes: routes.clone(),
                caller_header: caller_header.clone(),
                callers: callers.clone(),
            }),
            routes,
            callers,
            max_body_bytes: config.listen.max_body_bytes,
            body_timeout: config.upstream.request_timeout,
            policy: Arc::new(config.policy.clone()),
            limits: limits::LimitsLayer::new(limits.clone(), metrics.clone()),
            forward: forward::Forward::new(forward::ForwardTo {
                upstream: upstream.clone(),
                token: token.clone(),
                limits: limits.clone(),
                metrics: metrics.clone(),
                caller_header,
                token_watch: token_watch.clone(),
            }),
            grace: Arc::default(),
        };
        Ok(Arc::new(Self {
            config,
            token,
            limits,
            metrics,
            access_log,
            token_watch,
            ready: AtomicBool::new(false),
            upstream,
            pipeline,
        }))
    }
}

impl Gateway {
    /// Marks the proxy as accepting traffic or not: `/readyz` and `kwikid_gateway_ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        self.metrics.ready(ready);
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
