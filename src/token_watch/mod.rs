//! The token's health, as far as the gateway can see it (SPEC §11): when it expires (its JWT
//! `exp`), warnings before it does, and KwikID rejecting it.
//!
//! - [`jwt`]: `exp` read from the token's bytes (only `secret` calls it).
//! - [`expiry`]: where the token stands against `token.warn_before_expiry`, and when to say so.
//! - [`rejections`]: KwikID's 401s, one line a minute.
//!
//! Every line names the token by its fingerprint (`token_id`), never by any part of it.

pub mod expiry;
pub mod jwt;
pub mod rejections;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use self::expiry::{Reminder, Standing, coarse, rfc3339};
use self::rejections::Rejections;
use crate::metrics::Metrics;
use crate::secret::{LoadedToken, TokenStore};

/// How often the running gateway looks at the token's expiry: the hourly reminder, and the
/// first warning once the window opens, come at most this late.
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// What the gateway says about the token in use, and when.
pub struct TokenWatch {
    /// `token.warn_before_expiry`.
    warn_before: Duration,
    metrics: Arc<Metrics>,
    reminder: Mutex<Reminder>,
    rejections: Rejections,
}

impl TokenWatch {
    pub fn new(warn_before: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            warn_before,
            metrics,
            reminder: Mutex::new(Reminder::new(expiry::REPEAT_EVERY)),
            rejections: Rejections::new(rejections::LINE_EVERY),
        }
    }

    /// `token` was just loaded, at start (`trigger` = `start`) or on a reload (`file change`,
    /// `SIGHUP`): the expiry gauge, and one line on when it expires (a warning while it is
    /// expiring, an error once it has expired; the gateway runs on either way: KwikID decides).
    pub fn loaded(&self, token: &LoadedToken, trigger: &'static str) {
        self.metrics.token_expiry(token.expires);
        self.look_at(token, trigger, SystemTime::now(), true);
    }

    /// The periodic look: a reminder when one is due.
    pub fn look(&self, token: &LoadedToken) {
        self.look_at(token, "reminder", SystemTime::now(), false);
    }

    fn look_at(&self, token: &LoadedToken, trigger: &'static str, now: SystemTime, loaded: bool) {
        let standing = Standing::of(token.expires, now, self.warn_before);
        let due = self
            .reminder
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due(&standing, now, loaded);
        if due || loaded {
            log(&standing, &token.fingerprint, trigger);
        }
    }

    /// KwikID answered 401 to a request sent with `token`: counted, and logged at most once a
    /// minute. The answer itself passes through unchanged.
    pub fn rejected(&self, token: &LoadedToken) {
        self.metrics.upstream_auth_failure();
        if let Some(unlogged) = self.rejections.note(Instant::now()) {
            tracing::error!(
                token_id = token.fingerprint.as_str(),
                expiry =
                    Standing::of(token.expires, SystemTime::now(), self.warn_before).describe(),
                unlogged_since_last_line = unlogged,
                "KwikID rejected the token in use"
            );
        }
    }
}

fn log(standing: &Standing, token_id: &str, trigger: &'static str) {
    match *standing {
        Standing::Unknown => tracing::info!(
            token_id,
            trigger,
            "the token has no readable expiry (not a JWT with a numeric exp)"
        ),
        Standing::Valid { expires, left } => tracing::info!(
            token_id,
            trigger,
            expires_at = rfc3339(expires),
            expires_in = coarse(left),
            "token expiry"
        ),
        Standing::Expiring { expires, left } => tracing::warn!(
            token_id,
            trigger,
            expires_at = rfc3339(expires),
            expires_in = coarse(left),
            "the token in use expires soon; rotate it"
        ),
        Standing::Expired { expires, ago } => tracing::error!(
            token_id,
            trigger,
            expired_at = rfc3339(expires),
            expired_ago = coarse(ago),
            "the token in use has expired; KwikID will refuse it"
        ),
    }
}

/// Looks at the token in use every [`LOOK_EVERY`] until the task is dropped; the reminder
/// decides whether to say anything.
pub fn spawn(watch: Arc<TokenWatch>, token: Arc<TokenStore>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let first = tokio::time::Instant::now() + LOOK_EVERY;
        let mut every = tokio::time::interval_at(first, LOOK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            watch.look(&token.current());
        }
    })
}
