//! `access_log::render` with caller-chosen fields that may embed the token in any of its
//! forms: exactly one line, valid JSON, caller-chosen fields at most 128 characters, and
//! neither the raw line nor any decoded field ever contains a form of the token (see
//! [`forms`]; the list is written out here, not taken from the gateway's scrubber).
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use kwikid_gateway::access_log::{AccessRecord, render};
use kwikid_gateway::secret::{LoadedToken, Token};
use libfuzzer_sys::fuzz_target;

/// A token as an API issues them: 16–80 characters of `[A-Za-z0-9_-]`, plus `~` and `?`, the
/// visible ASCII whose base64 differs between the standard and URL-safe alphabets (`~` in
/// the third byte of a group encodes to `+` or `-`, `?` to `/` or `_`). (Characters JSON
/// escapes, or a token short enough to occur in the line's fixed keys, would make "the line
/// contains the token" meaningless.)
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~?";

#[derive(Arbitrary, Debug)]
struct Field {
    before: String,
    /// 0: nothing; n: the form `forms(token)[n - 1]` (modulo their count).
    embed: u8,
    after: String,
}

#[derive(Arbitrary, Debug)]
struct Input {
    token: Vec<u8>,
    request_id: Field,
    caller: Field,
    method: Field,
    path: Field,
    handshake_id: Option<Field>,
    status: u16,
    upstream_status: Option<u16>,
    outcome: u8,
    duration_us: u32,
    upstream_us: Option<u32>,
    bytes_in: u16,
    bytes_out: u16,
    peer: ([u8; 4], u16),
}

const OUTCOMES: [&str; 12] = [
    "forwarded",
    "caller_not_allowed",
    "no_route",
    "method_not_allowed",
    "body_too_large",
    "body_timeout",
    "invalid_body",
    "callback_not_allowed",
    "rate_limited",
    "upstream_unavailable",
    "upstream_timeout",
    "other",
];

/// `text` with every byte outside RFC 3986's unreserved set as `%XX`, in upper- or
/// lower-case hex.
fn percent_encoded(text: &str, upper: bool) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Every form of `token` that reveals it: the token and `Bearer <token>`; the standard and
/// URL-safe base64 of both, padded and unpadded, each bare and after `Bearer ` (the padded
/// standard base64 of `Bearer <token>` is `redirection_url`'s `authorization` parameter); and
/// each of those percent-encoded (upper- and lower-case hex, and every byte).
fn forms(token: &str) -> Vec<String> {
    let bearer = format!("Bearer {token}");
    let mut plain = vec![token.to_owned(), bearer.clone()];
    for engine in [STANDARD, URL_SAFE] {
        for secret in [token, bearer.as_str()] {
            let padded = engine.encode(secret);
            let unpadded = padded.trim_end_matches('=').to_owned();
            for encoded in [padded, unpadded] {
                plain.push(format!("Bearer {encoded}"));
                plain.push(encoded);
            }
        }
    }
    let mut all = plain.clone();
    for form in &plain {
        all.push(percent_encoded(form, true));
        all.push(percent_encoded(form, false));
        all.push(form.bytes().map(|b| format!("%{b:02X}")).collect());
    }
    all.sort();
    all.dedup();
    all
}

fuzz_target!(|input: Input| {
    let mut token: String = input
        .token
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .take(80)
        .collect();
    while token.len() < 16 {
        token.push(ALPHABET[token.len() * 7 % ALPHABET.len()] as char);
    }
    let loaded = LoadedToken::new(&Token::new(token.clone()).expect("a valid token"));
    let forms = forms(&token);
    let build = |f: &Field| {
        let middle = match usize::from(f.embed) % (forms.len() + 1) {
            0 => "",
            n => forms[n - 1].as_str(),
        };
        format!("{}{middle}{}", f.before, f.after)
    };
    let request_id = build(&input.request_id);
    let caller = build(&input.caller);
    let method = build(&input.method);
    let path = build(&input.path);
    let handshake_id = input.handshake_id.as_ref().map(build);

    let record = AccessRecord {
        request_id: &request_id,
        caller: &caller,
        peer: std::net::SocketAddr::from(input.peer),
        method: &method,
        path: &path,
        status: input.status,
        upstream_status: input.upstream_status,
        outcome: OUTCOMES[usize::from(input.outcome) % OUTCOMES.len()],
        duration_ms: f64::from(input.duration_us) / 1000.0,
        upstream_ms: input.upstream_us.map(|us| f64::from(us) / 1000.0),
        bytes_in: usize::from(input.bytes_in),
        bytes_out: usize::from(input.bytes_out),
        handshake_id: handshake_id.as_deref(),
    };
    let line = render(&record, &loaded);

    assert_eq!(line.last(), Some(&b'\n'), "the line ends with a newline");
    assert_eq!(
        line.iter().filter(|&&b| b == b'\n').count(),
        1,
        "exactly one line"
    );
    let text = std::str::from_utf8(&line).expect("the line is UTF-8");
    for form in &forms {
        assert!(
            !text.contains(form.as_str()),
            "the raw line reveals the token"
        );
    }
    let json: serde_json::Value = serde_json::from_str(text).expect("the line is JSON");
    let object = json.as_object().expect("the line is a JSON object");
    for (key, value) in object {
        if let Some(s) = value.as_str() {
            for form in &forms {
                assert!(!s.contains(form.as_str()), "field {key} reveals the token");
            }
        }
    }
    for key in ["request_id", "caller", "method", "path", "handshake_id"] {
        if let Some(s) = object.get(key) {
            let s = s.as_str().expect("a string field");
            assert!(
                s.chars().count() <= 128,
                "{key} is longer than 128 characters"
            );
        }
    }
    assert_eq!(object["token_id"], loaded.fingerprint.as_str());
    assert_eq!(object["status"], input.status);
    assert_eq!(object.contains_key("handshake_id"), handshake_id.is_some());
});
