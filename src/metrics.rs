//! Prometheus metrics (prometheus-client: one registry per gateway, typed label sets).
//!
//! Every label is bounded: a configured route, a status code, an outcome code, a limiter
//! scope, an upstream error kind, a reload result, a token fingerprint, a caller named in
//! `[[callers]]` (or `other`). Never a caller id a caller chose, a path the caller chose, or
//! anything secret.
//!
//! - [`format`]: OpenMetrics or the Prometheus text format, as the scraper's `Accept` asks.
//! - [`known`]: every counter of a known label value exported at 0 from the start.
//! - `labels`: the label sets, each a fixed set of bounded values.
//! - `process`: the process's own metrics (memory, CPU, fds, start time) under Prometheus'
//!   standard `process_*` names.

pub mod format;
mod hot;
pub mod known;
mod labels;
mod process;
mod registry;

pub use format::Format;
pub use known::Known;
pub use labels::CLASSES;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use labels::{
    BackendLabel, CallerLabels, ClassLabel, FingerprintLabel, KindLabel, RequestLabels,
    ResultLabel, ScopeLabel, Unlabelled, VersionLabel, class,
};

/// The gateway's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    /// The route label of requests that matched no route.
    no_route: Arc<str>,
    requests: Family<RequestLabels, Counter>,
    hot_requests: hot::Hot<RequestLabels, Counter>,
    request_duration: Family<ClassLabel, Histogram, fn() -> Histogram>,
    durations: hot::Classes,
    upstream_duration: Histogram,
    rate_limited: Family<ScopeLabel, Counter>,
    upstream_errors: Family<KindLabel, Counter>,
    connection_errors: Family<KindLabel, Counter>,
    in_flight: Gauge,
    ready: Gauge,
    token_reloads: Family<ResultLabel, Counter>,
    token_info: Family<FingerprintLabel, Gauge>,
    token_age: Gauge<f64, AtomicU64>,
    limiter_keys: Gauge,
    limit_backend: Family<BackendLabel, Gauge>,
    redis_errors: Family<KindLabel, Counter>,
    redis_duration: Histogram,
    /// The `caller` label of every caller that is not listed.
    other_caller: Arc<str>,
    caller_requests: Family<CallerLabels, Counter>,
    hot_caller_requests: hot::Hot<CallerLabels, Counter>,
    token_expiry: Family<Unlabelled, Gauge>,
    upstream_auth_failures: Counter,
    tls_reloads: Family<ResultLabel, Counter>,
}

/// Which rate limiter decides: `redis`, `local` (the in-process buckets, also the fallback),
/// or the fallbacks `allow_all` / `deny_all`.
pub const BACKENDS: [&str; 4] = ["redis", "local", "allow_all", "deny_all"];

impl Metrics {
    /// Exports 0 for each listed caller, and `other`, with each of `outcomes`, so every
    /// caller shows from the start.
    pub fn listed_callers(&self, names: &[Arc<str>], outcomes: &[&'static str]) {
        for caller in names.iter().chain([&self.other_caller]) {
            for &outcome in outcomes {
                drop(self.caller_requests.get_or_create(&CallerLabels {
                    caller: caller.clone(),
                    outcome,
                }));
            }
        }
    }

    /// One answered request of a listed caller (`None`: one that is not listed).
    pub fn caller_request(&self, caller: Option<&Arc<str>>, outcome: &'static str) {
        let labels = CallerLabels {
            caller: caller.unwrap_or(&self.other_caller).clone(),
            outcome,
        };
        self.hot_caller_requests.with(
            &labels,
            |l| self.caller_requests.get_or_create(l).clone(),
            |c| {
                c.inc();
            },
        );
    }

    /// When the token in use expires; `None` removes the gauge.
    pub fn token_expiry(&self, expires: Option<SystemTime>) {
        self.token_expiry.clear();
        if let Some(at) = expires {
            let secs = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.token_expiry
                .get_or_create(&[])
                .set(i64::try_from(secs).unwrap_or(i64::MAX));
        }
    }

    /// KwikID answered 401.
    pub fn upstream_auth_failure(&self) {
        self.upstream_auth_failures.inc();
    }

    /// Marks `backend` (one of [`BACKENDS`]) as the one deciding now.
    pub fn limit_backend(&self, backend: &'static str) {
        for b in BACKENDS {
            self.limit_backend
                .get_or_create(&BackendLabel { backend: b })
                .set(i64::from(b == backend));
        }
    }

    /// One round trip of the shared rate-limit script, and its failure if it gave no verdict.
    pub fn redis_call(&self, duration: Duration, failure: Option<&'static str>) {
        self.redis_duration.observe(duration.as_secs_f64());
        if let Some(kind) = failure {
            self.redis_errors.get_or_create(&KindLabel { kind }).inc();
        }
    }

    /// One answered request; `route` is the matched route's path.
    pub fn request(
        &self,
        route: Option<&Arc<str>>,
        status: u16,
        outcome: &'static str,
        duration: Duration,
    ) {
        let labels = RequestLabels {
            route: route.unwrap_or(&self.no_route).clone(),
            status,
            outcome,
        };
        self.hot_requests.with(
            &labels,
            |l| self.requests.get_or_create(l).clone(),
            |c| {
                c.inc();
            },
        );
        let class = class(outcome);
        self.durations
            .get(class, || {
                self.request_duration
                    .get_or_create(&ClassLabel { class })
                    .clone()
            })
            .observe(duration.as_secs_f64());
    }

    pub fn upstream(&self, duration: Duration) {
        self.upstream_duration.observe(duration.as_secs_f64());
    }

    pub fn rate_limited(&self, scope: &'static str) {
        self.rate_limited.get_or_create(&ScopeLabel { scope }).inc();
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// A caller connection that ended in an error hyper answered or saw by itself;
    /// `kind` is one of a fixed few.
    pub fn connection_error(&self, kind: &'static str) {
        self.connection_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    pub fn token_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.token_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// A reload of the TLS listener's pair: `ok`, or `error` (the old pair stays), as
    /// [`Self::token_reload`] counts.
    pub fn tls_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.tls_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Exports both results of [`Self::tls_reload`] at 0: the TLS listener is on.
    pub fn tls_reloads_known(&self) {
        for result in ["ok", "error"] {
            let _ = self.tls_reloads.get_or_create(&ResultLabel { result });
        }
    }

    /// Marks `fingerprint` as the token in use.
    pub fn token_in_use(&self, fingerprint: &str) {
        self.token_info.clear();
        self.token_info
            .get_or_create(&FingerprintLabel {
                fingerprint: fingerprint.to_owned(),
            })
            .set(1);
    }

    /// Whether the proxy accepts traffic (what `/readyz` answers).
    pub fn ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Counts a request in flight until the guard drops, even if the caller goes away.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The exposition text in `format`; `token_age` and `limiter_keys` are sampled now.
    pub fn render(&self, format: Format, token_age: Duration, limiter_keys: usize) -> String {
        self.token_age.set(token_age.as_secs_f64());
        self.limiter_keys.set(limiter_keys as i64);
        format.encode(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::new();
        m.request(
            Some(&Arc::from("/verification/v2/digilocker/init")),
            200,
            "forwarded",
            Duration::from_millis(3),
        );
        m.rate_limited("caller");
        m.upstream_error("timeout");
        m.token_reload(true);
        m.tls_reload(false);
        m.token_in_use("3f9a01c2");
        m.token_in_use("0badc0de");
        let text = m.render(Format::OpenMetrics, Duration::from_secs(5), 7);
        for expected in [
            "kwikid_gateway_requests_total{route=\"/verification/v2/digilocker/init\",status=\"200\",outcome=\"forwarded\"} 1",
            "kwikid_gateway_request_duration_seconds_count{class=\"forwarded\"} 1",
            "process_resident_memory_bytes ",
            "kwikid_gateway_upstream_duration_seconds_count 0",
            "kwikid_gateway_rate_limited_total{scope=\"caller\"} 1",
            "kwikid_gateway_upstream_errors_total{kind=\"timeout\"} 1",
            "kwikid_gateway_in_flight 0",
            "kwikid_gateway_token_reloads_total{result=\"ok\"} 1",
            "kwikid_gateway_token_info{fingerprint=\"0badc0de\"} 1",
            "kwikid_gateway_token_age_seconds 5.0",
            "kwikid_gateway_rate_limiter_keys 7",
            "kwikid_gateway_tls_reloads_total{result=\"error\"} 1",
        ] {
            assert!(text.contains(expected), "{expected} missing:\n{text}");
        }
        let build = format!(
            "kwikid_gateway_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{build} missing:\n{text}");
        assert!(!text.contains("3f9a01c2"), "the old fingerprint is gone");
    }

    /// Guards against a caller label outside the configured names and `other`, a token expiry
    /// gauge that lingers once the token has no readable `exp`, or an uncounted 401.
    #[test]
    fn callers_expiry_and_auth_failures_are_exposed() {
        let m = Metrics::new();
        let orders: Arc<str> = Arc::from("orders-svc");
        m.listed_callers(
            std::slice::from_ref(&orders),
            &["forwarded", "rate_limited"],
        );
        m.caller_request(Some(&orders), "forwarded");
        m.caller_request(None, "caller_not_allowed");
        m.upstream_auth_failure();
        let expires = SystemTime::UNIX_EPOCH + Duration::from_secs(1_801_094_400);
        m.token_expiry(Some(expires));
        let text = m.render(Format::OpenMetrics, Duration::ZERO, 0);
        for expected in [
            "kwikid_gateway_caller_requests_total{caller=\"orders-svc\",outcome=\"forwarded\"} 1",
            "kwikid_gateway_caller_requests_total{caller=\"orders-svc\",outcome=\"rate_limited\"} 0",
            "kwikid_gateway_caller_requests_total{caller=\"other\",outcome=\"forwarded\"} 0",
            "kwikid_gateway_caller_requests_total{caller=\"other\",outcome=\"caller_not_allowed\"} 1",
            "kwikid_gateway_token_expiry_timestamp_seconds 1801094400",
            "kwikid_gateway_upstream_auth_failures_total 1",
        ] {
            assert!(text.contains(expected), "{expected} missing:\n{text}");
        }
        m.token_expiry(None);
        let text = m.render(Format::OpenMetrics, Duration::ZERO, 0);
        assert!(!text.contains("token_expiry"), "{text}");
    }

    #[test]
    fn in_flight_guard_decrements_on_drop() {
        let m = Metrics::new();
        let guard = m.in_flight();
        assert!(
            m.render(Format::OpenMetrics, Duration::ZERO, 0)
                .contains("kwikid_gateway_in_flight 1")
        );
        drop(guard);
        assert!(
            m.render(Format::OpenMetrics, Duration::ZERO, 0)
                .contains("kwikid_gateway_in_flight 0")
        );
    }
}
