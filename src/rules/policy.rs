//! `[policy]`: where KwikID may send the user back to.

use http::Uri;

/// Which `callback_url` values may reach KwikID (SPEC §3 `[policy]`). A callback is always a
/// URL with a host and no user info; it is `https` unless `allow_http_callbacks` (KwikID's
/// page asks for HTTPS callbacks in production); with `callback_hosts` its host must also be
/// one of them. The default refuses `http://`: a plain-HTTP callback would carry the user's
/// journey in clear.
#[derive(Debug, Clone, Default)]
pub struct CallbackPolicy {
    /// `None`: any host.
    hosts: Option<Vec<HostPattern>>,
    allow_http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.org`: any subdomain of `example.org`, stored as `.example.org`.
    AnySubdomainOf(String),
}

impl CallbackPolicy {
    /// Errors: an entry of `hosts` that is not a host name (optionally `*.`-prefixed).
    pub fn new(hosts: Option<&[String]>, allow_http: bool) -> Result<Self, String> {
        let Some(hosts) = hosts else {
            return Ok(Self {
                hosts: None,
                allow_http,
            });
        };
        let patterns = hosts
            .iter()
            .map(|entry| {
                let entry = entry.to_ascii_lowercase();
                let (pattern, host) = match entry.strip_prefix("*.") {
                    Some(rest) => (
                        HostPattern::AnySubdomainOf(format!(".{rest}")),
                        rest.to_owned(),
                    ),
                    None => (HostPattern::Exact(entry.clone()), entry.clone()),
                };
                let valid = !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
                valid.then_some(pattern).ok_or_else(|| {
                    format!(
                        "entry {} must be a host name, optionally starting with \"*.\"",
                        entry
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            hosts: Some(patterns),
            allow_http,
        })
    }

    /// Whether `callback_url` may be sent to KwikID. No callback (absent or `null`) always
    /// may: the account's default applies. Otherwise it must be an `https` URL (or `http`
    /// with `allow_http_callbacks`) with a host and no user info, and with hosts configured
    /// its host (case-insensitive, port ignored) must match one of them.
    pub fn allows(&self, callback_url: Option<&str>) -> bool {
        let Some(url) = callback_url else {
            return true;
        };
        let Ok(uri) = url.parse::<Uri>() else {
            return false;
        };
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.allow_http => {}
            _ => return false,
        }
        let Some(authority) = uri.authority() else {
            return false;
        };
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return false;
        }
        let Some(hosts) = &self.hosts else {
            return true;
        };
        // The patterns are lower case; the host is compared without a lower-cased copy.
        let host = authority.host().trim_end_matches('.').as_bytes();
        hosts.iter().any(|pattern| match pattern {
            HostPattern::Exact(h) => host.eq_ignore_ascii_case(h.as_bytes()),
            HostPattern::AnySubdomainOf(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CallbackPolicy {
        CallbackPolicy::new(
            Some(&["app.example.com".into(), "*.example.org".into()]),
            false,
        )
        .unwrap()
    }

    #[test]
    fn no_hosts_allows_any_https_host_only() {
        let p = CallbackPolicy::default();
        assert!(p.allows(Some("https://anything.example/cb")));
        for url in [
            "http://anything.example/cb",
            "javascript:alert(1)",
            "ftp://anything.example/",
            "https://user@anything.example/",
            "/relative/cb",
            "not a url",
            "",
        ] {
            assert!(!p.allows(Some(url)), "{url}");
        }
    }

    #[test]
    fn allow_http_callbacks_lets_plain_http_through_and_nothing_else() {
        let any = CallbackPolicy::new(None, true).unwrap();
        assert!(any.allows(Some("http://anything.example/cb")));
        assert!(any.allows(Some("https://anything.example/cb")));
        assert!(!any.allows(Some("javascript:alert(1)")));
        let listed = CallbackPolicy::new(Some(&["app.example.com".into()]), true).unwrap();
        assert!(listed.allows(Some("http://app.example.com/cb")));
        assert!(!listed.allows(Some("http://evil.example/cb")));
    }

    #[test]
    fn absent_callback_is_allowed() {
        assert!(policy().allows(None));
    }

    #[test]
    fn hosts_match_case_insensitively_ignoring_port() {
        let p = policy();
        assert!(p.allows(Some("https://APP.example.com/dl/cb")));
        assert!(p.allows(Some("https://app.example.com:8443/dl/cb")));
        assert!(p.allows(Some("https://a.b.example.org/cb")));
    }

    #[test]
    fn other_hosts_schemes_and_tricks_are_refused() {
        let p = policy();
        for url in [
            "http://app.example.com/cb",
            "https://example.org/cb",
            "https://evil.com/app.example.com",
            "https://app.example.com.evil.com/",
            "https://app.example.com@evil.com/",
            "https://evilexample.org/",
            "not a url",
            "",
        ] {
            assert!(!p.allows(Some(url)), "{url}");
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(CallbackPolicy::new(Some(&["https://x".into()]), false).is_err());
        assert!(CallbackPolicy::new(Some(&["".into()]), false).is_err());
    }

    /// Guards against `*.example.org` letting through a host that is only the suffix itself
    /// (`.example.org`, which is no subdomain), while its one-label subdomains and a
    /// trailing-dot host still match.
    #[test]
    fn a_wildcard_needs_a_label_before_its_suffix() {
        let p = policy();
        assert!(!p.allows(Some("https://.example.org/cb")));
        assert!(!p.allows(Some("https://example.org./cb")));
        assert!(p.allows(Some("https://x.example.org/cb")));
        assert!(p.allows(Some("https://X.Example.ORG./cb")));
    }
}
