//! Step 7, limits: the caller's share, then the KwikID account's ceiling (governor buckets,
//! or the shared GCRA in Redis), and KwikID's own 429 hold.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;

use super::body::JsonBody;
use super::exchange::Exchange;
use super::rescue::Reject;
use super::{Answer, Step};
use crate::limits::{Limited, Now, RateLimits};
use crate::metrics::Metrics;
use futures_util::future::Either;

/// `429 rate_limited` with `Retry-After` in whole seconds, rounded up, ≥ 1 (SPEC §4).
#[derive(Clone)]
pub struct LimitsLayer {
    limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
}

impl LimitsLayer {
    pub fn new(limits: Arc<RateLimits>, metrics: Arc<Metrics>) -> Self {
        Self { limits, metrics }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = LimitsStep<S>;

    fn layer(&self, inner: S) -> LimitsStep<S> {
        LimitsStep {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct LimitsStep<S> {
    inner: S,
    layer: LimitsLayer,
}

impl<S> tower::Service<Request<JsonBody>> for LimitsStep<S>
where
    S: tower::Service<Request<JsonBody>, Response = Answer, Error = Reject>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Reject;
    type Future = Either<S::Future, Step>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Reject>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<JsonBody>) -> Self::Future {
        let exchange = Exchange::on(&request);
        let caller = exchange.map_or_else(|| Arc::from(""), |e| e.caller.clone());
        let listed = exchange.and_then(|e| e.listed);
        let LimitsLayer { limits, metrics } = &self.layer;
        // Most requests are decided here, without a future of their own.
        let from = match limits.acquire_now(&caller, listed) {
            Now::Granted => return Either::Left(self.inner.call(request)),
            Now::Refused(limited) => {
                return Either::Right(Box::pin(std::future::ready(Err(refused(limited, metrics)))));
            }
            Now::Later(from) => from,
        };
        // The inner service was made ready for this call; a clone stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let LimitsLayer { limits, metrics } = self.layer.clone();
        Either::Right(Box::pin(async move {
            limits
                .acquire(&caller, listed, &metrics, from)
                .await
                .map_err(|limited| refused(limited, &metrics))?;
            inner.call(request).await
        }))
    }
}

/// The refusal's answer, counted and logged.
fn refused(limited: Limited, metrics: &Metrics) -> Reject {
    tracing::debug!(scope = limited.scope.as_str(), "rate limited");
    metrics.rate_limited(limited.scope.as_str());
    Reject::RateLimited {
        retry_after_secs: limited.retry_after_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::{config, ok};
    use tower::{Layer, Service, ServiceExt};

    /// Guards against a caller over its share reaching KwikID, and against a 429 without a
    /// usable `Retry-After`.
    #[tokio::test]
    async fn a_caller_past_its_burst_gets_429() {
        let config = config("[rate_limit]\nper_caller = { per_second = 1, burst = 2 }\n");
        let layer = LimitsLayer::new(
            Arc::new(RateLimits::new(&config.rate_limit).unwrap()),
            Arc::new(Metrics::new()),
        );
        let mut service = layer.layer(ok());
        for _ in 0..2 {
            let (request, _) = Exchange::for_test(Request::new(JsonBody::default()));
            let answer = service.ready().await.unwrap().call(request).await;
            assert_eq!(answer.unwrap().status(), 200);
        }
        let (request, _) = Exchange::for_test(Request::new(JsonBody::default()));
        let refused = service.oneshot(request).await.unwrap_err();
        assert_eq!(
            refused,
            Reject::RateLimited {
                retry_after_secs: 1
            }
        );
    }
}
