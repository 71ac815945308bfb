//! Step 3, route: the exact method and path from the allowlist; absolute-form targets and
//! CONNECT never match, so the caller never chooses where the gateway connects.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Version};

use super::exchange::Exchange;
use super::rescue::Reject;
use super::{Answer, PassOrRefuse, refuse};
use crate::rules::route::{self, Miss, Route};
use futures_util::future::Either;

/// Fields a request head may have; `431 headers_too_large` past it.
pub const MAX_HEADERS: usize = 64;

/// `431 headers_too_large` for an HTTP/2 head of more than [`MAX_HEADERS`] fields, then
/// `404 no_route`, or `405 method_not_allowed` with `Allow` where only the method differs
/// (SPEC §4; RFC 9110 §15.5.6).
#[derive(Clone, Debug)]
pub struct RouteLayer {
    routes: Arc<[Route]>,
}

impl RouteLayer {
    pub fn new(routes: Arc<[Route]>) -> Self {
        Self { routes }
    }
}

impl<S> tower::Layer<S> for RouteLayer {
    type Service = RouteStep<S>;

    fn layer(&self, inner: S) -> RouteStep<S> {
        RouteStep {
            inner,
            routes: self.routes.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RouteStep<S> {
    inner: S,
    routes: Arc<[Route]>,
}

/// The request target as the route table compares it: origin-form for HTTP/1.1 (an
/// absolute-form target keeps its scheme and so matches nothing), `:path` for HTTP/2.
pub fn target<B>(request: &Request<B>) -> &str {
    let uri = request.uri();
    if request.version() != Version::HTTP_2 && uri.authority().is_some() {
        return "";
    }
    uri.path_and_query().map_or("", |pq| pq.as_str())
}

impl<S, B> tower::Service<Request<B>> for RouteStep<S>
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
        // The head's field count, as hyper holds HTTP/1.1 heads to it (RFC 9113 leaves the
        // limit to the server; SETTINGS_MAX_HEADER_LIST_SIZE bounds only the size).
        if request.headers().len() > MAX_HEADERS {
            return refuse(Reject::TooManyHeaders);
        }
        match route::match_route(&self.routes, request.method().as_str(), target(&request)) {
            Ok(index) => {
                if let Some(exchange) = Exchange::on(&request) {
                    exchange.note(|trail| trail.route = Some(index));
                }
                Either::Left(self.inner.call(request))
            }
            Err(Miss::NoRoute) => refuse(Reject::NoRoute),
            Err(Miss::MethodNotAllowed(allow)) => {
                // The path is a configured route's: its 405 is counted under that route.
                let (path, _) = route::split_target(target(&request));
                let index = self.routes.iter().position(|r| &*r.path == path);
                if let Some(exchange) = Exchange::on(&request) {
                    exchange.note(|trail| trail.route = index);
                }
                refuse(Reject::MethodNotAllowed { allow })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::{ok, routes};
    use http::Method;
    use tower::{Layer, ServiceExt};

    async fn routed(method: Method, uri: &str) -> Result<Answer, Reject> {
        let request = Request::builder().method(method).uri(uri).body(()).unwrap();
        let (request, _) = Exchange::for_test(request);
        RouteLayer::new(routes()).layer(ok()).oneshot(request).await
    }

    /// Guards against the route table admitting other paths, absolute-form targets or
    /// CONNECT, and against a 405 without `Allow`.
    #[tokio::test]
    async fn only_the_configured_route_passes() {
        let init = "/verification/v2/digilocker/init";
        assert!(routed(Method::POST, init).await.is_ok());
        assert!(routed(Method::POST, &format!("{init}?a=b")).await.is_ok());
        assert_eq!(
            routed(Method::POST, "/other").await.unwrap_err(),
            Reject::NoRoute
        );
        let absolute = format!("http://evil.example{init}");
        assert_eq!(
            routed(Method::POST, &absolute).await.unwrap_err(),
            Reject::NoRoute
        );
        match routed(Method::HEAD, init).await.unwrap_err() {
            Reject::MethodNotAllowed { allow } => assert_eq!(allow, "POST"),
            other => panic!("{other:?}"),
        }
    }

    /// Guards against the matched route not reaching the access log and metrics.
    #[tokio::test]
    async fn the_matched_route_is_noted() {
        let request = Request::post("/verification/v2/digilocker/init")
            .body(())
            .unwrap();
        let (request, exchange) = Exchange::for_test(request);
        RouteLayer::new(routes())
            .layer(ok())
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(exchange.trail().route, Some(0));
    }

    /// Guards against a 405 on a configured path being counted under `route="none"`, as if
    /// the path were unknown.
    #[tokio::test]
    async fn a_405_is_noted_under_its_route() {
        let request = Request::get("/verification/v2/digilocker/init?x=1")
            .body(())
            .unwrap();
        let (request, exchange) = Exchange::for_test(request);
        let refused = RouteLayer::new(routes()).layer(ok()).oneshot(request).await;
        assert!(matches!(refused, Err(Reject::MethodNotAllowed { .. })));
        assert_eq!(exchange.trail().route, Some(0));
    }
}
