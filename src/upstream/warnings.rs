//! The warning for a failed exchange with KwikID: one line naming KwikID's `host:port`, the
//! proxy if one is used, the metric's `kind` and the cause in words. A cause already written
//! is written again at most once a minute, with `count`, the failures the line stands for.
//!
//! During an outage every request fails the same way; a line per request would bury
//! everything else in the log. The metric `kwikid_gateway_upstream_errors_total{kind}` still
//! counts each one.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::cause::Failure;

/// How long a cause stays quiet after its line.
pub(super) const QUIET_FOR: Duration = Duration::from_secs(60);
/// Causes remembered at once; the oldest is forgotten first. Causes are few (a handful of
/// kinds, each with a reason that names KwikID's host or addresses), so this is a safety net.
const MAX_CAUSES: usize = 64;

/// The warnings of one upstream.
pub(super) struct Warnings {
    /// KwikID's `host:port`.
    upstream: String,
    /// The egress proxy's `host:port`, when connections go through one.
    proxy: Option<String>,
    repeats: Mutex<Repeats>,
}

impl Warnings {
    pub(super) fn new(upstream: String, proxy: Option<String>) -> Self {
        Self {
            upstream,
            proxy,
            repeats: Mutex::new(Repeats::default()),
        }
    }

    /// Notes `failure`; writes its line unless the same cause was written less than a minute
    /// ago.
    pub(super) fn failed(&self, failure: &Failure) {
        let kind = failure.error.kind();
        let due = self.lock().note(kind, &failure.cause, Instant::now());
        if let Some(count) = due {
            self.write(kind, &failure.cause, count);
        }
    }

    /// Writes the count of each cause that failed again after its line, once its minute is
    /// over, so that no failure goes unreported when the failures stop. Called periodically.
    pub(super) fn flush(&self) {
        let due = self.lock().due(Instant::now());
        for (kind, cause, count) in due {
            self.write(kind, &cause, count);
        }
    }

    fn write(&self, kind: &'static str, cause: &str, count: u64) {
        tracing::warn!(
            upstream = self.upstream.as_str(),
            proxy = self.proxy.as_deref(),
            kind,
            cause,
            count,
            "upstream request failed"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Repeats> {
        self.repeats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When each cause was last written and how often it failed since; the clock is the caller's.
#[derive(Default)]
pub(super) struct Repeats {
    seen: HashMap<(&'static str, String), Seen>,
}

struct Seen {
    written: Instant,
    /// Failures since `written`, not yet in a line.
    quiet: u64,
}

impl Repeats {
    /// One failure of `kind` with `cause` at `now`: `Some(count)` when its line is due,
    /// `count` being this failure and those kept quiet since the cause's last line.
    pub(super) fn note(&mut self, kind: &'static str, cause: &str, now: Instant) -> Option<u64> {
        if let Some(seen) = self.seen.get_mut(&(kind, cause.to_owned())) {
            if now.saturating_duration_since(seen.written) < QUIET_FOR {
                seen.quiet += 1;
                return None;
            }
            let count = seen.quiet + 1;
            *seen = Seen {
                written: now,
                quiet: 0,
            };
            return Some(count);
        }
        if self.seen.len() >= MAX_CAUSES {
            self.forget_oldest();
        }
        self.seen.insert(
            (kind, cause.to_owned()),
            Seen {
                written: now,
                quiet: 0,
            },
        );
        Some(1)
    }

    /// The causes that failed quietly and whose minute is over at `now`, with their counts;
    /// each counts as written now.
    pub(super) fn due(&mut self, now: Instant) -> Vec<(&'static str, String, u64)> {
        let mut due = Vec::new();
        for ((kind, cause), seen) in &mut self.seen {
            if seen.quiet > 0 && now.saturating_duration_since(seen.written) >= QUIET_FOR {
                due.push((*kind, cause.clone(), seen.quiet));
                *seen = Seen {
                    written: now,
                    quiet: 0,
                };
            }
        }
        // A cause that has been quiet for long is written in full again when it returns.
        self.seen.retain(|_, seen| {
            seen.quiet > 0 || now.saturating_duration_since(seen.written) < QUIET_FOR
        });
        due
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .seen
            .iter()
            .min_by_key(|(_, seen)| seen.written)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &str = "connection refused (127.0.0.1:443)";

    #[test]
    fn a_cause_is_written_once_a_minute_with_the_count_since() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut repeats = Repeats::default();
        assert_eq!(repeats.note("connect", REFUSED, at(0)), Some(1));
        assert_eq!(repeats.note("connect", REFUSED, at(1)), None);
        assert_eq!(repeats.note("connect", REFUSED, at(59)), None);
        // The minute is over: this line stands for the two kept quiet and itself.
        assert_eq!(repeats.note("connect", REFUSED, at(60)), Some(3));
        assert_eq!(repeats.note("connect", REFUSED, at(61)), None);
        assert_eq!(repeats.note("connect", REFUSED, at(125)), Some(2));
    }

    #[test]
    fn each_cause_has_its_own_minute() {
        let now = Instant::now();
        let mut repeats = Repeats::default();
        assert_eq!(repeats.note("connect", REFUSED, now), Some(1));
        assert_eq!(
            repeats.note("tls", "certificate refused: expired", now),
            Some(1)
        );
        assert_eq!(
            repeats.note("connect", "connection refused (10.0.0.1:443)", now),
            Some(1)
        );
        assert_eq!(
            repeats.note("tls", "certificate refused: expired", now),
            None
        );
    }

    #[test]
    fn counts_kept_quiet_are_written_when_the_minute_is_over_even_if_failures_stop() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut repeats = Repeats::default();
        assert_eq!(
            repeats.note("dns", "DNS lookup of k failed", at(0)),
            Some(1)
        );
        assert_eq!(repeats.note("dns", "DNS lookup of k failed", at(10)), None);
        assert_eq!(repeats.note("dns", "DNS lookup of k failed", at(20)), None);
        assert!(repeats.due(at(59)).is_empty());
        assert_eq!(
            repeats.due(at(60)),
            vec![("dns", "DNS lookup of k failed".to_owned(), 2)]
        );
        assert!(repeats.due(at(61)).is_empty(), "written once");
        // Quiet for a whole minute after that: forgotten, so its return is written at once.
        assert!(repeats.due(at(121)).is_empty());
        assert_eq!(
            repeats.note("dns", "DNS lookup of k failed", at(122)),
            Some(1)
        );
    }

    #[test]
    fn the_number_of_causes_remembered_is_bounded() {
        let now = Instant::now();
        let mut repeats = Repeats::default();
        for i in 0..(MAX_CAUSES as u64 * 2) {
            let cause = format!("connection refused (10.0.0.{i}:443)");
            assert_eq!(
                repeats.note("connect", &cause, now + Duration::from_millis(i)),
                Some(1)
            );
        }
        assert_eq!(repeats.seen.len(), MAX_CAUSES);
    }
}
