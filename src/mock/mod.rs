//! The mock KwikID: a stand-in for KwikID's DigiLocker init endpoint over a real socket, HTTPS
//! (ALPN `h2` and `http/1.1`) or plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge).
//!
//! It is no part of the gateway's library and uses none of its code: it is compiled into the
//! `kwikid-mock` binary, into the gateway binary for `demo`, and into the integration tests,
//! each with `#[path = "…/src/mock/mod.rs"] mod mock;`.
//!
//! - this file: the server: start, accept, HTTP/1.1 and HTTP/2 per connection
//! - [`answer`]: what KwikID answers, and what each fault makes of it
//! - [`fault`]: the faults, and the writer that turns an answer into bytes that are not HTTP
//! - [`record`]: what the mock keeps of each request
//!
//! It records every request it receives (with the HTTP version it came with), so tests can
//! assert what KwikID would have seen.

// Each crate that compiles this module uses a different part of it.
#![allow(dead_code)]

mod answer;
mod fault;
mod record;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

#[allow(unused_imports)] // for the tests, which rebuild the bodies the mock made
pub(crate) use answer::redirection_url;
pub(crate) use fault::Fault;
pub(crate) use record::Received;

/// The one endpoint the mock serves (KwikID's, as the gateway forwards it).
pub(crate) const DIGILOCKER_INIT: &str = "/verification/v2/digilocker/init";

/// How a mock serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// Keep every request for [`Mock::received`] (tests); benchmarks leave it off.
    pub(crate) record: bool,
    /// Serve HTTP/2 as well: ALPN `h2` over TLS, prior knowledge over plain HTTP. `false`:
    /// HTTP/1.1 only, as a KwikID behind an HTTP/1.1-only load balancer would.
    pub(crate) http2: bool,
}

impl Default for Options {
    /// Recording, HTTP/1.1 and HTTP/2.
    fn default() -> Self {
        Self {
            record: true,
            http2: true,
        }
    }
}

struct State {
    token: String,
    fault: Mutex<Fault>,
    received: Mutex<Vec<Received>>,
    options: Options,
    served: AtomicU64,
    connections: AtomicU64,
}

impl State {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running mock. Dropping it (or [`Mock::stop`]) closes the listener and every connection.
pub(crate) struct Mock {
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Mock {
    /// Serves on `listener`, HTTP/1.1 and HTTP/2: HTTPS when `tls` is given, else plain HTTP.
    /// `record` keeps every request for [`Mock::received`].
    pub(crate) fn start(
        listener: TcpListener,
        token: &str,
        tls: Option<rustls::ServerConfig>,
        record: bool,
    ) -> io::Result<Self> {
        let options = Options {
            record,
            ..Options::default()
        };
        Self::start_with(listener, token, tls, options)
    }

    /// Serves on `listener` as `options` say; `tls`'s ALPN list is replaced by the protocols
    /// served (`h2` first when HTTP/2 is).
    pub(crate) fn start_with(
        listener: TcpListener,
        token: &str,
        tls: Option<rustls::ServerConfig>,
        options: Options,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            token: token.to_owned(),
            fault: Mutex::new(Fault::None),
            received: Mutex::new(Vec::new()),
            options,
            served: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let acceptor = tls.map(|mut config| {
            config.alpn_protocols = if options.http2 {
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
            TlsAcceptor::from(Arc::new(config))
        });
        let accept = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    pub(crate) fn set_fault(&self, fault: Fault) {
        *self
            .state
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// Every request received so far, in order.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests reached the handler (faulty ones included).
    pub(crate) fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }

    /// How many connections were accepted (TLS handshakes that failed included).
    pub(crate) fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every open connection.
    pub(crate) async fn stop(self) {
        self.accept.abort();
        let _ = (&mut { self }.accept).await;
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, state: Arc<State>) {
    // Connections live in the set, so aborting this task closes them all.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connections.spawn(connection(stream, tls.clone(), state.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Which protocols one connection is served with.
#[derive(Clone, Copy)]
enum Protocols {
    Http1,
    Http2,
    /// HTTP/1.1, or HTTP/2 if the client opens with its preface.
    Either,
}

async fn connection(stream: TcpStream, tls: Option<TlsAcceptor>, state: Arc<State>) {
    let number = state.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let _ = stream.set_nodelay(true);
    if state.fault() == Fault::Reset {
        let _ = stream.set_zero_linger();
    }
    let plain = if state.options.http2 {
        Protocols::Either
    } else {
        Protocols::Http1
    };
    match tls {
        Some(acceptor) => {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let protocols = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocols::Http2,
                Some(_) => Protocols::Http1,
                None => plain,
            };
            serve(stream, protocols, number, state).await;
        }
        None => serve(stream, plain, number, state).await,
    }
}

/// What the handler may do to the connection its request came on.
struct Conn {
    state: Arc<State>,
    number: u64,
    /// Set: every later write is replaced by bytes that are not HTTP.
    garbage: Arc<AtomicBool>,
    /// Notified: the connection is dropped at once, every stream on it with it.
    reset: Notify,
}

async fn serve<S>(io: S, protocols: Protocols, number: u64, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let garbage = Arc::new(AtomicBool::new(false));
    let io = fault::FaultyIo::new(io, garbage.clone());
    let conn = Arc::new(Conn {
        state,
        number,
        garbage,
        reset: Notify::new(),
    });
    let handler = conn.clone();
    let service = service_fn(move |req| answer::answer(req, handler.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let builder = match protocols {
        Protocols::Http1 => builder.http1_only(),
        Protocols::Http2 => builder.http2_only(),
        Protocols::Either => builder,
    };
    tokio::select! {
        biased;
        () = conn.reset.notified() => {}
        _ = builder.serve_connection(TokioIo::new(io), service) => {}
    }
}
