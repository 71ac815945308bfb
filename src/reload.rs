//! Token rotation without a restart: with `[token] file`, the file is re-read every second
//! and on SIGHUP. Polling by path follows symlinks, so a Kubernetes Secret volume's atomic
//! `..data` swap is seen like any write, and so is a rename-replace or an in-place edit.
//!
//! A missing, empty or invalid read keeps the last good token and warns once per change of
//! state, never with the content. A good read is followed by the new token's expiry line.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};

use crate::Gateway;
use crate::config::TokenSource;
use crate::secret::{Token, TokenError};

const POLL_EVERY: Duration = Duration::from_secs(1);

/// What the last read found: a hash of the content read, or the error.
#[derive(Clone, PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Failed(TokenError),
}

/// Watches the token source until the task is dropped. Install before serving: SIGHUP's
/// default action would end the process.
pub fn spawn(gateway: Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    let hangup = signal(SignalKind::hangup());
    // What the file holds now, read before this returns: read when the task first ran, a
    // change made between start-up and that first run would never be seen.
    let first = match &gateway.config.token {
        TokenSource::File(_) => Some(read(&gateway.config.token).0),
        _ => None,
    };
    tokio::spawn(async move {
        let Ok(mut hangup) = hangup else {
            tracing::warn!("cannot listen for SIGHUP; token reload on signal is off");
            return;
        };
        let Some(mut seen) = first else {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: the token comes from the environment; nothing to reload");
            }
            return;
        };
        let mut every = tokio::time::interval(POLL_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = every.tick() => false,
                _ = hangup.recv() => true,
            };
            let (now, token) = read(&gateway.config.token);
            if now == seen && !forced {
                continue;
            }
            seen = now;
            apply(&gateway, token, forced);
        }
    })
}

fn read(source: &TokenSource) -> (Seen, Result<Token, TokenError>) {
    match Token::read(source) {
        Ok(token) => (Seen::Content(token.content_hash()), Ok(token)),
        Err(e) => (Seen::Failed(e.clone()), Err(e)),
    }
}

fn apply(gateway: &Gateway, token: Result<Token, TokenError>, forced: bool) {
    let trigger = if forced { "SIGHUP" } else { "file change" };
    match token {
        Ok(token) => {
            let fingerprint = gateway.token.replace(&token);
            gateway.metrics.token_in_use(&fingerprint);
            gateway.metrics.token_reload(true);
            tracing::info!(token_id = fingerprint.as_str(), trigger, "token reloaded");
            // When the new token expires (SPEC §11): a warning if it already expires soon.
            gateway
                .token_watch
                .loaded(&gateway.token.current(), trigger);
        }
        Err(e) => {
            gateway.metrics.token_reload(false);
            let current = gateway.token.current();
            tracing::warn!(
                reason = %e,
                token_id = current.fingerprint.as_str(),
                trigger,
                "token reload failed; keeping the current token"
            );
        }
    }
}

impl Token {
    /// SHA-256 of the token, to notice a change without keeping a copy.
    fn content_hash(&self) -> [u8; 32] {
        use secrecy::ExposeSecret;
        Sha256::digest(self.expose().expose_secret().as_bytes()).into()
    }
}
