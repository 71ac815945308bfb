//! What crosses the gateway: the caller's headers that may go on to KwikID, and KwikID's
//! headers that may come back.
//!
//! Credentials, hop-by-hop headers and internal topology are removed on the way out, then
//! `Authorization` is *inserted* (overwritten, never appended) by [`crate::upstream`].

use http::header::{self, HeaderMap, HeaderName};

/// RFC 9110 §7.6.1 hop-by-hop headers, plus the de-facto `keep-alive` and `proxy-connection`.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Caller headers never forwarded: credentials, forwarding metadata, and headers the gateway
/// sets itself (`Host`, the framing of the body it re-sends, `Expect`).
const NEVER_FORWARDED: [HeaderName; 10] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::FORWARDED,
    HeaderName::from_static("x-real-ip"),
    header::VIA,
    header::HOST,
    header::CONTENT_LENGTH,
    header::EXPECT,
    HeaderName::from_static("x-request-id"),
    header::PROXY_AUTHORIZATION,
];

fn is_forwarding_metadata(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-forwarded-")
}

/// Whether a header name is one the gateway always strips or sets itself; such a name cannot
/// be the caller header.
pub fn is_reserved_request_header(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || NEVER_FORWARDED.contains(name) || is_forwarding_metadata(name)
}

/// Names listed in every `Connection` header line.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

/// The caller's headers that KwikID may see.
pub fn request_headers(caller: &HeaderMap, caller_header: &HeaderName) -> HeaderMap {
    let listed = connection_listed(caller);
    let mut out = HeaderMap::with_capacity(caller.len() + 3);
    for (name, value) in caller {
        let drop = HOP_BY_HOP.contains(name)
            || NEVER_FORWARDED.contains(name)
            || is_forwarding_metadata(name)
            || name == caller_header
            || listed.contains(name);
        if !drop {
            out.append(name, value.clone());
        }
    }
    out
}

/// Removes hop-by-hop headers from KwikID's answer, and its framing: the gateway re-frames
/// the body it collected.
pub fn strip_response_headers(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::CONTENT_LENGTH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_hop_by_hop_and_topology_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer caller"),
            ("proxy-authorization", "Basic x"),
            ("cookie", "a=b"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-real-ip", "1.2.3.4"),
            ("via", "1.1 x"),
            ("host", "evil.example"),
            ("connection", "keep-alive, x-secret-hop"),
            ("connection", "x-second-hop"),
            ("x-secret-hop", "1"),
            ("x-second-hop", "1"),
            ("te", "trailers"),
            ("x-caller-id", "orders"),
            ("content-length", "2"),
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        let out = request_headers(&h, &HeaderName::from_static("x-caller-id"));
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "accept"]);
    }

    #[test]
    fn response_hop_by_hop_is_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("x-kwikid-trace", "abc".parse().unwrap());
        strip_response_headers(&mut h);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-kwikid-trace"]);
    }
}
