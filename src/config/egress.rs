//! `upstream.proxy` and `upstream.proxy_auth_file`, or, when the config names no proxy, the
//! environment as curl reads it: how the gateway reaches KwikID (SPEC §3).
//!
//! The proxy's credentials are a secret: read from their file, they are held only as the
//! `Proxy-Authorization` value, marked sensitive, and never printed; errors about the file
//! never repeat its content.

use std::fmt;
use std::path::Path;

use base64::Engine;
use http::HeaderValue;
use http::uri::{Authority, Scheme, Uri};
use hyper_util::client::proxy::matcher::Matcher;

use super::{ConfigError, RawUpstream};

/// Where a proxy for `https://` may be named in the environment, in curl's order.
const PROXY_VARIABLES: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
/// Hosts that never go through the environment's proxy, in curl's order.
const NO_PROXY_VARIABLES: [&str; 2] = ["no_proxy", "NO_PROXY"];
/// curl's port for a proxy URL that names none.
const DEFAULT_PROXY_PORT: u16 = 1080;

/// How connections to KwikID leave the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// Straight to KwikID: no proxy is configured or set in the environment.
    Direct,
    /// Straight to KwikID although the environment names a proxy: the `variable`
    /// (`NO_PROXY` or `no_proxy`) lists KwikID's host.
    Bypassed { variable: &'static str },
    /// Through an HTTP CONNECT proxy; TLS to KwikID runs inside the tunnel.
    Proxy(EgressProxy),
}

impl Egress {
    /// The proxy connections go through, if any.
    pub fn proxy(&self) -> Option<&EgressProxy> {
        match self {
            Self::Proxy(proxy) => Some(proxy),
            _ => None,
        }
    }
}

/// An HTTP CONNECT proxy (RFC 9110 §9.3.6).
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy {
    /// The host to connect to, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// `Basic <base64 of user:password>` (RFC 7617), marked sensitive. Never printed.
    pub authorization: Option<HeaderValue>,
    /// `upstream.proxy`, or the environment variable that named it.
    pub source: &'static str,
}

impl EgressProxy {
    /// `host:port` as written in a URL (IPv6 in brackets): what logs and `check` name.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `http://host:port (from upstream.proxy, credentials [REDACTED])`: never the credentials.
impl fmt::Display for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{} (from {}", self.address(), self.source)?;
        if self.authorization.is_some() {
            f.write_str(", credentials [REDACTED]")?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EgressProxy")
            .field("address", &self.address())
            .field("source", &self.source)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

impl RawUpstream {
    /// The egress for KwikID at `authority`: `upstream.proxy` if set, else the environment
    /// as `env` reads it (curl's rules: `https_proxy`, `HTTPS_PROXY`, `all_proxy`,
    /// `ALL_PROXY`, and `no_proxy` / `NO_PROXY`). `here` anchors `proxy_auth_file`.
    pub(super) fn egress(
        &self,
        path: &Path,
        here: &Path,
        authority: &Authority,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Egress, ConfigError> {
        let Some(url) = &self.proxy else {
            if self.proxy_auth_file.is_some() {
                return Err(ConfigError::at(
                    path,
                    "upstream.proxy_auth_file",
                    "is used only with upstream.proxy (a proxy from the environment carries its credentials in its URL)",
                ));
            }
            return from_environment(path, authority, env);
        };
        let key = "upstream.proxy";
        let example = "such as \"http://egress.internal:3128\"";
        let uri: Uri = url
            .parse()
            .map_err(|_| ConfigError::at(path, key, format!("must be a URL {example}")))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(ConfigError::at(
                path,
                key,
                "must start with http:// (an HTTP CONNECT proxy; TLS to KwikID runs inside the tunnel)",
            ));
        }
        let Some(proxy_authority) = uri.authority() else {
            return Err(ConfigError::at(
                path,
                key,
                format!("must name a host {example}"),
            ));
        };
        if proxy_authority.as_str().contains('@') {
            return Err(ConfigError::at(
                path,
                key,
                "must not hold credentials: put \"user:password\" in upstream.proxy_auth_file",
            ));
        }
        let Some(port) = proxy_authority.port_u16().filter(|p| *p != 0) else {
            return Err(ConfigError::at(
                path,
                key,
                format!("must name a port, {example}"),
            ));
        };
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(ConfigError::at(path, key, "must have no path or query"));
        }
        let authorization = match &self.proxy_auth_file {
            None => None,
            Some(file) => Some(read_credentials(path, &here.join(file))?),
        };
        Ok(Egress::Proxy(EgressProxy {
            host: unbracketed(proxy_authority.host()),
            port,
            authorization,
            source: key,
        }))
    }
}

/// `HTTPS_PROXY` and friends, as curl reads them for an `https://` URL; `hyper-util`'s
/// matcher applies curl's `NO_PROXY` rules (domains and their subdomains, IPs, CIDRs, `*`).
fn from_environment(
    path: &Path,
    authority: &Authority,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Egress, ConfigError> {
    let set = |names: &[&'static str]| {
        names
            .iter()
            .find_map(|&name| env(name).filter(|v| !v.is_empty()).map(|v| (name, v)))
    };
    let Some((variable, url)) = set(&PROXY_VARIABLES) else {
        return Ok(Egress::Direct);
    };
    let kwikid = Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|_| ConfigError::at(path, "upstream.base_url", "is not a valid URL"))?;
    let key = format!("environment variable {variable}");
    let intercept = Matcher::builder()
        .https(url.as_str())
        .build()
        .intercept(&kwikid)
        .ok_or_else(|| {
            ConfigError::at(
                path,
                &key,
                "is not a proxy URL such as \"http://proxy:3128\"",
            )
        })?;
    if let Some((no_variable, hosts)) = set(&NO_PROXY_VARIABLES) {
        let matcher = Matcher::builder().https(url.as_str()).no(hosts).build();
        if matcher.intercept(&kwikid).is_none() {
            return Ok(Egress::Bypassed {
                variable: no_variable,
            });
        }
    }
    let proxy = intercept.uri();
    if proxy.scheme() != Some(&Scheme::HTTP) {
        return Err(ConfigError::at(
            path,
            &key,
            "names a proxy the gateway cannot use: only http:// (HTTP CONNECT) proxies are supported; set upstream.proxy or unset it",
        ));
    }
    Ok(Egress::Proxy(EgressProxy {
        host: unbracketed(proxy.host().unwrap_or_default()),
        port: proxy.port_u16().unwrap_or(DEFAULT_PROXY_PORT),
        authorization: intercept.basic_auth().cloned(),
        source: variable,
    }))
}

/// The `Proxy-Authorization` value for the `user:password` line in `file`.
fn read_credentials(path: &Path, file: &Path) -> Result<HeaderValue, ConfigError> {
    let key = "upstream.proxy_auth_file";
    let text =
        zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
            ConfigError::at(path, key, format!("cannot read {}: {e}", file.display()))
        })?);
    let line = text.trim_end_matches(['\r', '\n']);
    if !line.contains(':') || line.chars().any(char::is_control) {
        return Err(ConfigError::at(
            path,
            key,
            format!("{} must hold one line \"user:password\"", file.display()),
        ));
    }
    let encoded = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(line));
    let mut value = HeaderValue::try_from(format!("Basic {}", encoded.as_str()))
        .map_err(|_| ConfigError::at(path, key, "cannot be made into a header"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn unbracketed(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn kwikid() -> Authority {
        Authority::from_static("verify.test.getkwikid.com")
    }

    fn from_env(vars: &[(&str, &str)]) -> Result<Egress, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_environment(Path::new("gw.toml"), &kwikid(), &|k| vars.get(k).cloned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn no_variable_means_direct() {
        assert_eq!(from_env(&[]), Ok(Egress::Direct));
        assert_eq!(from_env(&[("HTTPS_PROXY", "")]), Ok(Egress::Direct));
        assert_eq!(
            from_env(&[("HTTP_PROXY", "http://p:3128")]),
            Ok(Egress::Direct),
            "plain-HTTP proxies are for http:// URLs only"
        );
    }

    #[test]
    fn https_proxy_is_read_as_curl_reads_it() {
        let egress = from_env(&[("HTTPS_PROXY", "http://u:p%40ss@egress.internal:3128")]).unwrap();
        let proxy = egress.proxy().unwrap();
        assert_eq!(proxy.address(), "egress.internal:3128");
        assert_eq!(proxy.source, "HTTPS_PROXY");
        // RFC 7617: base64 of the percent-decoded "u:p@ss".
        assert_eq!(proxy.authorization.as_ref().unwrap(), "Basic dTpwQHNz");
        assert!(proxy.authorization.as_ref().unwrap().is_sensitive());
        // curl: the lower-case name first; no scheme means http; no port means 1080.
        let egress = from_env(&[("HTTPS_PROXY", "http://a:1"), ("https_proxy", "b")]).unwrap();
        let proxy = egress.proxy().unwrap();
        assert_eq!(
            (proxy.address().as_str(), proxy.source),
            ("b:1080", "https_proxy")
        );
        let egress = from_env(&[("ALL_PROXY", "http://[::1]:3128")]).unwrap();
        assert_eq!(egress.proxy().unwrap().address(), "[::1]:3128");
    }

    #[test]
    fn no_proxy_naming_the_host_or_its_domain_bypasses_the_proxy() {
        for list in [
            "verify.test.getkwikid.com",
            ".getkwikid.com",
            "x, getkwikid.com",
            "*",
        ] {
            assert_eq!(
                from_env(&[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", list)]),
                Ok(Egress::Bypassed {
                    variable: "NO_PROXY"
                }),
                "{list}"
            );
        }
        for list in ["kwikid.com", "other.example", "10.0.0.0/8"] {
            let egress = from_env(&[("https_proxy", "http://p:3128"), ("no_proxy", list)]);
            assert!(egress.unwrap().proxy().is_some(), "{list}");
        }
    }

    #[test]
    fn unusable_environment_proxies_are_one_line_errors_naming_the_variable() {
        let e = from_env(&[("HTTPS_PROXY", "socks5://p:1080")]).unwrap_err();
        assert!(
            e.starts_with("gw.toml: environment variable HTTPS_PROXY: "),
            "{e}"
        );
        assert!(e.contains("only http://"), "{e}");
        let e = from_env(&[("https_proxy", "http://user:hunter2@")]).unwrap_err();
        assert!(e.contains("environment variable https_proxy"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    fn configured(proxy: &str, auth: Option<&Path>) -> Result<Egress, String> {
        let raw = RawUpstream {
            proxy: Some(proxy.to_owned()),
            proxy_auth_file: auth.map(Path::to_path_buf),
            ..RawUpstream::default()
        };
        let env = |_: &str| Some("http://from-env:1".to_owned());
        raw.egress(Path::new("gw.toml"), Path::new("."), &kwikid(), &env)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn upstream_proxy_wins_over_the_environment_and_must_be_http_host_port() {
        let proxy = configured("http://egress.internal:3128", None).unwrap();
        let proxy = proxy.proxy().unwrap();
        assert_eq!(
            (proxy.address().as_str(), proxy.source),
            ("egress.internal:3128", "upstream.proxy")
        );
        assert_eq!(
            proxy.to_string(),
            "http://egress.internal:3128 (from upstream.proxy)"
        );
        for (bad, reason) in [
            ("https://egress:3128", "must start with http://"),
            ("egress:3128", "must start with http://"),
            ("http://egress", "must name a port"),
            ("http://egress:3128/path", "must have no path"),
            (
                "http://user:hunter2@egress:3128",
                "must not hold credentials",
            ),
            ("http://", "must be a URL"),
        ] {
            let e = configured(bad, None).unwrap_err();
            assert!(e.starts_with("gw.toml: upstream.proxy: "), "{bad}: {e}");
            assert!(e.contains(reason), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn credentials_come_from_their_file_and_are_never_shown() {
        let dir = std::env::temp_dir().join(format!("kwikid-egress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("egress");
        std::fs::write(&file, "gateway:s3cret-pass\n").unwrap();
        let egress = configured("http://egress:3128", Some(&file)).unwrap();
        let proxy = egress.proxy().unwrap();
        assert_eq!(
            proxy.authorization.as_ref().unwrap(),
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("gateway:s3cret-pass")
            )
        );
        for shown in [proxy.to_string(), format!("{egress:?}")] {
            assert!(shown.contains("[REDACTED]"), "{shown}");
            assert!(
                !shown.contains("s3cret") && !shown.contains("Z2F0ZXdheT"),
                "{shown}"
            );
        }
        std::fs::write(&file, "no-colon-s3cret\n").unwrap();
        let e = configured("http://egress:3128", Some(&file)).unwrap_err();
        assert!(
            e.contains("upstream.proxy_auth_file: ") && e.contains("user:password"),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = configured("http://egress:3128", Some(&dir.join("missing"))).unwrap_err();
        assert!(e.contains("upstream.proxy_auth_file: cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_credentials_file_without_a_configured_proxy_is_refused() {
        let raw = RawUpstream {
            proxy_auth_file: Some("egress".into()),
            ..RawUpstream::default()
        };
        let e = raw
            .egress(Path::new("gw.toml"), Path::new("."), &kwikid(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upstream.proxy_auth_file: is used only with upstream.proxy"),
            "{e}"
        );
    }
}
