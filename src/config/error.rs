//! The one-line configuration error: file, key, line and reason. Reasons that come from the
//! parser are put in plain words, and their quoted values are cut out for keys that may hold
//! a secret, so a secret pasted into the wrong key is never echoed.

use std::fmt;
use std::path::Path;

/// A configuration error, printed as exactly one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    file: String,
    key: Option<String>,
    line: Option<usize>,
    reason: String,
}

impl ConfigError {
    /// An error from the parser. Its reason is put in the operator's words ([`plain_words`]);
    /// quoted values are kept only for keys that cannot hold a secret.
    pub(super) fn new(file: &Path, key: Option<String>, line: Option<usize>, reason: &str) -> Self {
        let key = key.filter(|k| !k.is_empty() && k != ".");
        let reason = plain_words(reason);
        let reason = match &key {
            Some(key) if !may_hold_secret(key) => one_line(&reason.replace(['\n', '\r'], " "))
                .trim()
                .to_owned(),
            _ => one_line_without_values(&reason),
        };
        Self {
            file: file.display().to_string(),
            key,
            line,
            reason,
        }
    }

    /// An error found by validation; `reason` is ours, so its quotes are kept.
    pub(super) fn at(file: &Path, key: &str, reason: impl fmt::Display) -> Self {
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

/// Keys whose value may be, or may contain, a secret: the token's source, and URLs that can
/// carry credentials. Their values are never echoed; neither are those of a key the parser
/// could not name.
fn may_hold_secret(key: &str) -> bool {
    key.starts_with("token")
        || key.contains("redis_url")
        || key.starts_with("upstream.proxy")
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-[]".contains(&b))
}

/// serde's type names in the words of someone editing a TOML file: `usize` is "a whole
/// number", a sequence "a list", a struct "a table".
fn plain_words(reason: &str) -> String {
    const WHOLE: [&str; 12] = [
        "usize", "u128", "u64", "u32", "u16", "u8", "isize", "i128", "i64", "i32", "i16", "i8",
    ];
    let mut out = String::with_capacity(reason.len());
    for (i, word) in reason.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_end_matches([',', '.', ';']);
        let tail = &word[bare.len()..];
        let plain = if WHOLE.contains(&bare) {
            "a whole number"
        } else if bare == "f64" || bare == "f32" {
            "a number"
        } else if bare == "sequence" {
            "list"
        } else if bare.starts_with("Raw") && out.ends_with("struct ") {
            out.truncate(out.len() - "struct ".len());
            "a table"
        } else {
            bare
        };
        out.push_str(plain);
        out.push_str(tail);
    }
    out
}

/// Joins a message onto one line and replaces every `"quoted"` value with `"…"`.
pub(super) fn one_line_without_values(reason: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from_parser(key: &str, reason: &str) -> String {
        ConfigError::new(Path::new("gw.toml"), Some(key.into()), Some(3), reason).to_string()
    }

    #[test]
    fn parser_reasons_are_in_plain_words_with_the_value_where_no_secret_can_be() {
        assert_eq!(
            from_parser(
                "listen.max_connections",
                "invalid type: string \"many\", expected usize"
            ),
            "gw.toml: listen.max_connections (line 3): invalid type: string \"many\", expected a whole number"
        );
        assert_eq!(
            from_parser("routes", "invalid type: string \"x\", expected a sequence"),
            "gw.toml: routes (line 3): invalid type: string \"x\", expected a list"
        );
        assert_eq!(
            from_parser(
                "listen",
                "invalid type: integer `1`, expected struct RawListen"
            ),
            "gw.toml: listen (line 3): invalid type: integer `1`, expected a table"
        );
    }

    /// Guards against a token (or a URL with a password) pasted into a key that holds one
    /// being echoed back in the error about it.
    #[test]
    fn values_of_keys_that_may_hold_a_secret_are_cut_out() {
        for key in [
            "token.env",
            "token.file",
            "rate_limit.redis_url",
            "upstream.proxy",
            "kwk_live_abc\"x",
        ] {
            let line = from_parser(
                key,
                "invalid type: string \"kwk_live_secret\", expected a map",
            );
            assert!(!line.contains("kwk_live_secret"), "{line}");
            assert!(line.contains("\"…\""), "{line}");
        }
    }
}
