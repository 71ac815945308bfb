//! The request pipeline. Read top to bottom, it is the whole life of one request: every step
//! refuses what it must before the next one looks, and nothing is sent to KwikID until every
//! check has passed (pingora's phase order: trust, route, body, limits, then forward).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::access_log::{self, AccessRecord};
use crate::connection::{Caller, Inbox};
use crate::error::Reject;
use crate::server::Gateway;
use crate::upstream::{Answer, Outgoing};
use crate::{body, forward, rate_limit, route, trusted, wire};

const X_REQUEST_ID: &str = "x-request-id";

/// What the server knows about the connection a request came on, decided once per connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `addr` is in `listen.allow_cidrs` and, with mTLS, a verified certificate was presented.
    pub trusted: bool,
    /// With mTLS, the caller's name from its certificate; it replaces the caller header.
    pub certificate_name: Option<Arc<str>>,
}

/// What one request did, for the access log.
#[derive(Default)]
struct Trail {
    upstream_status: Option<u16>,
    upstream_ms: Option<f64>,
    bytes_in: usize,
    handshake_id: Option<String>,
    /// The matched route's configured path (a bounded metric label).
    route: Option<usize>,
    /// The token this request was sent with, so `token_id` names it even across a reload.
    token: Option<Arc<crate::secret::LoadedToken>>,
}

/// One request, from its head to its access-log line. Dropped before it was answered (the
/// caller went away), it still records the request, as status 499 `client_closed`, the way
/// nginx does: no request leaves no trace.
struct Exchange<'g> {
    gateway: &'g Gateway,
    started: Instant,
    request_id: String,
    caller: String,
    method: Option<http::Method>,
    path: String,
    peer: SocketAddr,
    trail: Trail,
    recorded: bool,
}

/// Status and outcome of a request whose caller left before the answer.
const CLIENT_CLOSED: (u16, &str) = (499, "client_closed");

impl<'g> Exchange<'g> {
    /// Starts the record of a request from what its head said: the request id and caller
    /// header as sent (each checked here), its method and its path without the query.
    fn begin(
        gateway: &'g Gateway,
        peer: &Peer,
        sent_id: Option<&[u8]>,
        sent_caller: Option<&[u8]>,
        method: Option<http::Method>,
        path: String,
    ) -> Self {
        Self {
            gateway,
            started: Instant::now(),
            request_id: request_id(sent_id),
            caller: match &peer.certificate_name {
                Some(name) => name.to_string(),
                None => trusted::caller_name(sent_caller, peer.addr),
            },
            method,
            path,
            peer: peer.addr,
            trail: Trail::default(),
            recorded: false,
        }
    }

    /// Counts and logs the request, once.
    fn record(&mut self, status: u16, outcome: &'static str, bytes_out: usize) {
        self.recorded = true;
        let gateway = self.gateway;
        let elapsed = self.started.elapsed();
        let route = self.trail.route.map(|i| &gateway.config.routes[i].path);
        gateway.metrics.request(route, status, outcome, elapsed);
        let token = self
            .trail
            .token
            .take()
            .unwrap_or_else(|| gateway.token.current());
        gateway.access_log.write(
            &AccessRecord {
                request_id: &self.request_id,
                caller: &self.caller,
                peer: self.peer,
                method: self.method.as_ref().map_or("", http::Method::as_str),
                path: &self.path,
                status,
                upstream_status: self.trail.upstream_status,
                outcome,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream_ms: self.trail.upstream_ms,
                bytes_in: self.trail.bytes_in,
                bytes_out,
                handshake_id: self.trail.handshake_id.as_deref(),
            },
            &token,
        );
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(CLIENT_CLOSED.0, CLIENT_CLOSED.1, 0);
        }
    }
}

/// How a request the pipeline let through was answered.
struct Answered {
    status: u16,
    bytes_out: usize,
    /// The answer says `connection: close`.
    closing: bool,
}

/// Why the pipeline stopped before KwikID answered.
enum Stop {
    Refused(Reject),
    /// The caller closed its connection: nobody is left to answer.
    CallerLeft,
}

impl From<Reject> for Stop {
    fn from(reject: Reject) -> Self {
        Self::Refused(reject)
    }
}

/// A request whose answer is ready; [`Finished::record`] logs it once the answer is sent, so
/// the access log never delays an answer.
pub(crate) struct Finished<'g> {
    exchange: Exchange<'g>,
    status: u16,
    outcome: &'static str,
    bytes_out: usize,
}

impl<'g> Finished<'g> {
    /// Writes the gateway's own answer for `reject` into `out`.
    fn refused(exchange: Exchange<'g>, reject: &Reject, out: &mut Vec<u8>, closing: bool) -> Self {
        reject.render(out, exchange.request_id.as_bytes(), closing);
        Self {
            exchange,
            status: reject.status(),
            outcome: reject.code(),
            bytes_out: reject.body_len(),
        }
    }

    pub(crate) fn record(mut self) {
        self.exchange
            .record(self.status, self.outcome, self.bytes_out);
    }
}

impl Gateway {
    /// Answers the request whose head `conn` has just read, leaving the whole answer in
    /// `conn.out`. `None`: the caller left before it could be answered (and the request is
    /// recorded as such).
    pub(crate) async fn handle<S>(&self, conn: &mut Caller<S>, peer: &Peer) -> Option<Finished<'_>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let _in_flight = self.metrics.in_flight();
        let inbox = &conn.inbox;
        let caller_header = self.config.rate_limit.caller_header.as_str().as_bytes();
        let mut exchange = Exchange::begin(
            self,
            peer,
            inbox.header(X_REQUEST_ID.as_bytes()),
            inbox.header(caller_header),
            http::Method::from_bytes(inbox.method().as_bytes()).ok(),
            route::split_target(inbox.target()).0.to_owned(),
        );

        match self.pipeline(conn, peer, &mut exchange).await {
            Ok(answered) => {
                conn.inbox.must_close |= answered.closing;
                Some(Finished {
                    exchange,
                    status: answered.status,
                    outcome: "forwarded",
                    bytes_out: answered.bytes_out,
                })
            }
            Err(Stop::Refused(reject)) => {
                let closing = !conn.inbox.can_continue() || self.draining();
                conn.inbox.must_close |= closing;
                Some(Finished::refused(exchange, &reject, &mut conn.out, closing))
            }
            Err(Stop::CallerLeft) => None,
        }
    }

    /// Answers a request refused before its head could be read (malformed, too large, too
    /// slow) into `out`, with a new request id; the connection closes after it. Only the
    /// peer is known, so the access log shows no method or path.
    pub(crate) fn refuse_unreadable(
        &self,
        out: &mut Vec<u8>,
        peer: &Peer,
        reject: Reject,
    ) -> Finished<'_> {
        let exchange = Exchange::begin(self, peer, None, None, None, String::new());
        Finished::refused(exchange, &reject, out, true)
    }

    fn draining(&self) -> bool {
        !self.ready.load(Ordering::Acquire)
    }

    async fn pipeline<S>(
        &self,
        conn: &mut Caller<S>,
        peer: &Peer,
        exchange: &mut Exchange<'_>,
    ) -> Result<Answered, Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = &self.config;

        // 1. Trust: the peer address, decided before anything the caller wrote is looked at.
        if !peer.trusted {
            return Err(Reject::CallerNotAllowed.into());
        }

        // 2. Route: exact method and path; absolute-form targets and CONNECT never match.
        let matched = route::match_route(&config.routes, conn.inbox.method(), conn.inbox.target())
            .map_err(|miss| match miss {
                route::Miss::NoRoute => Reject::NoRoute,
                route::Miss::MethodNotAllowed(allow) => Reject::MethodNotAllowed { allow },
            })?;
        exchange.trail.route = Some(matched);

        // 3. Body: limited while it streams, so an oversized body is never buffered.
        conn.read_body(
            config.listen.max_body_bytes,
            config.upstream.request_timeout,
        )
        .await?;
        let closing = !conn.inbox.can_continue() || self.draining();
        let Caller { io, inbox, out, .. } = conn;
        let body = inbox.body();
        exchange.trail.bytes_in = body.len();

        // 4. JSON: an object whose handshake_id / callback_url are strings or null.
        let init = body::parse_init(body)?;
        exchange.trail.handshake_id = init.handshake_id.as_deref().map(str::to_owned);

        // 5. Policy: where KwikID may send the user back to.
        if !config.policy.allows(init.callback_url.as_deref()) {
            return Err(Reject::CallbackNotAllowed.into());
        }

        // 6–8 wait on buckets and on KwikID; a caller that hangs up meanwhile ends them.
        tokio::select! {
            biased;
            answered = self.limit_and_forward(inbox, out, exchange, closing) => answered,
            () = io.closed() => Err(Stop::CallerLeft),
        }
    }

    async fn limit_and_forward(
        &self,
        inbox: &Inbox,
        out: &mut Vec<u8>,
        exchange: &mut Exchange<'_>,
        closing: bool,
    ) -> Result<Answered, Stop> {
        let config = &self.config;
        let (caller, request_id, trail) = (
            exchange.caller.as_str(),
            exchange.request_id.as_str(),
            &mut exchange.trail,
        );

        // 6. Rate limits: the caller's share, then the account's ceiling.
        self.limits
            .acquire(caller, &self.metrics)
            .await
            .map_err(|limited| {
                tracing::debug!(scope = limited.scope.as_str(), "rate limited");
                self.metrics.rate_limited(limited.scope.as_str());
                Reject::RateLimited {
                    retry_after_secs: limited.retry_after_secs,
                }
            })?;

        // 7. Forward: caller credentials and topology stripped, the token inserted, one
        //    deadline over the whole exchange.
        let caller_header = &config.rate_limit.caller_header;
        let forwarded_headers = |head: &mut Vec<u8>| {
            for (name, value) in forward::request_headers(inbox.headers(), caller_header) {
                wire::header(head, name, value);
            }
        };
        let (path, query) = route::split_target(inbox.target());
        let token = self.token.current();
        let request = Outgoing {
            method: inbox.method(),
            path,
            query,
            headers: &forwarded_headers,
            request_id: request_id.as_bytes(),
            authorization: &token.header,
            body: inbox.body(),
        };
        let logged_id = access_log::scrub(request_id, &token);
        tracing::trace!(request_id = logged_id, "forwarding to KwikID");
        let sent = Instant::now();

        // 8. Answer: KwikID's status, headers (less hop-by-hop) and body, unchanged.
        let answer = self
            .upstream
            .send(&request, |answer| {
                let closing = closing || self.draining();
                let head_request = inbox.method() == "HEAD";
                write_answer(
                    out,
                    answer,
                    request_id,
                    closing,
                    inbox.is_http10(),
                    head_request,
                );
                let hold = (answer.status == 429)
                    .then(|| rate_limit::upstream_retry_after(answer.header(b"retry-after")));
                let answered = Answered {
                    status: answer.status,
                    bytes_out: answer.body.len(),
                    closing,
                };
                (answered, hold)
            })
            .await;
        let upstream_time = sent.elapsed();
        trail.upstream_ms = Some(upstream_time.as_secs_f64() * 1000.0);
        self.metrics.upstream(upstream_time);
        let answer = answer.map_err(|e| {
            self.metrics.upstream_error(e.kind());
            tracing::warn!(
                request_id = logged_id,
                kind = e.kind(),
                "upstream request failed"
            );
            match e {
                crate::upstream::UpstreamError::Timeout => Reject::UpstreamTimeout,
                _ => Reject::UpstreamUnavailable,
            }
        });
        trail.token = Some(token);
        let (answered, hold) = answer?;
        trail.upstream_status = Some(answered.status);
        if let Some(hold) = hold {
            self.hold_after_429(hold).await;
        }
        Ok(answered)
    }

    async fn hold_after_429(&self, hold: Duration) {
        tracing::warn!(
            hold_secs = hold.as_secs(),
            "KwikID answered 429; holding the global bucket closed"
        );
        self.limits.hold_after_upstream_429(hold).await;
    }
}

/// KwikID's answer for the caller: its status, its headers less hop-by-hop ones, the request
/// id, the framing of the body, then the body, unchanged.
fn write_answer(
    out: &mut Vec<u8>,
    answer: &Answer<'_>,
    request_id: &str,
    closing: bool,
    http10: bool,
    head_request: bool,
) {
    wire::status_line(out, answer.status);
    let mut dated = false;
    for (name, value) in forward::response_headers(answer.headers()) {
        dated |= name.eq_ignore_ascii_case(b"date");
        wire::header(out, name, value);
    }
    wire::header(out, X_REQUEST_ID.as_bytes(), request_id.as_bytes());
    if !dated {
        out.extend_from_slice(b"date: ");
        wire::date(out);
        out.extend_from_slice(b"\r\n");
    }
    if closing {
        wire::header(out, b"connection", b"close");
    } else if http10 {
        wire::header(out, b"connection", b"keep-alive");
    }
    match answer.header(b"content-length") {
        // A HEAD answer has no body but tells the length a GET would have had.
        Some(length) if head_request => wire::header(out, b"content-length", length),
        _ => wire::content_length(out, answer.body.len()),
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(answer.body);
}

/// The caller's `x-request-id` when it is 1–128 visible ASCII characters, else a new ULID.
fn request_id(sent: Option<&[u8]>) -> String {
    sent.filter(|v| !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map_or_else(|| ulid::Ulid::generate().to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_request_ids_are_kept_others_replaced() {
        assert_eq!(request_id(Some(b"abc-123")), "abc-123");
        for bad in ["", "has space", "tab\there"] {
            assert_eq!(request_id(Some(bad.as_bytes())).len(), 26, "{bad}");
        }
        assert_eq!(request_id(Some("a".repeat(129).as_bytes())).len(), 26);
        assert_eq!(request_id(None).len(), 26);
    }
}
