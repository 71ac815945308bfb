//! How long KwikID's own 429 holds the account: its `Retry-After`, read as RFC 9110 says and
//! saturating at a cap.

use std::time::Duration;

/// The longest hold KwikID's `Retry-After` can put on the account.
pub(super) const MAX_UPSTREAM_HOLD: Duration = Duration::from_secs(3600);

/// How long KwikID asked us to back off: `Retry-After` as delay-seconds or an HTTP date
/// (RFC 9110 §10.2.3); 1 s when absent or unreadable, at most an hour. Delay-seconds too
/// large for any integer type saturate at the hour: a bigger number never means a shorter
/// hold.
pub fn upstream_retry_after(value: Option<&[u8]>) -> Duration {
    let parsed = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .and_then(|v| {
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                return Some(
                    v.parse::<u64>()
                        .map_or(MAX_UPSTREAM_HOLD, Duration::from_secs),
                );
            }
            httpdate::parse_http_date(v).ok().map(|at| {
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
        });
    parsed
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_secs(1), MAX_UPSTREAM_HOLD)
}
