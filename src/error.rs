//! Every answer the gateway makes itself: one enum, one mapping to status, code and body.
//!
//! Bodies are fixed sentences. Nothing the caller sent and nothing KwikID answered is ever
//! echoed, so an error body can carry neither the token nor a `redirection_url`.

use http::HeaderValue;

use crate::wire;

/// Header that marks a response as the gateway's own, with the error code as value.
pub const GATEWAY_ERROR: &str = "x-gateway-error";

/// Why the gateway answered instead of KwikID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    CallerNotAllowed,
    NoRoute,
    MethodNotAllowed {
        allow: HeaderValue,
    },
    BodyTooLarge,
    /// The body did not arrive within `request_timeout`.
    BodyTimeout,
    InvalidBody(&'static str),
    CallbackNotAllowed,
    RateLimited {
        retry_after_secs: u64,
    },
    UpstreamUnavailable,
    UpstreamTimeout,
    /// Not HTTP/1.1 the gateway will read: a malformed head or ambiguous framing.
    BadRequest,
    /// More than 64 headers or 16 KiB of head.
    HeadTooLarge,
    /// A head that started but did not finish within `header_read_timeout`.
    HeadTimeout,
    /// The body broke off, or its chunked framing is malformed.
    BodyUnreadable,
}

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Self::CallerNotAllowed => 403,
            Self::NoRoute => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::BodyTooLarge => 413,
            Self::BodyTimeout | Self::HeadTimeout => 408,
            Self::InvalidBody(_) | Self::BadRequest | Self::BodyUnreadable => 400,
            Self::CallbackNotAllowed => 422,
            Self::RateLimited { .. } => 429,
            Self::UpstreamUnavailable => 502,
            Self::UpstreamTimeout => 504,
            Self::HeadTooLarge => 431,
        }
    }

    /// The `x-gateway-error` value and the access log's `outcome`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CallerNotAllowed => "caller_not_allowed",
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::InvalidBody(_) | Self::BodyUnreadable => "invalid_body",
            Self::CallbackNotAllowed => "callback_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::BadRequest => "bad_request",
            Self::HeadTooLarge => "headers_too_large",
            Self::HeadTimeout => "header_timeout",
        }
    }

    fn sentence(&self) -> &'static str {
        match self {
            Self::CallerNotAllowed => "This caller is not allowed to use the gateway.",
            Self::NoRoute => "No route matches this path.",
            Self::MethodNotAllowed { .. } => "This method is not allowed on this path.",
            Self::BodyTooLarge => "The request body is larger than the gateway accepts.",
            Self::BodyTimeout => "The request body did not arrive in time.",
            Self::InvalidBody(why) => why,
            Self::CallbackNotAllowed => "callback_url is not an https URL on an allowed host.",
            Self::RateLimited { .. } => {
                "Too many requests; retry after the number of seconds in Retry-After."
            }
            Self::UpstreamUnavailable => "KwikID could not be reached or did not answer properly.",
            Self::UpstreamTimeout => "KwikID did not answer in time.",
            Self::BadRequest => "The request is not valid HTTP/1.1.",
            Self::HeadTooLarge => "The request has more headers than the gateway accepts.",
            Self::HeadTimeout => "The request head did not arrive in time.",
            Self::BodyUnreadable => "The request body could not be read.",
        }
    }

    /// Writes the whole answer: JSON `{"error": "<sentence>"}` and `x-gateway-error: <code>`,
    /// with the request's id, and `connection: close` when the connection ends after it.
    pub fn render(&self, out: &mut Vec<u8>, request_id: &[u8], closing: bool) {
        let sentence = self.sentence();
        wire::status_line(out, self.status());
        wire::header(out, b"content-type", b"application/json");
        wire::header(out, GATEWAY_ERROR.as_bytes(), self.code().as_bytes());
        match self {
            Self::MethodNotAllowed { allow } => wire::header(out, b"allow", allow.as_bytes()),
            Self::RateLimited { retry_after_secs } => wire::header(
                out,
                b"retry-after",
                itoa::Buffer::new().format(*retry_after_secs).as_bytes(),
            ),
            _ => {}
        }
        wire::header(out, b"x-request-id", request_id);
        if closing {
            wire::header(out, b"connection", b"close");
        }
        out.extend_from_slice(b"date: ");
        wire::date(out);
        out.extend_from_slice(b"\r\n");
        // The sentences are fixed ASCII with nothing JSON must escape (a test checks it).
        wire::content_length(out, BODY_PREFIX.len() + sentence.len() + BODY_SUFFIX.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(BODY_PREFIX);
        out.extend_from_slice(sentence.as_bytes());
        out.extend_from_slice(BODY_SUFFIX);
    }

    /// The length of the body [`Self::render`] writes, for the access log.
    pub fn body_len(&self) -> usize {
        BODY_PREFIX.len() + self.sentence().len() + BODY_SUFFIX.len()
    }
}

const BODY_PREFIX: &[u8] = b"{\"error\":\"";
const BODY_SUFFIX: &[u8] = b"\"}";

#[cfg(test)]
mod tests {
    use super::*;

    fn every() -> Vec<Reject> {
        vec![
            Reject::CallerNotAllowed,
            Reject::NoRoute,
            Reject::MethodNotAllowed {
                allow: HeaderValue::from_static("POST"),
            },
            Reject::BodyTooLarge,
            Reject::BodyTimeout,
            Reject::InvalidBody("The request body must be a JSON object."),
            Reject::CallbackNotAllowed,
            Reject::RateLimited {
                retry_after_secs: 3,
            },
            Reject::UpstreamUnavailable,
            Reject::UpstreamTimeout,
            Reject::BadRequest,
            Reject::HeadTooLarge,
            Reject::HeadTimeout,
            Reject::BodyUnreadable,
        ]
    }

    /// The head and body of a rendered answer, split at the blank line.
    fn rendered(reject: &Reject, closing: bool) -> (String, String) {
        let mut out = Vec::new();
        reject.render(&mut out, b"req-1", closing);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    }

    #[test]
    fn every_answer_is_json_with_its_code_and_exact_length() {
        for reject in every() {
            let (head, body) = rendered(&reject, false);
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["error"], reject.sentence());
            assert_eq!(body.len(), reject.body_len());
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", reject.status())),
                "{head}"
            );
            for line in [
                format!("x-gateway-error: {}", reject.code()),
                format!("content-length: {}", body.len()),
                "content-type: application/json".to_owned(),
                "x-request-id: req-1".to_owned(),
            ] {
                assert!(head.contains(&line), "{line} missing from {head}");
            }
            assert!(!head.contains("connection: close"));
        }
    }

    #[test]
    fn rate_limited_carries_retry_after_and_405_carries_allow() {
        let (head, _) = rendered(
            &Reject::RateLimited {
                retry_after_secs: 3,
            },
            true,
        );
        assert!(head.contains("\r\nretry-after: 3\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        let (head, _) = rendered(
            &Reject::MethodNotAllowed {
                allow: HeaderValue::from_static("POST"),
            },
            false,
        );
        assert!(head.contains("\r\nallow: POST\r\n"), "{head}");
    }
}
