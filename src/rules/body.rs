//! The request body, once read, checked as DigiLocker init JSON (KwikID's page: both fields
//! optional strings).

use std::borrow::Cow;

use serde::Deserialize;

/// The fields of a DigiLocker init body that the gateway looks at. Other keys pass through.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct InitBody<'a> {
    #[serde(default, borrow)]
    pub handshake_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub callback_url: Option<Cow<'a, str>>,
}

/// A JSON object whose `handshake_id` and `callback_url`, when present, are strings or null.
///
/// # Errors
/// The sentence the caller's `400 invalid_body` carries.
pub fn parse_init(body: &[u8]) -> Result<InitBody<'_>, &'static str> {
    // serde would also accept a JSON array for a struct; only an object is a valid body.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("The request body must be a JSON object.");
    }
    // JSON is UTF-8 (RFC 8259 §8.1); serde_json does not check the values it skips, so a
    // body with other bytes in a field the gateway ignores would otherwise reach KwikID.
    let Ok(text) = std::str::from_utf8(body) else {
        return Err("The request body must be UTF-8 JSON.");
    };
    // From the checked text, serde_json does not check each string again.
    serde_json::from_str(text).map_err(|_| {
        "The request body must be a JSON object whose handshake_id and callback_url are strings or null."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_bodies() {
        assert_eq!(parse_init(b"{}").unwrap(), InitBody::default());
        assert_eq!(
            parse_init(b" {\"handshake_id\": null, \"x\": [1]}").unwrap(),
            InitBody::default()
        );
        let b = parse_init(br#"{"handshake_id":"s-1","callback_url":"https://a/b"}"#).unwrap();
        assert_eq!(b.handshake_id.as_deref(), Some("s-1"));
        assert_eq!(b.callback_url.as_deref(), Some("https://a/b"));
        let escaped = parse_init(br#"{"handshake_id":"a\"b"}"#).unwrap();
        assert_eq!(escaped.handshake_id.as_deref(), Some("a\"b"));
    }

    #[test]
    fn invalid_bodies() {
        for body in [
            &b""[..],
            b"   ",
            b"[]",
            b"[null,null]",
            b"null",
            b"\"x\"",
            b"{",
            b"{} x",
            br#"{"handshake_id":5}"#,
            br#"{"callback_url":{}}"#,
            br#"{"handshake_id":"a","handshake_id":"b"}"#,
            b"\xff\xfe",
        ] {
            assert!(
                parse_init(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
