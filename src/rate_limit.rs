//! Rate limits: each caller's share first, then the KwikID account's ceiling, so a caller
//! over its own share never spends the account's permits.
//!
//! governor has no refund: when the caller's bucket passes and the global one refuses, the
//! caller's permit is spent. That is the price of checking the caller first.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Rate, RateLimit};

/// Which bucket refused a request; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Caller,
    Global,
    /// KwikID itself answered 429 and the account is held closed.
    Upstream,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Global => "global",
            Self::Upstream => "upstream",
        }
    }
}

/// A refusal: which bucket, and the whole seconds to put in `Retry-After` (≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after_secs: u64,
}

pub struct RateLimits {
    per_caller: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
    clock: DefaultClock,
    max_wait: Duration,
    /// KwikID's own 429 closes the global bucket until this many nanoseconds after `epoch`.
    upstream_hold_until: AtomicU64,
    epoch: Instant,
}

fn quota(rate: Rate) -> Quota {
    // Config validation keeps per_second in (0, 1e9] and burst ≥ 1.
    let period = Duration::from_secs_f64(1.0 / rate.per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl RateLimits {
    pub fn new(config: &RateLimit) -> Self {
        Self {
            per_caller: RateLimiter::keyed(quota(config.per_caller)),
            global: RateLimiter::direct(quota(config.global)),
            clock: DefaultClock::default(),
            max_wait: config.max_wait,
            upstream_hold_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Takes one permit from `caller`'s bucket and one from the global bucket, waiting up to
    /// `max_wait` for each.
    pub async fn acquire(&self, caller: &str) -> Result<(), Limited> {
        let key = caller.to_owned();
        if let Err(not_until) = self.per_caller.check_key(&key) {
            let wait = not_until.wait_time_from(self.clock.now());
            self.wait_for(wait, Scope::Caller, self.per_caller.until_key_ready(&key))
                .await?;
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

    /// KwikID answered 429: keep the global bucket closed for `hold`.
    pub fn hold_after_upstream_429(&self, hold: Duration) {
        let until = (self.epoch.elapsed() + hold).as_nanos() as u64;
        self.upstream_hold_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Drops callers whose buckets are full again, so caller-chosen ids cannot grow memory
    /// without bound. Run on a timer.
    pub fn prune(&self) {
        self.per_caller.retain_recent();
        self.per_caller.shrink_to_fit();
    }

    /// How many callers the per-caller store holds.
    pub fn caller_keys(&self) -> usize {
        self.per_caller.len()
    }
}

/// How long KwikID asked us to back off: `Retry-After` as seconds or an HTTP date; 1 s when
/// absent or unreadable, at most an hour.
pub fn upstream_retry_after(value: Option<&http::HeaderValue>) -> Duration {
    let parsed = value.and_then(|v| v.to_str().ok()).and_then(|v| {
        let v = v.trim();
        v.parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
            httpdate::parse_http_date(v).ok().map(|at| {
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
        })
    });
    parsed
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_caller: Rate, global: Rate, max_wait: Duration) -> RateLimits {
        RateLimits::new(&RateLimit {
            global,
            per_caller,
            caller_header: http::HeaderName::from_static("x-caller-id"),
            max_wait,
        })
    }

    #[tokio::test]
    async fn caller_bucket_refuses_with_rounded_up_retry_after() {
        let l = limits(
            Rate {
                per_second: 0.5,
                burst: 2,
            },
            Rate {
                per_second: 100.0,
                burst: 100,
            },
            Duration::ZERO,
        );
        assert!(l.acquire("a").await.is_ok());
        assert!(l.acquire("a").await.is_ok());
        let refused = l.acquire("a").await.unwrap_err();
        assert_eq!(
            refused,
            Limited {
                scope: Scope::Caller,
                retry_after_secs: 2
            }
        );
        assert!(
            l.acquire("b").await.is_ok(),
            "another caller has its own bucket"
        );
    }

    #[tokio::test]
    async fn a_caller_over_its_share_spends_no_global_permit() {
        let l = limits(
            Rate {
                per_second: 0.001,
                burst: 1,
            },
            Rate {
                per_second: 0.001,
                burst: 2,
            },
            Duration::ZERO,
        );
        assert!(l.acquire("a").await.is_ok());
        for _ in 0..5 {
            assert_eq!(l.acquire("a").await.unwrap_err().scope, Scope::Caller);
        }
        assert!(
            l.acquire("b").await.is_ok(),
            "the global bucket still has one permit"
        );
        assert_eq!(l.acquire("c").await.unwrap_err().scope, Scope::Global);
    }

    #[tokio::test]
    async fn max_wait_waits_for_a_permit() {
        let l = limits(
            Rate {
                per_second: 20.0,
                burst: 1,
            },
            Rate {
                per_second: 100.0,
                burst: 100,
            },
            Duration::from_millis(500),
        );
        assert!(l.acquire("a").await.is_ok());
        assert!(
            l.acquire("a").await.is_ok(),
            "the second permit comes within 50 ms"
        );
    }

    #[tokio::test]
    async fn upstream_hold_closes_the_global_bucket() {
        let l = limits(
            Rate {
                per_second: 100.0,
                burst: 100,
            },
            Rate {
                per_second: 100.0,
                burst: 100,
            },
            Duration::ZERO,
        );
        l.hold_after_upstream_429(Duration::from_millis(1500));
        assert_eq!(
            l.acquire("a").await.unwrap_err(),
            Limited {
                scope: Scope::Upstream,
                retry_after_secs: 2
            }
        );
    }

    #[test]
    fn upstream_retry_after_parses_seconds_and_defaults_to_one() {
        assert_eq!(upstream_retry_after(None), Duration::from_secs(1));
        assert_eq!(
            upstream_retry_after(Some(&http::HeaderValue::from_static("7"))),
            Duration::from_secs(7)
        );
        assert_eq!(
            upstream_retry_after(Some(&http::HeaderValue::from_static("soon"))),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn prune_drops_full_buckets() {
        let l = limits(
            Rate {
                per_second: 1000.0,
                burst: 1,
            },
            Rate {
                per_second: 1e6,
                burst: 1000,
            },
            Duration::ZERO,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..100 {
                l.acquire(&format!("c{i}")).await.unwrap();
            }
        });
        assert_eq!(l.caller_keys(), 100);
        std::thread::sleep(Duration::from_millis(20));
        l.prune();
        assert_eq!(l.caller_keys(), 0);
    }
}
