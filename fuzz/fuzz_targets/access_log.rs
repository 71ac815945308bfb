//! `access_log::render` with caller-chosen fields that may embed the token or its base64
//! forms: exactly one line, valid JSON, caller-chosen fields at most 128 characters, and
//! neither the raw line nor any decoded field ever contains the token, the base64 of the
//! token or the base64 of `Bearer <token>`.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kwikid_gateway::access_log::{AccessRecord, render};
use kwikid_gateway::secret::{LoadedToken, Token};
use libfuzzer_sys::fuzz_target;

/// A token as an API issues them: 16–80 characters of `[A-Za-z0-9_-]`. (Characters JSON
/// escapes, or a token short enough to occur in the line's fixed keys, would make "the line
/// contains the token" meaningless.)
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

#[derive(Arbitrary, Debug)]
struct Field {
    before: String,
    /// 0: nothing, 1: the token, 2: base64(token), 3: base64("Bearer " + token), 4: padded
    /// base64("Bearer " + token), as in `redirection_url`'s `authorization` parameter.
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

fn unpadded(s: String) -> String {
    s.trim_end_matches('=').to_owned()
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
    let bearer = format!("Bearer {token}");
    let forms = [
        token.clone(),
        STANDARD.encode(&token),
        STANDARD.encode(&bearer),
        unpadded(STANDARD.encode(&token)),
        unpadded(STANDARD.encode(&bearer)),
    ];
    let build = |f: &Field| {
        let middle = match f.embed % 5 {
            0 => "",
            1 => forms[0].as_str(),
            2 => forms[1].as_str(),
            3 => forms[4].as_str(),
            _ => forms[2].as_str(),
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
