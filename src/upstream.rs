//! The connection to KwikID: a pool of keep-alive HTTPS connections (rustls) with one
//! deadline over connect (TCP *and* TLS) and one over the whole exchange.
//!
//! A connection is used by the request that holds it, in the caller's own task, the way an
//! nginx worker drives both sockets of a request from one event loop: no second task, no
//! hand-off between tasks, no spawn per request. The request head is written as bytes into
//! the TLS stream and the answer is parsed in place (see [`crate::wire`]). While a
//! connection sits in the pool nothing reads it; it is checked when it is taken out, and a
//! request that a stale connection never sent goes out on another one.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::HeaderValue;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::{Zeroize, Zeroizing};

use crate::config;
use crate::wire::{self, ChunkProgress, Chunked, Field, Framing, FramingHeaders};

/// KwikID's answers are small JSON documents; anything bigger is not one.
const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

/// Limits on the head of KwikID's answer, generous for what it sends.
const MAX_UPSTREAM_HEADERS: usize = 100;
const MAX_UPSTREAM_HEAD: usize = 64 * 1024;

/// Read buffers grow from this size; a whole answer usually fits.
const READ_CHUNK: usize = 4096;

/// How long a connection may sit idle before it is closed rather than reused: well below
/// common upstream keep-alive timeouts, so a connection is not picked just as the server
/// closes it (a POST that was sent is never retried).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the exchange with KwikID failed; `kind` is a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// TCP, DNS or TLS never completed: nothing was sent.
    Connect { kind: &'static str },
    /// The connection broke, closed or answered non-HTTP before a whole response.
    Broken { kind: &'static str },
    /// No whole answer within `request_timeout`.
    Timeout,
}

impl UpstreamError {
    pub fn kind(self) -> &'static str {
        match self {
            Self::Connect { kind } | Self::Broken { kind } => kind,
            Self::Timeout => "timeout",
        }
    }
}

/// One request as it goes to KwikID. The caller never chooses the host: only the path
/// and query come from the request, after routing.
pub struct Outgoing<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Writes the caller headers KwikID may see, each as `name: value\r\n`.
    pub headers: &'a (dyn Fn(&mut Vec<u8>) + Sync),
    pub request_id: &'a [u8],
    /// `Bearer <token>`: written last in the head, and wiped from the buffer once sent.
    pub authorization: &'a HeaderValue,
    pub body: &'a [u8],
}

/// KwikID's answer, borrowed from the connection it came on.
pub struct Answer<'a> {
    pub status: u16,
    head: &'a [u8],
    fields: &'a [Field],
    pub body: &'a [u8],
}

impl<'a> Answer<'a> {
    /// Every header line, in order, as KwikID wrote it.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
        let head = self.head;
        self.fields
            .iter()
            .map(move |f| (f.name(head), f.value(head)))
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Where requests go and how to reach it.
pub struct Upstream {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// `Host` of every forwarded request: the upstream's, never the caller's.
    host_header: String,
    path_prefix: String,
    /// Boxed: a connection (rustls state and buffers) is a few KiB, and it moves in and
    /// out of here and through every request future that holds it.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Connection>>>,
    max_idle: usize,
    /// The upstream's addresses, looked up by one connect at a time and reused for
    /// [`DNS_REUSE`]: a burst of new connections costs one lookup, not a blocking thread each.
    resolved: tokio::sync::Mutex<Option<(Instant, Arc<[SocketAddr]>)>>,
}

/// How long looked-up upstream addresses are reused (unless connecting to them fails).
const DNS_REUSE: Duration = Duration::from_secs(10);

impl Upstream {
    pub fn new(config: &config::Upstream) -> Result<Self, rustls::Error> {
        let mut tls = crate::tls::client_config(&config.extra_roots)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = config
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name = ServerName::try_from(host.as_str())
            .map(|name| name.to_owned())
            .map_err(|_| rustls::Error::General("upstream host is not a valid TLS name".into()))?;
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls)),
            server_name,
            port: config.authority.port_u16().unwrap_or(443),
            host,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            host_header: config.authority.as_str().to_owned(),
            path_prefix: config.path_prefix.clone(),
            idle: Mutex::new(Vec::with_capacity(config.pool_max_idle_per_host)),
            max_idle: config.pool_max_idle_per_host,
            resolved: tokio::sync::Mutex::new(None),
        })
    }

    /// Sends one request and reads KwikID's whole answer within `request_timeout`, then
    /// hands it to `on_answer` while the connection still holds it. A request goes out
    /// again only when nothing of it was sent: its first fresh connection never opened, or a
    /// pooled connection turned out closed before it was written.
    pub async fn send<T>(
        &self,
        request: &Outgoing<'_>,
        on_answer: impl FnOnce(&Answer<'_>) -> T,
    ) -> Result<T, UpstreamError> {
        let exchange = async {
            let mut fresh_connects = 0;
            loop {
                let mut connection = match self.checkout() {
                    Some(pooled) => pooled,
                    None => {
                        fresh_connects += 1;
                        // Boxed: a connect (a TLS handshake in flight) is large, rare, and
                        // would otherwise size every request's future.
                        match Box::pin(self.connect()).await {
                            Ok(fresh) => fresh,
                            Err(_) if fresh_connects == 1 => continue,
                            Err(e) => return Err(e),
                        }
                    }
                };
                match connection.exchange(self, request).await {
                    Ok(()) => return Ok(connection),
                    // Only a pooled connection can turn out closed before the write.
                    Err(Exchanged::NotSent) => {
                        tracing::trace!(
                            "pooled upstream connection was closed; sending on another"
                        );
                    }
                    Err(Exchanged::Failed(e)) => return Err(e),
                }
            }
        };
        let connection = tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))?;
        let answered = on_answer(&connection.answer());
        self.checkin(connection);
        Ok(answered)
    }

    /// Writes the request head and body into `out`; returns where the token sits in it.
    fn write_request(&self, out: &mut Vec<u8>, request: &Outgoing<'_>) -> std::ops::Range<usize> {
        out.clear();
        out.extend_from_slice(request.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.path_prefix.as_bytes());
        out.extend_from_slice(request.path.as_bytes());
        if let Some(query) = request.query {
            out.push(b'?');
            out.extend_from_slice(query.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        wire::header(out, b"host", self.host_header.as_bytes());
        (request.headers)(out);
        wire::header(out, b"x-request-id", request.request_id);
        if !request.body.is_empty() || !matches!(request.method, "GET" | "HEAD") {
            wire::content_length(out, request.body.len());
        }
        out.extend_from_slice(b"authorization: ");
        let token_at = out.len();
        out.extend_from_slice(request.authorization.as_bytes());
        let token = token_at..out.len();
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(request.body);
        token
    }

    /// The most recently used idle connection (its TLS state is warm in cache), dropping any
    /// that idled too long.
    fn checkout(&self) -> Option<Box<Connection>> {
        loop {
            let candidate = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if candidate.idle_since.elapsed() < POOL_IDLE_TIMEOUT {
                return Some(candidate);
            }
        }
    }

    fn checkin(&self, mut connection: Box<Connection>) {
        if !connection.reusable {
            tracing::trace!("upstream connection not reusable after this answer; closing it");
            return;
        }
        connection.reused = true;
        connection.idle_since = Instant::now();
        connection.release_buffers();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(connection);
        }
    }

    /// Closes idle connections that idled too long or whose server closed them, so an idle
    /// gateway does not hold sockets the upstream has given up on. Called periodically.
    pub fn evict_idle(&self) {
        let stale: Vec<Box<Connection>> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let (keep, stale) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|c| c.idle_since.elapsed() < POOL_IDLE_TIMEOUT);
            *idle = keep;
            idle.retain_mut(|c| c.is_open());
            stale
        };
        drop(stale);
    }

    /// A new connection: DNS, TCP (each address in turn) and the TLS handshake, all within
    /// `connect_timeout`.
    async fn connect(&self) -> Result<Box<Connection>, UpstreamError> {
        const CONNECT: UpstreamError = UpstreamError::Connect { kind: "connect" };
        let connecting = async {
            let addrs = self.addresses().await?;
            let mut tcp = None;
            for &addr in addrs.iter() {
                match TcpStream::connect(addr).await {
                    Ok(stream) => {
                        tracing::debug!(%addr, "upstream connection opened");
                        tcp = Some(stream);
                        break;
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "upstream connect failed"),
                }
            }
            let Some(tcp) = tcp else {
                // Perhaps the name points elsewhere now: look it up again next time.
                *self.resolved.lock().await = None;
                return Err(CONNECT);
            };
            tcp.set_nodelay(true).map_err(|_| CONNECT)?;
            let tls = self
                .tls
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|_| UpstreamError::Connect { kind: "tls" })?;
            Ok(Box::new(Connection {
                tls,
                buf: Vec::new(),
                out: Zeroizing::new(Vec::new()),
                fields: Vec::new(),
                decoded: Vec::new(),
                head_len: 0,
                status: 0,
                body: 0..0,
                chunked_body: false,
                reusable: false,
                idle_since: Instant::now(),
                reused: false,
            }))
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .unwrap_or(Err(UpstreamError::Connect {
                kind: "connect_timeout",
            }))
    }

    async fn addresses(&self) -> Result<Arc<[SocketAddr]>, UpstreamError> {
        const DNS: UpstreamError = UpstreamError::Connect { kind: "dns" };
        let mut resolved = self.resolved.lock().await;
        if let Some((at, addrs)) = &*resolved
            && at.elapsed() < DNS_REUSE
        {
            return Ok(addrs.clone());
        }
        let addrs: Arc<[SocketAddr]> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|_| DNS)?
            .collect();
        if addrs.is_empty() {
            return Err(DNS);
        }
        *resolved = Some((Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// One HTTP/1.1 connection to KwikID and the answer it last read.
struct Connection {
    tls: TlsStream<TcpStream>,
    /// The answer as read: head, then the body unless it was chunked.
    buf: Vec<u8>,
    /// The request as written. The token in it is wiped once it is sent, and the whole
    /// buffer when the connection is dropped (a request cancelled mid-write included).
    out: Zeroizing<Vec<u8>>,
    fields: Vec<Field>,
    decoded: Vec<u8>,
    head_len: usize,
    status: u16,
    /// Where the body sits in `buf` (when not chunked).
    body: std::ops::Range<usize>,
    chunked_body: bool,
    /// The last answer left the connection ready for another request.
    reusable: bool,
    idle_since: Instant,
    /// It served a request before, so a close before sending means it went stale in the pool.
    reused: bool,
}

enum Exchanged {
    /// Nothing of the request was written: it may go out on another connection.
    NotSent,
    Failed(UpstreamError),
}

impl From<UpstreamError> for Exchanged {
    fn from(e: UpstreamError) -> Self {
        Self::Failed(e)
    }
}

const CLOSED: UpstreamError = UpstreamError::Broken { kind: "closed" };
const GARBAGE: UpstreamError = UpstreamError::Broken { kind: "garbage" };
const BAD_BODY: UpstreamError = UpstreamError::Broken { kind: "body" };
const TOO_LARGE: UpstreamError = UpstreamError::Broken { kind: "too_large" };

impl Connection {
    async fn exchange(
        &mut self,
        upstream: &Upstream,
        request: &Outgoing<'_>,
    ) -> Result<(), Exchanged> {
        if self.reused && !self.is_open() {
            return Err(Exchanged::NotSent);
        }
        let token = upstream.write_request(&mut self.out, request);
        let sent = async {
            self.tls.write_all(&self.out).await?;
            self.tls.flush().await
        }
        .await;
        self.out[token].zeroize();
        sent.map_err(|e| classify(&e))?;
        self.read_answer(request.method == "HEAD").await?;
        Ok(())
    }

    /// Whether the server is still there: an idle connection has nothing to read, so a
    /// read that completes means it was closed (or sent something it should not have).
    fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut scratch = [0u8; 64];
        let mut unread = ReadBuf::new(&mut scratch);
        matches!(
            Pin::new(&mut self.tls).poll_read(&mut cx, &mut unread),
            Poll::Pending
        )
    }

    /// Reads one whole answer into the connection's buffers.
    async fn read_answer(&mut self, to_head: bool) -> Result<(), UpstreamError> {
        self.buf.clear();
        self.decoded.clear();
        self.reusable = false;
        let (framing, keep_alive) = loop {
            if let Some(parsed) = self.parse_head(to_head)? {
                break parsed;
            }
            if self.buf.len() > MAX_UPSTREAM_HEAD {
                return Err(GARBAGE);
            }
            if self.fill().await? == 0 {
                return Err(CLOSED);
            }
        };
        let start = self.head_len;
        self.chunked_body = framing == Framing::Chunked;
        let end = match framing {
            Framing::Length(n) => {
                if n > MAX_UPSTREAM_BODY as u64 {
                    return Err(TOO_LARGE);
                }
                let end = start + n as usize;
                while self.buf.len() < end {
                    if self.fill().await? == 0 {
                        return Err(BAD_BODY);
                    }
                }
                end
            }
            Framing::Chunked => {
                let mut decoder = Chunked::default();
                let mut at = start;
                loop {
                    // Chunk framing and trailers are bounded as well as the data.
                    if self.buf.len() - start > 2 * MAX_UPSTREAM_BODY {
                        return Err(TOO_LARGE);
                    }
                    let progress = decoder
                        .feed(&self.buf[at..], &mut self.decoded, MAX_UPSTREAM_BODY)
                        .map_err(|_| BAD_BODY)?;
                    if self.decoded.len() > MAX_UPSTREAM_BODY {
                        return Err(TOO_LARGE);
                    }
                    match progress {
                        ChunkProgress::Done(used) => break at + used,
                        ChunkProgress::NeedMore(used) => at += used,
                    }
                    if self.fill().await? == 0 {
                        return Err(BAD_BODY);
                    }
                }
            }
            Framing::UntilClose => loop {
                if self.buf.len() - start > MAX_UPSTREAM_BODY {
                    return Err(TOO_LARGE);
                }
                if self.fill().await? == 0 {
                    break self.buf.len();
                }
            },
        };
        self.body = start..end;
        // Bytes past the answer would be read as the next one: never reuse such a connection.
        self.reusable = keep_alive && framing != Framing::UntilClose && self.buf.len() == end;
        Ok(())
    }

    /// Parses the answer's head once it is complete, skipping interim (1xx) answers;
    /// returns its body's framing and whether the connection may be kept.
    fn parse_head(&mut self, to_head: bool) -> Result<Option<(Framing, bool)>, UpstreamError> {
        loop {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let mut slots =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_UPSTREAM_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                &self.buf,
                &mut slots,
            ) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(GARBAGE),
            };
            let (Some(status), Some(version)) = (response.code, response.version) else {
                return Err(GARBAGE);
            };
            if (100..200).contains(&status) {
                if status == 101 {
                    return Err(GARBAGE);
                }
                self.buf.drain(..len);
                continue;
            }
            let mut framing = FramingHeaders::default();
            let mut close = version == 0;
            self.fields.clear();
            for header in response.headers.iter() {
                let (name, value) = (header.name.as_bytes(), header.value);
                framing.see(name, value);
                if name.eq_ignore_ascii_case(b"connection") {
                    close |= wire::lists(value, b"close");
                }
                self.fields.push(Field::locate(&self.buf, header));
            }
            let framing = if to_head || status == 204 || status == 304 {
                Framing::Length(0)
            } else {
                framing.response().map_err(|_| GARBAGE)?
            };
            self.status = status;
            self.head_len = len;
            return Ok(Some((framing, !close)));
        }
    }

    /// Reads more of the answer; `Ok(0)` when the server closed the connection.
    async fn fill(&mut self) -> Result<usize, UpstreamError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(self.buf.len().max(READ_CHUNK));
        }
        self.tls
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| classify(&e))
    }

    fn answer(&self) -> Answer<'_> {
        Answer {
            status: self.status,
            head: &self.buf[..self.head_len],
            fields: &self.fields,
            body: if self.chunked_body {
                &self.decoded
            } else {
                &self.buf[self.body.clone()]
            },
        }
    }

    /// An idle connection keeps no answer; large buffers are given back.
    fn release_buffers(&mut self) {
        self.buf.clear();
        self.decoded = Vec::new();
        if self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::new();
        }
        if self.out.capacity() > 4 * READ_CHUNK {
            self.out = Zeroizing::new(Vec::new());
        }
    }
}

/// Names an I/O failure; never formats the error itself.
fn classify(error: &std::io::Error) -> UpstreamError {
    match error.kind() {
        std::io::ErrorKind::ConnectionReset => UpstreamError::Broken { kind: "reset" },
        _ => CLOSED,
    }
}
