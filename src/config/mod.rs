//! Configuration: TOML as written (`Raw*`, every key defaulted and unknown keys refused), then
//! validated into [`Config`], the form the rest of the gateway uses.
//!
//! Errors are one line naming the file, the key and the reason, in the words of someone editing
//! TOML ("a whole number", not `usize`). The value is shown for keys that cannot hold a secret;
//! for the others (the token's source, URLs that can carry credentials, a key the parser could
//! not name) quoted values are cut out, so a secret pasted into the wrong key is never echoed.
//!
//! - [`raw`]: the document as written; `check` prints it back.
//! - `validate`: raw → typed, one rule per key (`listen`: the listeners and their addresses).
//! - `warnings`: what runs but most likely not as meant (printed by `check`, logged at start).
//! - [`error`]: the one-line [`ConfigError`].

mod callers;
mod egress;
mod error;
mod limits;
mod listen;
pub mod raw;
mod tls;
mod validate;
mod warnings;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;

use crate::rules::callers::Callers;
use crate::rules::policy::CallbackPolicy;
use crate::rules::route::Route;
pub use egress::{Egress, EgressProxy};
pub use error::{ConfigError, one_line};
pub use raw::*;
pub use tls::read_certificates;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub admin: Admin,
    pub upstream: Upstream,
    pub token: TokenSource,
    /// `token.warn_before_expiry`: a JWT token is warned about while less than this remains
    /// (SPEC §11).
    pub warn_before_expiry: Duration,
    pub rate_limit: RateLimit,
    pub policy: CallbackPolicy,
    pub routes: Vec<Route>,
    /// `[[callers]]` and `rate_limit.unknown_callers` (SPEC §10).
    pub callers: Callers,
    pub log: Log,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    pub allow_cidrs: Vec<IpNet>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// How long a caller connection may wait between requests before it is closed (HTTP/1.1:
    /// a plain close; HTTP/2: GOAWAY). Separate from `header_read_timeout`, which bounds a
    /// head once its first byte has arrived.
    pub idle_timeout: Duration,
    /// Concurrent streams one HTTP/2 caller connection may open (RFC 9113 §5.1.2).
    pub max_concurrent_streams: u32,
    pub tls: Option<ListenTls>,
}

/// TLS on the proxy port; with `client_ca_file`, callers must present a certificate it
/// signed, and the certificate names the caller.
#[derive(Clone)]
pub struct ListenTls {
    pub server: std::sync::Arc<rustls::ServerConfig>,
    pub mutual: bool,
    /// The certificate and key `server` presents, swapped on reload.
    pub certificate: std::sync::Arc<crate::cert_reload::ListenerCert>,
}

impl fmt::Debug for ListenTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// `https` only: the token never travels in clear text.
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// The base URL's path without its trailing `/`, prepended to every forwarded path.
    pub path_prefix: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Extra trust roots (from `ca_file`), added to the webpki roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub pool_max_idle_per_host: usize,
    /// Offer `h2` in ALPN and multiplex requests on one connection when KwikID picks it
    /// (`upstream.http2 = "auto"`); `false` (`"never"`) offers only `http/1.1`.
    pub http2: bool,
    /// Directly, or through an HTTP CONNECT proxy (`upstream.proxy`, else the environment).
    pub egress: Egress,
}

/// Where the token comes from. The config never holds the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    pub global: Rate,
    pub per_caller: Rate,
    pub caller_header: HeaderName,
    pub max_wait: Duration,
    /// `None`: in-process buckets only. `Some`: buckets shared by every replica through Redis.
    pub redis: Option<RedisLimits>,
    /// Each listed caller's own share, by its index in `[[callers]]` (its `per_second` and
    /// `burst`, else `per_caller`'s).
    pub callers: Vec<Rate>,
}

/// `[rate_limit] backend = "redis"`.
#[derive(Clone)]
pub struct RedisLimits {
    /// `redis://`, `rediss://` or `redis+unix://`; validated, never logged (it may hold a password).
    pub url: String,
    pub timeout: Duration,
    pub on_error: OnRedisError,
}

impl fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimits")
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

/// The URL with its user info and query (either may hold a password) replaced, for `check`.
pub fn redact_url(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((base, _)) => (base, "?[REDACTED]"),
        None => (url, ""),
    };
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}[REDACTED]{}{query}", &url[..scheme_end + 3], &url[at..])
        }
        _ => format!("{url}{query}"),
    }
}

/// What a request gets while Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRedisError {
    /// The in-process buckets decide (each replica then admits up to the full rate).
    Local,
    /// No limit at all.
    Allow,
    /// 429 for everyone.
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub level: tracing::level_filters::LevelFilter,
    pub format: LogFormat,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, None, None, &format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`; `path` names the file in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        RawConfig::parse(path, text)?.validate(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("gw.toml"), text).map_err(|e| e.to_string())
    }

    const BASE: &str = "[upstream]\nbase_url = \"https://kwikid.example\"\n";

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.listen.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.listen.max_body_bytes, 16384);
        assert_eq!(c.upstream.request_timeout, Duration::from_secs(10));
        assert_eq!(c.upstream.path_prefix, "");
        assert_eq!(c.token, TokenSource::Env("KWIKID_API_TOKEN".into()));
        assert_eq!(c.routes.len(), 1);
        assert_eq!(&*c.routes[0].path, "/verification/v2/digilocker/init");
        assert_eq!(c.rate_limit.caller_header.as_str(), "x-caller-id");
    }

    #[test]
    fn a_typo_names_the_key_and_line_and_suggests_the_right_one() {
        let e = parse(&format!("{BASE}[listen]\nheader_read_timout = \"5s\"\n")).unwrap_err();
        assert!(
            e.starts_with("gw.toml: listen.header_read_timout (line 4): unknown field"),
            "{e}"
        );
        assert!(e.contains("header_read_timeout"), "{e}");
        assert!(!e.contains('\n'));
    }

    /// Guards against the idle timeout falling back to `header_read_timeout`, or a zero one
    /// (every keep-alive connection closed at once) passing.
    #[test]
    fn idle_timeout_defaults_to_75s_and_must_be_positive() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.listen.idle_timeout, Duration::from_secs(75));
        let c = parse(&format!("{BASE}[listen]\nidle_timeout = \"90s\"\n")).unwrap();
        assert_eq!(c.listen.idle_timeout, Duration::from_secs(90));
        let e = parse(&format!("{BASE}[listen]\nidle_timeout = \"0s\"\n")).unwrap_err();
        assert!(
            e.contains("listen.idle_timeout: must be longer than 0s"),
            "{e}"
        );
    }

    #[test]
    fn durations_are_human_strings() {
        let c = parse(&format!("{BASE}[rate_limit]\nmax_wait = \"250ms\"\n")).unwrap();
        assert_eq!(c.rate_limit.max_wait, Duration::from_millis(250));
        let e = parse(&format!("{BASE}[rate_limit]\nmax_wait = \"5 parsecs\"\n")).unwrap_err();
        assert!(
            e.starts_with("gw.toml: rate_limit.max_wait (line 4): "),
            "{e}"
        );
    }

    #[test]
    fn a_value_in_the_wrong_place_is_never_echoed() {
        let e = parse(&format!("{BASE}token = \"super-secret-value\"\n")).unwrap_err();
        assert!(!e.contains("super-secret-value"), "{e}");
        assert!(e.contains("token"), "{e}");
    }

    #[test]
    fn plain_http_upstreams_are_refused() {
        let e = parse("[upstream]\nbase_url = \"http://kwikid.example\"\n").unwrap_err();
        assert!(
            e.contains("upstream.base_url: must start with https://"),
            "{e}"
        );
    }

    #[test]
    fn base_url_path_is_kept_without_trailing_slash() {
        let c = parse("[upstream]\nbase_url = \"https://k.example/api/\"\n").unwrap();
        assert_eq!(c.upstream.path_prefix, "/api");
    }

    #[test]
    fn rates_must_be_positive_and_finite() {
        for bad in ["0", "-1", "nan", "inf"] {
            let e = parse(&format!(
                "{BASE}[rate_limit]\nglobal = {{ per_second = {bad}, burst = 1 }}\n"
            ))
            .unwrap_err();
            assert!(e.contains("rate_limit.global.per_second"), "{bad}: {e}");
        }
        let c = parse(&format!(
            "{BASE}[rate_limit]\nper_caller = {{ per_second = 0.5, burst = 1 }}\n"
        ))
        .unwrap();
        assert_eq!(c.rate_limit.per_caller.per_second, 0.5);
    }

    /// Guards against the expiry warning's window being read wrong or defaulting to nothing.
    #[test]
    fn warn_before_expiry_defaults_to_seven_days() {
        assert_eq!(
            parse(BASE).unwrap().warn_before_expiry,
            Duration::from_secs(7 * 86400)
        );
        let c = parse(&format!("{BASE}[token]\nwarn_before_expiry = \"36h\"\n")).unwrap();
        assert_eq!(c.warn_before_expiry, Duration::from_secs(36 * 3600));
        let e = parse(&format!("{BASE}[token]\nwarn_before_expiry = \"soon\"\n")).unwrap_err();
        assert!(e.contains("token.warn_before_expiry"), "{e}");
    }

    #[test]
    fn token_sources_are_exclusive() {
        let e = parse(&format!("{BASE}[token]\nenv = \"A\"\nfile = \"/t\"\n")).unwrap_err();
        assert!(e.contains("token: set exactly one of env and file"), "{e}");
    }

    #[test]
    fn caller_header_cannot_be_a_credential_header() {
        let e = parse(&format!(
            "{BASE}[rate_limit]\ncaller_header = \"authorization\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("rate_limit.caller_header"), "{e}");
    }

    #[test]
    fn routes_must_be_clean() {
        let e = parse(&format!(
            "{BASE}[[routes]]\nmethod = \"POST\"\npath = \"/a/../b\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("routes[0].path"), "{e}");
        let e = parse(&format!(
            "{BASE}[[routes]]\nmethod = \"CONNECT\"\npath = \"/a\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("routes[0].method"), "{e}");
    }

    #[test]
    fn log_level_is_a_bare_level() {
        assert!(parse(&format!("{BASE}[log]\nlevel = \"trace\"\n")).is_ok());
        let e = parse(&format!("{BASE}[log]\nlevel = \"hyper=trace\"\n")).unwrap_err();
        assert!(e.contains("log.level"), "{e}");
    }

    #[test]
    fn redis_urls_are_redacted_for_display() {
        assert_eq!(
            redact_url("redis://:hunter2@r:6379/0"),
            "redis://[REDACTED]@r:6379/0"
        );
        assert_eq!(
            redact_url("redis+unix:///r.sock?pass=hunter2"),
            "redis+unix:///r.sock?[REDACTED]"
        );
        assert_eq!(redact_url("rediss://r:6380"), "rediss://r:6380");
    }

    #[test]
    fn redis_backend_needs_a_url_and_known_fallback() {
        let e = parse(&format!("{BASE}[rate_limit]\nbackend = \"redis\"\n")).unwrap_err();
        assert!(e.contains("rate_limit.redis_url: is required"), "{e}");
        let e = parse(&format!(
            "{BASE}[rate_limit]\nbackend = \"redis\"\nredis_url = \"http://x\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("rate_limit.redis_url: must be"), "{e}");
        let e = parse(&format!(
            "{BASE}[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://r\"\non_redis_error = \"panic\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("rate_limit.on_redis_error"), "{e}");
        let c = parse(&format!(
            "{BASE}[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://r\"\n"
        ))
        .unwrap();
        let redis = c.rate_limit.redis.unwrap();
        assert_eq!(
            (redis.timeout, redis.on_error),
            (Duration::from_millis(50), OnRedisError::Local)
        );
        let e = parse(&format!("{BASE}[rate_limit]\nbackend = \"memcached\"\n")).unwrap_err();
        assert!(e.contains("rate_limit.backend"), "{e}");
    }

    #[test]
    fn quoted_values_are_cut_from_reasons() {
        assert_eq!(
            error::one_line_without_values("invalid type: string \"abc\", expected u32\nmore"),
            "invalid type: string \"…\", expected u32 more"
        );
    }
}
