//! Which headers cross the gateway, fed arbitrary header lists: whatever a caller sends, no
//! credential, forwarding or hop-by-hop header reaches KwikID under any spelling (case, `_`
//! for `-`, listed in `Connection`), the caller header never does, and every other header
//! crosses with its values in order. The oracle's lists are written here, independently of
//! `rules::headers`.

#![no_main]

use arbitrary::Arbitrary;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use kwikid_gateway::rules::headers::{outgoing, request_headers, strip_response_headers};
use libfuzzer_sys::fuzz_target;

/// Never forwarded to KwikID (SPEC §4), compared after lowercasing and reading `_` as `-`.
const STRIPPED: &[&str] = &[
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization", "authorization", "cookie",
    "forwarded", "x-real-ip", "via", "host", "expect", "content-length", "x-request-id",
];

const NAMES: &[&str] = &[
    "authorization", "Authorization", "x_forwarded_for", "X-Forwarded-Host", "x-real_ip",
    "connection", "proxy_authorization", "te", "x-caller-id", "x_caller_id", "content-type",
    "accept", "x-trace", "x_trace", "keep-alive", "cookie", "via", "host", "x-request-id",
];

#[derive(Arbitrary, Debug)]
struct Input {
    headers: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn stripped(name: &str, listed: &[String]) -> bool {
    let f = folded(name);
    STRIPPED.contains(&f.as_str()) || f.starts_with("x-forwarded-") || listed.contains(&f)
}

fuzz_target!(|input: Input| {
    let mut caller = HeaderMap::new();
    for (pick, own, value) in &input.headers {
        let name = match NAMES.get(usize::from(*pick) % (NAMES.len() + 1)) {
            Some(name) => HeaderName::from_bytes(name.as_bytes()),
            None => HeaderName::from_bytes(own),
        };
        let (Ok(name), Ok(value)) = (name, HeaderValue::from_bytes(value)) else {
            continue;
        };
        caller.append(name, value);
    }
    let listed: Vec<String> = caller
        .get_all("connection")
        .iter()
        // Split as bytes: a value with non-UTF-8 bytes elsewhere still lists its names.
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|item| folded(&String::from_utf8_lossy(item.trim_ascii())))
        .collect();
    let caller_header = HeaderName::from_static("x-caller-id");
    let kept = request_headers(&caller, &caller_header);
    for name in kept.keys() {
        let n = name.as_str();
        assert!(!stripped(n, &listed), "{n} crossed");
        assert_ne!(folded(n), "x-caller-id", "the caller header crossed");
        let sent: Vec<_> = caller.get_all(name).iter().collect();
        let forwarded: Vec<_> = kept.get_all(name).iter().collect();
        assert_eq!(sent, forwarded, "{n} changed on the way");
    }
    for name in caller.keys() {
        let n = name.as_str();
        if !stripped(n, &listed) && folded(n) != "x-caller-id" {
            assert!(kept.contains_key(name), "{n} was dropped");
        }
    }

    // What goes to `send`: the same, less `Host` and `Authorization` (which `send` inserts),
    // plus the gateway's request id and a `Content-Length` only when it is the body's.
    let id = HeaderValue::from_static("gw-1");
    let sent = outgoing(caller.clone(), &caller_header, 2, Some(&id));
    for name in sent.keys() {
        let n = name.as_str();
        let values: Vec<_> = sent.get_all(name).iter().collect();
        match n {
            "host" | "authorization" => {}
            "x-request-id" => assert_eq!(values, [&id]),
            "content-length" => assert_eq!(values, [&HeaderValue::from_static("2")]),
            _ => assert_eq!(values, kept.get_all(name).iter().collect::<Vec<_>>(), "{n}"),
        }
    }
    for name in kept.keys() {
        assert!(sent.contains_key(name), "{name} was dropped on the way to send");
    }

    let mut answer = caller.clone();
    strip_response_headers(&mut answer);
    for name in answer.keys() {
        let f = folded(name.as_str());
        assert!(
            !["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization", "content-length", "x-request-id"].contains(&f.as_str()) && !listed.contains(&f),
            "{f} came back to the caller"
        );
    }
});
