//! The in-process buckets (governor): the caller's, then the account's and KwikID's hold,
//! decided at once when no wait is needed, else awaited up to `max_wait`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use governor::clock::Clock;

use super::{Limited, Now, RateLimits, Scope, Stage, retry_after_secs};

impl RateLimits {
    /// The in-process buckets' verdict when it needs no wait, taken in the request's own
    /// call: most requests pass here, and a verdict that needs no waiting needs no future.
    /// `listed` is the caller's index in `[[callers]]`, if it is listed.
    pub fn acquire_now(&self, caller: &Arc<str>, listed: Option<usize>) -> Now {
        if self.shared.is_some() {
            return Now::Later(Stage::Caller);
        }
        let checked = match listed.and_then(|i| self.listed.get(i)) {
            Some((own, _)) => own.check(),
            None => self.per_caller.check_key(caller),
        };
        if let Err(not_until) = checked {
            let wait = not_until.wait_time_from(self.clock.now());
            return self.later_or_refused(wait, Scope::Caller, Stage::Caller);
        }
        if self.upstream_hold_until.load(Ordering::Relaxed) > self.epoch.elapsed().as_nanos() as u64
        {
            return Now::Later(Stage::Account);
        }
        match self.global.check() {
            Ok(()) => Now::Granted,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                self.later_or_refused(wait, Scope::Global, Stage::Account)
            }
        }
    }

    /// Refused when the wait is longer than `max_wait` (as [`Self::acquire`] would), else
    /// left to it.
    fn later_or_refused(&self, wait: Duration, scope: Scope, stage: Stage) -> Now {
        if wait > self.max_wait {
            Now::Refused(Limited {
                scope,
                retry_after_secs: retry_after_secs(wait),
            })
        } else {
            Now::Later(stage)
        }
    }

    /// The in-process buckets: the caller's (its own when it is listed; skipped when `from`
    /// says it is taken), then the account's, waiting up to `max_wait`.
    pub(super) async fn acquire_local(
        &self,
        caller: &Arc<str>,
        listed: Option<usize>,
        from: Stage,
    ) -> Result<(), Limited> {
        match (from, listed.and_then(|i| self.listed.get(i))) {
            (Stage::Account, _) => {}
            (Stage::Caller, Some((own, _))) => {
                if let Err(not_until) = own.check() {
                    let wait = not_until.wait_time_from(self.clock.now());
                    self.wait_for(wait, Scope::Caller, own.until_ready())
                        .await?;
                }
            }
            (Stage::Caller, None) => {
                if let Err(not_until) = self.per_caller.check_key(caller) {
                    let wait = not_until.wait_time_from(self.clock.now());
                    self.wait_for(wait, Scope::Caller, self.per_caller.until_key_ready(caller))
                        .await?;
                }
            }
        }
        self.wait_out_upstream_hold().await?;
        if let Err(not_until) = self.global.check() {
            let wait = not_until.wait_time_from(self.clock.now());
            self.wait_for(wait, Scope::Global, self.global.until_ready())
                .await?;
        }
        Ok(())
    }

    /// Waits for `ready` (which takes the permit) when the estimate fits in `max_wait`.
    async fn wait_for<F: Future>(
        &self,
        estimate: Duration,
        scope: Scope,
        ready: F,
    ) -> Result<(), Limited> {
        let refuse = Limited {
            scope,
            retry_after_secs: retry_after_secs(estimate),
        };
        if estimate > self.max_wait {
            return Err(refuse);
        }
        tokio::time::timeout(self.max_wait, ready)
            .await
            .map(drop)
            .map_err(|_| refuse)
    }

    async fn wait_out_upstream_hold(&self) -> Result<(), Limited> {
        let until = self.upstream_hold_until.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_nanos() as u64;
        if until <= now {
            return Ok(());
        }
        let wait = Duration::from_nanos(until - now);
        if wait > self.max_wait {
            return Err(Limited {
                scope: Scope::Upstream,
                retry_after_secs: retry_after_secs(wait),
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }
}
