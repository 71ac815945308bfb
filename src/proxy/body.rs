//! Step 5, body: read within `listen.max_body_bytes` while it streams (an oversized body is
//! never buffered) and within `upstream.request_timeout`, then checked as DigiLocker init
//! JSON.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::exchange::Exchange;
use super::rescue::Reject;
use super::{Answer, Step};
use crate::rules::body::parse_init;

/// A body that was read whole and is an init object.
#[derive(Debug, Clone, Default)]
pub struct JsonBody {
    /// As the caller sent it; forwarded unchanged.
    pub bytes: Bytes,
    /// The `callback_url` field, for the policy step.
    pub callback_url: Option<Box<str>>,
}

/// `413 body_too_large` (announced or streamed past the limit), `408 body_timeout`,
/// `400 invalid_body` (SPEC §4).
#[derive(Clone, Copy, Debug)]
pub struct BodyLayer {
    max_bytes: usize,
    timeout: Duration,
}

impl BodyLayer {
    pub fn new(max_bytes: usize, timeout: Duration) -> Self {
        Self { max_bytes, timeout }
    }
}

impl<S> tower::Layer<S> for BodyLayer {
    type Service = BodyStep<S>;

    fn layer(&self, inner: S) -> BodyStep<S> {
        BodyStep {
            inner,
            limits: *self,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BodyStep<S> {
    inner: S,
    limits: BodyLayer,
}

impl<S, B> tower::Service<Request<B>> for BodyStep<S>
where
    S: tower::Service<Request<JsonBody>, Response = Answer, Error = Reject>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Answer;
    type Error = Reject;
    type Future = Step;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Reject>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Step {
        // The inner service was made ready for this call; a clone stays for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let BodyLayer { max_bytes, timeout } = self.limits;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let exchange = parts.extensions.get::<std::sync::Arc<Exchange>>().cloned();
            let bytes = read(body, max_bytes, timeout).await?;
            let init = parse_init(&bytes).map_err(Reject::InvalidBody)?;
            let callback_url = init.callback_url.map(Into::into);
            if let Some(exchange) = &exchange {
                let handshake_id = init.handshake_id.map(Into::into);
                exchange.note(|trail| {
                    trail.bytes_in = bytes.len();
                    trail.handshake_id = handshake_id;
                });
            }
            let body = JsonBody {
                bytes,
                callback_url,
            };
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

/// Reads the whole body: refused at once when its announced length is over `max_bytes`,
/// else as soon as the streamed bytes pass it.
async fn read<B>(body: B, max_bytes: usize, timeout: Duration) -> Result<Bytes, Reject>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > max_bytes as u64 {
        return Err(Reject::BodyTooLarge);
    }
    let mut collect = pin!(Limited::new(body, max_bytes).collect());
    // A small body usually came with the head: then it is read without a timer (a timer is
    // set up in tokio's wheel, and taken out again when dropped).
    let read = match poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await {
        Poll::Ready(read) => Ok(read),
        Poll::Pending => tokio::time::timeout(timeout, collect).await,
    };
    match read {
        Err(_) => Err(Reject::BodyTimeout),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Reject::BodyTooLarge),
        Ok(Err(_)) => Err(Reject::BodyUnreadable),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::ok;
    use http_body_util::Full;
    use tower::{Layer, ServiceExt};

    async fn checked(
        body: &'static str,
        max: usize,
    ) -> (Result<Answer, Reject>, std::sync::Arc<Exchange>) {
        let request = Request::post("/").body(Full::new(Bytes::from_static(body.as_bytes())));
        let (request, exchange) = Exchange::for_test(request.unwrap());
        let layer = BodyLayer::new(max, Duration::from_secs(5));
        let answer = layer.layer(ok()).oneshot(request).await;
        (answer, exchange)
    }

    /// Guards against an oversized body being buffered or forwarded.
    #[tokio::test]
    async fn a_body_over_the_limit_gets_413() {
        let (answer, _) = checked(r#"{"handshake_id":"0123456789"}"#, 8).await;
        assert_eq!(answer.unwrap_err(), Reject::BodyTooLarge);
    }

    /// Guards against bodies that are not an init object reaching KwikID.
    #[tokio::test]
    async fn a_body_that_is_not_an_init_object_gets_400() {
        for body in ["", "[]", r#"{"handshake_id":5}"#] {
            let (answer, _) = checked(body, 1024).await;
            assert!(matches!(answer, Err(Reject::InvalidBody(_))), "{body:?}");
        }
    }

    /// Guards against the access log missing the body's size and handshake id.
    #[tokio::test]
    async fn a_valid_body_passes_and_is_noted() {
        let (answer, exchange) = checked(r#"{"handshake_id":"s-1"}"#, 1024).await;
        assert_eq!(answer.unwrap().status(), 200);
        let trail = exchange.trail();
        assert_eq!(trail.bytes_in, 22);
        assert_eq!(trail.handshake_id.as_deref(), Some("s-1"));
    }
}
