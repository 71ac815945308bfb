//! Rate limits shared by every replica through Redis (`[rate_limit] backend = "redis"`).
//!
//! The same GCRA as the in-process buckets (`per_second`, `burst`, caller first, then the
//! account), evaluated atomically by one Lua script: the caller's bucket, KwikID's 429 hold and
//! the global bucket in one round trip. The caller's rate goes with each call, so a caller
//! listed in `[[callers]]` has its own rate across replicas (SPEC §10). The script is sent with `EVALSHA` and loaded on
//! `NOSCRIPT` by the redis crate. Keys share one hash tag, so they live in one slot on a Redis
//! Cluster too; they expire once their bucket is full again, and never hold anything secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Limited, Scope};
use crate::config::{Rate, RedisLimits};

const PREFIX: &str = "kwikid-gateway:{limits}:";

/// KEYS: caller bucket, hold, global bucket. ARGV: caller period and burst, global period and
/// burst (periods in microseconds). Returns {scope, wait_us}: scope 0 = allowed, 1 = caller,
/// 2 = KwikID's hold, 3 = global.
///
/// GCRA: `tat` is the bucket's theoretical arrival time; a request is allowed when
/// `max(tat, now) + period - now <= burst * period`, and then `tat` moves one period on.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function take(key, period, burst)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local new_tat = tat + period
  local wait = new_tat - now - burst * period
  if wait > 0 then return wait end
  redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  return 0
end

local caller_wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if caller_wait > 0 then return {1, math.ceil(caller_wait)} end
local hold = tonumber(redis.call('GET', KEYS[2]) or '0')
if hold > now then return {2, math.ceil(hold - now)} end
local global_wait = take(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]))
if global_wait > 0 then return {3, math.ceil(global_wait)} end
return {0, 0}
"#;

/// KEYS: hold. ARGV: hold in microseconds. Extends KwikID's 429 hold, never shortens it.
const HOLD: &str = r#"
local t = redis.call('TIME')
local until_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_us > current then
  redis.call('SET', KEYS[1], string.format('%.0f', until_us), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1)
end
return 0
"#;

/// Why Redis gave no verdict; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisFailure {
    Timeout,
    Connection,
    /// Redis refused the credentials in the URL.
    Auth,
    Script,
    /// Still backing off after a failure; Redis was not asked.
    BackingOff,
}

impl RedisFailure {
    /// The kinds counted in `redis_errors_total` (a back-off asks Redis nothing, so it is
    /// never counted).
    pub const COUNTED: [&'static str; 4] = ["timeout", "connection", "auth", "script"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::Auth => "auth",
            Self::Script => "script",
            Self::BackingOff => "backing_off",
        }
    }
}

/// How long after a failure requests skip Redis, so an outage costs each request nothing.
const BACK_OFF: Duration = Duration::from_millis(500);

pub struct SharedBuckets {
    connection: ConnectionManager,
    gcra: redis::Script,
    hold: redis::Script,
    global_rate: (f64, u32),
    timeout: Duration,
    /// Requests skip Redis until this many microseconds after `epoch`.
    skip_until: AtomicU64,
    epoch: Instant,
}

fn period_us(rate: Rate) -> (f64, u32) {
    (1_000_000.0 / rate.per_second, rate.burst)
}

impl SharedBuckets {
    /// Connects lazily: a Redis that is down at start is a fallback, not a failure to start.
    pub fn new(config: &RedisLimits, global: Rate) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            connection: ConnectionManager::new_lazy_with_config(client, manager_config)?,
            gcra: redis::Script::new(GCRA),
            hold: redis::Script::new(HOLD),
            global_rate: period_us(global),
            timeout: config.timeout,
            skip_until: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// One round trip, for `caller` at `caller_rate`: `Ok(None)` allowed, `Ok(Some(limited))`
    /// refused, `Err` no verdict.
    pub async fn check(
        &self,
        caller: &str,
        caller_rate: Rate,
    ) -> Result<Option<Limited>, RedisFailure> {
        if self.now_us() < self.skip_until.load(Ordering::Relaxed) {
            return Err(RedisFailure::BackingOff);
        }
        let mut connection = self.connection.clone();
        let mut call = self.gcra.prepare_invoke();
        let caller_rate = period_us(caller_rate);
        call.key(format!("{PREFIX}caller:{caller}"))
            .key(format!("{PREFIX}hold"))
            .key(format!("{PREFIX}global"))
            .arg(caller_rate.0)
            .arg(caller_rate.1)
            .arg(self.global_rate.0)
            .arg(self.global_rate.1);
        let verdict: (u8, u64) =
            match tokio::time::timeout(self.timeout, call.invoke_async(&mut connection)).await {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(e)) => return Err(self.failed(classify(&e))),
                Err(_) => return Err(self.failed(RedisFailure::Timeout)),
            };
        let scope = match verdict.0 {
            0 => return Ok(None),
            1 => Scope::Caller,
            2 => Scope::Upstream,
            _ => Scope::Global,
        };
        let wait = Duration::from_micros(verdict.1);
        Ok(Some(Limited {
            scope,
            retry_after_secs: super::retry_after_secs(wait),
        }))
    }

    /// Shares KwikID's 429 with every replica. Best effort: the local hold applies regardless.
    pub async fn hold(&self, hold: Duration) -> Result<(), RedisFailure> {
        let mut connection = self.connection.clone();
        let mut call = self.hold.prepare_invoke();
        call.key(format!("{PREFIX}hold"))
            .arg(hold.as_micros() as u64);
        match tokio::time::timeout(self.timeout, call.invoke_async::<i64>(&mut connection)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.failed(classify(&e))),
            Err(_) => Err(self.failed(RedisFailure::Timeout)),
        }
    }

    /// `PING`, for `check`.
    pub async fn ping(&self) -> Result<(), RedisFailure> {
        let mut connection = self.connection.clone();
        let ping = redis::cmd("PING");
        let pong = ping.query_async::<String>(&mut connection);
        match tokio::time::timeout(self.timeout.max(Duration::from_secs(2)), pong).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(RedisFailure::Timeout),
        }
    }

    fn failed(&self, failure: RedisFailure) -> RedisFailure {
        let until = self.now_us() + BACK_OFF.as_micros() as u64;
        self.skip_until.store(until, Ordering::Relaxed);
        failure
    }
}

fn classify(error: &redis::RedisError) -> RedisFailure {
    if error.kind() == redis::ErrorKind::AuthenticationFailed || error.code() == Some("NOAUTH") {
        RedisFailure::Auth
    } else if error.is_timeout() {
        RedisFailure::Timeout
    } else if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal()
    {
        RedisFailure::Connection
    } else {
        RedisFailure::Script
    }
}
