//! The one-line configuration error: file, key, line and reason; quoted values cut out of
//! reasons that come from the parser, so a secret pasted into the wrong key is never echoed.

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
    pub(super) fn new(file: &Path, key: Option<String>, line: Option<usize>, reason: &str) -> Self {
        Self {
            file: file.display().to_string(),
            key: key.filter(|k| !k.is_empty() && k != "."),
            line,
            reason: one_line_without_values(reason),
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
