//! The TOML document as written: every key defaulted, unknown keys refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::rules::route;

/// The TOML document as written, with defaults filled in. `check` prints this back.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub listen: RawListen,
    pub admin: RawAdmin,
    pub upstream: RawUpstream,
    pub token: RawToken,
    pub rate_limit: RawRateLimit,
    pub policy: RawPolicy,
    pub routes: Vec<RawRoute>,
    pub log: RawLog,
    /// `[[callers]]` (SPEC §10).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<RawCaller>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawListen {
    pub addr: String,
    pub allow_cidrs: Vec<String>,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawListenTls>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

impl Default for RawListen {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".into(),
            allow_cidrs: vec!["127.0.0.0/8".into(), "::1/128".into()],
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(5),
            max_body_bytes: 16 * 1024,
            shutdown_grace: Duration::from_secs(30),
            // nginx's `keepalive_timeout`: longer than most callers' pool idle timeouts.
            idle_timeout: Duration::from_secs(75),
            max_concurrent_streams: 100,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub addr: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub base_url: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    pub pool_max_idle_per_host: usize,
    pub http2: String,
    /// `http://host:port`: an HTTP CONNECT egress proxy. Unset: `HTTPS_PROXY` / `NO_PROXY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// A file holding `user:password` for the proxy, relative to the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_auth_file: Option<PathBuf>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            ca_file: None,
            pool_max_idle_per_host: 64,
            http2: "auto".to_owned(),
            proxy: None,
            proxy_auth_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawToken {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// A JWT token is warned about while less than this remains (SPEC §11).
    #[serde(with = "humantime_serde")]
    pub warn_before_expiry: Duration,
}

impl Default for RawToken {
    fn default() -> Self {
        Self {
            env: None,
            file: None,
            warn_before_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    pub global: RawRate,
    pub per_caller: RawRate,
    pub caller_header: String,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    pub backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// The URL in a file instead (a Kubernetes Secret, say), so a password stays out of config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    pub on_redis_error: String,
    /// `"allow"` or `"deny"`: what a caller not in `[[callers]]` gets (SPEC §10).
    pub unknown_callers: String,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            global: RawRate {
                per_second: 20.0,
                burst: 40,
            },
            per_caller: RawRate {
                per_second: 5.0,
                burst: 10,
            },
            caller_header: "x-caller-id".into(),
            max_wait: Duration::ZERO,
            backend: "local".into(),
            redis_url: None,
            redis_url_file: None,
            redis_timeout: Duration::from_millis(50),
            on_redis_error: "local".into(),
            unknown_callers: "allow".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub per_second: f64,
    pub burst: u32,
}

/// One `[[callers]]` entry (SPEC §10); what it leaves out comes from `rate_limit.per_caller`
/// (its rate) or means every route.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaller {
    /// As the caller is identified: its mTLS name, else its `caller_header` value, else its
    /// peer IP.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Configured route paths it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_hosts: Option<Vec<String>>,
    /// Lets `http://` callbacks through; off by default (SPEC §3 `[policy]`).
    pub allow_http_callbacks: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

impl RawConfig {
    /// Parses TOML; syntax and type errors become one line with the key and line number.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new(path, None, line_of(e.span()), e.message()))?;
        let mut raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let e = e.into_inner();
            ConfigError::new(path, Some(key), line_of(e.span()), e.message())
        })?;
        if raw.routes.is_empty() {
            raw.routes = vec![RawRoute {
                method: "POST".into(),
                path: route::DIGILOCKER_INIT.into(),
            }];
        }
        Ok(raw)
    }
}
