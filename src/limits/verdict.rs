//! What a rate-limit check decides: granted, refused by which bucket (and for how long), or
//! not yet decided and how far it got. [`super::RateLimits`] gives these; the limits step and
//! the metrics read them.

/// Which bucket refused a request; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Caller,
    Global,
    /// KwikID itself answered 429 and the account is held closed.
    Upstream,
}

impl Scope {
    /// Every scope's name, as [`Self::as_str`] gives it.
    pub const NAMES: [&'static str; 3] = ["caller", "global", "upstream"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Global => "global",
            Self::Upstream => "upstream",
        }
    }
}

/// The in-process buckets' verdict when it needs no wait ([`RateLimits::acquire_now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// Both permits are taken.
    Granted,
    /// A bucket is empty for longer than `max_wait`.
    Refused(Limited),
    /// Redis decides, KwikID's hold is on, or a wait may end within `max_wait`:
    /// [`RateLimits::acquire`] decides, from this stage.
    Later(Stage),
}

/// How far a verdict got: which permits are already taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// None yet.
    Caller,
    /// The caller's; the account's is next.
    Account,
}

/// A refusal: which bucket, and the whole seconds to put in `Retry-After` (≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after_secs: u64,
}
