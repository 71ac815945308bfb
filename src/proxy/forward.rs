//! Step 8, forward: the caller's credentials and topology stripped, the token inserted, one
//! deadline over the whole exchange with KwikID, and KwikID's answer returned unchanged (less
//! hop-by-hop headers). KwikID's own 429 closes the account's bucket until its `Retry-After`;
//! its 401 (the token rejected) is counted and, at most once a minute, logged.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::header::{self, HeaderName};
use http::{Request, StatusCode};
use http_body_util::Full;

use super::body::JsonBody;
use super::exchange::Exchange;
use super::rescue::Reject;
use super::{Answer, Step};
use crate::access_log;
use crate::limits::{self, RateLimits};
use crate::metrics::Metrics;
use crate::rules::headers;
use crate::secret::TokenStore;
use crate::token_watch::TokenWatch;
use crate::upstream::{Upstream, UpstreamError};

/// The innermost service: sends to KwikID. `502 upstream_unavailable` when KwikID could not
/// be reached or broke off, `504 upstream_timeout` past `request_timeout` (SPEC §4). Cloned
/// per request: one shared [`ForwardTo`].
#[derive(Clone)]
pub struct Forward(Arc<ForwardTo>);

/// What forwarding needs, shared by every request.
pub struct ForwardTo {
    pub upstream: Arc<Upstream>,
    pub token: Arc<TokenStore>,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    /// Never forwarded: it names the caller to the gateway only.
    pub caller_header: HeaderName,
    /// Told of KwikID's 401s (SPEC §11).
    pub token_watch: Arc<TokenWatch>,
}

impl Forward {
    pub fn new(to: ForwardTo) -> Self {
        Self(Arc::new(to))
    }
}

impl tower::Service<Request<JsonBody>> for Forward {
    type Response = Answer;
    type Error = Reject;
    type Future = Step;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Reject>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<JsonBody>) -> Step {
        let to = self.0.clone();
        Box::pin(async move { to.forward(request).await })
    }
}

impl ForwardTo {
    async fn forward(&self, request: Request<JsonBody>) -> Result<Answer, Reject> {
        let exchange = Exchange::of(&request);
        let (parts, body) = request.into_parts();
        let head = parts.method == http::Method::HEAD;
        let token = self.token.current();
        let request_id = exchange.as_ref().map(|e| &e.request_id);
        let outgoing = headers::outgoing(
            parts.headers,
            &self.caller_header,
            body.bytes.len(),
            request_id,
        );
        // Scrubbed only when a line is written: tracing evaluates a field only then.
        let logged_id = || {
            let id = request_id
                .and_then(|id| id.to_str().ok())
                .unwrap_or_default();
            access_log::scrub(id, &token).to_owned()
        };
        tracing::trace!(request_id = logged_id(), "forwarding to KwikID");
        let sent = Instant::now();
        let answer = self
            .upstream
            .send(
                parts.method,
                &parts.uri,
                outgoing,
                &token.header,
                body.bytes,
            )
            .await;
        let upstream_time = sent.elapsed();
        self.metrics.upstream(upstream_time);
        let status = answer.as_ref().ok().map(|a| a.status().as_u16());
        if let Some(exchange) = &exchange {
            exchange.note(|trail| {
                trail.upstream_ms = Some(upstream_time.as_secs_f64() * 1000.0);
                trail.upstream_status = status;
                trail.token = Some(token.clone());
            });
        }
        let answer = answer.map_err(|e| {
            self.metrics.upstream_error(e.kind());
            // The cause is in the upstream's own warning, at most once a minute per cause.
            tracing::debug!(
                request_id = logged_id(),
                kind = e.kind(),
                "no answer from KwikID"
            );
            match e {
                UpstreamError::Timeout => Reject::UpstreamTimeout,
                _ => Reject::UpstreamUnavailable,
            }
        })?;

        let (mut parts, bytes) = answer.into_parts();
        if parts.status == StatusCode::UNAUTHORIZED {
            self.token_watch.rejected(&token);
        }
        if parts.status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = parts.headers.get(header::RETRY_AFTER).map(|v| v.as_bytes());
            let hold = limits::upstream_retry_after(retry_after);
            tracing::warn!(
                hold_secs = hold.as_secs(),
                "KwikID answered 429; holding the global bucket closed"
            );
            self.limits.hold_after_upstream_429(hold).await;
        }
        // The caller's protocol is the caller's: hyper frames the answer for it.
        parts.version = http::Version::HTTP_11;
        let length = parts.headers.get(header::CONTENT_LENGTH).cloned();
        headers::strip_answer_headers(&mut parts.headers, Some(bytes.len()));
        if let (true, Some(length)) = (head, length) {
            // KwikID's answer to a HEAD says how long its GET would be; keep that.
            parts.headers.insert(header::CONTENT_LENGTH, length);
        }
        Ok(http::Response::from_parts(parts, Full::new(bytes)))
    }
}
