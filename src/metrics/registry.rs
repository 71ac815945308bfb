//! The families `/metrics` exposes, each registered once with its HELP text: the prefix
//! `kwikid_gateway_` for the gateway's own, the standard `process_*` names for the process.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::*;

/// 1 ms to ~16 s: KwikID's answers and the gateway's own overhead both fit.
fn latency_buckets() -> Histogram {
    Histogram::new(doubling_buckets(0.001, 15))
}

/// `count` upper bounds from `start`, each twice the one before: the bounds of
/// prometheus-client's `exponential_buckets(start, 2.0, count)`, exactly (doubling a binary
/// float only moves its exponent). That one calls libm's `pow`, and calling it keeps ~0.2 MiB
/// more of libm resident in a single-CPU gateway (libm stays linked: tokio's multi-threaded
/// scheduler uses `powf`).
fn doubling_buckets(start: f64, count: usize) -> impl Iterator<Item = f64> {
    std::iter::successors(Some(start), |bound| Some(bound * 2.0)).take(count)
}

impl Metrics {
    pub fn new() -> Self {
        // The process's metrics keep their standard names; the gateway's own are prefixed.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("kwikid_gateway");
        let metrics = Self {
            no_route: Arc::from("none"),
            requests: Family::default(),
            hot_requests: hot::Hot::default(),
            request_duration: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            durations: hot::Classes::default(),
            upstream_duration: latency_buckets(),
            rate_limited: Family::default(),
            upstream_errors: Family::default(),
            connection_errors: Family::default(),
            in_flight: Gauge::default(),
            ready: Gauge::default(),
            token_reloads: Family::default(),
            token_info: Family::default(),
            token_age: Gauge::default(),
            limiter_keys: Gauge::default(),
            limit_backend: Family::default(),
            redis_errors: Family::default(),
            redis_duration: Histogram::new(doubling_buckets(0.0001, 14)),
            other_caller: Arc::from(crate::rules::callers::OTHER),
            caller_requests: Family::default(),
            hot_caller_requests: hot::Hot::default(),
            token_expiry: Family::default(),
            upstream_auth_failures: Counter::default(),
            tls_reloads: Family::default(),
            registry: Registry::default(),
        };
        // Counters are registered without `_total`; the encoder adds it.
        registry.register(
            "requests",
            "Requests by route, status and outcome",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response, gateway included, by outcome class",
            metrics.request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time of the exchange with KwikID",
            metrics.upstream_duration.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by bucket",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed exchanges with KwikID, by kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "connection_errors",
            "Caller connections that hyper ended with an error of its own (malformed, too large or too slow heads, broken connections), by kind",
            metrics.connection_errors.clone(),
        );
        registry.register(
            "in_flight",
            "Requests being handled",
            metrics.in_flight.clone(),
        );
        registry.register(
            "token_reloads",
            "Token reloads by result",
            metrics.token_reloads.clone(),
        );
        registry.register(
            "token_info",
            "The token in use, by fingerprint (always 1)",
            metrics.token_info.clone(),
        );
        registry.register(
            "token_age_seconds",
            "Seconds since the token in use was loaded",
            metrics.token_age.clone(),
        );
        registry.register(
            "rate_limiter_keys",
            "Callers held in the per-caller rate-limit store",
            metrics.limiter_keys.clone(),
        );
        registry.register(
            "rate_limit_backend",
            "1 for the rate limiter in use (a fall-back from redis shows here)",
            metrics.limit_backend.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis calls that gave no verdict, by kind",
            metrics.redis_errors.clone(),
        );
        registry.register(
            "redis_duration_seconds",
            "Round trip of the shared rate-limit script",
            metrics.redis_duration.clone(),
        );
        registry.register(
            "caller_requests",
            "Requests by caller named in [[callers]] (other: every caller not listed) and outcome",
            metrics.caller_requests.clone(),
        );
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the token in use expires (its JWT exp claim), in seconds since the Unix epoch; absent without a readable exp",
            metrics.token_expiry.clone(),
        );
        registry.register(
            "upstream_auth_failures",
            "KwikID's 401 answers: it rejected the token in use",
            metrics.upstream_auth_failures.clone(),
        );
        registry.register(
            "ready",
            "1 while /readyz answers 200 (a token is loaded and the proxy accepts traffic), 0 while starting or draining",
            metrics.ready.clone(),
        );
        registry.register(
            "build",
            "The running build's version (always 1)",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register(
            "tls_reloads",
            "Reloads of the TLS listener's certificate and key by result",
            metrics.tls_reloads.clone(),
        );
        Self {
            registry: root,
            ..metrics
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::exponential_buckets;

    use super::doubling_buckets;

    #[test]
    fn doubling_buckets_are_prometheus_clients_exponential_ones() {
        for (start, count) in [(0.001, 15), (0.0001, 14)] {
            let ours: Vec<f64> = doubling_buckets(start, count).collect();
            let theirs: Vec<f64> = exponential_buckets(start, 2.0, count as u16).collect();
            assert_eq!(ours, theirs);
        }
    }
}
