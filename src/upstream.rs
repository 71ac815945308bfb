//! The connection to KwikID: a pool of keep-alive HTTPS connections (rustls) with one
//! deadline over connect (TCP *and* TLS) and one over the whole exchange.
//!
//! A connection is driven by the request that holds it, in the caller's own task, the way
//! an nginx worker drives both sockets of a request from one event loop: no second task,
//! no hand-off between tasks, no spawn per request. While it sits in the pool nothing
//! polls it; it is checked when it is taken out, and a request that a stale connection
//! never sent goes out on another one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config;
use crate::route::Route;

/// KwikID's answers are small JSON documents; anything bigger is not one.
const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

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

type Io = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
type Driver = http1::Connection<Io, Full<Bytes>>;

/// Where requests go and how to reach it.
pub struct Upstream {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    host: String,
    port: u16,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// `Host` of every forwarded request: the upstream's, never the caller's.
    host_header: HeaderValue,
    path_prefix: String,
    /// Boxed: a connection (rustls and hyper state) is a few KiB, and it moves in and out
    /// of here and through every request future that holds it.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Connection>>>,
    max_idle: usize,
    /// The forwarded target of each route when the caller sent no query: built once.
    route_targets: Vec<(String, Uri)>,
    /// The upstream's addresses, looked up by one connect at a time and reused for
    /// [`DNS_REUSE`]: a burst of new connections costs one lookup, not a blocking thread each.
    resolved: tokio::sync::Mutex<Option<(Instant, Arc<[SocketAddr]>)>>,
}

/// How long looked-up upstream addresses are reused (unless connecting to them fails).
const DNS_REUSE: Duration = Duration::from_secs(10);

impl Upstream {
    pub fn new(config: &config::Upstream, routes: &[Route]) -> Result<Self, rustls::Error> {
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
        let host_header = HeaderValue::from_str(config.authority.as_str())
            .expect("an authority is a valid header value");
        let mut upstream = Self {
            tls: TlsConnector::from(Arc::new(tls)),
            server_name,
            port: config.authority.port_u16().unwrap_or(443),
            host,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            host_header,
            path_prefix: config.path_prefix.clone(),
            idle: Mutex::new(Vec::with_capacity(config.pool_max_idle_per_host)),
            max_idle: config.pool_max_idle_per_host,
            route_targets: Vec::new(),
            resolved: tokio::sync::Mutex::new(None),
        };
        upstream.route_targets = routes
            .iter()
            .map(|route| {
                (
                    route.path.to_string(),
                    upstream.build_target(&route.path, None),
                )
            })
            .collect();
        Ok(upstream)
    }

    /// Sends one request and collects KwikID's whole answer within `request_timeout`.
    /// A request goes out again only when nothing of it was sent: its first fresh connection
    /// never opened, or a pooled connection turned out closed before it was written.
    pub async fn send(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        mut headers: HeaderMap,
        authorization: &HeaderValue,
        body: Bytes,
    ) -> Result<Response<Bytes>, UpstreamError> {
        headers.insert(header::HOST, self.host_header.clone());
        // Inserted, never appended: the caller's own Authorization never passes.
        headers.insert(header::AUTHORIZATION, authorization.clone());
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method.clone();
        *request.uri_mut() = self.origin_form(path, query);
        *request.headers_mut() = headers;

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
                match connection.exchange(request).await {
                    Exchanged::Answered(response) => {
                        self.checkin(connection);
                        return Ok(response);
                    }
                    Exchanged::NotSent(unsent) if connection.reused => {
                        tracing::trace!(
                            "pooled upstream connection was closed; sending on another"
                        );
                        request = unsent;
                    }
                    Exchanged::NotSent(_) => return Err(UpstreamError::Broken { kind: "closed" }),
                    Exchanged::Failed(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }

    /// The path and query as sent on the wire; the caller never chooses the host.
    fn origin_form(&self, path: &str, query: Option<&str>) -> Uri {
        if query.is_none()
            && let Some((_, target)) = self.route_targets.iter().find(|(p, _)| p == path)
        {
            return target.clone();
        }
        self.build_target(path, query)
    }

    fn build_target(&self, path: &str, query: Option<&str>) -> Uri {
        let mut pq = String::with_capacity(
            self.path_prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(&self.path_prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::try_from(pq).expect("a path that passed routing and a configured base make a URI")
    }

    /// The most recently used idle connection (its TLS state is warm in cache), dropping any
    /// that idled too long or whose server has gone.
    fn checkout(&self) -> Option<Box<Connection>> {
        loop {
            let candidate = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop()?;
            if candidate.idle_since.elapsed() < POOL_IDLE_TIMEOUT && !candidate.sender.is_closed() {
                return Some(candidate);
            }
        }
    }

    fn checkin(&self, mut connection: Box<Connection>) {
        if connection.driver.is_none() || connection.sender.is_closed() {
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

    /// Closes idle connections that idled too long or whose server closed them, so an idle
    /// gateway does not hold sockets the upstream has given up on. Called periodically.
    pub fn evict_idle(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        let stale: Vec<Box<Connection>> = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let (keep, stale) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|c| c.idle_since.elapsed() < POOL_IDLE_TIMEOUT && !c.sender.is_closed());
            *idle = keep;
            stale
        };
        drop(stale);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Polling an idle connection reads the server's close, if it sent one.
        idle.retain_mut(|c| c.driver.poll(&mut cx).is_pending());
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
            let (sender, driver) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|_| CONNECT)?;
            Ok(Box::new(Connection {
                sender,
                driver: DriverSlot(Some(driver)),
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
}

impl Upstream {
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

/// One HTTP/1 connection to KwikID: the handle requests are sent through and the state
/// machine that does the I/O, which whoever holds the connection polls.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: DriverSlot,
    idle_since: Instant,
    /// It served a request before, so a close before sending means it went stale in the pool.
    reused: bool,
}

enum Exchanged {
    Answered(Response<Bytes>),
    /// Nothing of the request was written: it may go out on another connection.
    NotSent(Request<Full<Bytes>>),
    Failed(UpstreamError),
}

impl Connection {
    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Exchanged {
        let Self { sender, driver, .. } = self;
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
            None => return Exchanged::Failed(UpstreamError::Broken { kind: "closed" }),
        };
        match driver.run(collect(response)).await {
            Some(Ok(response)) => Exchanged::Answered(response),
            Some(Err(e)) => Exchanged::Failed(e),
            None => Exchanged::Failed(UpstreamError::Broken { kind: "closed" }),
        }
    }
}

/// The connection's state machine, until it finishes (the server closed, or an error).
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
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionReset
        {
            return UpstreamError::Broken { kind: "reset" };
        }
        source = e.source();
    }
    UpstreamError::Broken { kind: "closed" }
}
