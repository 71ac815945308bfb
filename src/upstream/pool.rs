//! The pool: idle HTTP/1.1 connections, most recently used first, and at most one shared
//! HTTP/2 connection that every request multiplexes on.
//!
//! While an HTTP/1.1 connection sits in the pool nothing polls it; it is checked when it is
//! taken out, and a request that a stale connection never sent goes out on another one.

use std::future::Future;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::UpstreamError;

/// KwikID's answers are small JSON documents; anything bigger is not one.
const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

/// How long a connection may sit idle before it is closed rather than reused: well below
/// common upstream keep-alive timeouts, so a connection is not picked just as the server
/// closes it (a POST that was sent is never retried).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

const CLOSED: UpstreamError = UpstreamError::Broken { kind: "closed" };

type Io = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
type Driver = http1::Connection<Io, Full<Bytes>>;

pub(super) struct Pool {
    /// Boxed: a connection (rustls and hyper state) is a few KiB, and it moves in and out
    /// of here and through every request future that holds it.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Connection>>>,
    max_idle: usize,
    http2: Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
}

impl Pool {
    pub(super) fn new(max_idle: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::with_capacity(max_idle)),
            max_idle,
            http2: Mutex::new(None),
        }
    }

    /// The shared HTTP/2 connection while it is open, else the most recently used idle
    /// HTTP/1.1 connection (its TLS state is warm in cache), dropping any that idled too
    /// long or whose server has gone.
    pub(super) fn checkout(&self) -> Option<Box<Connection>> {
        {
            let mut shared = self.http2.lock().unwrap_or_else(PoisonError::into_inner);
            match &*shared {
                Some(sender) if !sender.is_closed() => {
                    let mut connection = Connection::http2(sender.clone());
                    connection.reused = true;
                    return Some(Box::new(connection));
                }
                Some(_) => *shared = None,
                None => {}
            }
        }
        loop {
            let candidate = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if candidate.idle_since.elapsed() < POOL_IDLE_TIMEOUT && !candidate.is_closed() {
                return Some(candidate);
            }
        }
    }

    pub(super) fn share_http2(&self, sender: http2::SendRequest<Full<Bytes>>) {
        *self.http2.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
    }

    /// Puts an HTTP/1.1 connection back once its answer is read; an HTTP/2 handle is simply
    /// dropped (the shared one stays in the pool).
    pub(super) fn checkin(&self, mut connection: Box<Connection>) {
        let Kind::Http1 { driver, .. } = &connection.kind else {
            return;
        };
        if driver.is_none() || connection.is_closed() {
            tracing::trace!("upstream connection closed by the server after an answer");
            return;
        }
        connection.reused = true;
        connection.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(connection);
        }
    }

    /// Drops idle connections that idled too long or whose server closed them.
    pub(super) fn evict_idle(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        let stale: Vec<Box<Connection>> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let (keep, stale) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|c| c.idle_since.elapsed() < POOL_IDLE_TIMEOUT && !c.is_closed());
            *idle = keep;
            // Polling an idle connection reads the server's close, if it sent one.
            idle.retain_mut(|c| match &mut c.kind {
                Kind::Http1 { driver, .. } => driver.poll(&mut cx).is_pending(),
                Kind::Http2(_) => true,
            });
            stale
        };
        drop(stale);
    }
}

/// One connection to KwikID, as a request holds it.
pub(super) struct Connection {
    kind: Kind,
    idle_since: Instant,
    /// It served a request before, so a close before sending means it went stale.
    reused: bool,
}

// The whole connection is boxed where it is held, so the HTTP/1.1 variant's size costs a
// pooled connection nothing extra.
#[allow(clippy::large_enum_variant)]
enum Kind {
    /// The handle requests are sent through and the state machine that does the I/O, which
    /// whoever holds the connection polls.
    Http1 {
        sender: http1::SendRequest<Full<Bytes>>,
        driver: DriverSlot,
    },
    /// A handle on the shared connection; its I/O runs in its own task.
    Http2(http2::SendRequest<Full<Bytes>>),
}

pub(super) enum Exchanged {
    Answered(Response<Bytes>),
    /// Nothing of the request was written: it may go out on another connection.
    NotSent(Request<Full<Bytes>>),
    Failed(UpstreamError),
}

impl Connection {
    pub(super) fn http1(sender: http1::SendRequest<Full<Bytes>>, driver: Driver) -> Self {
        Self {
            kind: Kind::Http1 {
                sender,
                driver: DriverSlot(Some(driver)),
            },
            idle_since: Instant::now(),
            reused: false,
        }
    }

    pub(super) fn http2(sender: http2::SendRequest<Full<Bytes>>) -> Self {
        Self {
            kind: Kind::Http2(sender),
            idle_since: Instant::now(),
            reused: false,
        }
    }

    pub(super) fn is_http2(&self) -> bool {
        matches!(self.kind, Kind::Http2(_))
    }

    pub(super) fn reused(&self) -> bool {
        self.reused
    }

    fn is_closed(&self) -> bool {
        match &self.kind {
            Kind::Http1 { sender, .. } => sender.is_closed(),
            Kind::Http2(sender) => sender.is_closed(),
        }
    }

    /// Sends `request` and reads the whole answer.
    pub(super) async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Exchanged {
        match &mut self.kind {
            Kind::Http1 { sender, driver } => exchange_http1(sender, driver, request).await,
            Kind::Http2(sender) => exchange_http2(sender, request).await,
        }
    }
}

async fn exchange_http1(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    driver: &mut DriverSlot,
    request: Request<Full<Bytes>>,
) -> Exchanged {
    match driver
        .run(std::future::poll_fn(|cx| sender.poll_ready(cx)))
        .await
    {
        Some(Ok(())) => {}
        Some(Err(_)) | None => return Exchanged::NotSent(request),
    }
    let response = match driver.run(sender.try_send_request(request)).await {
        Some(Ok(response)) => response,
        Some(Err(mut unsent)) => {
            return match unsent.take_message() {
                Some(request) => Exchanged::NotSent(request),
                None => Exchanged::Failed(classify(unsent.error())),
            };
        }
        None => return Exchanged::Failed(CLOSED),
    };
    match driver.run(collect(response)).await {
        Some(Ok(response)) => Exchanged::Answered(response),
        Some(Err(e)) => Exchanged::Failed(e),
        None => Exchanged::Failed(CLOSED),
    }
}

async fn exchange_http2(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Exchanged {
    if std::future::poll_fn(|cx| sender.poll_ready(cx))
        .await
        .is_err()
    {
        return Exchanged::NotSent(request);
    }
    let response = match sender.try_send_request(request).await {
        Ok(response) => response,
        Err(mut unsent) => {
            return match unsent.take_message() {
                Some(request) => Exchanged::NotSent(request),
                None => Exchanged::Failed(classify(unsent.error())),
            };
        }
    };
    match collect(response).await {
        Ok(response) => Exchanged::Answered(response),
        Err(e) => Exchanged::Failed(e),
    }
}

/// An HTTP/1.1 connection's state machine, until it finishes (the server closed, or an
/// error).
struct DriverSlot(Option<Driver>);

impl DriverSlot {
    fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// Polls the connection's I/O; `Ready` once it has finished, for good.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(driver) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        match std::pin::Pin::new(driver).poll(cx) {
            Poll::Ready(_) => {
                self.0 = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Runs `work` (sending, reading the answer) while doing the connection's I/O in the
    /// same task. `None`: the connection finished and `work` can never complete.
    async fn run<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut work = pin!(work);
        std::future::poll_fn(|cx| {
            let finished = self.poll(cx).is_ready();
            match work.as_mut().poll(cx) {
                Poll::Ready(done) => Poll::Ready(Some(done)),
                Poll::Pending if finished => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }
}

async fn collect(
    response: Response<hyper::body::Incoming>,
) -> Result<Response<Bytes>, UpstreamError> {
    let (parts, body) = response.into_parts();
    let bytes = Limited::new(body, MAX_UPSTREAM_BODY)
        .collect()
        .await
        .map_err(|e| UpstreamError::Broken {
            kind: if e.is::<http_body_util::LengthLimitError>() {
                "too_large"
            } else {
                "body"
            },
        })?
        .to_bytes();
    Ok(Response::from_parts(parts, bytes))
}

/// Names the failure of a request that was sent; never formats the error itself.
fn classify(error: &hyper::Error) -> UpstreamError {
    if error.is_parse() || error.is_parse_status() {
        return UpstreamError::Broken { kind: "garbage" };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = source {
        // RFC 9113 §5.4.1: KwikID's bytes were not HTTP/2 (or a frame was malformed).
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && matches!(
                h2.reason(),
                Some(
                    h2::Reason::PROTOCOL_ERROR
                        | h2::Reason::FRAME_SIZE_ERROR
                        | h2::Reason::COMPRESSION_ERROR
                )
            )
        {
            return UpstreamError::Broken { kind: "garbage" };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionReset
        {
            return UpstreamError::Broken { kind: "reset" };
        }
        source = e.source();
    }
    CLOSED
}
