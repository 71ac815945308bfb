//! Every answer the gateway makes itself: one enum, one mapping to status, code and body.
//!
//! Bodies are fixed sentences. Nothing the caller sent and nothing KwikID answered is ever
//! echoed, so an error body can carry neither the token nor a `redirection_url`.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

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
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::CallerNotAllowed => StatusCode::FORBIDDEN,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Self::CallbackNotAllowed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
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
            Self::InvalidBody(_) => "invalid_body",
            Self::CallbackNotAllowed => "callback_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
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
        }
    }

    /// The response: JSON `{"error": "<sentence>"}` and `x-gateway-error: <code>`.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "error": self.sentence() }).to_string();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(GATEWAY_ERROR, HeaderValue::from_static(self.code()));
        match self {
            Self::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, allow);
            }
            Self::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn rate_limited_carries_retry_after_and_code() {
        let r = Reject::RateLimited {
            retry_after_secs: 3,
        }
        .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "3");
        assert_eq!(r.headers()[GATEWAY_ERROR], "rate_limited");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .starts_with("Too many requests")
        );
    }
}
