//! A JWT's expiry, read without checking its signature: KwikID is the token's audience and
//! decides whether it is valid; the gateway only wants to warn before it lapses (SPEC §11).
//!
//! A JWT in compact form (RFC 7519 §3, RFC 7515 §7.1) is three base64url segments without
//! padding, joined by `.`; the second is a JSON object whose `exp` (§4.1.4) is a NumericDate:
//! seconds since the Unix epoch, possibly with a fraction. Anything else (not three segments,
//! padding or other alphabets, a payload that is not a JSON object, no `exp`, an `exp` that is
//! not a number or not between 1970 and 9999) is "no readable expiry", never an error.
//!
//! Only `secret` calls this, with the token's bytes; what comes back is a time and never holds
//! a byte of the token. The decoded segments are zeroed when dropped.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use zeroize::Zeroizing;

/// 9999-12-31T23:59:59Z: the last second RFC 3339 can write.
const LATEST: f64 = 253_402_300_799.0;

/// The claims this reads; every other claim is skipped without being kept.
#[derive(Deserialize)]
struct Claims {
    exp: Option<f64>,
}

/// When the JWT `token` expires, if it is one with a readable `exp`.
pub fn expiry(token: &[u8]) -> Option<SystemTime> {
    let mut segments = token.split(|&b| b == b'.');
    let (header, payload, signature) = (segments.next()?, segments.next()?, segments.next()?);
    if segments.next().is_some() || header.is_empty() || payload.is_empty() {
        return None;
    }
    // Every segment must be base64url (the decoder refuses padding and the other alphabet);
    // an unsecured JWT (RFC 7519 §6.1) has an empty signature.
    decode(header)?;
    decode(signature)?;
    let payload = decode(payload)?;
    // serde would also read a struct from a JSON array; the payload must be an object.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let exp = serde_json::from_slice::<Claims>(&payload).ok()?.exp?;
    if !(exp.is_finite() && (0.0..=LATEST).contains(&exp)) {
        return None;
    }
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(exp.floor() as u64))
}

fn decode(segment: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    URL_SAFE_NO_PAD.decode(segment).ok().map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    /// A JWT with this payload: an HS256 header and a made-up signature.
    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(payload),
            b64("not-a-real-signature-but-32-byte")
        )
    }

    fn at(secs: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Guards against a numeric `exp`, whole or fractional, among other claims, being missed.
    #[test]
    fn a_numeric_exp_is_read() {
        let token = jwt(r#"{"sub":"acct-1","exp":1801094400,"iat":1700000000}"#);
        assert_eq!(expiry(token.as_bytes()), at(1_801_094_400));
        assert_eq!(
            expiry(jwt(r#" {"exp": 1801094400.75}"#).as_bytes()),
            at(1_801_094_400)
        );
        assert_eq!(expiry(jwt(r#"{"exp":0}"#).as_bytes()), at(0));
        let unsecured = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"exp":5}"#));
        assert_eq!(expiry(unsecured.as_bytes()), at(5));
    }

    /// Guards against a token that is not a JWT with a usable `exp` being given an expiry,
    /// or making the parser fail: each of these is "no readable expiry".
    #[test]
    fn anything_else_has_no_readable_expiry() {
        let good = jwt(r#"{"exp":1801094400}"#);
        let (header, rest) = good.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        // The same kind of payload in standard base64, whose alphabet is not base64url's.
        let standard = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(r#"{"exp":1801094400,"x":">>>???"}"#);
        assert!(standard.contains(['+', '/']), "{standard}");
        for token in [
            String::new(),
            "kwk_live_Zm9vYmFyLXNlY3JldC10b2tlbg-7f3a9c1e5b".to_owned(),
            format!("{header}.{payload}"),
            format!("{header}.{payload}.{signature}.{signature}"),
            format!(".{payload}.{signature}"),
            format!("{header}..{signature}"),
            format!("{header}.{payload}=.{signature}"),
            format!("{header}.{standard}.{signature}"),
            format!("{header}.{payload}.{signature}=="),
            format!("{header}.{payload}.a"),
            format!("{header}.{}.{signature}", b64("not json")),
            jwt(r#"[1801094400]"#),
            jwt(r#"{"exp":"1801094400"}"#),
            jwt(r#"{"exp":null}"#),
            jwt(r#"{"sub":"no exp"}"#),
            jwt(r#"{"exp":-1}"#),
            jwt(r#"{"exp":1e300}"#),
            jwt(r#"{"exp":1801094400,"exp":1}"#),
        ] {
            assert_eq!(expiry(token.as_bytes()), None, "{token}");
        }
    }

    proptest::proptest! {
        /// Guards against a panic on whatever the operator put in the token file: strings of
        /// JWT-like characters, and JWTs whose payload is any bytes at all.
        #[test]
        fn never_panics(
            text in "[A-Za-z0-9_=+/.-]{0,120}",
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let _ = expiry(text.as_bytes());
            let token = format!("{}.{}.sig", b64("{}"), URL_SAFE_NO_PAD.encode(&payload));
            let _ = expiry(token.as_bytes());
        }

        /// Guards against an `exp` in the supported range being misread.
        #[test]
        fn every_whole_exp_reads_back(exp in 0u64..253_402_300_799) {
            let token = jwt(&format!(r#"{{"exp":{exp}}}"#));
            proptest::prop_assert_eq!(expiry(token.as_bytes()), at(exp));
        }
    }
}
