//! The connection to KwikID: hyper's client connections (HTTP/1.1, or HTTP/2 when KwikID's
//! ALPN picks it) over rustls, under the gateway's own pool, with one deadline over connect
//! (TCP *and* TLS) and one over the whole exchange.
//!
//! - [`pool`]: idle HTTP/1.1 connections and the shared HTTP/2 one; the rules for taking a
//!   connection out and putting it back.
//! - [`connect`]: DNS, TCP (through [`tunnel`] when an egress proxy is set), TLS with ALPN,
//!   and hyper's handshake.
//! - [`exchange`]: one request and its whole answer on a held connection.
//! - [`cause`]: why a connection failed, in words; [`warnings`]: the warning that says it, at
//!   most once a minute per cause.
//! - [`probe`]: `check --connect`, a connection that sends nothing.
//!
//! An HTTP/1.1 connection is driven by the request that holds it, in the caller's own task,
//! the way an nginx worker drives both sockets of a request from one event loop: no second
//! task, no hand-off between tasks. An HTTP/2 connection is shared by every request, so its
//! I/O runs in a task of its own.

mod cause;
mod connect;
mod exchange;
mod pool;
mod probe;
mod tunnel;
mod warnings;

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::Full;

use crate::config;
use cause::Failure;
use connect::Connector;
use exchange::Exchanged;
use pool::Pool;
use warnings::Warnings;

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
    /// Every value [`Self::kind`] can take.
    pub const KINDS: [&'static str; 11] = [
        "dns",
        "connect",
        "connect_timeout",
        "tls",
        "proxy",
        "closed",
        "reset",
        "garbage",
        "body",
        "too_large",
        "timeout",
    ];

    /// One of [`Self::KINDS`]; `proxy`: the egress proxy refused the tunnel or did not answer
    /// in HTTP.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Connect { kind } | Self::Broken { kind } => kind,
            Self::Timeout => "timeout",
        }
    }
}

/// Where requests go and how to reach it.
pub struct Upstream {
    connector: Connector,
    pool: Pool,
    warnings: Warnings,
    request_timeout: Duration,
    /// `Host` of every forwarded HTTP/1.1 request: the upstream's, never the caller's.
    host_header: HeaderValue,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    path_prefix: String,
}

impl Upstream {
    /// # Errors
    /// The TLS client config cannot be built, or the base URL's host is not a TLS name.
    pub fn new(config: &config::Upstream) -> Result<Self, rustls::Error> {
        let host_header = HeaderValue::from_str(config.authority.as_str())
            .map_err(|_| rustls::Error::General("upstream host is not a valid header".into()))?;
        let connector = Connector::new(config)?;
        Ok(Self {
            warnings: Warnings::new(connector.target().to_owned(), connector.proxy()),
            connector,
            pool: Pool::new(config.pool_max_idle_per_host),
            request_timeout: config.request_timeout,
            host_header,
            scheme: config.scheme.clone(),
            authority: config.authority.clone(),
            path_prefix: config.path_prefix.clone(),
        })
    }

    /// Sends one request and collects KwikID's whole answer within `request_timeout`.
    /// `caller_target` is the caller's request target: only its path and query are used,
    /// after `base_url`'s path. `headers` are the caller's that may cross; `Host` and
    /// `Authorization` are *inserted* here (never appended), so the caller's own never pass.
    ///
    /// A request goes out again only when nothing of it was sent: its first fresh connection
    /// never opened, or a pooled connection turned out closed before it was written.
    ///
    /// A failure is written to the log with its cause (see [`warnings`]).
    ///
    /// # Errors
    /// [`UpstreamError`], which says whether anything may have reached KwikID.
    pub async fn send(
        &self,
        method: Method,
        caller_target: &Uri,
        mut headers: HeaderMap,
        authorization: &HeaderValue,
        body: Bytes,
    ) -> Result<Response<Bytes>, UpstreamError> {
        headers.insert(header::AUTHORIZATION, authorization.clone());
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.headers_mut() = headers;
        let target = self.origin_form(caller_target);

        let exchange = async {
            let mut fresh_connects = 0;
            loop {
                let mut connection = match self.pool.checkout() {
                    Some(pooled) => pooled,
                    None => {
                        fresh_connects += 1;
                        // Boxed: a connect (a TLS handshake in flight) is large, rare, and
                        // would otherwise size every request's future.
                        match Box::pin(self.connector.connect(&self.pool)).await {
                            Ok(fresh) => fresh,
                            Err(failure) if fresh_connects == 1 => {
                                tracing::debug!(
                                    cause = %failure.cause,
                                    "upstream connect failed; trying once more"
                                );
                                continue;
                            }
                            Err(failure) => return Err(failure),
                        }
                    }
                };
                self.address(&mut request, &target, connection.is_http2());
                match connection.exchange(request).await {
                    Exchanged::Answered(response) => {
                        self.pool.checkin(connection);
                        return Ok(response);
                    }
                    Exchanged::NotSent(unsent) if connection.reused() => {
                        tracing::trace!(
                            "pooled upstream connection was closed; sending on another"
                        );
                        request = unsent;
                    }
                    Exchanged::NotSent(_) => {
                        let closed = UpstreamError::Broken { kind: "closed" };
                        return Err(Failure::after_connect(closed));
                    }
                    Exchanged::Failed(e) => return Err(Failure::after_connect(e)),
                }
            }
        };
        let failure = match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(failure)) => failure,
            Err(_) => Failure {
                error: UpstreamError::Timeout,
                cause: format!(
                    "no whole answer within upstream.request_timeout ({})",
                    humantime::format_duration(self.request_timeout)
                )
                .into(),
            },
        };
        self.warnings.failed(&failure);
        Err(failure.error)
    }

    /// HTTP/1.1 takes the origin-form target and `Host`; HTTP/2 the absolute URI, whose
    /// authority becomes `:authority` (RFC 9113 §8.3.1), and no `Host`.
    fn address(&self, request: &mut Request<Full<Bytes>>, target: &Uri, http2: bool) {
        if http2 {
            let mut parts = target.clone().into_parts();
            parts.scheme = Some(self.scheme.clone());
            parts.authority = Some(self.authority.clone());
            *request.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| target.clone());
            *request.version_mut() = http::Version::HTTP_2;
            request.headers_mut().remove(header::HOST);
        } else {
            *request.uri_mut() = target.clone();
            *request.version_mut() = http::Version::HTTP_11;
            request
                .headers_mut()
                .insert(header::HOST, self.host_header.clone());
        }
    }

    /// The path and query as sent on the wire; the caller never chooses the host. Without a
    /// path prefix this is the caller's own path and query, already parsed by hyper: shared,
    /// not copied or parsed again.
    fn origin_form(&self, caller: &Uri) -> Uri {
        if let (true, Some(parsed)) = (self.path_prefix.is_empty(), caller.path_and_query()) {
            return Uri::from(parsed.clone());
        }
        let (path, query) = (caller.path(), caller.query());
        let mut pq = String::with_capacity(
            self.path_prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(&self.path_prefix);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        // A path that passed routing and a query hyper accepted make a valid target; should
        // one not, the bare path is sent rather than the caller's bytes.
        Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// Closes idle connections that idled too long or whose server closed them, and writes
    /// the counts of failures kept quiet for a minute. Called periodically.
    pub fn evict_idle(&self) {
        self.pool.evict_idle();
        self.warnings.flush();
    }
}
