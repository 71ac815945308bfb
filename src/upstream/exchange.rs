//! One exchange on a held connection: the request written, the whole answer read. An
//! HTTP/1.1 connection's I/O is driven here, in the request's own task; an HTTP/2 one runs in
//! its task and is only sent on.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};

use super::UpstreamError;
use super::pool::Driver;

/// KwikID's answers are small JSON documents; anything bigger is not one.
const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

const CLOSED: UpstreamError = UpstreamError::Broken { kind: "closed" };

pub(super) enum Exchanged {
    Answered(Response<Bytes>),
    /// Nothing of the request was written: it may go out on another connection.
    NotSent(Request<Full<Bytes>>),
    Failed(UpstreamError),
}

pub(super) async fn http1(
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

pub(super) async fn http2(
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
pub(super) struct DriverSlot(Option<Driver>);

impl DriverSlot {
    pub(super) fn new(driver: Driver) -> Self {
        Self(Some(driver))
    }

    pub(super) fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// Polls the connection's I/O; `Ready` once it has finished, for good.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
            // The work first: a stage often finds what it waits for already there (a kept
            // connection ready for a request, an answer's body read along with its head), and
            // then the connection's I/O is not polled for nothing. Pending work always gets
            // the connection polled, and looked at again after it.
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(done));
            }
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
