//! Step 4, callers: a caller named in `[[callers]]` keeps to its `routes`, and with
//! `rate_limit.unknown_callers = "deny"` a caller that is not named is refused (SPEC §10). After
//! the route (the route decides which routes exist), before the body (a refused caller's body
//! is never read).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;

use super::exchange::Exchange;
use super::rescue::Reject;
use super::{Answer, PassOrRefuse, refuse};
use crate::rules::callers::{Callers, Refusal};
use futures_util::future::Either;

/// `403 caller_not_allowed`, with a sentence of its own for each reason.
#[derive(Clone, Debug)]
pub struct CallersLayer {
    callers: Arc<Callers>,
}

impl CallersLayer {
    pub fn new(callers: Arc<Callers>) -> Self {
        Self { callers }
    }
}

impl<S> tower::Layer<S> for CallersLayer {
    type Service = CallersStep<S>;

    fn layer(&self, inner: S) -> CallersStep<S> {
        CallersStep {
            inner,
            callers: self.callers.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CallersStep<S> {
    inner: S,
    callers: Arc<Callers>,
}

impl<S, B> tower::Service<Request<B>> for CallersStep<S>
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
        if !self.callers.admits_everyone() {
            // The steps above always leave a record with the route on it; a request without
            // them is refused rather than let through unchecked.
            let verdict = match Exchange::on(&request) {
                Some(exchange) => match exchange.route() {
                    Some(route) => self.callers.admits(exchange.listed, route),
                    None => Err(Refusal::NotListed),
                },
                None => Err(Refusal::NotListed),
            };
            if let Err(refusal) = verdict {
                let reject = match refusal {
                    Refusal::NotListed => Reject::CallerNotListed,
                    Refusal::RouteNotAllowed => Reject::RouteNotForCaller,
                };
                return refuse(reject);
            }
        }
        Either::Left(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::RouteLayer;
    use crate::proxy::tests::{config, ok, refused_by};
    use http::HeaderValue;
    use tower::{Layer, ServiceExt};

    const CALLERS: &str = "[[routes]]\nmethod = \"POST\"\npath = \"/verification/v2/digilocker/init\"\n\
        [[routes]]\nmethod = \"POST\"\npath = \"/verification/v2/digilocker/status\"\n\
        [[callers]]\nname = \"orders-svc\"\nroutes = [\"/verification/v2/digilocker/init\"]\n\
        [[callers]]\nname = \"reports-svc\"\n";

    /// The route and callers steps over `inner`, as the stack has them, for `caller` posting
    /// to `path` under `[rate_limit]` `extra`.
    async fn posted<S>(extra: &str, caller: &str, path: &str, inner: S) -> Result<Answer, Reject>
    where
        S: tower::Service<Request<()>, Response = Answer, Error = Reject> + Send + 'static,
        S::Future: Send + 'static,
    {
        let config = config(&format!("{extra}{CALLERS}"));
        let listed = config.callers.find(caller);
        let mut request = Request::post(path).body(()).unwrap();
        let exchange = Exchange::new(HeaderValue::from_static("r"), caller.into(), listed, true);
        request.extensions_mut().insert(exchange);
        let stack = tower::ServiceBuilder::new()
            .layer(RouteLayer::new(config.routes.into()))
            .layer(CallersLayer::new(Arc::new(config.callers)))
            .service(inner);
        stack.oneshot(request).await
    }

    const INIT: &str = "/verification/v2/digilocker/init";
    const STATUS: &str = "/verification/v2/digilocker/status";

    /// Guards against a listed caller reaching a route outside its `routes` (its body would be
    /// read and it would spend the account's permits), and against one held from its own.
    #[tokio::test]
    async fn a_listed_caller_keeps_to_its_routes() {
        let refused = posted("", "orders-svc", STATUS, refused_by()).await;
        assert_eq!(refused.unwrap_err(), Reject::RouteNotForCaller);
        assert!(posted("", "orders-svc", INIT, ok()).await.is_ok());
        assert!(posted("", "reports-svc", STATUS, ok()).await.is_ok());
    }

    /// Guards against `unknown_callers = "deny"` letting an unlisted caller on, and against the
    /// default refusing one.
    #[tokio::test]
    async fn unknown_callers_are_refused_only_with_deny() {
        let deny = "[rate_limit]\nunknown_callers = \"deny\"\n";
        let refused = posted(deny, "stranger", INIT, refused_by()).await;
        assert_eq!(refused.unwrap_err(), Reject::CallerNotListed);
        assert!(posted(deny, "reports-svc", INIT, ok()).await.is_ok());
        assert!(posted("", "stranger", STATUS, ok()).await.is_ok());
    }

    /// Guards against the step refusing anyone when no caller is held to anything.
    #[tokio::test]
    async fn without_callers_everyone_passes() {
        let layer = CallersLayer::new(Arc::new(Callers::default()));
        let answer = layer.layer(ok()).oneshot(Request::new(())).await;
        assert_eq!(answer.unwrap().status(), 200);
    }
}
