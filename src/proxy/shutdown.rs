//! Step 1b, the end of the drain: once `listen.shutdown_grace` is over (or a second SIGTERM /
//! SIGINT came), a request still inside the stack stops waiting for KwikID, its body or a
//! permit, and is answered `503 shutting_down` through the rescue, so it gets an answer and
//! an access-log line instead of vanishing with the process (SPEC §7).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::{HeaderValue, Request};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use super::exchange::Exchange;
use super::{Answer, Reject};

/// Whether the drain's grace is over, and the ids of the requests it refused. The server
/// fires it; every request in the stack waits on it alongside its answer.
#[derive(Debug, Default)]
pub struct GraceOver {
    over: AtomicBool,
    wake: Arc<Notify>,
    refused: Mutex<Vec<HeaderValue>>,
}

impl GraceOver {
    /// Ends the grace: every request in the stack, and every one that enters it from now on,
    /// is answered 503.
    pub fn fire(&self) {
        self.over.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// The request ids answered `503 shutting_down` so far, in the order they were refused.
    pub fn refused(&self) -> Vec<HeaderValue> {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn note_refused(&self, id: HeaderValue) {
        self.refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id);
    }
}

/// Races each request with the end of the grace.
#[derive(Clone)]
pub struct ShutdownLayer {
    grace: Arc<GraceOver>,
}

impl ShutdownLayer {
    pub fn new(grace: Arc<GraceOver>) -> Self {
        Self { grace }
    }
}

impl<S> tower::Layer<S> for ShutdownLayer {
    type Service = Shutdown<S>;

    fn layer(&self, inner: S) -> Shutdown<S> {
        Shutdown {
            inner,
            grace: self.grace.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Shutdown<S> {
    inner: S,
    grace: Arc<GraceOver>,
}

impl<S, B> tower::Service<Request<B>> for Shutdown<S>
where
    S: tower::Service<Request<B>, Response = Answer, Error = Reject>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Reject;
    type Future = Graced<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Reject>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Graced {
            exchange: Exchange::of(&request),
            // Made before the flag is read in `poll`, so a `fire` in between is not missed.
            ended: self.grace.wake.clone().notified_owned(),
            grace: self.grace.clone(),
            answer: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, raced with the end of the grace: a future of its own rather than a
    /// boxed one.
    pub struct Graced<F> {
        #[pin]
        answer: F,
        #[pin]
        ended: OwnedNotified,
        grace: Arc<GraceOver>,
        exchange: Option<Arc<Exchange>>,
    }
}

impl<F> Future for Graced<F>
where
    F: Future<Output = Result<Answer, Reject>>,
{
    type Output = Result<Answer, Reject>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // An answer that is ready is never replaced.
        if let Poll::Ready(answer) = this.answer.poll(cx) {
            return Poll::Ready(answer);
        }
        if !this.grace.is_over() && this.ended.poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The caller of this future drops `answer` with it, which ends the exchange with
        // KwikID, the body read or the wait for a permit.
        let id = this.exchange.as_ref().map(|e| e.request_id.clone());
        this.grace
            .note_refused(id.unwrap_or(HeaderValue::from_static("-")));
        Poll::Ready(Err(Reject::ShuttingDown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::rescue::RescueLayer;
    use tower::{Layer, Service, ServiceExt};

    /// Guards against a request held below (at KwikID, say) outliving the grace without an
    /// answer, and against its id missing from the list the final warning names.
    #[tokio::test]
    async fn a_request_still_waiting_when_the_grace_ends_gets_503() {
        let grace = Arc::new(GraceOver::default());
        let held =
            tower::service_fn(|_: Request<()>| std::future::pending::<Result<Answer, Reject>>());
        let stack = RescueLayer.layer(ShutdownLayer::new(grace.clone()).layer(held));
        let (request, exchange) = Exchange::for_test(Request::new(()));
        let answer = tokio::spawn(stack.oneshot(request));
        tokio::task::yield_now().await;
        grace.fire();
        let answer = answer.await.unwrap().unwrap();
        assert_eq!(answer.status(), 503);
        assert_eq!(answer.headers()["x-gateway-error"], "shutting_down");
        assert_eq!(exchange.outcome(), Some("shutting_down"));
        assert_eq!(grace.refused(), ["req-1"]);
    }

    /// Guards against an answer that was ready being replaced by a 503, and against a
    /// request that arrives after the grace being served.
    #[tokio::test]
    async fn ready_answers_pass_and_late_requests_are_refused() {
        let grace = Arc::new(GraceOver::default());
        let ok = crate::proxy::tests::ok::<Request<()>>();
        let mut step = ShutdownLayer::new(grace.clone()).layer(ok);
        let answer = step.ready().await.unwrap().call(Request::new(())).await;
        assert_eq!(answer.unwrap().status(), 200);
        grace.fire();
        let held =
            tower::service_fn(|_: Request<()>| std::future::pending::<Result<Answer, Reject>>());
        let late = ShutdownLayer::new(grace.clone())
            .layer(held)
            .oneshot(Request::new(()))
            .await;
        assert_eq!(late.unwrap_err(), Reject::ShuttingDown);
        assert_eq!(grace.refused(), ["-"]);
    }
}
