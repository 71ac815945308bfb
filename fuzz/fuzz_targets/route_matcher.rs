//! `route::match_route` / `route::is_clean_path` on arbitrary request lines, as the
//! gateway's parser hands them over (method and target as sent).
//!
//! Properties:
//! - never panics;
//! - a request is admitted only in origin form (no scheme, no authority, not CONNECT), with
//!   the route's method, and with a raw path *equal* to the route's path: two paths that
//!   only mean the same after percent-decoding, dot-segment resolution or slash collapsing are
//!   never both admitted;
//! - a path `is_clean_path` accepts means the same to any normaliser: percent-decoding it once
//!   and then resolving dot segments and collapsing `/` and `\` changes none of its segments;
//! - `405` only for a path that is routed for another method, and its `Allow` lists exactly
//!   those methods.
#![no_main]

use arbitrary::Arbitrary;
use http::Method;
use kwikid_gateway::rules::route::{
    DIGILOCKER_INIT, Miss, Route, is_clean_path, match_route, split_target,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a [u8],
    /// Which configured path (if any) the target starts with, to reach near misses quickly.
    prefix: u8,
    target: &'a [u8],
    /// A route path to add to the configuration, when it is one a config would accept.
    extra_route: &'a str,
    /// Also checked on its own: `is_clean_path` takes any `&str`.
    loose_path: &'a str,
}

fn routes(extra: &str) -> Vec<Route> {
    let mut routes = vec![
        Route {
            method: Method::POST,
            path: DIGILOCKER_INIT.into(),
        },
        Route {
            method: Method::GET,
            path: DIGILOCKER_INIT.into(),
        },
        Route {
            method: Method::PUT,
            path: "/v1/a%41b/c".into(),
        },
    ];
    if is_clean_path(extra) && extra.is_ascii() {
        routes.push(Route {
            method: Method::POST,
            path: extra.to_owned().into(),
        });
    }
    routes
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes once (invalid escapes stay as they are).
fn percent_decode(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%'
            && let (Some(h), Some(l)) = (
                path.get(i + 1).copied().and_then(hex),
                path.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(path[i]);
        i += 1;
    }
    out
}

/// What a lenient server would make of a path: decoded once, `/` and `\` both separators,
/// empty and `.` segments dropped, `..` removing the previous one.
fn normalise(path: &[u8]) -> Vec<Vec<u8>> {
    let decoded = percent_decode(path);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for segment in decoded.split(|&b| b == b'/' || b == b'\\') {
        match segment {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s.to_vec()),
        }
    }
    out
}

/// The raw path's own segments, each decoded once, with nothing resolved.
fn literal_segments(path: &str) -> Vec<Vec<u8>> {
    if path == "/" {
        return Vec::new();
    }
    path[1..]
        .split('/')
        .map(|s| percent_decode(s.as_bytes()))
        .collect()
}

fn check_clean(path: &str) {
    if is_clean_path(path) {
        assert!(path.starts_with('/'), "{path:?}");
        assert!(!path.contains(['\\', '?', '#']), "{path:?}");
        assert_eq!(
            normalise(path.as_bytes()),
            literal_segments(path),
            "a clean path changes meaning under normalisation: {path:?}"
        );
    }
}

fuzz_target!(|input: Input<'_>| {
    let routes = routes(input.extra_route);
    check_clean(input.loose_path);
    check_clean(input.extra_route);

    let mut target = Vec::with_capacity(64 + input.target.len());
    if let Some(route) = routes.get(usize::from(input.prefix) % (routes.len() + 1)) {
        target.extend_from_slice(route.path.as_bytes());
    }
    target.extend_from_slice(input.target);

    let (Ok(method), Ok(target)) = (
        std::str::from_utf8(input.method),
        std::str::from_utf8(&target),
    ) else {
        return; // the parser hands over visible ASCII only
    };
    let (path, _query) = split_target(target);
    let origin_form = path.starts_with('/');
    check_clean(path);

    match match_route(&routes, method, target) {
        Ok(index) => {
            let route = &routes[index];
            assert!(origin_form, "{target}");
            assert_ne!(method, Method::CONNECT.as_str());
            assert_eq!(method, route.method.as_str());
            assert_eq!(
                path, &*route.path,
                "admitted a path that is not the route's"
            );
            assert!(is_clean_path(path));
            assert_eq!(normalise(path.as_bytes()), normalise(route.path.as_bytes()));
        }
        Err(Miss::MethodNotAllowed(allow)) => {
            assert!(origin_form, "{target}");
            let expected: Vec<&str> = routes
                .iter()
                .filter(|r| &*r.path == path)
                .map(|r| r.method.as_str())
                .collect();
            assert!(!expected.is_empty(), "405 for an unrouted path {path:?}");
            assert!(!expected.contains(&method));
            assert_eq!(allow.to_str().unwrap(), expected.join(", "));
        }
        Err(Miss::NoRoute) => {
            // Never a 404 for what is exactly a route in origin form.
            let exact = method != Method::CONNECT.as_str() && routes.iter().any(|r| &*r.path == path);
            assert!(
                !exact || !is_clean_path(path),
                "refused a routed path {path:?}"
            );
        }
    }
});
