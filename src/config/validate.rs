//! Raw → typed: what types alone cannot check, each error naming its key.

use std::net::SocketAddr;
use std::path::Path;

use http::{Method, Uri};
use ipnet::IpNet;

use super::*;
use crate::rules::route;

impl RawConfig {
    /// Turns the document into a [`Config`], checking what types alone cannot.
    pub fn validate(self, path: &Path) -> Result<Config, ConfigError> {
        let here = path.parent().unwrap_or(Path::new("."));
        let listen = self.listen.validate(path, here)?;
        let admin = Admin {
            addr: socket_addr(path, "admin.addr", &self.admin.addr)?,
        };
        if overlap(listen.addr, admin.addr) {
            return Err(ConfigError::at(
                path,
                "listen.addr, admin.addr",
                format!(
                    "{} and {} share a port; the admin listener needs its own",
                    listen.addr, admin.addr
                ),
            ));
        }
        let upstream = self.upstream.validate(path, here)?;
        let warn_before_expiry = self.token.warn_before_expiry;
        let token = self.token.validate(path, here)?;
        let unknown_callers = self.rate_limit.unknown_callers.clone();
        let mut rate_limit = self.rate_limit.validate(path, here)?;
        let policy = CallbackPolicy::new(
            self.policy.callback_hosts.as_deref(),
            self.policy.allow_http_callbacks,
        )
        .map_err(|e| ConfigError::at(path, "policy.callback_hosts", e))?;
        let routes = validate_routes(path, &self.routes)?;
        let (callers, own_rates) = super::callers::validate(
            path,
            &self.callers,
            &unknown_callers,
            rate_limit.per_caller,
            &routes,
        )?;
        rate_limit.callers = own_rates;
        Ok(Config {
            listen,
            admin,
            upstream,
            token,
            warn_before_expiry,
            rate_limit,
            policy,
            routes,
            callers,
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
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ConfigError::at(path, "listen.allow_cidrs", reason))?;
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

/// Accepts `10.0.0.0/8` or a bare address (a single host). A network with host bits set
/// (`10.0.0.1/8`) is refused with the network it most likely means: reading it either way
/// silently would trust more, or fewer, callers than the operator thinks.
fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(ip) => return Ok(IpNet::from(ip)),
            Err(_) => {
                return Err(format!(
                    "{text:?} is not a CIDR such as \"10.0.0.0/8\" or an IP address"
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Whether two listeners would want the same port: the same address, or the same port with
/// either one on the unspecified address of the other's family. Port 0 (the system picks
/// one) never overlaps.
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
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
        let egress = self.egress(path, here, &authority, &|name| std::env::var(name).ok())?;
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
            egress,
        })
    }
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
