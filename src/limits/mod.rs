//! Rate limits (the verdict, the local governor buckets, KwikID's 429 hold): each caller's share first, then the KwikID account's ceiling, so a caller
//! over its own share never spends the account's permits.
//!
//! A caller listed in `[[callers]]` has a bucket of its own, at its own rate (SPEC §10); every
//! other caller has one keyed by its name in the per-caller store, at `per_caller`'s rate.
//!
//! governor has no refund: when the caller's bucket passes and the global one refuses, the
//! caller's permit is spent. That is the price of checking the caller first.
//!
//! - `local`: the in-process buckets, decided at once when no wait is needed.
//! - [`redis`]: the buckets every replica shares.
//! - `verdict`: what a check decides ([`Now`], [`Limited`], [`Scope`], [`Stage`]).

mod local;
pub mod redis;
mod retry_after;
mod verdict;

pub use retry_after::upstream_retry_after;
pub use verdict::{Limited, Now, Scope, Stage};

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use self::redis::SharedBuckets;
use crate::config::{OnRedisError, Rate, RateLimit};
use crate::metrics::Metrics;

pub struct RateLimits {
    /// With `backend = "redis"`: the buckets every replica shares, and what to do without them.
    shared: Option<(SharedBuckets, OnRedisError)>,
    /// Whether Redis answered last time, to log a fall-back and a recovery once each.
    redis_healthy: std::sync::atomic::AtomicBool,
    per_caller: DefaultKeyedRateLimiter<Arc<str>>,
    per_caller_rate: Rate,
    /// Each listed caller's own bucket and rate, by its index in `[[callers]]`.
    listed: Vec<(DefaultDirectRateLimiter, Rate)>,
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
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl RateLimits {
    pub fn new(config: &RateLimit) -> Result<Self, ::redis::RedisError> {
        let shared = match &config.redis {
            None => None,
            Some(redis) => Some((SharedBuckets::new(redis, config.global)?, redis.on_error)),
        };
        Ok(Self {
            shared,
            redis_healthy: std::sync::atomic::AtomicBool::new(true),
            per_caller: RateLimiter::keyed(quota(config.per_caller)),
            per_caller_rate: config.per_caller,
            listed: config
                .callers
                .iter()
                .map(|&rate| (RateLimiter::direct(quota(rate)), rate))
                .collect(),
            global: RateLimiter::direct(quota(config.global)),
            clock: DefaultClock::default(),
            max_wait: config.max_wait,
            upstream_hold_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// The backend that decides while everything is healthy.
    pub fn preferred_backend(&self) -> &'static str {
        if self.shared.is_some() {
            "redis"
        } else {
            "local"
        }
    }

    /// Takes a permit from the caller's bucket (unless `from` says it is taken), then from
    /// the account's: in Redis when it is configured and answers, else as `on_redis_error`
    /// says. `listed` is the caller's index in `[[callers]]`, if it is listed.
    pub async fn acquire(
        &self,
        caller: &Arc<str>,
        listed: Option<usize>,
        metrics: &Metrics,
        from: Stage,
    ) -> Result<(), Limited> {
        let Some((shared, on_error)) = &self.shared else {
            return self.acquire_local(caller, listed, from).await;
        };
        let rate = listed
            .and_then(|i| self.listed.get(i))
            .map_or(self.per_caller_rate, |(_, rate)| *rate);
        // Boxed, so the Redis round trip does not size the request future of local limits.
        match Box::pin(self.acquire_shared(shared, caller, rate, metrics)).await {
            Ok(verdict) => {
                if !self.redis_healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis answers again; rate limits are shared again");
                    metrics.limit_backend("redis");
                }
                verdict
            }
            Err(failure) => {
                let fallback = match on_error {
                    OnRedisError::Local => "local",
                    OnRedisError::Allow => "allow_all",
                    OnRedisError::Deny => "deny_all",
                };
                if self.redis_healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        kind = failure.as_str(),
                        fallback,
                        "Redis did not answer; rate limits fall back until it does"
                    );
                    metrics.limit_backend(fallback);
                }
                match on_error {
                    OnRedisError::Local => self.acquire_local(caller, listed, Stage::Caller).await,
                    OnRedisError::Allow => Ok(()),
                    OnRedisError::Deny => Err(Limited {
                        scope: Scope::Global,
                        retry_after_secs: 1,
                    }),
                }
            }
        }
    }

    /// The shared verdict; waits and asks once more when the wait fits in `max_wait`.
    async fn acquire_shared(
        &self,
        shared: &SharedBuckets,
        caller: &str,
        rate: Rate,
        metrics: &Metrics,
    ) -> Result<Result<(), Limited>, self::redis::RedisFailure> {
        let deadline = Instant::now() + self.max_wait;
        loop {
            let started = Instant::now();
            let verdict = shared.check(caller, rate).await;
            if !matches!(verdict, Err(self::redis::RedisFailure::BackingOff)) {
                metrics.redis_call(
                    started.elapsed(),
                    verdict.as_ref().err().map(|f| f.as_str()),
                );
            }
            match verdict? {
                None => return Ok(Ok(())),
                Some(limited) => {
                    let wait = Duration::from_secs(limited.retry_after_secs);
                    let left = deadline.saturating_duration_since(Instant::now());
                    if self.max_wait.is_zero() || left.is_zero() {
                        return Ok(Err(limited));
                    }
                    tokio::time::sleep(wait.min(left).min(Duration::from_millis(100))).await;
                }
            }
        }
    }

    /// KwikID answered 429: keep the global bucket closed for `hold`, here and, with Redis,
    /// on every replica.
    pub async fn hold_after_upstream_429(&self, hold: Duration) {
        let until = (self.epoch.elapsed() + hold).as_nanos() as u64;
        self.upstream_hold_until.fetch_max(until, Ordering::Relaxed);
        if let Some((shared, _)) = &self.shared
            && let Err(failure) = shared.hold(hold).await
        {
            tracing::warn!(
                kind = failure.as_str(),
                "could not share KwikID's 429 hold through Redis"
            );
        }
    }

    /// With Redis configured: whether it answers (for `check`).
    pub async fn ping_shared(&self) -> Option<Result<(), &'static str>> {
        let (shared, _) = self.shared.as_ref()?;
        Some(shared.ping().await.map_err(|f| f.as_str()))
    }

    /// Drops callers whose buckets are full again, so caller-chosen ids cannot grow memory
    /// without bound. Run on a timer.
    pub fn prune(&self) {
        self.per_caller.retain_recent();
        self.per_caller.shrink_to_fit();
    }

    /// How many callers the per-caller store holds (listed callers have buckets of their own).
    pub fn caller_keys(&self) -> usize {
        self.per_caller.len()
    }
}

#[cfg(test)]
mod tests {
    use super::retry_after::MAX_UPSTREAM_HOLD;
    use super::*;

    /// Guards against a huge `Retry-After` falling back to the 1 s default (an overflow must
    /// hold the longest, never the shortest).
    #[test]
    fn huge_retry_after_saturates_at_the_cap() {
        for huge in [
            &b"18446744073709551616"[..],
            b"99999999999999999999999",
            b"18446744073709551615",
        ] {
            assert_eq!(upstream_retry_after(Some(huge)), MAX_UPSTREAM_HOLD);
        }
        assert_eq!(upstream_retry_after(Some(b"7")), Duration::from_secs(7));
        assert_eq!(upstream_retry_after(Some(b"-5")), Duration::from_secs(1));
        assert_eq!(upstream_retry_after(None), Duration::from_secs(1));
    }

    /// The in-process buckets' awaited verdict for `caller`, from the start.
    async fn take(l: &RateLimits, caller: &str, listed: Option<usize>) -> Result<(), Limited> {
        l.acquire_local(&caller.into(), listed, Stage::Caller).await
    }

    fn limits(per_caller: Rate, global: Rate, max_wait: Duration) -> RateLimits {
        RateLimits::new(&RateLimit {
            global,
            per_caller,
            caller_header: http::HeaderName::from_static("x-caller-id"),
            max_wait,
            redis: None,
            callers: Vec::new(),
        })
        .unwrap()
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
        assert!(take(&l, "a", None).await.is_ok());
        assert!(take(&l, "a", None).await.is_ok());
        let refused = take(&l, "a", None).await.unwrap_err();
        assert_eq!(
            refused,
            Limited {
                scope: Scope::Caller,
                retry_after_secs: 2
            }
        );
        assert!(
            take(&l, "b", None).await.is_ok(),
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
        assert!(take(&l, "a", None).await.is_ok());
        for _ in 0..5 {
            assert_eq!(take(&l, "a", None).await.unwrap_err().scope, Scope::Caller);
        }
        assert!(
            take(&l, "b", None).await.is_ok(),
            "the global bucket still has one permit"
        );
        assert_eq!(take(&l, "c", None).await.unwrap_err().scope, Scope::Global);
    }

    /// Guards against a listed caller getting the default share instead of its own, or
    /// sharing a bucket with the callers that are not listed.
    #[tokio::test]
    async fn a_listed_caller_has_its_own_bucket_at_its_own_rate() {
        let generous = Rate {
            per_second: 100.0,
            burst: 100,
        };
        let l = RateLimits::new(&RateLimit {
            global: generous,
            per_caller: Rate {
                per_second: 0.001,
                burst: 1,
            },
            caller_header: http::HeaderName::from_static("x-caller-id"),
            max_wait: Duration::ZERO,
            redis: None,
            callers: vec![Rate {
                per_second: 0.001,
                burst: 3,
            }],
        })
        .unwrap();
        for _ in 0..3 {
            assert!(take(&l, "orders-svc", Some(0)).await.is_ok());
        }
        assert_eq!(
            take(&l, "orders-svc", Some(0)).await.unwrap_err().scope,
            Scope::Caller
        );
        // Not listed under the same name: the per-caller store's bucket, with its own permit.
        assert!(take(&l, "orders-svc", None).await.is_ok());
        assert!(take(&l, "orders-svc", None).await.is_err());
        assert_eq!(l.caller_keys(), 1, "a listed caller is not in the store");
    }

    /// Guards against the verdict taken without a future disagreeing with the awaited one:
    /// refused at once past `max_wait`, and, when only the account's permit must be waited
    /// for, the caller's (already taken) never taken twice.
    #[tokio::test]
    async fn a_verdict_without_waiting_matches_the_awaited_one() {
        let a: Arc<str> = "a".into();
        let l = limits(
            Rate {
                per_second: 1.0 / 60.0,
                burst: 2,
            },
            Rate {
                per_second: 1000.0,
                burst: 1,
            },
            Duration::from_secs(1),
        );
        assert_eq!(l.acquire_now(&a, None), Now::Granted);
        assert_eq!(l.acquire_now(&a, None), Now::Later(Stage::Account));
        let metrics = Metrics::new();
        l.acquire(&a, None, &metrics, Stage::Account)
            .await
            .expect("the account's next permit comes within 1 ms");
        // Two permits of the caller's burst were taken, not three: the next waits a minute.
        let Now::Refused(limited) = l.acquire_now(&a, None) else {
            panic!("the caller's bucket is empty");
        };
        assert_eq!(limited.scope, Scope::Caller);
        assert_eq!(limited.retry_after_secs, 60);
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
        assert!(take(&l, "a", None).await.is_ok());
        assert!(
            take(&l, "a", None).await.is_ok(),
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
        l.hold_after_upstream_429(Duration::from_millis(1500)).await;
        assert_eq!(
            take(&l, "a", None).await.unwrap_err(),
            Limited {
                scope: Scope::Upstream,
                retry_after_secs: 2
            }
        );
    }

    #[test]
    fn upstream_retry_after_parses_seconds_and_defaults_to_one() {
        assert_eq!(upstream_retry_after(None), Duration::from_secs(1));
        assert_eq!(upstream_retry_after(Some(b"7")), Duration::from_secs(7));
        assert_eq!(upstream_retry_after(Some(b"soon")), Duration::from_secs(1));
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
                take(&l, &format!("c{i}"), None).await.unwrap();
            }
        });
        assert_eq!(l.caller_keys(), 100);
        std::thread::sleep(Duration::from_millis(20));
        l.prune();
        assert_eq!(l.caller_keys(), 0);
    }
}
