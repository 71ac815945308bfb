//! The KwikID token: read once from its source, turned into a ready `Authorization` header, and
//! otherwise never touched.
//!
//! [`Token`] prints `[REDACTED]` and is zeroed on drop. What the request path holds is a
//! [`LoadedToken`]: the prebuilt sensitive header plus the token's fingerprint, swapped as one
//! value when the token is reloaded. The bytes a `LoadedToken` holds (the header's, and the
//! forms the access log looks for) live in memory locked against swap (`secret/locked.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::TokenSource;

mod locked;
use locked::LockedBytes;

/// The API token. Neither `Debug` nor `Display` reveals it; it has no `Serialize`.
#[derive(Clone)]
pub struct Token(SecretString);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Why a token could not be loaded. The messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    EnvMissing(String),
    FileUnreadable(String),
    Empty,
    NotAHeaderValue,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EnvMissing(name) => {
                write!(f, "environment variable {name} is not set or not UTF-8")
            }
            Self::FileUnreadable(why) => write!(f, "token file cannot be read: {why}"),
            Self::Empty => f.write_str("token is empty"),
            Self::NotAHeaderValue => f.write_str(
                "token is not a valid header value (it must be visible ASCII without spaces)",
            ),
        }
    }
}

impl std::error::Error for TokenError {}

impl Token {
    /// Trims trailing line endings and refuses what cannot go into `Bearer <token>`.
    pub fn new(raw: String) -> Result<Self, TokenError> {
        let mut raw = Zeroizing::new(raw);
        let len = raw.trim_end_matches(['\r', '\n']).len();
        raw.truncate(len);
        if raw.is_empty() {
            return Err(TokenError::Empty);
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotAHeaderValue);
        }
        // A copy of exactly its length: `SecretString::from` shrinks a longer `String` (one
        // that had a trailing newline), and a reallocation could free a copy unzeroed.
        Ok(Self(SecretString::from(raw.as_str().to_owned())))
    }

    /// Reads the token from its configured source.
    pub fn read(source: &TokenSource) -> Result<Self, TokenError> {
        match source {
            TokenSource::Env(name) => match std::env::var(name) {
                Ok(value) => Self::new(value),
                Err(_) => Err(TokenError::EnvMissing(name.clone())),
            },
            TokenSource::File(path) => {
                let bytes =
                    Zeroizing::new(std::fs::read(path).map_err(|e| {
                        TokenError::FileUnreadable(format!("{}: {e}", path.display()))
                    })?);
                let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::NotAHeaderValue)?;
                Self::new(text.to_owned())
            }
        }
    }

    /// The secret itself, for the two places that need it (the header and hashes).
    pub(crate) fn expose(&self) -> &SecretString {
        &self.0
    }

    /// The operator-visible name of this token: the first 8 hex characters of
    /// SHA-256 over `"kwikid-gateway:" + token`.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"kwikid-gateway:")
            .chain_update(self.0.expose_secret().as_bytes())
            .finalize();
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// When the token expires, if it is a JWT with a readable `exp` (SPEC §11); the parser
    /// gets the bytes and gives back only a time.
    pub fn expiry(&self) -> Option<SystemTime> {
        crate::token_watch::jwt::expiry(self.0.expose_secret().as_bytes())
    }

    /// `Bearer <token>` as a header value marked sensitive. Its bytes are a locked buffer of
    /// their own, not a copy: `HeaderValue` keeps the `Bytes` it is given, and its clones share
    /// them; the buffer is zeroed and unlocked when the last clone goes.
    fn bearer_header(&self) -> HeaderValue {
        let bytes = LockedBytes::concat(&[b"Bearer ", self.0.expose_secret().as_bytes()]);
        let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(bytes))
            .expect("visible ASCII was checked in Token::new");
        value.set_sensitive(true);
        value
    }

    /// Byte strings that would reveal this token if they appeared in output: the token, and
    /// the standard and URL-safe base64 of it and of `Bearer <token>` (the form
    /// `redirection_url` carries), and each `.`-separated segment of at least
    /// [`MIN_REVEALING_SEGMENT`] bytes (a JWT's payload and signature are parts of the token,
    /// SPEC §11). Where two forms give the same text it is listed once.
    pub fn revealing_forms(&self) -> Vec<Zeroizing<Vec<u8>>> {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let token = self.0.expose_secret().as_bytes();
        let bearer = Zeroizing::new([b"Bearer ".as_slice(), token].concat());
        let mut forms = vec![Zeroizing::new(token.to_vec())];
        for engine in [STANDARD, URL_SAFE] {
            for secret in [token, bearer.as_slice()] {
                let mut s = Zeroizing::new(engine.encode(secret).into_bytes());
                // A trailing '=' depends on what follows; match the unpadded stem.
                while s.last() == Some(&b'=') {
                    s.pop();
                }
                if !forms.contains(&s) {
                    forms.push(s);
                }
            }
        }
        if token.contains(&b'.') {
            for segment in token.split(|&b| b == b'.') {
                let segment = Zeroizing::new(segment.to_vec());
                if segment.len() >= MIN_REVEALING_SEGMENT && !forms.contains(&segment) {
                    forms.push(segment);
                }
            }
        }
        forms
    }
}

/// Shorter segments of a dotted token are not looked for on their own: a few characters would
/// match innocent text, and a JWT's segments are far longer.
pub const MIN_REVEALING_SEGMENT: usize = 16;

/// A token ready for the request path.
pub struct LoadedToken {
    /// `Authorization: Bearer <token>`, built once, marked sensitive.
    pub header: HeaderValue,
    /// See [`Token::fingerprint`]; safe to log.
    pub fingerprint: String,
    /// When this token was loaded, for the token-age metric.
    pub loaded_at: Instant,
    /// See [`Token::expiry`]; safe to log.
    pub expires: Option<SystemTime>,
    /// See [`Token::revealing_forms`]; the access log refuses fields that contain one.
    revealing: Vec<LockedBytes>,
    /// The length of the shortest revealing form: shorter text cannot hold any, even
    /// percent-encoded (an escape is longer than the byte it stands for).
    shortest: usize,
}

impl LoadedToken {
    pub fn new(token: &Token) -> Self {
        let revealing: Vec<LockedBytes> = token
            .revealing_forms()
            .iter()
            .map(|form| LockedBytes::concat(&[form]))
            .collect();
        let shortest = revealing.iter().map(|form| form.len()).min().unwrap_or(0);
        Self {
            header: token.bearer_header(),
            fingerprint: token.fingerprint(),
            loaded_at: Instant::now(),
            expires: token.expiry(),
            revealing,
            shortest,
        }
    }

    /// Whether `text` contains the token in any of its revealing forms, as is or with any of
    /// its bytes written as `%XX` (a form sent in a URL, wholly or partly percent-encoded).
    pub fn is_revealed_in(&self, text: &[u8]) -> bool {
        if text.len() < self.shortest {
            return false;
        }
        let plain = self.revealing.iter().any(|needle| {
            text.len() >= needle.len() && memchr::memmem::find(text, needle).is_some()
        });
        plain
            || (memchr::memchr(b'%', text).is_some()
                && self.revealing.iter().any(|needle| {
                    (0..text.len()).any(|at| starts_with_escaped(&text[at..], needle))
                }))
    }
}

/// Whether `text` starts with `needle`, each byte of it written as itself or as a `%XX` escape
/// (hex digits in either case). Matching from every offset, rather than decoding the text
/// once, finds a form that follows a stray `%`: decoded left to right, `%` + `a3…` would
/// swallow the form's first characters into one escape.
fn starts_with_escaped(mut text: &[u8], needle: &[u8]) -> bool {
    for (i, &want) in needle.iter().enumerate() {
        let escaped = escape(text) == Some(want);
        if text.first() == Some(&want) {
            // Only a '%' can be both itself and an escape (`%25`): try the escape as well.
            if escaped && starts_with_escaped(&text[3..], &needle[i + 1..]) {
                return true;
            }
            text = &text[1..];
        } else if escaped {
            text = &text[3..];
        } else {
            return false;
        }
    }
    true
}

/// The byte a `%XX` escape at the start of `text` stands for.
fn escape(text: &[u8]) -> Option<u8> {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    match text {
        [b'%', hi, lo, ..] => Some((hex(*hi)? << 4) | hex(*lo)?),
        _ => None,
    }
}

impl fmt::Debug for LoadedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedToken")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The token in use, swapped atomically when it is reloaded.
pub struct TokenStore {
    current: ArcSwap<LoadedToken>,
}

impl TokenStore {
    pub fn new(token: &Token) -> Self {
        Self {
            current: ArcSwap::from_pointee(LoadedToken::new(token)),
        }
    }

    pub fn current(&self) -> Arc<LoadedToken> {
        self.current.load_full()
    }

    /// Replaces the token; returns the new fingerprint.
    pub fn replace(&self, token: &Token) -> String {
        let loaded = LoadedToken::new(token);
        let fingerprint = loaded.fingerprint.clone();
        self.current.store(Arc::new(loaded));
        fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let t = Token::new("s3cr3t-token".into()).unwrap();
        assert_eq!(format!("{t:?}"), "[REDACTED]");
        assert_eq!(format!("{t}"), "[REDACTED]");
        let loaded = LoadedToken::new(&t);
        assert!(!format!("{loaded:?}").contains("s3cr3t"));
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, loaded.header.clone());
        assert!(!format!("{headers:?}").contains("s3cr3t"));
    }

    /// SECURITY.md promises these bytes are locked against swap: the header's own bytes (the
    /// ones every request clones), not a copy of them.
    #[test]
    fn the_header_and_the_revealing_forms_live_in_locked_pages() {
        let loaded = LoadedToken::new(&Token::new("tok-locked-1".into()).unwrap());
        let clone = loaded.header.clone();
        assert_eq!(clone.as_bytes(), b"Bearer tok-locked-1");
        assert!(locked::is_locked(clone.as_bytes()));
        assert!(loaded.revealing.iter().all(|form| locked::is_locked(form)));
    }

    #[test]
    fn trailing_newlines_are_trimmed_and_empty_refused() {
        let t = Token::new("abc\r\n".into()).unwrap();
        assert_eq!(LoadedToken::new(&t).header.to_str().unwrap(), "Bearer abc");
        assert_eq!(Token::new("\n".into()).unwrap_err(), TokenError::Empty);
    }

    #[test]
    fn invalid_header_values_are_refused_without_echo() {
        for bad in ["a b", "a\nb", "tok\u{e9}n", "a\tb"] {
            let e = Token::new(bad.into()).unwrap_err();
            assert_eq!(e, TokenError::NotAHeaderValue);
            assert!(!e.to_string().contains(bad));
        }
    }

    #[test]
    fn fingerprint_is_sha256_of_prefixed_token() {
        // printf 'kwikid-gateway:abc' | sha256sum
        let t = Token::new("abc".into()).unwrap();
        assert_eq!(t.fingerprint(), "b01eb90d");
    }

    #[test]
    fn revealing_forms_are_detected() {
        let loaded = LoadedToken::new(&Token::new("tok-123".into()).unwrap());
        assert!(loaded.is_revealed_in(b"x tok-123 y"));
        assert!(loaded.is_revealed_in(b"QmVhcmVyIHRvay0xMjM=")); // base64("Bearer tok-123")
        assert!(!loaded.is_revealed_in(b"tok-12"));
    }

    /// Guards against a JWT's payload or signature passing on its own (SPEC §11).
    #[test]
    fn each_long_segment_of_a_dotted_token_is_revealing() {
        let loaded = LoadedToken::new(
            &Token::new(
                "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE4MDEzNTM2MDB9.c2lnbmF0dXJlLWJ5dGVz".into(),
            )
            .unwrap(),
        );
        assert!(loaded.is_revealed_in(b"x eyJleHAiOjE4MDEzNTM2MDB9 y"));
        assert!(loaded.is_revealed_in(b"c2lnbmF0dXJlLWJ5dGVz"));
        assert!(loaded.is_revealed_in(b"eyJhbGciOiJIUzI1NiJ9"));
        assert!(!loaded.is_revealed_in(b"eyJleHAiOjE4MDEz"));
        let short = LoadedToken::new(&Token::new("abc.defghijklmnopqrstu".into()).unwrap());
        assert!(!short.is_revealed_in(b"abc"), "too short to look for alone");
        assert!(short.is_revealed_in(b"defghijklmnopqrstu"));
    }

    #[test]
    fn url_safe_and_percent_encoded_forms_are_detected() {
        // base64("k~~~?tok") is "a35+fj90b2s", URL-safe "a35-fj90b2s".
        let loaded = LoadedToken::new(&Token::new("k~~~?tok".into()).unwrap());
        assert!(loaded.is_revealed_in(b"a35+fj90b2s"));
        assert!(loaded.is_revealed_in(b"a35-fj90b2s"));
        assert!(loaded.is_revealed_in(b"x=a35%2bfj90b2s&y"));
        assert!(loaded.is_revealed_in(b"%6B%7E%7E%7E%3F%74%6F%6B"));
        assert!(loaded.is_revealed_in(b"k~~~%3Ftok"));
        assert!(!loaded.is_revealed_in(b"k~~~%3Fto%"));
        assert!(!loaded.is_revealed_in(b"a35%2Xfj90b2s"));
        // A stray '%' before the form does not hide it.
        assert!(loaded.is_revealed_in(b"%a35%2Bfj90b2s"));
        assert!(loaded.is_revealed_in(b"%4a35%2Bfj90b2s"));
        let percent = LoadedToken::new(&Token::new("p%25q%".into()).unwrap());
        assert!(percent.is_revealed_in(b"xp%25q%y"));
        assert!(percent.is_revealed_in(b"p%2525q%25"));
        assert!(percent.is_revealed_in(b"%70%25%32%35%71%25"));
        assert!(!percent.is_revealed_in(b"p%25q"));
    }
}
