//! Every counter of a known label value is exported at 0 from the start, so `rate()` and
//! the alert rules see 0, not "no data", until the first event.

use std::sync::Arc;

use super::{CLASSES, ClassLabel, KindLabel, Metrics, RequestLabels, ResultLabel, ScopeLabel};

/// The label values the gateway can produce, gathered by whoever builds it (the codes and
/// kinds are defined beside the code that sends them).
pub struct Known<'a> {
    /// The configured routes' paths.
    pub routes: &'a [Arc<str>],
    /// Every `x-gateway-error` code and its status (`proxy::rescue::CODES`).
    pub codes: &'a [(&'static str, u16)],
    /// The codes a request can get before its route is known: counted under `route="none"`.
    pub before_route: &'a [&'static str],
    /// Rate-limit scopes: `caller`, `global`, `upstream`.
    pub scopes: &'a [&'static str],
    pub upstream_error_kinds: &'a [&'static str],
    pub connection_error_kinds: &'a [&'static str],
    /// Redis failure kinds; empty unless the rate limits are shared through Redis.
    pub redis_error_kinds: &'a [&'static str],
}

impl Metrics {
    /// Creates every series of `known` at 0 (a counter not yet seen), and each request
    /// duration class's histogram.
    pub fn zero(&self, known: &Known<'_>) {
        for &(outcome, status) in known.codes {
            let routes: Vec<Arc<str>> = if known.before_route.contains(&outcome) {
                vec![self.no_route.clone()]
            } else {
                known.routes.to_vec()
            };
            for route in routes {
                let _ = self.requests.get_or_create(&RequestLabels {
                    route,
                    status,
                    outcome,
                });
            }
        }
        for class in CLASSES {
            let _ = self.request_duration.get_or_create(&ClassLabel { class });
        }
        for &scope in known.scopes {
            let _ = self.rate_limited.get_or_create(&ScopeLabel { scope });
        }
        for &kind in known.upstream_error_kinds {
            let _ = self.upstream_errors.get_or_create(&KindLabel { kind });
        }
        for &kind in known.connection_error_kinds {
            let _ = self.connection_errors.get_or_create(&KindLabel { kind });
        }
        for &kind in known.redis_error_kinds {
            let _ = self.redis_errors.get_or_create(&KindLabel { kind });
        }
        for result in ["ok", "error"] {
            let _ = self.token_reloads.get_or_create(&ResultLabel { result });
        }
    }
}
