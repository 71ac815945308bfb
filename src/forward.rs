//! What crosses the gateway: the caller's headers that may go on to KwikID, and KwikID's
//! headers that may come back.
//!
//! Credentials, hop-by-hop headers and internal topology are removed on the way out, then
//! `Authorization` is *inserted* (overwritten, never appended) by [`crate::upstream`].

use http::header::{self, HeaderName};

use crate::wire;

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the de-facto `keep-alive` and `proxy-connection`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Caller headers never forwarded: credentials, forwarding metadata, and headers the gateway
/// sets itself (`Host`, the framing of the body it re-sends, `Expect`).
const NEVER_FORWARDED: [&str; 10] = [
    "authorization",
    "cookie",
    "forwarded",
    "x-real-ip",
    "via",
    "host",
    "content-length",
    "expect",
    "x-request-id",
    "proxy-authorization",
];

/// KwikID headers the gateway sets itself on the answer: its framing and the request id.
const SET_ON_ANSWER: [&str; 2] = ["content-length", "x-request-id"];

fn is_one_of(name: &[u8], names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

fn is_forwarding_metadata(name: &[u8]) -> bool {
    name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-")
}

/// Whether a header name is one the gateway always strips or sets itself; such a name cannot
/// be the caller header.
pub fn is_reserved_request_header(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    is_one_of(name, &HOP_BY_HOP)
        || is_one_of(name, &NEVER_FORWARDED)
        || is_forwarding_metadata(name)
}

/// Whether a `Connection` line among `headers` names `name` (such a header is hop-by-hop).
fn connection_lists<'a>(
    mut headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    name: &[u8],
) -> bool {
    headers.any(|(n, v)| {
        n.eq_ignore_ascii_case(header::CONNECTION.as_str().as_bytes()) && wire::lists(v, name)
    })
}

/// The caller's headers that KwikID may see, in the caller's order.
pub fn request_headers<'a, I>(
    caller: I,
    caller_header: &'a HeaderName,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a,
{
    let all = caller.clone();
    caller.filter(move |&(name, _)| {
        !(is_one_of(name, &HOP_BY_HOP)
            || is_one_of(name, &NEVER_FORWARDED)
            || is_forwarding_metadata(name)
            || name.eq_ignore_ascii_case(caller_header.as_str().as_bytes())
            || connection_lists(all.clone(), name))
    })
}

/// KwikID's headers that go back to the caller, in KwikID's order: all but hop-by-hop ones
/// and the framing and request id, which the gateway writes itself.
pub fn response_headers<'a, I>(upstream: I) -> impl Iterator<Item = (&'a [u8], &'a [u8])>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a,
{
    let all = upstream.clone();
    upstream.filter(move |&(name, _)| {
        !(is_one_of(name, &HOP_BY_HOP)
            || is_one_of(name, &SET_ON_ANSWER)
            || connection_lists(all.clone(), name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(kept: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<String> {
        kept.map(|(n, _)| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    fn pairs<'a>(
        list: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    #[test]
    fn credentials_hop_by_hop_and_topology_are_removed() {
        let caller = [
            ("Authorization", "Bearer caller"),
            ("proxy-authorization", "Basic x"),
            ("COOKIE", "a=b"),
            ("forwarded", "for=1.2.3.4"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-real-ip", "1.2.3.4"),
            ("via", "1.1 x"),
            ("host", "evil.example"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-second-hop"),
            ("x-secret-hop", "1"),
            ("x-second-hop", "1"),
            ("te", "trailers"),
            ("X-Caller-Id", "orders"),
            ("content-length", "2"),
            ("x-request-id", "abc"),
            ("Content-Type", "application/json"),
            ("accept", "application/json"),
        ];
        let caller_header = HeaderName::from_static("x-caller-id");
        let kept = names(request_headers(pairs(&caller), &caller_header));
        assert_eq!(kept, ["Content-Type", "accept"]);
    }

    #[test]
    fn response_hop_by_hop_is_removed() {
        let upstream = [
            ("connection", "close, x-hop"),
            ("X-Hop", "1"),
            ("keep-alive", "timeout=5"),
            ("content-type", "application/json"),
            ("Content-Length", "12"),
            ("x-kwikid-trace", "abc"),
        ];
        let kept = names(response_headers(pairs(&upstream)));
        assert_eq!(kept, ["content-type", "x-kwikid-trace"]);
    }
}
