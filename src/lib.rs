//! kwikid-gateway: the one process that holds the KwikID API token.
//!
//! Trusted internal callers send `POST /verification/v2/digilocker/init` without credentials;
//! the gateway checks them, rate-limits them, attaches `Authorization: Bearer <token>` and
//! forwards to KwikID over HTTPS, answering with KwikID's response unchanged.
//!
//! # Layout
//!
//! Follow one request top to bottom by reading [`stack`]; each step lives in its own module.
//!
//! - [`config`]      raw TOML → validated [`config::Config`], one-line errors naming the key
//! - [`secret`]      the token: redacting, zeroized, fingerprinted, swappable on reload
//! - [`server`]      accept loop, connection cap, TLS / mTLS, graceful drain
//! - `connection`    one caller connection: HTTP/1.1 requests in, answers out
//! - [`wire`]        HTTP/1.1 framing both sides share: lengths, chunks, heads
//! - [`stack`]       the request pipeline, one step per line
//! - [`trusted`]     caller allow-list and caller identity
//! - [`route`]       path hygiene and the exact route allowlist
//! - [`body`]        JSON validation of the body
//! - [`policy`]      `callback_url` host policy
//! - [`rate_limit`]  per-caller and global buckets, upstream 429 hold, Redis fall-back
//! - [`shared_limits`] the same buckets shared by every replica through Redis
//! - [`forward`]     which headers cross the gateway, each way
//! - [`upstream`]    the pool of HTTPS connections to KwikID, used by the request holding one
//! - [`access_log`]  one JSON line per request; the scrubbing lives here
//! - [`error`]       every answer the gateway makes itself
//! - [`logging`]     operational logs on stderr
//! - [`metrics`]     Prometheus metrics with bounded labels
//! - [`admin`]       `/healthz`, `/readyz`, `/metrics` on their own listener
//! - [`reload`]      token rotation from a file, on change and on SIGHUP
//! - [`tls`]         rustls set-up and throwaway certificates
//! - [`demo`]        `kwikid-gateway demo`
//! - [`mock`]        the mock KwikID used by the demo, tests and benchmarks

pub mod access_log;
pub mod admin;
pub mod body;
pub mod config;
mod connection;
pub mod demo;
pub mod error;
pub mod forward;
pub mod logging;
pub mod metrics;
pub mod mock;
pub mod policy;
pub mod rate_limit;
pub mod reload;
pub mod route;
pub mod secret;
pub mod server;
pub mod shared_limits;
pub mod stack;
pub mod tls;
pub mod trusted;
pub mod upstream;
pub mod wire;

pub use server::{Gateway, serve};
