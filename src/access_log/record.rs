//! One access-log record and its rendering as one JSON line.
//!
//! The scrubbing lives here and only here. The line is built from named fields — never from a
//! request, a header map or a response body — so the token and `redirection_url` have no way
//! in, and any caller-chosen field that contains the token in a revealing form is replaced.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::secret::LoadedToken;

/// Caller-chosen text is cut to this many characters.
const MAX_FIELD_CHARS: usize = 128;

/// One request, as the access log records it.
#[derive(Debug)]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    pub caller: &'a str,
    pub peer: std::net::SocketAddr,
    pub method: &'a str,
    /// Without the query string.
    pub path: &'a str,
    pub status: u16,
    pub upstream_status: Option<u16>,
    /// One of the gateway's own words (`forwarded`, an error code of SPEC §4,
    /// `client_closed`): lower-case letters and `_`, written without escaping.
    pub outcome: &'static str,
    pub duration_ms: f64,
    pub upstream_ms: Option<f64>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub handshake_id: Option<&'a str>,
}

impl Default for AccessRecord<'_> {
    fn default() -> Self {
        Self {
            request_id: "",
            caller: "",
            peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            method: "",
            path: "",
            status: 0,
            upstream_status: None,
            outcome: "",
            duration_ms: 0.0,
            upstream_ms: None,
            bytes_in: 0,
            bytes_out: 0,
            handshake_id: None,
        }
    }
}

/// Cuts caller-chosen text and refuses it whole if it reveals the token. Every log line that
/// carries caller-chosen text passes it through here, diagnostics included.
pub(crate) fn scrub<'a>(text: &'a str, token: &LoadedToken) -> &'a str {
    if token.is_revealed_in(text.as_bytes()) {
        return "[REDACTED]";
    }
    // Characters are never fewer than bytes: short text needs no counting.
    if text.len() <= MAX_FIELD_CHARS {
        return text;
    }
    text.char_indices()
        .nth(MAX_FIELD_CHARS)
        .map_or(text, |(i, _)| &text[..i])
}

/// Renders one record as a JSON line ending in `\n`. Strings are escaped as JSON requires
/// (quotes, backslashes, control characters), so one request is always exactly one line.
pub fn render(record: &AccessRecord<'_>, token: &LoadedToken) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    render_into(&mut out, record, token);
    out
}

/// [`render`], appending to `out`. Written by hand rather than through serde: it runs once
/// per request, and the fields are few and fixed.
pub(super) fn render_into(out: &mut Vec<u8>, record: &AccessRecord<'_>, token: &LoadedToken) {
    out.extend_from_slice(b"{\"ts\":\"");
    timestamp(out, SystemTime::now());
    out.extend_from_slice(b"\",\"request_id\":");
    json_str(out, scrub(record.request_id, token));
    out.extend_from_slice(b",\"caller\":");
    json_str(out, scrub(record.caller, token));
    out.extend_from_slice(b",\"peer\":\"");
    peer(out, record.peer);
    out.extend_from_slice(b"\",\"method\":");
    json_str(out, scrub(record.method, token));
    out.extend_from_slice(b",\"path\":");
    json_str(out, scrub(record.path, token));
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(record.status).as_bytes());
    if let Some(status) = record.upstream_status {
        out.extend_from_slice(b",\"upstream_status\":");
        out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    }
    out.extend_from_slice(b",\"outcome\":\"");
    // One of the gateway's own codes: nothing to escape.
    out.extend_from_slice(record.outcome.as_bytes());
    out.push(b'"');
    out.extend_from_slice(b",\"duration_ms\":");
    millis(out, record.duration_ms);
    if let Some(ms) = record.upstream_ms {
        out.extend_from_slice(b",\"upstream_ms\":");
        millis(out, ms);
    }
    out.extend_from_slice(b",\"bytes_in\":");
    out.extend_from_slice(itoa::Buffer::new().format(record.bytes_in).as_bytes());
    out.extend_from_slice(b",\"bytes_out\":");
    out.extend_from_slice(itoa::Buffer::new().format(record.bytes_out).as_bytes());
    if let Some(handshake_id) = record.handshake_id {
        out.extend_from_slice(b",\"handshake_id\":");
        json_str(out, scrub(handshake_id, token));
    }
    // Hexadecimal digits: nothing to escape.
    out.extend_from_slice(b",\"token_id\":\"");
    out.extend_from_slice(token.fingerprint.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// A JSON string that stays on one physical line under any line splitter: quotes,
/// backslashes, every control character (C0, DEL and C1, NEL among them) and the Unicode
/// line and paragraph separators (U+2028, U+2029) are escaped; the rest is copied as is (the
/// input is UTF-8 already). RFC 8259 §7 requires only C0 to be escaped; the others are
/// line ends to JavaScript, Python's `str.splitlines` and many log shippers.
fn json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    // Almost every field needs no escaping; this check has no early exit, so it vectorizes.
    // 0xC2 leads U+0080..U+00BF (C1 among them), 0xE2 leads U+2000..U+2FFF (the separators).
    let needs_escape = bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0x7f) | (b == 0xc2) | (b == 0xe2)
    });
    if !needs_escape {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut plain = 0;
    for (i, c) in text.char_indices() {
        let short: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            '\u{8}' => b"\\b",
            '\u{c}' => b"\\f",
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..i]);
        if short.is_empty() {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.extend_from_slice(short);
        }
        plain = i + c.len_utf8();
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// `ip:port`, IPv4 without the formatting machinery (it is nearly every line), IPv6 as
/// `[ip]:port`.
fn peer(out: &mut Vec<u8>, addr: std::net::SocketAddr) {
    match addr {
        std::net::SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
            out.push(b':');
            out.extend_from_slice(digits.format(v4.port()).as_bytes());
        }
        std::net::SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Milliseconds with at most three decimals (microsecond precision), as a JSON number.
fn millis(out: &mut Vec<u8>, ms: f64) {
    let micros = (ms * 1000.0).round().max(0.0) as u64;
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    out.push(b'.');
    let frac = micros % 1000;
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let keep = if frac.is_multiple_of(100) {
        1
    } else if frac.is_multiple_of(10) {
        2
    } else {
        3
    };
    out.extend_from_slice(&digits[..keep]);
}

thread_local! {
    /// The RFC 3339 text of the current second (`2026-11-26T10:25:48`), formatted once per
    /// second per thread rather than once per line.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// `2026-11-26T10:25:48.123Z`: UTC, milliseconds.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (cached_secs, mut text) = SECOND.get();
    if cached_secs != secs {
        let formatted = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
        let mut buf = Vec::with_capacity(20);
        let _ = write!(buf, "{formatted}");
        match buf.get(..19) {
            Some(head) => {
                text.copy_from_slice(head);
                SECOND.set((secs, text));
            }
            // Not a four-digit year: no caching, no fractions.
            None => return out.extend_from_slice(&buf),
        }
    }
    out.extend_from_slice(&text);
    let ms = since_epoch.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Token;

    fn token() -> LoadedToken {
        LoadedToken::new(&Token::new("tok-SECRET-42".into()).unwrap())
    }

    #[test]
    fn hostile_values_stay_on_one_line() {
        let t = token();
        let record = AccessRecord {
            request_id: "id",
            caller: "a\"b\nc",
            handshake_id: Some("x\r\n{\"status\":1}\u{0}"),
            path: "/p",
            method: "POST",
            outcome: "forwarded",
            ..Default::default()
        };
        let line = render(&record, &t);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(*line.last().unwrap(), b'\n');
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(json["caller"], "a\"b\nc");
        assert_eq!(json["token_id"], t.fingerprint.as_str());
    }

    #[test]
    fn every_field_round_trips_through_a_json_parser() {
        let t = token();
        for (peer, millis, shown) in [
            ("10.1.2.3:40000", 12.0, 12.0),
            ("[::1]:8080", 0.0004, 0.0),
            ("[2001:db8::7]:1", 1.2345, 1.235),
            ("255.255.255.255:65535", 99_999.999_6, 100_000.0),
        ] {
            let record = AccessRecord {
                request_id: "r\u{1}\u{1f}\u{7f}é",
                caller: "tab\tback\\slash\u{8}\u{c}",
                peer: peer.parse().unwrap(),
                method: "POST",
                path: "/p",
                status: 502,
                upstream_status: Some(200),
                outcome: "upstream_unavailable",
                duration_ms: millis,
                upstream_ms: Some(millis),
                bytes_in: 7,
                bytes_out: usize::MAX,
                handshake_id: Some(""),
            };
            let line = render(&record, &t);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(json["request_id"], "r\u{1}\u{1f}\u{7f}é");
            assert_eq!(json["caller"], "tab\tback\\slash\u{8}\u{c}");
            assert_eq!(json["peer"], peer);
            assert_eq!(json["status"], 502);
            assert_eq!(json["upstream_status"], 200);
            assert_eq!(json["duration_ms"].as_f64(), Some(shown), "{millis}");
            assert_eq!(json["upstream_ms"].as_f64(), Some(shown));
            assert_eq!(json["bytes_out"].as_u64(), Some(usize::MAX as u64));
            assert_eq!(json["handshake_id"], "");
            let ts = json["ts"].as_str().unwrap();
            assert_eq!(ts.len(), "2026-11-26T10:25:48.123Z".len(), "{ts}");
            assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
        }
        let bare = render(&AccessRecord::default(), &t);
        let json: serde_json::Value = serde_json::from_slice(&bare).unwrap();
        assert!(json.get("upstream_status").is_none() && json.get("handshake_id").is_none());
    }

    #[test]
    fn fields_that_reveal_the_token_are_redacted() {
        let t = token();
        let record = AccessRecord {
            request_id: "tok-SECRET-42",
            caller: "QmVhcmVyIHRvay1TRUNSRVQtNDI",
            handshake_id: Some("see tok-SECRET-42"),
            ..Default::default()
        };
        let line = String::from_utf8(render(&record, &t)).unwrap();
        assert!(!line.contains("tok-SECRET-42"), "{line}");
        assert!(!line.contains("QmVhcmVyIHRvay1TRUNSRVQtNDI"), "{line}");
        assert_eq!(line.matches("[REDACTED]").count(), 3);
    }

    #[test]
    fn long_handshake_ids_are_cut() {
        let long = "h".repeat(1000);
        let record = AccessRecord {
            handshake_id: Some(&long),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&render(&record, &token())).unwrap();
        assert_eq!(
            json["handshake_id"].as_str().unwrap().len(),
            MAX_FIELD_CHARS
        );
    }

    /// Guards against caller-chosen text being cut by bytes rather than characters (cutting
    /// short multi-byte text, or inside a character), or text of exactly the limit being cut.
    #[test]
    fn scrub_cuts_at_the_character_limit() {
        let t = token();
        let at_limit = "é".repeat(MAX_FIELD_CHARS);
        assert_eq!(scrub(&at_limit, &t), at_limit);
        let over = "é".repeat(MAX_FIELD_CHARS + 1);
        assert_eq!(scrub(&over, &t), at_limit);
        let ascii = "h".repeat(MAX_FIELD_CHARS + 1);
        assert_eq!(scrub(&ascii, &t), &ascii[..MAX_FIELD_CHARS]);
        assert_eq!(scrub("orders-service", &t), "orders-service");
        assert_eq!(scrub("", &t), "");
    }

    /// Guards against a field with quotes or backslashes but no control character (or made
    /// of quotes only) reaching the line unescaped, which breaks the JSON or forges keys.
    #[test]
    fn quotes_and_backslashes_alone_are_escaped() {
        let t = token();
        for hostile in [
            "a\"b",
            "\"",
            "\"\"",
            "x\",\"status\":200,\"y\":\"",
            "back\\slash",
            "\\",
        ] {
            let record = AccessRecord {
                caller: hostile,
                request_id: hostile,
                handshake_id: Some(hostile),
                ..Default::default()
            };
            let line = render(&record, &t);
            let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(json["caller"], hostile);
            assert_eq!(json["request_id"], hostile);
            assert_eq!(json["handshake_id"], hostile);
            assert_eq!(json["status"], 0);
        }
    }

    /// Guards against JSON strings in the log being written with escapes other than JSON's
    /// short forms (`\n`, `\t`…), which operators read and grep for, or with wrong `\u00XX`
    /// digits.
    #[test]
    fn json_strings_use_the_short_escapes() {
        for (text, want) in [
            ("plain é", r#""plain é""#),
            ("", r#""""#),
            ("q\"b\\", r#""q\"b\\""#),
            ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
            (
                "\u{0}\u{1}\u{1a}\u{1f} \u{7f}",
                "\"\\u0000\\u0001\\u001a\\u001f \\u007f\"",
            ),
            ("a\nb\"c", r#""a\nb\"c""#),
            // Line ends to other splitters: NEL, LS, PS.
            ("\u{85}\u{2028}\u{2029}", r#""\u0085\u2028\u2029""#),
        ] {
            let mut out = Vec::new();
            json_str(&mut out, text);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
