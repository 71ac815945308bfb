//! Configuration: TOML as written (`Raw*`, every key defaulted and unknown keys refused), then
//! validated into [`Config`], the form the rest of the gateway uses.
//!
//! Errors are one line naming the file, the key and the reason. Quoted values are cut out of
//! the reason, so a secret pasted into the wrong key is never echoed back.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::rules::policy::CallbackPolicy;
use crate::rules::route::{self, Route};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub admin: Admin,
    pub upstream: Upstream,
    pub token: TokenSource,
    pub rate_limit: RateLimit,
    pub policy: CallbackPolicy,
    pub routes: Vec<Route>,
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

/// A configuration error, printed as exactly one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: String,
    key: Option<String>,
    line: Option<usize>,
    reason: String,
}

impl ConfigError {
    fn new(file: &Path, key: Option<String>, line: Option<usize>, reason: &str) -> Self {
        Self {
            file: file.display().to_string(),
            key: key.filter(|k| !k.is_empty() && k != "."),
            line,
            reason: one_line_without_values(reason),
        }
    }

    /// An error found by validation; `reason` is ours, so its quotes are kept.
    fn at(file: &Path, key: &str, reason: impl fmt::Display) -> Self {
        Self {
            file: file.display().to_string(),
            key: Some(key.to_owned()),
            line: None,
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = format!("{}: ", self.file);
        match (&self.key, self.line) {
            (Some(key), Some(n)) => line.push_str(&format!("{key} (line {n}): ")),
            (Some(key), None) => line.push_str(&format!("{key}: ")),
            (None, Some(n)) => line.push_str(&format!("line {n}: ")),
            (None, None) => {}
        }
        line.push_str(&self.reason);
        f.write_str(&one_line(&line))
    }
}

/// Escapes control characters (a key, a file name or a path may hold a line break), so an
/// error is always exactly one line.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl std::error::Error for ConfigError {}

/// Joins a message onto one line and replaces every `"quoted"` value with `"…"`.
fn one_line_without_values(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut quoted = false;
    for c in reason.chars() {
        match c {
            '"' if quoted => {
                out.push_str("…\"");
                quoted = false;
            }
            '"' => {
                out.push('"');
                quoted = true;
            }
            _ if quoted => {}
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    if quoted {
        out.push_str("…\"");
    }
    out.trim().to_owned()
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
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawToken {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
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
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_hosts: Option<Vec<String>>,
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

    /// Turns the document into a [`Config`], checking what types alone cannot.
    pub fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        let here = path.parent().unwrap_or(Path::new("."));
        Ok(Config {
            listen: self.listen.validate(path, here)?,
            admin: Admin {
                addr: socket_addr(path, "admin.addr", &self.admin.addr)?,
            },
            upstream: self.upstream.validate(path, here)?,
            token: self.token.validate(path, here)?,
            rate_limit: self.rate_limit.validate(path, here)?,
            policy: CallbackPolicy::new(self.policy.callback_hosts.as_deref())
                .map_err(|e| ConfigError::at(path, "policy.callback_hosts", e))?,
            routes: validate_routes(path, &self.routes)?,
            log: self.log.validate(path)?,
        })
    }
}

impl RawListen {
    fn validate(self, path: &Path, here: &Path) -> Result<Listen, ConfigError> {
        let tls = match &self.tls {
            None => None,
            Some(tls) => Some(tls.validate(path, here)?),
        };
        let allow_cidrs = self
            .allow_cidrs
            .iter()
            .map(|c| parse_cidr(c))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ConfigError::at(
                    path,
                    "listen.allow_cidrs",
                    "each entry must be a CIDR such as \"10.0.0.0/8\" or an IP address",
                )
            })?;
        if self.max_connections == 0 {
            return Err(ConfigError::at(
                path,
                "listen.max_connections",
                "must be at least 1",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::at(
                path,
                "listen.max_body_bytes",
                "must be at least 1",
            ));
        }
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::at(
                path,
                "listen.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(ConfigError::at(
                path,
                "listen.header_read_timeout",
                "must be longer than 0s",
            ));
        }
        Ok(Listen {
            addr: socket_addr(path, "listen.addr", &self.addr)?,
            allow_cidrs,
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            max_body_bytes: self.max_body_bytes,
            shutdown_grace: self.shutdown_grace,
            max_concurrent_streams: self.max_concurrent_streams,
            tls,
        })
    }
}

impl RawListenTls {
    fn validate(&self, path: &Path, here: &Path) -> Result<ListenTls, ConfigError> {
        use rustls_pki_types::PrivateKeyDer;
        let chain = read_certificates(&here.join(&self.cert_file))
            .map_err(|e| ConfigError::at(path, "listen.tls.cert_file", e))?;
        let key_path = here.join(&self.key_file);
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
            ConfigError::at(
                path,
                "listen.tls.key_file",
                format!("{}: {e}", key_path.display()),
            )
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::at(path, "listen.tls", e))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certificates(&here.join(ca))
                    .map_err(|e| ConfigError::at(path, "listen.tls.client_ca_file", e))?
                {
                    roots
                        .add(cert)
                        .map_err(|e| ConfigError::at(path, "listen.tls.client_ca_file", e))?;
                }
                // Callers without a certificate complete the handshake and then get a clear
                // 403 caller_not_allowed; a certificate that fails verification never does.
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    std::sync::Arc::new(roots),
                    crate::tls::provider(),
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| ConfigError::at(path, "listen.tls.client_ca_file", e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder
            .with_single_cert(chain, key)
            .map_err(|e| ConfigError::at(path, "listen.tls.key_file", e))?;
        // RFC 7301: callers pick HTTP/2 or HTTP/1.1; the same limits hold on both.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ListenTls {
            server: std::sync::Arc::new(server),
            mutual: self.client_ca_file.is_some(),
        })
    }
}

/// Accepts `10.0.0.0/8` or a bare address (a single host).
fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(|net| net.trunc())
}

fn socket_addr(path: &Path, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError::at(
            path,
            key,
            "must be an IP address and port such as \"127.0.0.1:8080\" or \"[::]:8080\"",
        )
    })
}

impl RawUpstream {
    fn validate(self, path: &Path, here: &Path) -> Result<Upstream, ConfigError> {
        let key = "upstream.base_url";
        if self.base_url.is_empty() {
            return Err(ConfigError::at(
                path,
                key,
                "is required, e.g. \"https://verify.test.getkwikid.com\"",
            ));
        }
        let uri: Uri = self
            .base_url
            .parse()
            .map_err(|_| ConfigError::at(path, key, "is not a valid URL"))?;
        let parts = uri.into_parts();
        let scheme = parts
            .scheme
            .filter(|s| *s == http::uri::Scheme::HTTPS)
            .ok_or_else(|| {
                ConfigError::at(
                    path,
                    key,
                    "must start with https:// (the token is never sent in clear text)",
                )
            })?;
        let authority = parts
            .authority
            .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
            .ok_or_else(|| ConfigError::at(path, key, "must name a host and no user info"))?;
        let path_and_query = parts.path_and_query.as_ref();
        if path_and_query.and_then(|p| p.query()).is_some() {
            return Err(ConfigError::at(path, key, "must not have a query string"));
        }
        let path_prefix = path_and_query
            .map_or("", |p| p.path())
            .trim_end_matches('/')
            .to_owned();
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::at(
                path,
                "upstream.connect_timeout",
                "must be longer than 0s",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::at(
                path,
                "upstream.request_timeout",
                "must be longer than 0s",
            ));
        }
        let extra_roots = match &self.ca_file {
            None => Vec::new(),
            Some(file) => read_certificates(&here.join(file))
                .map_err(|e| ConfigError::at(path, "upstream.ca_file", e))?,
        };
        Ok(Upstream {
            scheme,
            authority,
            path_prefix,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            extra_roots,
            pool_max_idle_per_host: self.pool_max_idle_per_host,
            http2: match self.http2.as_str() {
                "auto" => true,
                "never" => false,
                _ => {
                    return Err(ConfigError::at(
                        path,
                        "upstream.http2",
                        "must be \"auto\" or \"never\"",
                    ));
                }
            },
        })
    }
}

/// Reads every PEM certificate in `file`; an empty file is an error.
pub fn read_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", file.display()));
    }
    Ok(certs)
}

impl RawToken {
    fn validate(self, path: &Path, here: &Path) -> Result<TokenSource, ConfigError> {
        match (self.env, self.file) {
            (Some(_), Some(_)) => Err(ConfigError::at(
                path,
                "token",
                "set exactly one of env and file, not both",
            )),
            (None, Some(file)) if file.as_os_str().is_empty() => {
                Err(ConfigError::at(path, "token.file", "must not be empty"))
            }
            (None, Some(file)) => Ok(TokenSource::File(here.join(file))),
            (Some(env), None) if env.is_empty() => {
                Err(ConfigError::at(path, "token.env", "must not be empty"))
            }
            (Some(env), None) => Ok(TokenSource::Env(env)),
            (None, None) => Ok(TokenSource::Env("KWIKID_API_TOKEN".into())),
        }
    }
}

impl RawRateLimit {
    fn validate(self, path: &Path, here: &Path) -> Result<RateLimit, ConfigError> {
        let caller_header =
            HeaderName::from_bytes(self.caller_header.as_bytes()).map_err(|_| {
                ConfigError::at(
                    path,
                    "rate_limit.caller_header",
                    "is not a valid header name",
                )
            })?;
        if crate::rules::headers::is_reserved_request_header(&caller_header) {
            return Err(ConfigError::at(
                path,
                "rate_limit.caller_header",
                "must not be a credential, hop-by-hop or forwarding header",
            ));
        }
        let redis = match self.backend.as_str() {
            "local" => None,
            "redis" => Some(self.redis(path, here)?),
            _ => {
                return Err(ConfigError::at(
                    path,
                    "rate_limit.backend",
                    "must be \"local\" or \"redis\"",
                ));
            }
        };
        Ok(RateLimit {
            global: self.global.validate(path, "rate_limit.global")?,
            per_caller: self.per_caller.validate(path, "rate_limit.per_caller")?,
            caller_header,
            max_wait: self.max_wait,
            redis,
        })
    }

    fn redis(&self, path: &Path, here: &Path) -> Result<RedisLimits, ConfigError> {
        let (key, url) = match (&self.redis_url, &self.redis_url_file) {
            (Some(url), None) => ("rate_limit.redis_url", url.clone()),
            (None, Some(file)) => {
                let key = "rate_limit.redis_url_file";
                let file = here.join(file);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    ConfigError::at(path, key, format!("cannot read {}: {e}", file.display()))
                })?;
                (key, text.trim_end_matches(['\r', '\n']).to_owned())
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(
                    path,
                    "rate_limit.redis_url",
                    "set exactly one of redis_url and redis_url_file, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::at(
                    path,
                    "rate_limit.redis_url",
                    "is required with backend = \"redis\" (or redis_url_file)",
                ));
            }
        };
        let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        // The URL may carry a password: the reason never repeats it.
        if !scheme_ok || redis::Client::open(url.as_str()).is_err() {
            return Err(ConfigError::at(
                path,
                key,
                "must be a redis://, rediss:// or redis+unix:// URL",
            ));
        }
        if self.redis_timeout.is_zero() {
            return Err(ConfigError::at(
                path,
                "rate_limit.redis_timeout",
                "must be longer than 0s",
            ));
        }
        let on_error = match self.on_redis_error.as_str() {
            "local" => OnRedisError::Local,
            "allow" => OnRedisError::Allow,
            "deny" => OnRedisError::Deny,
            _ => {
                return Err(ConfigError::at(
                    path,
                    "rate_limit.on_redis_error",
                    "must be \"local\", \"allow\" or \"deny\"",
                ));
            }
        };
        Ok(RedisLimits {
            url,
            timeout: self.redis_timeout,
            on_error,
        })
    }
}

impl RawRate {
    fn validate(self, path: &Path, key: &str) -> Result<Rate, ConfigError> {
        // 1e9/s is one permit per nanosecond, governor's finest period.
        if !(self.per_second.is_finite() && self.per_second > 0.0 && self.per_second <= 1e9) {
            return Err(ConfigError::at(
                path,
                &format!("{key}.per_second"),
                "must be a number above 0 and at most 1000000000",
            ));
        }
        if self.burst == 0 {
            return Err(ConfigError::at(
                path,
                &format!("{key}.burst"),
                "must be at least 1",
            ));
        }
        Ok(Rate {
            per_second: self.per_second,
            burst: self.burst,
        })
    }
}

fn validate_routes(path: &Path, raw: &[RawRoute]) -> Result<Vec<Route>, ConfigError> {
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let method = Method::from_bytes(r.method.as_bytes())
            .ok()
            .filter(|m| *m != Method::CONNECT && r.method.bytes().all(|b| b.is_ascii_uppercase()))
            .ok_or_else(|| {
                ConfigError::at(
                    path,
                    &key("method"),
                    "must be an upper-case HTTP method other than CONNECT",
                )
            })?;
        if !route::is_clean_path(&r.path) {
            return Err(ConfigError::at(
                path,
                &key("path"),
                "must start with / and have no query, //, dot segments, backslashes or percent-encoded separators",
            ));
        }
        if routes
            .iter()
            .any(|seen| seen.method == method && *seen.path == *r.path)
        {
            return Err(ConfigError::at(
                path,
                &key("path"),
                "duplicates an earlier route",
            ));
        }
        routes.push(Route {
            method,
            path: std::sync::Arc::from(r.path.as_str()),
        });
    }
    Ok(routes)
}

impl RawLog {
    fn validate(self, path: &Path) -> Result<Log, ConfigError> {
        let level = self
            .level
            .parse()
            .ok()
            .filter(|_| !self.level.contains(['=', ',']))
            .ok_or_else(|| {
                ConfigError::at(
                    path,
                    "log.level",
                    "must be one of off, error, warn, info, debug, trace",
                )
            })?;
        let format = match self.format.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            _ => {
                return Err(ConfigError::at(
                    path,
                    "log.format",
                    "must be \"json\" or \"text\"",
                ));
            }
        };
        Ok(Log { level, format })
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
            one_line_without_values("invalid type: string \"abc\", expected u32\nmore"),
            "invalid type: string \"…\", expected u32 more"
        );
    }
}
