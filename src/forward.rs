//! What crosses the gateway: the caller's headers that may go on to KwikID, and KwikID's
//! headers that may come back.
//!
//! Credentials, hop-by-hop headers and internal topology are removed on the way out, then
//! `Authorization` is *inserted* (overwritten, never appended) by [`crate::upstream`].

use http::header::HeaderName;

use crate::wire;

/// What the gateway does with a header name on its way through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// RFC 9110 §7.6.1 hop-by-hop headers, plus the de-facto `keep-alive` and
    /// `proxy-connection`: never forwarded either way.
    HopByHop,
    /// `Connection` itself: hop-by-hop, and it names more hop-by-hop headers.
    Connection,
    /// Caller headers never forwarded: credentials, forwarding metadata, and headers the
    /// gateway sets itself (`Host`, the framing of the body it re-sends, `Expect`,
    /// `x-request-id`).
    CallerOnly,
    /// Set by the gateway on the answer too: the body's framing and the request id.
    SetBoth,
    Other,
}

/// Longest name [`kind`] has to recognise (`proxy-authorization`).
const LONGEST_KNOWN: usize = 19;

/// Classifies a header name case-insensitively, in one pass over it.
fn kind(name: &[u8]) -> Kind {
    if name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-") {
        return Kind::CallerOnly;
    }
    if name.len() > LONGEST_KNOWN {
        return Kind::Other;
    }
    let mut lower = [0u8; LONGEST_KNOWN];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    match &*lower {
        b"connection" => Kind::Connection,
        b"keep-alive"
        | b"proxy-connection"
        | b"te"
        | b"trailer"
        | b"transfer-encoding"
        | b"upgrade"
        | b"proxy-authenticate"
        | b"proxy-authorization" => Kind::HopByHop,
        b"authorization" | b"cookie" | b"forwarded" | b"x-real-ip" | b"via" | b"host"
        | b"expect" => Kind::CallerOnly,
        b"content-length" | b"x-request-id" => Kind::SetBoth,
        _ => Kind::Other,
    }
}

/// Whether a header name is one the gateway always strips or sets itself; such a name cannot
/// be the caller header.
pub fn is_reserved_request_header(name: &HeaderName) -> bool {
    kind(name.as_str().as_bytes()) != Kind::Other
}

/// Whether a `Connection` line among `headers` names `name` (such a header is hop-by-hop).
fn connection_lists<'a>(
    mut headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    name: &[u8],
) -> bool {
    headers.any(|(n, v)| kind(n) == Kind::Connection && wire::lists(v, name))
}

/// Whether any header is a `Connection` line: only then can a name be listed in one.
fn has_connection<'a>(mut headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> bool {
    headers.any(|(n, _)| n.len() == 10 && n.eq_ignore_ascii_case(b"connection"))
}

/// The caller's headers that KwikID may see, in the caller's order.
pub fn request_headers<'a, I>(
    caller: I,
    caller_header: &'a HeaderName,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a,
{
    let listing = has_connection(caller.clone()).then(|| caller.clone());
    caller.filter(move |&(name, _)| {
        kind(name) == Kind::Other
            && !name.eq_ignore_ascii_case(caller_header.as_str().as_bytes())
            && !listing
                .clone()
                .is_some_and(|all| connection_lists(all, name))
    })
}

/// KwikID's headers that go back to the caller, in KwikID's order: all but hop-by-hop ones
/// and the framing and request id, which the gateway writes itself.
pub fn response_headers<'a, I>(upstream: I) -> impl Iterator<Item = (&'a [u8], &'a [u8])>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a,
{
    let listing = has_connection(upstream.clone()).then(|| upstream.clone());
    upstream.filter(move |&(name, _)| {
        matches!(kind(name), Kind::Other | Kind::CallerOnly)
            && !listing
                .clone()
                .is_some_and(|all| connection_lists(all, name))
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

    /// Guards against the config accepting a `caller_header` the gateway strips or sets
    /// itself (so every request would look like it came from no caller), or refusing an
    /// ordinary one.
    #[test]
    fn reserved_request_headers_are_the_stripped_and_gateway_set_ones() {
        let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).unwrap();
        for reserved in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-forwarded-for",
            "x-forwarded-client-cert",
            "x-real-ip",
            "host",
            "expect",
            "connection",
            "keep-alive",
            "te",
            "transfer-encoding",
            "content-length",
            "x-request-id",
        ] {
            assert!(is_reserved_request_header(&name(reserved)), "{reserved}");
        }
        for free in [
            "x-caller-id",
            "x-service",
            "content-type",
            "x-forwarded",
            "x-caller-identity-header-long",
        ] {
            assert!(!is_reserved_request_header(&name(free)), "{free}");
        }
    }

    /// Guards against header names longer than any known one being mishandled: ordinary
    /// long names reach KwikID, long `X-Forwarded-*` names do not, in either letter case.
    #[test]
    fn long_header_names_are_classified() {
        let caller = [
            ("x-kwikid-correlation-id", "1"),
            ("X-FORWARDED-CLIENT-CERT", "cert"),
            ("x-forwarded-prefix", "/x"),
            ("Content-Security-Policy-Report-Only", "x"),
        ];
        let caller_header = HeaderName::from_static("x-caller-id");
        let kept = names(request_headers(pairs(&caller), &caller_header));
        assert_eq!(
            kept,
            [
                "x-kwikid-correlation-id",
                "Content-Security-Policy-Report-Only"
            ]
        );
    }

    /// Guards against a `Connection` line's listed names being kept, or ordinary headers
    /// being dropped, when the line is written in another letter case or a header's value
    /// merely mentions another header's name.
    #[test]
    fn only_names_listed_in_connection_are_dropped() {
        let caller = [
            ("x-note", "x-keep"),
            ("CONNECTION", "X-Drop"),
            ("x-drop", "1"),
            ("x-keep", "1"),
        ];
        let caller_header = HeaderName::from_static("x-caller-id");
        let kept = names(request_headers(pairs(&caller), &caller_header));
        assert_eq!(kept, ["x-note", "x-keep"]);
        let kept = names(response_headers(pairs(&caller)));
        assert_eq!(kept, ["x-note", "x-keep"]);
    }

    /// Guards against KwikID's headers being over-filtered on the way back (only hop-by-hop
    /// ones, the framing and the request id are the gateway's), or its request id or framing
    /// reaching the caller next to the gateway's own.
    #[test]
    fn response_keeps_all_but_hop_by_hop_framing_and_request_id() {
        let upstream = [
            ("Transfer-Encoding", "chunked"),
            ("x-request-id", "kwikid-side"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("set-cookie", "a=b"),
            ("via", "1.1 kwikid"),
            ("x-forwarded-for", "10.0.0.1"),
            ("cache-control", "no-store"),
        ];
        let kept = names(response_headers(pairs(&upstream)));
        assert_eq!(
            kept,
            ["set-cookie", "via", "x-forwarded-for", "cache-control"]
        );
    }
}
