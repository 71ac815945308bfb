//! Step 2, trust: the peer address (and, with mTLS, its certificate), decided when the
//! connection was accepted, before anything the caller wrote is looked at.

use std::task::{Context, Poll};

use http::Request;

use super::exchange::Exchange;
use super::rescue::Reject;
use super::{Answer, PassOrRefuse, refuse};
use futures_util::future::Either;

/// Refuses callers outside `listen.allow_cidrs` (or without a valid client certificate)
/// with `403 caller_not_allowed` (SPEC §4, first row).
#[derive(Clone, Copy, Debug, Default)]
pub struct TrustLayer;

impl<S> tower::Layer<S> for TrustLayer {
    type Service = Trust<S>;

    fn layer(&self, inner: S) -> Trust<S> {
        Trust { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Trust<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Trust<S>
where
    S: tower::Service<Request<B>, Response = Answer, Error = Reject>,
{
    type Response = Answer;
    type Error = Reject;
    type Future = PassOrRefuse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Reject>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // A request without a record never came through the access-log step: not trusted.
        if !Exchange::on(&request).is_some_and(|e| e.trusted) {
            return refuse(Reject::CallerNotAllowed);
        }
        Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::{ok, refused_by};
    use http::HeaderValue;
    use tower::{Layer, ServiceExt};

    /// Guards against an untrusted peer's request reaching the steps below.
    #[tokio::test]
    async fn untrusted_peers_are_refused_before_anything_else() {
        let request = Request::new(());
        let exchange = Exchange::new(HeaderValue::from_static("r"), "c".into(), None, false);
        let mut request = request;
        request.extensions_mut().insert(exchange);
        let refused = TrustLayer.layer(refused_by()).oneshot(request).await;
        assert_eq!(refused.unwrap_err(), Reject::CallerNotAllowed);
    }

    /// Guards against a trusted peer being refused.
    #[tokio::test]
    async fn trusted_peers_pass() {
        let (request, _) = Exchange::for_test(Request::new(()));
        let answer = TrustLayer.layer(ok()).oneshot(request).await.unwrap();
        assert_eq!(answer.status(), 200);
    }
}
