//! Step 1, request id and access log: outermost, so every answer gets its line and
//! `x-request-id`, and a request whose caller left before its answer still gets one, as
//! `499 client_closed` (nginx's convention).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body::Body;
use http_body_util::Full;

use super::exchange::{Exchange, Peer};
use super::{Answer, X_REQUEST_ID};
use crate::access_log::{AccessLog, AccessRecord};
use crate::metrics::{InFlight, Metrics};
use crate::rules::callers::Callers;
use crate::rules::route::Route;
use crate::rules::trusted;
use crate::secret::TokenStore;

/// Status and outcome of a request whose caller left before the answer.
const CLIENT_CLOSED: (u16, &str) = (499, "client_closed");

/// Every `outcome` a request can end with: forwarded, one of the gateway's own codes, or
/// `client_closed`.
pub fn outcomes() -> Vec<&'static str> {
    let mut all = vec!["forwarded", CLIENT_CLOSED.1];
    all.extend(super::rescue::CODES.iter().map(|(code, _)| *code));
    all
}

/// Longest caller-sent `x-request-id` kept; longer ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// What every request's line needs, shared by all connections.
pub struct Recorder {
    pub sink: Arc<AccessLog>,
    pub metrics: Arc<Metrics>,
    pub token: Arc<TokenStore>,
    /// For the metric's `route` label: the matched route's configured path.
    pub routes: Arc<[Route]>,
    pub caller_header: HeaderName,
    /// `[[callers]]`: whether the caller is listed, and its `caller` metric label.
    pub callers: Arc<Callers>,
}

/// One per connection: the peer is the connection's.
#[derive(Clone)]
pub struct AccessLogLayer {
    recorder: Arc<Recorder>,
    peer: Peer,
}

impl AccessLogLayer {
    pub fn new(recorder: Arc<Recorder>, peer: Peer) -> Self {
        Self { recorder, peer }
    }
}

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLogStep<S>;

    fn layer(&self, inner: S) -> AccessLogStep<S> {
        AccessLogStep {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AccessLogStep<S> {
    inner: S,
    layer: AccessLogLayer,
}

impl<S, B> tower::Service<Request<B>> for AccessLogStep<S>
where
    S: tower::Service<Request<B>, Response = Answer, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let AccessLogLayer { recorder, peer } = &self.layer;
        let headers = request.headers();
        let caller = match &peer.certificate_name {
            Some(name) => name.clone(),
            None => trusted::caller_name(
                headers
                    .get(&recorder.caller_header)
                    .map(HeaderValue::as_bytes),
                peer.addr,
            ),
        };
        // An untrusted peer's name proves nothing: it counts as `other`, never as a named
        // caller it claims to be.
        let listed = peer
            .trusted
            .then(|| recorder.callers.find(&caller))
            .flatten();
        let request_id = request_id(headers.get(&X_REQUEST_ID));
        let exchange = Exchange::new(request_id, caller, listed, peer.trusted);
        request.extensions_mut().insert(exchange.clone());
        let line = Line {
            recorder: recorder.clone(),
            peer: peer.addr,
            method: request.method().clone(),
            // Shared with the request's own (hyper's parsed target), not copied.
            uri: request.uri().clone(),
            started: Instant::now(),
            exchange,
            recorded: false,
            _in_flight: recorder.metrics.in_flight(),
        };
        Logged {
            answer: self.inner.call(request),
            line,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of the steps below, with `x-request-id` set and its line written: a future
    /// of its own rather than a boxed one. Dropped before the answer (the caller left), its
    /// line is written as 499.
    pub struct Logged<F> {
        #[pin]
        answer: F,
        line: Line,
    }
}

impl<F> Future for Logged<F>
where
    F: Future<Output = Result<Answer, Infallible>>,
{
    type Output = Result<Answer, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(mut answer)) = this.answer.poll(cx) else {
            return Poll::Pending;
        };
        let line = this.line;
        answer
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), line.exchange.request_id.clone());
        let mut bytes_out = answer.body().size_hint().exact().unwrap_or(0);
        if line.method == Method::HEAD {
            // A HEAD answer is the head a GET would get: its length (KwikID's, when it said
            // one), and no body bytes (RFC 9110 §9.3.2).
            let headers = answer.headers_mut();
            if !headers.contains_key(header::CONTENT_LENGTH) {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes_out));
            }
            *answer.body_mut() = Full::new(Bytes::new());
            bytes_out = 0;
        }
        line.record(
            answer.status().as_u16(),
            usize::try_from(bytes_out).unwrap_or(0),
        );
        Poll::Ready(Ok(answer))
    }
}

/// The request's line, written once: when the answer is ready, or, if the future is dropped
/// first (the caller hung up), as 499.
struct Line {
    recorder: Arc<Recorder>,
    peer: std::net::SocketAddr,
    method: Method,
    uri: http::Uri,
    started: Instant,
    exchange: Arc<Exchange>,
    recorded: bool,
    /// Counted in flight from the head until the line is written.
    _in_flight: InFlight,
}

impl Line {
    fn record(&mut self, status: u16, bytes_out: usize) {
        self.recorded = true;
        let trail = self.exchange.take_trail();
        let outcome = match trail.outcome {
            Some(code) => code,
            None if status == CLIENT_CLOSED.0 => CLIENT_CLOSED.1,
            None => "forwarded",
        };
        let recorder = &*self.recorder;
        let elapsed = self.started.elapsed();
        let route = trail
            .route
            .and_then(|i| recorder.routes.get(i))
            .map(|r| &r.path);
        recorder.metrics.request(route, status, outcome, elapsed);
        let listed = self.exchange.listed.and_then(|i| recorder.callers.name(i));
        recorder.metrics.caller_request(listed, outcome);
        let token = trail.token.unwrap_or_else(|| recorder.token.current());
        recorder.sink.write(
            &AccessRecord {
                request_id: self.exchange.request_id.to_str().unwrap_or_default(),
                caller: &self.exchange.caller,
                peer: self.peer,
                method: self.method.as_str(),
                path: self.uri.path(),
                status,
                upstream_status: if trail.outcome.is_none() {
                    trail.upstream_status
                } else {
                    None
                },
                outcome,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream_ms: trail.upstream_ms,
                bytes_in: trail.bytes_in,
                bytes_out,
                handshake_id: trail.handshake_id.as_deref(),
            },
            &token,
        );
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(CLIENT_CLOSED.0, 0);
        }
    }
}

/// The caller's `x-request-id` when it is 1–128 visible ASCII characters, else a new ULID.
fn request_id(sent: Option<&HeaderValue>) -> HeaderValue {
    sent.filter(|v| {
        !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.as_bytes().iter().all(u8::is_ascii_graphic)
    })
    .cloned()
    .unwrap_or_else(|| {
        let mut text = [0u8; ulid::ULID_LEN];
        HeaderValue::from_str(ulid::Ulid::generate().array_to_str(&mut text))
            .unwrap_or(HeaderValue::from_static("-"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::routes;
    use std::sync::Mutex;
    use tower::{Layer, ServiceExt};

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Guards against an answer without `x-request-id`, a request without its line, or a
    /// line that misses what the steps below noted.
    #[tokio::test]
    async fn every_answer_gets_its_request_id_and_one_line() {
        let captured = Captured::default();
        let sink = Arc::new(AccessLog::to_writer(captured.clone()));
        let token = crate::secret::Token::new("tok-test-1".into()).unwrap();
        let recorder = Arc::new(Recorder {
            sink: sink.clone(),
            metrics: Arc::new(Metrics::new()),
            token: Arc::new(TokenStore::new(&token)),
            routes: routes(),
            caller_header: HeaderName::from_static("x-caller-id"),
            callers: Arc::new(Callers::default()),
        });
        let peer = Peer {
            addr: "10.1.2.3:5555".parse().unwrap(),
            trusted: true,
            certificate_name: None,
        };
        let inner = tower::service_fn(|request: Request<()>| async move {
            let exchange = Exchange::of(&request).expect("the record is on the request");
            exchange.note(|trail| trail.handshake_id = Some("hs-1".into()));
            Ok::<_, Infallible>(Answer::new(Full::new(Bytes::from_static(b"{}"))))
        });
        let request = Request::post("/verification/v2/digilocker/init?q=1")
            .header("x-request-id", "rid-1")
            .header("x-caller-id", "orders-svc")
            .body(())
            .unwrap();
        let answer = AccessLogLayer::new(recorder, peer)
            .layer(inner)
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(answer.headers()[&X_REQUEST_ID], "rid-1");
        sink.close();
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["request_id"], "rid-1");
        assert_eq!(line["caller"], "orders-svc");
        assert_eq!(line["peer"], "10.1.2.3:5555");
        assert_eq!(line["path"], "/verification/v2/digilocker/init");
        assert_eq!(line["status"], 200);
        assert_eq!(line["outcome"], "forwarded");
        assert_eq!(line["handshake_id"], "hs-1");
        assert_eq!(line["bytes_out"], 2);
    }

    /// Guards against a caller-chosen id that could break a log line or a header being kept,
    /// and a sane one being replaced.
    /// Guards against an outcome that the access line would have to escape: outcomes are
    /// written as they are.
    #[test]
    fn outcomes_are_plain_words() {
        for outcome in outcomes() {
            assert!(
                !outcome.is_empty() && outcome.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{outcome}"
            );
        }
    }

    #[test]
    fn sane_request_ids_are_kept_others_replaced() {
        let kept = request_id(Some(&HeaderValue::from_static("abc-123")));
        assert_eq!(kept, "abc-123");
        for bad in ["", "has space", "tab\there"] {
            let replaced = request_id(Some(&HeaderValue::from_str(bad).unwrap()));
            assert_eq!(replaced.len(), 26, "{bad}");
        }
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(request_id(Some(&long)).len(), 26);
        assert_eq!(request_id(None).len(), 26);
    }
}
