//! Which protocol a caller connection speaks, decided before hyper-util serves it, and
//! hyper's server settings for each: the same limits on both.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

use super::{Gateway, MAX_HEAD_BYTES, MAX_HEADERS};

/// hyper's server settings for caller connections, one builder per protocol with the same
/// limits on both. The protocol is known before hyper starts (ALPN on TLS, the connection
/// preface on plain TCP: [`Protocol`]), so hyper-util's own detection is not run: it costs
/// ~12 KiB of memory per idle HTTP/1.1 connection (measured with `benches/idle_conns.py`).
/// Nor is hyper-util's `auto` connection used at all: it holds either protocol's state, so
/// every HTTP/1.1 connection's task was sized for HTTP/2's (1,792 bytes against hyper's
/// 912 for HTTP/1.1 alone).
#[derive(Clone)]
pub(super) struct Builders {
    pub(super) http1: Arc<http1::Builder>,
    pub(super) http2: Arc<http2::Builder<TokioExecutor>>,
    /// HTTP/1.1 answers' `Keep-Alive: timeout=<s>`: `listen.idle_timeout` in whole seconds,
    /// rounded down so that a caller's pool closes first.
    pub(super) keep_alive: Arc<HeaderValue>,
}

impl Builders {
    pub(super) fn new(gateway: &Gateway) -> Self {
        let listen = &gateway.config.listen;
        let idle = listen.idle_timeout.as_secs();
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // Off: hyper's starts when it looks for a head, so it would also bound idle waits
            // between requests. `super::idle` times heads from their first byte instead.
            .header_read_timeout(None)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(listen.max_concurrent_streams)
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            // A caller that stops answering pings is gone. Idle connections (no stream) are
            // closed after `listen.idle_timeout` with GOAWAY (`super::idle`): hyper has no
            // idle timeout of its own for HTTP/2.
            .keep_alive_interval(Some(listen.header_read_timeout))
            .keep_alive_timeout(listen.header_read_timeout);
        Self {
            http1: Arc::new(http1),
            http2: Arc::new(http2),
            keep_alive: Arc::new(
                HeaderValue::from_str(&format!("timeout={idle}"))
                    .unwrap_or(HeaderValue::from_static("timeout=0")),
            ),
        }
    }
}

/// Which protocol a caller connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A plain connection speaks HTTP/2 (prior knowledge, RFC 9113 §3.3) when it starts with the
/// preface; anything else is HTTP/1.1 for hyper to read. Peeks, so hyper reads every byte.
pub(super) async fn sniff(stream: &TcpStream) -> std::io::Result<Protocol> {
    let mut start = [0u8; 24];
    loop {
        let n = stream.peek(&mut start).await?;
        if n == 0 || start[..n] != H2_PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // A preface split across packets: peek again once more has arrived. `peek` returns
        // at once while any byte is waiting, so wait a little between looks.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
