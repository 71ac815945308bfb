//! The connection to KwikID: a pooled keep-alive HTTPS client (rustls) with a connect timeout
//! that covers TCP *and* the TLS handshake, and one deadline over the whole exchange.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;

/// KwikID's answers are small JSON documents; anything bigger is not one.
const MAX_UPSTREAM_BODY: usize = 1024 * 1024;

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

/// The pooled client and where it sends requests.
pub struct Upstream {
    client: Client<TimedConnector, Full<Bytes>>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    host: HeaderValue,
    path_prefix: String,
    request_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &config::Upstream) -> Result<Self, rustls::Error> {
        let tls = crate::tls::client_config(&config.extra_roots)?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(config.connect_timeout));
        tcp.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            // Well below common upstream keep-alive timeouts, so a pooled connection is not
            // picked just as the server closes it (a POST must not be retried blindly).
            .pool_idle_timeout(Duration::from_secs(20))
            .pool_timer(TokioTimer::new())
            .build(TimedConnector {
                inner: https,
                limit: config.connect_timeout,
            });
        let host = HeaderValue::from_str(config.authority.as_str())
            .expect("an authority is a valid header value");
        Ok(Self {
            client,
            scheme: config.scheme.clone(),
            authority: config.authority.clone(),
            host,
            path_prefix: config.path_prefix.clone(),
            request_timeout: config.request_timeout,
        })
    }

    /// The upstream URI for a caller's path and query; the caller never chooses the host.
    fn uri(&self, path: &str, query: Option<&str>) -> Uri {
        let mut pq = String::with_capacity(
            self.path_prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(&self.path_prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .expect("a path that passed routing and a configured base make a valid URI")
    }

    /// Sends one request and collects KwikID's whole answer within `request_timeout`.
    /// Retried once only when the connection never opened, so nothing reached KwikID;
    /// `headers` builds the forwarded headers for each attempt (usually one).
    pub async fn send(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: impl Fn() -> HeaderMap,
        authorization: &HeaderValue,
        body: Bytes,
    ) -> Result<Response<Bytes>, UpstreamError> {
        let uri = self.uri(path, query);
        let exchange = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut request = Request::new(Full::new(body.clone()));
                *request.method_mut() = method.clone();
                *request.uri_mut() = uri.clone();
                let forwarded = request.headers_mut();
                *forwarded = headers();
                forwarded.insert(header::HOST, self.host.clone());
                // Inserted, never appended: the caller's own Authorization never passes.
                forwarded.insert(header::AUTHORIZATION, authorization.clone());
                match self.client.request(request).await {
                    Ok(response) => return collect(response).await,
                    Err(e) if e.is_connect() && attempt == 1 => continue,
                    Err(e) => return Err(classify(&e)),
                }
            }
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
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

/// Names the failure by walking the error's sources; never formats the error itself.
fn classify(error: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    let mut io_kind = None;
    let mut timed_out = false;
    while let Some(e) = source {
        if e.is::<ConnectTimedOut>() {
            timed_out = true;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
                return UpstreamError::Broken { kind: "garbage" };
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return UpstreamError::Broken { kind: "closed" };
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        source = e.source();
    }
    if error.is_connect() {
        let kind = match (timed_out, io_kind) {
            (true, _) | (_, Some(std::io::ErrorKind::TimedOut)) => "connect_timeout",
            (_, Some(std::io::ErrorKind::InvalidData)) => "tls",
            _ => "connect",
        };
        return UpstreamError::Connect { kind };
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionReset) => UpstreamError::Broken { kind: "reset" },
        _ => UpstreamError::Broken { kind: "closed" },
    }
}

/// The connect (TCP + TLS) did not finish within `connect_timeout`.
#[derive(Debug)]
pub struct ConnectTimedOut;

impl std::fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect timed out")
    }
}

impl std::error::Error for ConnectTimedOut {}

/// Puts one deadline over TCP connect *and* the TLS handshake; hyper-rustls has none for the
/// handshake, so a peer that accepts TCP and never speaks TLS would hold a request forever.
#[derive(Clone)]
pub struct TimedConnector {
    inner: HttpsConnector<HttpConnector>,
    limit: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;

impl tower_service::Service<Uri> for TimedConnector {
    type Response = Connecting;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connecting, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}
