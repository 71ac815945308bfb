//! The server's wrapper around the stack, one per connection: it counts each request from
//! its head until hyper has taken its answer whole (the connection is busy meanwhile, and
//! the drain knows what it would cut), and on HTTP/1.1 tells the caller how long the
//! connection stays open between requests.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{CONNECTION, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use super::drain::Drain;
use super::idle::Activity;
use crate::proxy::{Answer, X_REQUEST_ID};

/// `Keep-Alive` (RFC 9112 Appendix C.2.2; MDN "Keep-Alive"): the caller's pool may close an
/// idle connection before the gateway does, instead of racing its close.
/// Parsed once: a `&str` name is parsed again on every insert.
pub(super) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Wraps one connection's stack.
#[derive(Clone)]
pub(super) struct Track<S> {
    pub(super) inner: S,
    pub(super) activity: Arc<Activity>,
    pub(super) drain: Arc<Drain>,
    /// HTTP/1.1: `timeout=<listen.idle_timeout in whole seconds>`; `None` on HTTP/2. Shared,
    /// not a `HeaderValue` of its own: hyper keeps a box sized for this service and a request
    /// for as long as an HTTP/1.1 connection lives, and these 32 bytes less take it from 544
    /// bytes (jemalloc's 640-byte size class) to 512.
    pub(super) keep_alive: Option<Arc<HeaderValue>>,
}

impl<S, B> tower::Service<Request<B>> for Track<S>
where
    S: tower::Service<Request<B>, Response = Answer, Error = Infallible>,
{
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Tracking<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let keep_alive = self
            .keep_alive
            .clone()
            .filter(|_| stays_open(&request) && !self.drain.is_draining());
        let guard = Guard::new(
            self.activity.clone(),
            self.drain.clone(),
            self.keep_alive.is_some(),
        );
        Tracking {
            answer: self.inner.call(request),
            guard: Some(guard),
            keep_alive,
        }
    }
}

/// Whether hyper keeps an HTTP/1.x connection open after this request's answer (RFC 9112
/// §9.3): HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
fn stays_open<B>(request: &Request<B>) -> bool {
    let has = |token: &str| {
        request.headers().get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    match request.version() {
        Version::HTTP_11 => !has("close"),
        Version::HTTP_10 => has("keep-alive"),
        _ => false,
    }
}

pin_project_lite::pin_project! {
    /// The stack's answer on its way to hyper.
    pub(super) struct Tracking<F> {
        #[pin]
        answer: F,
        guard: Option<Guard>,
        keep_alive: Option<Arc<HeaderValue>>,
    }
}

impl<F> Future for Tracking<F>
where
    F: Future<Output = Result<Answer, Infallible>>,
{
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut answer) = ready!(this.answer.poll(cx));
        let mut guard = this.guard.take();
        if let Some(guard) = &mut guard {
            guard.id = answer.headers().get(&X_REQUEST_ID).cloned();
        }
        let headers = answer.headers_mut();
        // An answer that closes the connection (an unread body) promises no idle time.
        if let Some(keep_alive) = this.keep_alive.take()
            && !headers.contains_key(CONNECTION)
        {
            headers.insert(KEEP_ALIVE.clone(), HeaderValue::clone(&keep_alive));
        }
        Poll::Ready(Ok(answer.map(|body| Tracked { body, guard })))
    }
}

/// An answer's body; when hyper drops it, the request is done with.
pub(super) struct Tracked {
    body: Full<Bytes>,
    guard: Option<Guard>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.answered = self.body.is_end_stream();
        }
    }
}

/// One request, counted on its connection and in the drain until dropped.
struct Guard {
    activity: Arc<Activity>,
    drain: Arc<Drain>,
    id: Option<HeaderValue>,
    /// hyper took the answer whole.
    answered: bool,
    http1: bool,
}

impl Guard {
    fn new(activity: Arc<Activity>, drain: Arc<Drain>, http1: bool) -> Self {
        activity
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        activity
            .started
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        drain.opened();
        Self {
            activity,
            drain,
            id: None,
            answered: false,
            http1,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.answered {
            if self.http1 {
                // Written once hyper flushes; named if the connection is cut before.
                *self
                    .activity
                    .last_answered
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = self.id.take();
            }
        } else if self.drain.is_cut() {
            self.drain.note_cut(self.id.take());
        }
        let was = self
            .activity
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if was == 1 && !self.http1 {
            // HTTP/1.1 answers are taken inside the connection's own poll, which the
            // watchdog follows; an HTTP/2 stream's task must wake it.
            self.activity.went_idle.notify_one();
        }
        self.drain.closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::drain::Phase;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    /// A connection's `Track` over a stack that answers `{}` with `x-request-id: id`.
    fn tracked(
        activity: &Arc<Activity>,
        drain: &Arc<Drain>,
    ) -> impl tower::Service<Request<()>, Response = Response<Tracked>, Error = Infallible> {
        let stack = tower::service_fn(|request: Request<()>| {
            let id = request.headers()[&X_REQUEST_ID].clone();
            let mut answer = Answer::new(Full::new(Bytes::from_static(b"{}")));
            answer.headers_mut().insert(X_REQUEST_ID.clone(), id);
            std::future::ready(Ok::<_, Infallible>(answer))
        });
        Track {
            inner: tower::ServiceBuilder::new()
                .map_future(Box::pin)
                .service(stack),
            activity: activity.clone(),
            drain: drain.clone(),
            keep_alive: Some(Arc::new(HeaderValue::from_static("timeout=75"))),
        }
    }

    fn with_id(id: &'static str) -> Request<()> {
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), HeaderValue::from_static(id));
        request
    }

    /// Guards against an answer that hyper never took whole going unnamed when the drain
    /// cuts its connection, against a written one being named, and against a connection
    /// that stays busy (or idle) after its requests are done with.
    #[tokio::test]
    async fn answers_not_taken_whole_at_the_cut_are_named() {
        let activity = Arc::new(Activity::default());
        let drain = Arc::new(Drain::new());
        let written = tracked(&activity, &drain)
            .oneshot(with_id("written"))
            .await
            .unwrap();
        assert_eq!(written.headers()[&KEEP_ALIVE], "timeout=75");
        let pending = tracked(&activity, &drain)
            .oneshot(with_id("pending"))
            .await
            .unwrap();
        assert_eq!(
            activity
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        drain.enter(Phase::Draining);
        let late = tracked(&activity, &drain)
            .oneshot(with_id("late"))
            .await
            .unwrap();
        assert!(
            late.headers().get(&KEEP_ALIVE).is_none(),
            "draining: no promise"
        );
        assert_eq!(late.into_body().collect().await.unwrap().to_bytes(), "{}");
        assert_eq!(
            written.into_body().collect().await.unwrap().to_bytes(),
            "{}"
        );
        drain.enter(Phase::Cut);
        drop(pending);
        assert_eq!(drain.cut_ids(), ["pending"]);
        assert_eq!(
            activity.last_answered(),
            Some(HeaderValue::from_static("written"))
        );
        assert_eq!(
            activity
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert_eq!(
            activity.started.load(std::sync::atomic::Ordering::Relaxed),
            3
        );
    }

    fn request(version: Version, connection: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        *request.version_mut() = version;
        if let Some(value) = connection {
            request
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_str(value).unwrap());
        }
        request
    }

    /// Guards against `Keep-Alive` promised on an answer hyper closes after (HTTP/1.0
    /// without keep-alive, `Connection: close` in any case or list position).
    #[test]
    fn stays_open_follows_rfc_9112() {
        assert!(stays_open(&request(Version::HTTP_11, None)));
        assert!(stays_open(&request(Version::HTTP_11, Some("x-hop"))));
        assert!(!stays_open(&request(
            Version::HTTP_11,
            Some("x-hop, Close")
        )));
        assert!(!stays_open(&request(Version::HTTP_10, None)));
        assert!(stays_open(&request(Version::HTTP_10, Some("Keep-Alive"))));
        assert!(!stays_open(&request(Version::HTTP_2, None)));
    }
}
