//! The mock KwikID: a stand-in for KwikID's DigiLocker init endpoint over a real socket, HTTPS
//! (ALPN `h2` and `http/1.1`) or plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge).
//!
//! It is no part of the gateway's library and uses none of its code: it is compiled into the
//! `kwikid-mock` binary, into the gateway binary for `demo`, and into the integration tests,
//! each with `#[path = "…/src/mock/mod.rs"] mod mock;`.
//!
//! - this file: the server: options, start, stop
//! - `connection`: accept, then HTTP/1.1 and HTTP/2 per connection
//! - [`answer`]: what KwikID answers, and what each fault makes of it
//! - [`fault`]: the faults, and the writer that turns an answer into bytes that are not HTTP
//! - [`record`]: what the mock keeps of each request
//!
//! It records every request it receives (with the HTTP version it came with), so tests can
//! assert what KwikID would have seen.

// Each crate that compiles this module uses a different part of it.
#![allow(dead_code)]

mod answer;
mod connection;
mod fault;
mod record;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use connection::accept_loop;

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
