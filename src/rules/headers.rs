//! What crosses the gateway: the caller's headers that may go on to KwikID, and KwikID's
//! headers that may come back.
//!
//! Credentials, hop-by-hop headers and internal topology are removed on the way out, then
//! `Authorization` is *inserted* (overwritten, never appended) by [`crate::upstream`].
//!
//! A name is classified with `_` read as `-`: upstreams that map headers to CGI-style
//! variables read `X_Forwarded_For` as `X-Forwarded-For`, so a spelling with underscores of
//! a header the gateway strips is stripped too (nginx drops every such name by default).

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

/// A parsed name, so that looking it up or inserting it does not parse (and, for a name
/// outside http's standard set, allocate) on every request.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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

/// `name` lowercased, with `_` read as `-`.
fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Whether two header names are the same once both are folded.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

/// Classifies a header name with `_` read as `-`. A `HeaderName` is lower case already
/// (http folds it when parsing), so only `_` can need folding, and nearly no name has one
/// (this runs for every header of every request and answer).
fn kind(name: &HeaderName) -> Kind {
    let name = name.as_str().as_bytes();
    if !name.contains(&b'_') {
        return folded_kind(name);
    }
    if name.len() > LONGEST_KNOWN {
        return if same_name(&name[..12], b"x-forwarded-") {
            Kind::CallerOnly
        } else {
            Kind::Other
        };
    }
    let mut lower = [0u8; LONGEST_KNOWN];
    let lower = &mut lower[..name.len()];
    for (to, &from) in lower.iter_mut().zip(name) {
        *to = fold(from);
    }
    folded_kind(lower)
}

/// [`kind`] of a name already lower case, with `-` for `_`.
fn folded_kind(name: &[u8]) -> Kind {
    if name.starts_with(b"x-forwarded-") && name.len() > 12 {
        return Kind::CallerOnly;
    }
    match name {
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
    kind(name) != Kind::Other
}

/// Whether a comma-separated `Connection` value lists `name` (RFC 9110 §7.6.1).
fn lists(value: &[u8], name: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| same_name(item.trim_ascii(), name))
}

/// Whether a `Connection` line in `headers` names `name` (such a header is hop-by-hop).
fn connection_lists(headers: &HeaderMap, name: &[u8]) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| lists(v.as_bytes(), name))
}

/// The caller's headers that KwikID may see, in the caller's order: none of the hop-by-hop
/// ones (RFC 9110 §7.6.1 and those named in `Connection`), no credentials, no forwarding
/// metadata, not the caller header, and not the headers the gateway sets itself.
pub fn request_headers(caller: &HeaderMap, caller_header: &HeaderName) -> HeaderMap {
    let listing = caller.contains_key(http::header::CONNECTION);
    let mut kept = HeaderMap::with_capacity(caller.len());
    for (name, value) in caller {
        let n = name.as_str().as_bytes();
        if kind(name) == Kind::Other
            && !same_name(n, caller_header.as_str().as_bytes())
            && !(listing && connection_lists(caller, n))
        {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// Whether `headers` hold exactly one `Content-Length` field line, and it is `n` written as
/// hyper would write it (plain decimal, RFC 9110 §8.6): such a line may be kept as it is.
fn one_length_of(headers: &HeaderMap, n: usize) -> bool {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let one = lengths.next();
    lengths.next().is_none()
        && one.is_some_and(|v| v.as_bytes() == itoa::Buffer::new().format(n).as_bytes())
}

/// The headers sent to KwikID for a caller's request whose body is `body_length` bytes:
/// those of [`request_headers`], the caller's `Content-Length` when it is the body's (what
/// hyper would write for it), and `x-request-id` set to `request_id` (none when `None`).
///
/// `Host` and `Authorization` may still be the caller's: [`crate::upstream::Upstream::send`]
/// *inserts* both, replacing them. Every other name that must not cross is gone.
///
/// The usual request has at most one header to remove (the caller header): it is removed
/// from the caller's own map, which is then sent, rather than every other header being copied
/// into a new one. Removing moves the last field line into the gap; only the order of one
/// name's values is significant (RFC 9110 §5.3), and that is kept. A request with more to
/// remove is rebuilt in the caller's order.
pub fn outgoing(
    mut caller: HeaderMap,
    caller_header: &HeaderName,
    body_length: usize,
    request_id: Option<&HeaderValue>,
) -> HeaderMap {
    let length_kept = |caller: &HeaderMap| one_length_of(caller, body_length);
    let listing = caller.contains_key(header::CONNECTION);
    let kept = |name: &HeaderName| {
        let n = name.as_str().as_bytes();
        match kind(name) {
            Kind::Other => {
                !(same_name(n, caller_header.as_str().as_bytes())
                    || (listing && connection_lists(&caller, n)))
            }
            // Replaced by `send`, or below.
            _ if name == header::HOST || name == header::AUTHORIZATION => true,
            _ if name == X_REQUEST_ID => request_id.is_some(),
            _ if name == header::CONTENT_LENGTH => length_kept(&caller),
            _ => false,
        }
    };
    let mut removed = caller.keys().filter(|name| !kept(name));
    match (removed.next().cloned(), removed.next()) {
        (None, _) => {}
        (Some(name), None) => {
            caller.remove(name);
        }
        (Some(_), Some(_)) => {
            let length = length_kept(&caller)
                .then(|| caller.get(header::CONTENT_LENGTH).cloned())
                .flatten();
            caller = request_headers(&caller, caller_header);
            if let Some(length) = length {
                caller.insert(header::CONTENT_LENGTH, length);
            }
        }
    }
    if let Some(id) = request_id {
        caller.insert(X_REQUEST_ID.clone(), id.clone());
    }
    caller
}

/// Removes from KwikID's answer what does not go back to the caller: hop-by-hop headers,
/// and the framing and request id, which the gateway sets itself.
pub fn strip_response_headers(upstream: &mut HeaderMap) {
    strip_answer_headers(upstream, None);
}

/// [`strip_response_headers`] for an answer whose whole body is `body_length` bytes: a single
/// `Content-Length` of exactly that is kept, being what hyper would write for it. An answer
/// with nothing else to strip, KwikID's usual one, is then left as it is instead of rebuilt.
pub fn strip_answer_headers(upstream: &mut HeaderMap, body_length: Option<usize>) {
    let listing = upstream.contains_key(http::header::CONNECTION);
    let length_kept = body_length.is_some_and(|n| one_length_of(upstream, n));
    let kept = |all: &HeaderMap, name: &HeaderName| {
        let n = name.as_str().as_bytes();
        match kind(name) {
            Kind::Other | Kind::CallerOnly => !(listing && connection_lists(all, n)),
            Kind::SetBoth => length_kept && name == http::header::CONTENT_LENGTH,
            Kind::HopByHop | Kind::Connection => false,
        }
    };
    if upstream.keys().all(|name| kept(upstream, name)) {
        return;
    }
    let all = std::mem::take(upstream);
    // Rebuilt rather than removed from, so KwikID's order is kept.
    for (name, value) in &all {
        if kept(&all, name) {
            upstream.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(list: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (n, v) in list {
            headers.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        headers.keys().map(HeaderName::as_str).collect()
    }

    /// Guards against credentials, hop-by-hop headers or topology reaching KwikID.
    #[test]
    fn credentials_hop_by_hop_and_topology_are_removed() {
        let caller = map(&[
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
        ]);
        let caller_header = HeaderName::from_static("x-caller-id");
        let kept = request_headers(&caller, &caller_header);
        assert_eq!(names(&kept), ["content-type", "accept"]);
    }

    /// Guards against the in-place path letting a header through that the rebuilt one
    /// drops: with none, one or several names to remove, what reaches `send` is the same set
    /// of headers and values, the caller's `x-request-id` is replaced, and a `Content-Length`
    /// that is not the body's never stays.
    #[test]
    fn outgoing_keeps_the_same_headers_whether_removed_in_place_or_rebuilt() {
        let caller_header = HeaderName::from_static("x-caller-id");
        let id = HeaderValue::from_static("gw-1");
        fn sorted(headers: &HeaderMap) -> Vec<(String, Vec<&[u8]>)> {
            let mut all: Vec<(String, Vec<&[u8]>)> = headers
                .keys()
                .map(|n| {
                    let values = headers.get_all(n).iter().map(HeaderValue::as_bytes);
                    (n.to_string(), values.collect())
                })
                .collect();
            all.sort();
            all
        }
        let usual = [
            ("host", "gw.internal"),
            ("content-type", "application/json"),
            ("accept", "a/b"),
            ("accept", "c/d"),
            ("content-length", "2"),
        ];
        for extra in [
            &[][..],
            &[("x-caller-id", "orders")][..],
            &[("authorization", "Bearer caller")][..],
            &[("x-caller-id", "orders"), ("cookie", "a=b")][..],
            &[("x_forwarded_for", "203.0.113.7"), ("x-request-id", "own")][..],
            &[("content-length", "3")][..],
        ] {
            let caller = map(&[usual.as_slice(), extra].concat());
            let mut sent = outgoing(caller.clone(), &caller_header, 2, Some(&id));
            let mut expected = request_headers(&caller, &caller_header);
            if caller.get_all(header::CONTENT_LENGTH).iter().count() == 1 {
                expected.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
            }
            expected.insert(X_REQUEST_ID.clone(), id.clone());
            // Maybe left for `send`, which inserts both.
            sent.remove(header::HOST);
            sent.remove(header::AUTHORIZATION);
            assert_eq!(sorted(&sent), sorted(&expected), "with {extra:?}");
        }
        let own_id = map(&[("x-request-id", "own"), ("accept", "a/b")]);
        let sent = outgoing(own_id, &caller_header, 0, None);
        assert_eq!(names(&sent), ["accept"]);
    }

    /// Guards against `X_Forwarded_For` and other underscore spellings of stripped headers
    /// reaching an upstream that reads them as the dashed name.
    #[test]
    fn underscore_spellings_of_stripped_headers_are_removed() {
        let caller = map(&[
            ("X_Forwarded_For", "203.0.113.7"),
            ("x_real_ip", "203.0.113.7"),
            ("proxy_authorization", "Basic x"),
            ("x_caller_id", "someone-else"),
            ("connection", "x-hop"),
            ("x_hop", "1"),
            ("x_kept_header", "1"),
        ]);
        let kept = request_headers(&caller, &HeaderName::from_static("x-caller-id"));
        assert_eq!(names(&kept), ["x_kept_header"]);
    }

    /// Guards against KwikID's hop-by-hop headers or framing reaching the caller.
    #[test]
    fn response_hop_by_hop_is_removed() {
        let mut upstream = map(&[
            ("connection", "close, x-hop"),
            ("X-Hop", "1"),
            ("keep-alive", "timeout=5"),
            ("content-type", "application/json"),
            ("Content-Length", "12"),
            ("x-kwikid-trace", "abc"),
        ]);
        strip_response_headers(&mut upstream);
        assert_eq!(names(&upstream), ["content-type", "x-kwikid-trace"]);
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
            "x_real_ip",
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
        let caller = map(&[
            ("x-kwikid-correlation-id", "1"),
            ("X-FORWARDED-CLIENT-CERT", "cert"),
            ("x-forwarded-prefix", "/x"),
            ("Content-Security-Policy-Report-Only", "x"),
        ]);
        let kept = request_headers(&caller, &HeaderName::from_static("x-caller-id"));
        assert_eq!(
            names(&kept),
            [
                "x-kwikid-correlation-id",
                "content-security-policy-report-only"
            ]
        );
    }

    /// Guards against a `Connection` line's listed names being kept, or ordinary headers
    /// being dropped, when the line is written in another letter case or a header's value
    /// merely mentions another header's name.
    #[test]
    fn only_names_listed_in_connection_are_dropped() {
        let caller = map(&[
            ("x-note", "x-keep"),
            ("CONNECTION", "X-Drop"),
            ("x-drop", "1"),
            ("x-keep", "1"),
        ]);
        let kept = request_headers(&caller, &HeaderName::from_static("x-caller-id"));
        assert_eq!(names(&kept), ["x-note", "x-keep"]);
        let mut answer = caller.clone();
        strip_response_headers(&mut answer);
        assert_eq!(names(&answer), ["x-note", "x-keep"]);
    }

    /// Guards against an answer's own `Content-Length` being kept when it is not the body's
    /// (or when it is doubled), and against the usual answer being changed at all.
    #[test]
    fn answer_keeps_only_a_single_content_length_equal_to_its_body() {
        let usual = map(&[
            ("content-type", "application/json"),
            ("content-length", "12"),
            ("date", "Mon, 30 Nov 2026 17:00:00 GMT"),
        ]);
        let mut answer = usual.clone();
        strip_answer_headers(&mut answer, Some(12));
        assert_eq!(answer, usual);
        for (length, body) in [("13", 12), ("012", 12), ("12", 0)] {
            let mut answer = map(&[("content-length", length), ("content-type", "a/b")]);
            strip_answer_headers(&mut answer, Some(body));
            assert_eq!(
                names(&answer),
                ["content-type"],
                "{length} for {body} bytes"
            );
        }
        let mut doubled = map(&[("content-length", "12"), ("content-length", "12")]);
        strip_answer_headers(&mut doubled, Some(12));
        assert!(doubled.is_empty());
        let mut framed = map(&[
            ("content-length", "12"),
            ("transfer-encoding", "chunked"),
            ("x-kwikid-trace", "abc"),
        ]);
        strip_answer_headers(&mut framed, Some(12));
        assert_eq!(names(&framed), ["content-length", "x-kwikid-trace"]);
    }

    /// Guards against KwikID's headers being over-filtered on the way back (only hop-by-hop
    /// ones, the framing and the request id are the gateway's), or its request id or framing
    /// reaching the caller next to the gateway's own.
    #[test]
    fn response_keeps_all_but_hop_by_hop_framing_and_request_id() {
        let mut upstream = map(&[
            ("Transfer-Encoding", "chunked"),
            ("x-request-id", "kwikid-side"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("set-cookie", "a=b"),
            ("via", "1.1 kwikid"),
            ("x-forwarded-for", "10.0.0.1"),
            ("cache-control", "no-store"),
        ]);
        strip_response_headers(&mut upstream);
        assert_eq!(
            names(&upstream),
            ["set-cookie", "via", "x-forwarded-for", "cache-control"]
        );
    }
}
