//! The mock's connections: accepted, the TLS handshake if any, then HTTP/1.1 and HTTP/2
//! through hyper-util's auto builder, each with the faults its state asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::{Fault, State, answer, fault};

pub(super) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
) {
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
pub(super) struct Conn {
    pub(super) state: Arc<State>,
    pub(super) number: u64,
    /// Set: every later write is replaced by bytes that are not HTTP.
    pub(super) garbage: Arc<AtomicBool>,
    /// Notified: the connection is dropped at once, every stream on it with it.
    pub(super) reset: Notify,
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
