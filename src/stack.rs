//! The request pipeline. Read top to bottom, it is the whole life of one request: every step
//! refuses what it must before the next one looks, and nothing is sent to KwikID until every
//! check has passed (pingora's phase order: trust, route, body, limits, then forward).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::access_log::{self, AccessRecord};
use crate::error::Reject;
use crate::server::Gateway;
use crate::{body, forward, rate_limit, route, trusted};

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
/// caller went away, so hyper dropped the handler), it still records the request, as
/// status 499 `client_closed`, the way nginx does: no request leaves no trace.
struct Exchange<'g> {
    gateway: &'g Gateway,
    started: Instant,
    request_id: HeaderValue,
    caller: String,
    method: http::Method,
    path: String,
    peer: SocketAddr,
    trail: Trail,
    recorded: bool,
}

/// Status and outcome of a request whose caller left before the answer.
const CLIENT_CLOSED: (u16, &str) = (499, "client_closed");

impl Exchange<'_> {
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
                request_id: self.request_id.to_str().unwrap_or_default(),
                caller: &self.caller,
                peer: self.peer,
                method: self.method.as_str(),
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

impl Gateway {
    /// Answers one request, records it, and never fails: every refusal is a response.
    pub async fn handle(&self, req: Request<Incoming>, peer: &Peer) -> Response<Full<Bytes>> {
        let _in_flight = self.metrics.in_flight();
        let mut exchange = Exchange {
            gateway: self,
            started: Instant::now(),
            request_id: request_id(req.headers().get(X_REQUEST_ID)),
            caller: match &peer.certificate_name {
                Some(name) => name.to_string(),
                None => trusted::caller_name(
                    req.headers(),
                    &self.config.rate_limit.caller_header,
                    peer.addr,
                ),
            },
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            peer: peer.addr,
            trail: Trail::default(),
            recorded: false,
        };

        let (mut response, outcome) = match self.pipeline(req, peer, &mut exchange).await {
            Ok(response) => (response, "forwarded"),
            Err(reject) => {
                let code = reject.code();
                (reject.into_response(), code)
            }
        };
        response
            .headers_mut()
            .insert(X_REQUEST_ID, exchange.request_id.clone());
        let bytes_out = hyper::body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0) as usize;
        exchange.record(response.status().as_u16(), outcome, bytes_out);
        response
    }

    async fn pipeline(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange<'_>,
    ) -> Result<Response<Full<Bytes>>, Reject> {
        let config = &self.config;
        let (caller, request_id, trail) = (
            exchange.caller.as_str(),
            &exchange.request_id,
            &mut exchange.trail,
        );

        // 1. Trust: the peer address, decided before anything the caller wrote is looked at.
        if !peer.trusted {
            return Err(Reject::CallerNotAllowed);
        }

        // 2. Route: exact method and path; absolute-form targets and CONNECT never match.
        let matched = route::match_route(&config.routes, &req).map_err(|miss| match miss {
            route::Miss::NoRoute => Reject::NoRoute,
            route::Miss::MethodNotAllowed(allow) => Reject::MethodNotAllowed { allow },
        })?;
        trail.route = Some(matched);

        // 3. Body: limited while it streams, so an oversized body is never buffered.
        let (parts, incoming) = req.into_parts();
        let body = body::read_limited(
            incoming,
            config.listen.max_body_bytes,
            config.upstream.request_timeout,
        )
        .await?;
        trail.bytes_in = body.len();

        // 4. JSON: an object whose handshake_id / callback_url are strings or null.
        let init = body::parse_init(&body)?;
        trail.handshake_id = init.handshake_id.as_deref().map(str::to_owned);

        // 5. Policy: where KwikID may send the user back to.
        if !config.policy.allows(init.callback_url.as_deref()) {
            return Err(Reject::CallbackNotAllowed);
        }

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
        let mut headers =
            forward::request_headers(&parts.headers, &config.rate_limit.caller_header);
        headers.insert(X_REQUEST_ID, request_id.clone());
        let token = self.token.current();
        let logged_id = access_log::scrub(request_id.to_str().unwrap_or_default(), &token);
        tracing::trace!(request_id = logged_id, "forwarding to KwikID");
        let sent = Instant::now();
        let answer = self
            .upstream
            .send(
                &parts.method,
                parts.uri.path(),
                parts.uri.query(),
                headers,
                &token.header,
                body,
            )
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
        let answer = answer?;

        // 8. Answer: KwikID's status, headers (less hop-by-hop) and body, unchanged.
        let (mut parts, bytes) = answer.into_parts();
        trail.upstream_status = Some(parts.status.as_u16());
        if parts.status == http::StatusCode::TOO_MANY_REQUESTS {
            let hold =
                rate_limit::upstream_retry_after(parts.headers.get(http::header::RETRY_AFTER));
            tracing::warn!(
                hold_secs = hold.as_secs(),
                "KwikID answered 429; holding the global bucket closed"
            );
            self.limits.hold_after_upstream_429(hold).await;
        }
        forward::strip_response_headers(&mut parts.headers);
        Ok(Response::from_parts(parts, Full::new(bytes)))
    }
}

/// The caller's `x-request-id` when it is 1–128 visible ASCII characters, else a new ULID.
fn request_id(sent: Option<&HeaderValue>) -> HeaderValue {
    sent.filter(|v| {
        !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic)
    })
    .cloned()
    .unwrap_or_else(|| {
        let mut text = [0u8; ulid::ULID_LEN];
        HeaderValue::from_str(ulid::Ulid::generate().array_to_str(&mut text))
            .expect("a ULID is a valid header value")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_request_ids_are_kept_others_replaced() {
        let kept = request_id(Some(&HeaderValue::from_static("abc-123")));
        assert_eq!(kept, "abc-123");
        for bad in ["", "has space"] {
            let replaced = request_id(Some(&HeaderValue::from_str(bad).unwrap()));
            assert_eq!(replaced.len(), 26, "{bad}");
        }
        assert_eq!(
            request_id(Some(&HeaderValue::from_str(&"a".repeat(129)).unwrap())).len(),
            26
        );
        assert_eq!(request_id(None).len(), 26);
    }
}
