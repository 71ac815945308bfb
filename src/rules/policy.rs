//! `[policy] callback_hosts`: where KwikID may send the user back to.

use http::Uri;

/// The allowed callback hosts; `None` allows any `callback_url`.
#[derive(Debug, Clone, Default)]
pub struct CallbackPolicy {
    hosts: Option<Vec<HostPattern>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.org`: any subdomain of `example.org`, stored as `.example.org`.
    AnySubdomainOf(String),
}

impl CallbackPolicy {
    pub fn new(hosts: Option<&[String]>) -> Result<Self, String> {
        let Some(hosts) = hosts else {
            return Ok(Self::default());
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
        })
    }

    /// Whether `callback_url` may be sent to KwikID: with hosts configured, it must be an
    /// `https` URL whose host (case-insensitive, port ignored) matches one of them.
    pub fn allows(&self, callback_url: Option<&str>) -> bool {
        let (Some(hosts), Some(url)) = (&self.hosts, callback_url) else {
            return true;
        };
        let Ok(uri) = url.parse::<Uri>() else {
            return false;
        };
        if uri.scheme_str() != Some("https") {
            return false;
        }
        let Some(authority) = uri.authority() else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
        hosts.iter().any(|pattern| match pattern {
            HostPattern::Exact(h) => host == *h,
            HostPattern::AnySubdomainOf(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CallbackPolicy {
        CallbackPolicy::new(Some(&["app.example.com".into(), "*.example.org".into()])).unwrap()
    }

    #[test]
    fn no_hosts_allows_everything() {
        assert!(CallbackPolicy::default().allows(Some("http://anything")));
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
        assert!(CallbackPolicy::new(Some(&["https://x".into()])).is_err());
        assert!(CallbackPolicy::new(Some(&["".into()])).is_err());
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
