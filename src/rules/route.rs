//! The route allowlist: exact method and path, after refusing any path whose meaning could
//! change on the way (dot segments, `//`, backslashes, percent-encoded separators).
//!
//! Routes are compared as exact strings, so nothing is ever decoded.

use std::sync::Arc;

use http::{HeaderValue, Method};

/// KwikID's DigiLocker init call, the default and usually only route.
pub const DIGILOCKER_INIT: &str = "/verification/v2/digilocker/init";

/// One allowed `(method, path)` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// Shared, because it is also the route's metric label.
    pub path: Arc<str>,
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No route has this path (or the path is not clean, or the target is not origin-form).
    NoRoute,
    /// The path is routed, for these methods only.
    MethodNotAllowed(HeaderValue),
}

/// A request target split into its path and query (without the `?`).
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match memchr::memchr(b'?', target.as_bytes()) {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    }
}

/// Finds the route for a request's method and target; `Ok` carries the route's index.
pub fn match_route(routes: &[Route], method: &str, target: &str) -> Result<usize, Miss> {
    // Only origin-form targets route: absolute-form (`POST http://evil/…`), authority-form
    // and `*` do not start with `/`, so they equal no route path, and CONNECT never picks an
    // upstream. Route paths are clean (the config refuses others), so a path equal to one is
    // clean too: nothing is decoded or normalised here, only compared.
    let (path, _query) = split_target(target);
    if method == Method::CONNECT.as_str() {
        return Err(Miss::NoRoute);
    }
    let mut allowed: Option<String> = None;
    for (index, route) in routes.iter().enumerate() {
        if &*route.path != path {
            continue;
        }
        if route.method.as_str() == method {
            return Ok(index);
        }
        let list = allowed.get_or_insert_with(String::new);
        if !list.is_empty() {
            list.push_str(", ");
        }
        list.push_str(route.method.as_str());
    }
    match allowed.and_then(|list| HeaderValue::from_str(&list).ok()) {
        Some(allow) => Err(Miss::MethodNotAllowed(allow)),
        None => Err(Miss::NoRoute),
    }
}

/// A path starts with `/` and has no empty, `.` or `..` segment, no `\`, no query or
/// fragment, and no percent-encoded `/`, `\` or `.`.
pub fn is_clean_path(path: &str) -> bool {
    if !path.starts_with('/') || path.contains(['\\', '?', '#']) {
        return false;
    }
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let encoded = bytes.get(i + 1..i + 3).map(|h| h.to_ascii_lowercase());
            if matches!(encoded.as_deref(), Some(b"2f" | b"5c" | b"2e")) {
                return false;
            }
        }
    }
    if path == "/" {
        return true;
    }
    path[1..]
        .split('/')
        .all(|segment| !matches!(segment, "" | "." | ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<Route> {
        vec![Route {
            method: Method::POST,
            path: Arc::from(DIGILOCKER_INIT),
        }]
    }

    fn matched(method: &str, target: &str) -> Result<usize, Miss> {
        match_route(&routes(), method, target)
    }

    #[test]
    fn exact_route_matches_and_query_is_ignored() {
        assert_eq!(matched("POST", DIGILOCKER_INIT), Ok(0));
        assert_eq!(matched("POST", &format!("{DIGILOCKER_INIT}?a=1")), Ok(0));
    }

    #[test]
    fn other_method_on_a_routed_path_is_405_with_allow() {
        let miss = matched("GET", DIGILOCKER_INIT).unwrap_err();
        assert_eq!(
            miss,
            Miss::MethodNotAllowed(HeaderValue::from_static("POST"))
        );
    }

    #[test]
    fn tricky_paths_are_not_routed() {
        for target in [
            "/verification/v2/digilocker/init/",
            "/verification/v2/digilocker/./init",
            "/verification/v2/x/../digilocker/init",
            "//verification/v2/digilocker/init",
            "/verification/v2//digilocker/init",
            "/verification/v2/digilocker%2finit",
            "/verification/v2/digilocker%2Finit",
            "/verification/v2/digilocker/%2e%2e/init",
            "/verification/v2/digilocker%5cinit",
            "/VERIFICATION/v2/digilocker/init",
            "http://evil.example/verification/v2/digilocker/init",
            "*",
            "evil.example:443",
        ] {
            assert_eq!(matched("POST", target), Err(Miss::NoRoute), "{target}");
        }
    }

    #[test]
    fn connect_is_never_routed() {
        assert_eq!(matched("CONNECT", "evil.example:443"), Err(Miss::NoRoute));
        assert_eq!(matched("CONNECT", DIGILOCKER_INIT), Err(Miss::NoRoute));
    }

    /// Guards against the query KwikID receives being lost, cut or keeping its `?`, and the
    /// routed path keeping part of the query.
    #[test]
    fn target_splits_at_the_first_question_mark() {
        assert_eq!(split_target("/p"), ("/p", None));
        assert_eq!(split_target("/p?a=1&b=2"), ("/p", Some("a=1&b=2")));
        assert_eq!(split_target("/p?"), ("/p", Some("")));
        assert_eq!(split_target("/p?a?b"), ("/p", Some("a?b")));
        assert_eq!(split_target("?x"), ("", Some("x")));
    }

    /// Guards against a 405 whose `Allow` misses a method, repeats the separator, or names a
    /// method of another path, and against the wrong route (so the wrong metric label) being
    /// picked when several are configured.
    #[test]
    fn several_routes_pick_the_exact_pair_and_allow_lists_each_method_of_the_path() {
        let routes = [
            Route {
                method: Method::POST,
                path: Arc::from("/a"),
            },
            Route {
                method: Method::PUT,
                path: Arc::from("/a"),
            },
            Route {
                method: Method::DELETE,
                path: Arc::from("/b"),
            },
            Route {
                method: Method::PATCH,
                path: Arc::from("/a"),
            },
        ];
        assert_eq!(match_route(&routes, "POST", "/a"), Ok(0));
        assert_eq!(match_route(&routes, "PUT", "/a?x=1"), Ok(1));
        assert_eq!(match_route(&routes, "DELETE", "/b"), Ok(2));
        assert_eq!(match_route(&routes, "PATCH", "/a"), Ok(3));
        assert_eq!(
            match_route(&routes, "GET", "/a"),
            Err(Miss::MethodNotAllowed(HeaderValue::from_static(
                "POST, PUT, PATCH"
            )))
        );
        assert_eq!(
            match_route(&routes, "POST", "/b"),
            Err(Miss::MethodNotAllowed(HeaderValue::from_static("DELETE")))
        );
        assert_eq!(match_route(&routes, "POST", "/c"), Err(Miss::NoRoute));
        assert_eq!(match_route(&[], "POST", "/a"), Err(Miss::NoRoute));
    }

    /// Guards against the config accepting a route path whose meaning can change on the way
    /// (dot segments, `//`, backslashes, encoded separators, query or fragment), or refusing
    /// a clean one.
    #[test]
    fn only_clean_paths_are_clean() {
        for clean in [
            "/",
            DIGILOCKER_INIT,
            "/a",
            "/a/b.c/..d/.../e.",
            "/v2e/x2f/5c",
            "/a%20b",
            "/a%41%2",
            "/a%",
        ] {
            assert!(is_clean_path(clean), "{clean}");
        }
        for unclean in [
            "",
            "a",
            "verification/v2",
            "//",
            "/a//b",
            "/a/",
            "/./a",
            "/a/.",
            "/a/../b",
            "/..",
            "/a\\b",
            "/a?b",
            "/a#b",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a%5Cb",
            "/a%2e%2e/b",
            "/a%2E",
            "/%2f",
        ] {
            assert!(!is_clean_path(unclean), "{unclean}");
        }
    }
}
