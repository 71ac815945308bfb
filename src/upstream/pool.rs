//! The pool: idle HTTP/1.1 connections, most recently used first, and at most one shared
//! HTTP/2 connection that every request multiplexes on.
//!
//! While an HTTP/1.1 connection sits in the pool nothing polls it; it is checked when it is
//! taken out, and a request that a stale connection never sent goes out on another one.

use std::sync::{Mutex, PoisonError};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::exchange::{self, DriverSlot, Exchanged};

/// How long a connection may sit idle before it is closed rather than reused: well below
/// common upstream keep-alive timeouts, so a connection is not picked just as the server
/// closes it (a POST that was sent is never retried).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

type Io = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
pub(super) type Driver = http1::Connection<Io, Full<Bytes>>;

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

impl Connection {
    pub(super) fn http1(sender: http1::SendRequest<Full<Bytes>>, driver: Driver) -> Self {
        Self {
            kind: Kind::Http1 {
                sender,
                driver: DriverSlot::new(driver),
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
            Kind::Http1 { sender, driver } => exchange::http1(sender, driver, request).await,
            Kind::Http2(sender) => exchange::http2(sender, request).await,
        }
    }
}
