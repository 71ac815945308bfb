//! `[rate_limit]`: rates, the caller header, the Redis backend.

use std::path::Path;

use http::HeaderName;

use super::*;

impl RawRateLimit {
    pub(super) fn validate(self, path: &Path, here: &Path) -> Result<RateLimit, ConfigError> {
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
                    format!("{:?} is not \"local\" or \"redis\"", self.backend),
                ));
            }
        };
        Ok(RateLimit {
            global: self.global.validate(path, "rate_limit.global")?,
            per_caller: self.per_caller.validate(path, "rate_limit.per_caller")?,
            caller_header,
            max_wait: self.max_wait,
            redis,
            callers: Vec::new(),
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
                    format!(
                        "{:?} is not one of \"local\", \"allow\" or \"deny\"",
                        self.on_redis_error
                    ),
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
    pub(super) fn validate(self, path: &Path, key: &str) -> Result<Rate, ConfigError> {
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
