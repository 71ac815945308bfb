//! Where the token stands against its expiry, and when to say so (SPEC §11): whenever a token
//! is loaded (start, reload), then once an hour while less than `token.warn_before_expiry`
//! remains or once it has passed. Pure: the time is passed in, so the hourly schedule is
//! tested without waiting an hour.

use std::time::{Duration, SystemTime};

/// How often the reminder repeats while the token is expiring or expired.
pub const REPEAT_EVERY: Duration = Duration::from_secs(3600);

/// The token's expiry, seen at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The token has no readable `exp` (it is not a JWT, or its payload has no numeric `exp`).
    Unknown,
    /// More than `warn_before_expiry` remains.
    Valid { expires: SystemTime, left: Duration },
    /// Less than `warn_before_expiry` remains.
    Expiring { expires: SystemTime, left: Duration },
    /// `exp` has passed (RFC 7519 §4.1.4: on or after it the token must not be accepted).
    Expired { expires: SystemTime, ago: Duration },
}

impl Standing {
    /// Where a token expiring at `expires` stands at `now`.
    pub fn of(expires: Option<SystemTime>, now: SystemTime, warn_before: Duration) -> Self {
        let Some(expires) = expires else {
            return Self::Unknown;
        };
        match expires.duration_since(now) {
            Ok(left) if left.is_zero() => Self::Expired {
                expires,
                ago: Duration::ZERO,
            },
            Ok(left) if left < warn_before => Self::Expiring { expires, left },
            Ok(left) => Self::Valid { expires, left },
            Err(passed) => Self::Expired {
                expires,
                ago: passed.duration(),
            },
        }
    }

    /// Whether operators must be told, and reminded: expiring or expired.
    pub fn is_alarming(&self) -> bool {
        matches!(self, Self::Expiring { .. } | Self::Expired { .. })
    }

    /// What `check` prints after `token: fingerprint <8 hex>, `: `expires <RFC 3339>, in
    /// <duration>`, `expired <RFC 3339>, <duration> ago`, or `no readable expiry`.
    pub fn describe(&self) -> String {
        match *self {
            Self::Unknown => "no readable expiry".to_owned(),
            Self::Valid { expires, left } | Self::Expiring { expires, left } => {
                format!("expires {}, in {}", rfc3339(expires), coarse(left))
            }
            Self::Expired { expires, ago } => {
                format!("expired {}, {} ago", rfc3339(expires), coarse(ago))
            }
        }
    }
}

/// Decides when the next reminder is due.
#[derive(Debug, Clone)]
pub struct Reminder {
    every: Duration,
    /// When the last warning was written, while the token is expiring or expired.
    last: Option<SystemTime>,
}

impl Reminder {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None }
    }

    /// Whether to warn about `standing` at `now`: always when a token was just `loaded` and is
    /// expiring or expired; otherwise when `every` has passed since the last warning (or the
    /// clock went back), or the token has just become expiring.
    pub fn due(&mut self, standing: &Standing, now: SystemTime, loaded: bool) -> bool {
        if !standing.is_alarming() {
            self.last = None;
            return false;
        }
        let due = loaded
            || self.last.is_none_or(|last| {
                now.duration_since(last)
                    .map_or(true, |since| since >= self.every)
            });
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// `2027-01-31T00:00:00Z`: RFC 3339 in UTC, whole seconds.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The duration in its largest whole unit, rounded down: `62d`, `5h`, `12m`, `30s`.
pub fn coarse(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (n, unit) = match secs {
        86_400.. => (secs / 86_400, "d"),
        3_600.. => (secs / 3_600, "h"),
        60.. => (secs / 60, "m"),
        _ => (secs, "s"),
    };
    format!("{n}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);
    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// Guards against the window's edges being read wrong: exactly at `exp` is expired, and
    /// exactly `warn_before` left is not yet expiring.
    #[test]
    fn the_standing_follows_the_window() {
        let exp = at(1_000_000_000);
        let of = |now: SystemTime| Standing::of(Some(exp), now, WEEK);
        assert!(matches!(of(exp - WEEK), Standing::Valid { left, .. } if left == WEEK));
        assert!(
            matches!(of(exp - WEEK + HOUR), Standing::Expiring { left, .. } if left == WEEK - HOUR)
        );
        assert!(matches!(of(exp), Standing::Expired { ago, .. } if ago.is_zero()));
        assert!(matches!(of(exp + DAY), Standing::Expired { ago, .. } if ago == DAY));
        assert_eq!(Standing::of(None, exp, WEEK), Standing::Unknown);
    }

    /// Guards against `check` printing another shape than SPEC §11's.
    #[test]
    fn check_describes_the_expiry_as_the_spec_writes_it() {
        let exp = at(1_801_353_600); // 2027-01-31T00:00:00Z
        let now = exp - 62 * DAY - 5 * HOUR;
        assert_eq!(
            Standing::of(Some(exp), now, WEEK).describe(),
            "expires 2027-01-31T00:00:00Z, in 62d"
        );
        assert_eq!(
            Standing::of(Some(exp), exp + 3 * DAY, WEEK).describe(),
            "expired 2027-01-31T00:00:00Z, 3d ago"
        );
        assert_eq!(Standing::Unknown.describe(), "no readable expiry");
        assert_eq!(coarse(Duration::from_secs(5 * 3600 + 59)), "5h");
        assert_eq!(coarse(Duration::from_secs(61)), "1m");
        assert_eq!(coarse(Duration::ZERO), "0s");
    }

    /// Guards against an hourly reminder that repeats too often or stops, a load that goes
    /// unannounced, and reminders for a token that is not (or no longer) expiring. The clock
    /// is stepped by hand: the schedule is checked over days without waiting.
    #[test]
    fn reminders_come_on_load_and_then_hourly_while_expiring() {
        let exp = at(10 * 86_400);
        let mut reminder = Reminder::new(REPEAT_EVERY);
        let mut due = |now: SystemTime, loaded: bool| {
            reminder.due(&Standing::of(Some(exp), now, WEEK), now, loaded)
        };
        let start = exp - 8 * DAY;
        assert!(!due(start, true), "8 days left: nothing to warn about");
        assert!(!due(start + HOUR, false));
        let entered = exp - WEEK + Duration::from_secs(60);
        assert!(due(entered, false), "the window opens: warned at once");
        assert!(!due(entered + Duration::from_secs(60), false));
        assert!(!due(entered + HOUR - Duration::from_secs(1), false));
        assert!(due(entered + HOUR, false), "an hour later");
        assert!(
            due(entered + HOUR + Duration::from_secs(5), true),
            "a reload"
        );
        assert!(
            !due(entered + 2 * HOUR, false),
            "an hour after the reload, not before"
        );
        assert!(due(entered + 2 * HOUR + Duration::from_secs(5), false));
        assert!(due(exp + DAY, false), "expired: still reminded");
        assert!(!due(exp + DAY + HOUR / 2, false));
        assert!(due(exp + DAY - HOUR, false), "the clock went back");

        let mut reminder = Reminder::new(REPEAT_EVERY);
        assert!(!reminder.due(&Standing::Unknown, exp, true));
        assert!(!reminder.due(&Standing::Unknown, exp + HOUR, false));
    }
}
