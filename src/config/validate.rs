//! Raw → typed: what types alone cannot check, each error naming its key.

use std::path::Path;

use http::{Method, Uri};

use super::listen::{overlap, socket_addr};
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
                        format!("{:?} is not \"auto\" or \"never\"", self.http2),
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
                    format!(
                        "{:?} is not one of off, error, warn, info, debug, trace",
                        self.level
                    ),
                )
            })?;
        let format = match self.format.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            _ => {
                return Err(ConfigError::at(
                    path,
                    "log.format",
                    format!("{:?} is not \"json\" or \"text\"", self.format),
                ));
            }
        };
        Ok(Log { level, format })
    }
}
