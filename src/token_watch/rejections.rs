//! KwikID's 401s, logged at most once a minute (SPEC §11): a revoked or expired token makes
//! every request fail the same way, and one line a minute says so without flooding the log.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often the "KwikID rejected the token in use" line may be written.
pub const LINE_EVERY: Duration = Duration::from_secs(60);

/// Counts rejections between lines.
#[derive(Debug)]
pub struct Rejections {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_line: Option<Instant>,
    /// Rejections since the last line that got no line of their own.
    unlogged: u64,
}

impl Rejections {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new(State::default()),
        }
    }

    /// Notes one rejection at `now`. `Some(n)` when a line is due, `n` being the rejections
    /// since the last line that got none; `None` while the last line is younger than `every`.
    pub fn note(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let due = state.last_line.is_none_or(|last| {
            now.checked_duration_since(last)
                .is_some_and(|since| since >= self.every)
        });
        if !due {
            state.unlogged += 1;
            return None;
        }
        state.last_line = Some(now);
        Some(std::mem::take(&mut state.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards against a line per 401 (a revoked token would flood the log) and against the
    /// line never coming back; the clock is stepped by hand, so no test waits a minute.
    #[test]
    fn one_line_a_minute_with_the_rejections_in_between() {
        let rejections = Rejections::new(LINE_EVERY);
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(rejections.note(t0), Some(0));
        assert_eq!(rejections.note(t0 + second), None);
        assert_eq!(rejections.note(t0 + 59 * second), None);
        assert_eq!(rejections.note(t0 + 60 * second), Some(2));
        assert_eq!(rejections.note(t0 + 61 * second), None);
        assert_eq!(rejections.note(t0 + 200 * second), Some(1));
        assert_eq!(rejections.note(t0 + 201 * second), None);
    }
}
