//! Why the gateway answers instead of KwikID: every refusal a step can make, with its status
//! and its code (the `x-gateway-error` value). [`super::rescue`] renders them, in one place.

use http::header::HeaderValue;

/// Why the gateway answered instead of KwikID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    CallerNotAllowed,
    /// `rate_limit.unknown_callers = "deny"` and the caller is not in `[[callers]]` (SPEC §10).
    CallerNotListed,
    /// A listed caller on a route outside its `routes` (SPEC §10).
    RouteNotForCaller,
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
    /// The body broke off, or its framing is malformed.
    BodyUnreadable,
    /// An HTTP/2 head of more than 64 fields (hyper refuses such HTTP/1.1 heads itself).
    TooManyHeaders,
    /// `listen.shutdown_grace` ended (or a second signal came) before the answer: the
    /// process is about to exit (SPEC §7).
    ShuttingDown,
}

/// Every `x-gateway-error` code the gateway can send, with its status: the one list that
/// `openapi.yaml`'s enum (tests/openapi.rs) and the metrics' zeroed series are held to.
/// [`Reject::code`] and [`Reject::status`] give one of these pairs for every refusal (a
/// unit test below holds them together).
pub const CODES: &[(&str, u16)] = &[
    ("caller_not_allowed", 403),
    ("no_route", 404),
    ("method_not_allowed", 405),
    ("body_timeout", 408),
    ("body_too_large", 413),
    ("invalid_body", 400),
    ("callback_not_allowed", 422),
    ("rate_limited", 429),
    ("headers_too_large", 431),
    ("upstream_unavailable", 502),
    ("upstream_timeout", 504),
    ("shutting_down", 503),
];

/// The codes of [`CODES`] a request can get before a route matched (trust, then the head's
/// size and the route itself): its metrics count it under `route="none"`.
pub const BEFORE_ROUTE: &[&str] = &["caller_not_allowed", "headers_too_large", "no_route"];

impl Reject {
    pub fn status(&self) -> u16 {
        match self {
            Self::CallerNotAllowed | Self::CallerNotListed | Self::RouteNotForCaller => 403,
            Self::NoRoute => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::BodyTooLarge => 413,
            Self::BodyTimeout => 408,
            Self::TooManyHeaders => 431,
            Self::InvalidBody(_) | Self::BodyUnreadable => 400,
            Self::CallbackNotAllowed => 422,
            Self::RateLimited { .. } => 429,
            Self::UpstreamUnavailable => 502,
            Self::UpstreamTimeout => 504,
            Self::ShuttingDown => 503,
        }
    }

    /// The `x-gateway-error` value and the access log's `outcome`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CallerNotAllowed | Self::CallerNotListed | Self::RouteNotForCaller => {
                "caller_not_allowed"
            }
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::InvalidBody(_) | Self::BodyUnreadable => "invalid_body",
            Self::CallbackNotAllowed => "callback_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::TooManyHeaders => "headers_too_large",
            Self::ShuttingDown => "shutting_down",
        }
    }

    /// The fixed sentence of the JSON body: never anything the caller sent or KwikID answered.
    pub(super) fn sentence(&self) -> &'static str {
        match self {
            Self::CallerNotAllowed => "This caller is not allowed to use the gateway.",
            Self::CallerNotListed => "This caller is not one of the gateway's named callers.",
            Self::RouteNotForCaller => "This caller is not allowed to use this route.",
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
            Self::TooManyHeaders => "The request has more headers than the gateway accepts.",
            Self::BodyUnreadable => "The request body could not be read.",
            Self::ShuttingDown => {
                "The gateway is shutting down and did not finish this request; send it again."
            }
        }
    }

    /// The request's body was cut short: too large, too slow, or broken.
    pub fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            Self::BodyTooLarge | Self::BodyTimeout | Self::BodyUnreadable
        )
    }
}
