//! Every answer the gateway makes itself: a [`Reject`] ([`super::reject`]) rendered as its
//! status, code and body, and the layer that applies it.
//!
//! Bodies are fixed sentences. Nothing the caller sent and nothing KwikID answered is ever
//! echoed, so an error body can carry neither the token nor a `redirection_url`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;

use super::exchange::Exchange;
pub use super::reject::{BEFORE_ROUTE, CODES, Reject};

/// Header that marks a response as the gateway's own, with the error code as value.
pub const GATEWAY_ERROR: &str = "x-gateway-error";

impl Reject {
    /// The whole answer: JSON `{"error": "<sentence>"}`, `x-gateway-error: <code>`, and
    /// `Allow` (405) or `Retry-After` (429, whole seconds) where the status calls for it.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let sentence = self.sentence();
        let mut body = Vec::with_capacity(BODY_PREFIX.len() + sentence.len() + BODY_SUFFIX.len());
        body.extend_from_slice(BODY_PREFIX);
        // The sentences are fixed ASCII with nothing JSON must escape (a test checks it).
        body.extend_from_slice(sentence.as_bytes());
        body.extend_from_slice(BODY_SUFFIX);
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(GATEWAY_ERROR, HeaderValue::from_static(self.code()));
        match self {
            Self::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, allow);
            }
            Self::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }

    /// The length of the body [`Self::into_response`] writes.
    pub fn body_len(&self) -> usize {
        BODY_PREFIX.len() + self.sentence().len() + BODY_SUFFIX.len()
    }
}

/// Turns every [`Reject`] from the steps below into the gateway's own answer, in this one
/// place (linkerd2-proxy's `HttpRescue`), and notes its code for the access log.
#[derive(Clone, Copy, Debug, Default)]
pub struct RescueLayer;

impl<S> tower::Layer<S> for RescueLayer {
    type Service = Rescue<S>;

    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Rescue<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Rescue<S>
where
    S: tower::Service<Request<B>, Response = Response<Full<Bytes>>, Error = Reject>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Rescued<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The steps below are always ready (they hold no capacity of their own).
        self.inner.poll_ready(cx).map(|_| Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Rescued {
            exchange: Exchange::of(&request),
            http1: request.version() < Version::HTTP_2,
            answer: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of the steps below, a refusal among them rendered in place: a future of its
    /// own rather than a boxed one, as tower's own layers do.
    pub struct Rescued<F> {
        #[pin]
        answer: F,
        exchange: Option<std::sync::Arc<Exchange>>,
        http1: bool,
    }
}

impl<F> Future for Rescued<F>
where
    F: Future<Output = Result<Response<Full<Bytes>>, Reject>>,
{
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(answer) = this.answer.poll(cx) else {
            return Poll::Pending;
        };
        Poll::Ready(Ok(answer.unwrap_or_else(|reject| {
            if let Some(exchange) = this.exchange.take() {
                exchange.refused(reject.code());
            }
            let ends_connection = reject.leaves_body_unread() && *this.http1;
            let mut response = reject.into_response();
            if ends_connection {
                // Whatever is left of the body would be read as the next request
                // (RFC 9112 §9.6): the connection ends after this answer. HTTP/2 frames
                // each stream, so only its stream ends.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        })))
    }
}

const BODY_PREFIX: &[u8] = b"{\"error\":\"";
const BODY_SUFFIX: &[u8] = b"\"}";

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};

    fn every() -> Vec<Reject> {
        vec![
            Reject::CallerNotAllowed,
            Reject::CallerNotListed,
            Reject::RouteNotForCaller,
            Reject::NoRoute,
            Reject::MethodNotAllowed {
                allow: HeaderValue::from_static("POST"),
            },
            Reject::BodyTooLarge,
            Reject::BodyTimeout,
            Reject::InvalidBody("The request body must be a JSON object."),
            Reject::CallbackNotAllowed,
            Reject::RateLimited {
                retry_after_secs: 3,
            },
            Reject::UpstreamUnavailable,
            Reject::UpstreamTimeout,
            Reject::BodyUnreadable,
            Reject::TooManyHeaders,
            Reject::ShuttingDown,
        ]
    }

    /// Which variant `reject` is. A new variant fails to compile here until it is named, and
    /// the test below fails until [`every`] has one of it.
    fn variant(reject: &Reject) -> usize {
        match reject {
            Reject::CallerNotAllowed => 0,
            Reject::NoRoute => 1,
            Reject::MethodNotAllowed { .. } => 2,
            Reject::BodyTooLarge => 3,
            Reject::BodyTimeout => 4,
            Reject::InvalidBody(_) => 5,
            Reject::CallbackNotAllowed => 6,
            Reject::RateLimited { .. } => 7,
            Reject::UpstreamUnavailable => 8,
            Reject::UpstreamTimeout => 9,
            Reject::BodyUnreadable => 10,
            Reject::TooManyHeaders => 11,
            Reject::CallerNotListed => 12,
            Reject::RouteNotForCaller => 13,
            Reject::ShuttingDown => 14,
        }
    }

    /// Guards against a code the gateway sends that [`CODES`] (and so `openapi.yaml`) does
    /// not list, and against a listed code no refusal sends.
    #[test]
    fn codes_lists_exactly_what_the_refusals_send() {
        let every = every();
        let mut variants: Vec<usize> = every.iter().map(variant).collect();
        variants.sort_unstable();
        variants.dedup();
        assert_eq!(
            variants,
            (0..15).collect::<Vec<_>>(),
            "every() has each variant"
        );
        let mut sent: Vec<(&str, u16)> = every.iter().map(|r| (r.code(), r.status())).collect();
        sent.sort_unstable();
        sent.dedup();
        let mut listed = CODES.to_vec();
        listed.sort_unstable();
        assert_eq!(sent, listed);
    }

    /// Guards against an answer whose body is not the documented JSON, or whose header
    /// lacks the code callers tell the gateway's answers from KwikID's by.
    #[tokio::test]
    async fn every_refusal_is_json_with_its_code_and_exact_length() {
        for reject in every() {
            let (status, code, len) = (reject.status(), reject.code(), reject.body_len());
            let sentence = reject.sentence();
            let response = reject.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[GATEWAY_ERROR], code);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), len);
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json, serde_json::json!({ "error": sentence }));
        }
    }

    /// Guards against a code missing from [`CODES`] (its metric series would not start at 0),
    /// and against two refusals that callers cannot tell apart by their sentence.
    #[test]
    fn codes_lists_every_code_and_each_refusal_has_its_own_sentence() {
        let mut sentences: Vec<_> = every().iter().map(Reject::sentence).collect();
        for reject in every() {
            assert!(
                CODES.iter().any(|(code, _)| *code == reject.code()),
                "{reject:?}"
            );
        }
        let listed: std::collections::HashSet<_> = every().iter().map(Reject::code).collect();
        assert_eq!(listed.len(), CODES.len());
        sentences.sort_unstable();
        sentences.dedup();
        // Codes repeat (three refusals are caller_not_allowed, two invalid_body); sentences
        // never do.
        assert_eq!(sentences.len(), every().len());
    }

    /// Guards against a 429 without `Retry-After` or a 405 without `Allow` (RFC 9110 §15.5.6).
    #[test]
    fn rate_limited_carries_retry_after_and_405_carries_allow() {
        let limited = Reject::RateLimited {
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(limited.headers()[header::RETRY_AFTER], "3");
        let method = Reject::MethodNotAllowed {
            allow: HeaderValue::from_static("POST"),
        }
        .into_response();
        assert_eq!(method.headers()[header::ALLOW], "POST");
    }

    /// Guards against a refusal escaping as an error (hyper would close the connection) and
    /// against the access log missing the refusal's code.
    #[tokio::test]
    async fn a_refusal_below_becomes_an_answer_and_is_noted() {
        let inner = tower::service_fn(|_: Request<()>| async {
            Err::<Response<Full<Bytes>>, _>(Reject::NoRoute)
        });
        let (request, exchange) = Exchange::for_test(Request::new(()));
        let answer = RescueLayer.layer(inner).oneshot(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        assert_eq!(exchange.outcome(), Some("no_route"));
    }
}
