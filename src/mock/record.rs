//! What the mock keeps of each request it receives, so tests can assert what KwikID saw.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Version, header};

use super::State;

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) method: Method,
    /// Path and query, byte for byte.
    pub(crate) target: String,
    /// `HTTP_11`, or `HTTP_2`.
    pub(crate) version: Version,
    /// HTTP/2's `:authority`; `None` over HTTP/1.1, whose `Host` is in `headers`.
    pub(crate) authority: Option<String>,
    /// The header fields. An HTTP/2 request without `Host` has its `:authority` recorded here
    /// as `host` (RFC 9113 §8.3.1), so the name KwikID was addressed by reads the same on
    /// both protocols.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Which of the mock's connections it came on (1 for the first accepted, and so on).
    pub(crate) connection: u64,
}

impl Received {
    /// The name KwikID was addressed by: `Host`, else `:authority`.
    pub(crate) fn host(&self) -> Option<&str> {
        self.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(self.authority.as_deref())
    }
}

impl State {
    /// Counts a request that reached the handler, records it if asked to, and returns its
    /// number (1-based): the `n`th request is `received()[n - 1]`.
    pub(super) fn arrived(
        &self,
        parts: &http::request::Parts,
        body: Bytes,
        connection: u64,
    ) -> u64 {
        if !self.options.record {
            return self.served.fetch_add(1, Ordering::Relaxed) + 1;
        }
        let authority = (parts.version == Version::HTTP_2)
            .then(|| parts.uri.authority().map(|a| a.to_string()))
            .flatten();
        let mut headers = parts.headers.clone();
        if let Some(a) = &authority
            && !headers.contains_key(header::HOST)
            && let Ok(value) = HeaderValue::from_str(a)
        {
            headers.insert(header::HOST, value);
        }
        let seen = Received {
            method: parts.method.clone(),
            target: parts
                .uri
                .path_and_query()
                .map_or_else(String::new, |pq| pq.to_string()),
            version: parts.version,
            authority,
            headers,
            body,
            connection,
        };
        // Counted under the lock, so the numbers follow the order of `received`.
        let mut received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        received.push(seen);
        self.served.fetch_add(1, Ordering::Relaxed) + 1
    }
}
