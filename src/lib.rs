//! kwikid-gateway: the one process that holds the KwikID API token.
//!
//! Trusted internal callers send `POST /verification/v2/digilocker/init` without credentials;
//! the gateway checks them, rate-limits them, attaches `Authorization: Bearer <token>` and
//! forwards to KwikID over HTTPS, answering with KwikID's response unchanged.
//!
//! # Layout
//!
//! One request flows down, never back up: [`server`] accepts it, [`proxy`] is the tower stack
//! it passes through (read it top to bottom), [`upstream`] sends it to KwikID.
//!
//! - [`config`]      raw TOML → validated [`config::Config`], one-line errors naming the key
//! - [`secret`]      the token: redacting, zeroized, locked in memory, fingerprinted, swappable
//!   on reload
//! - [`hardening`]   at start: no core files, not dumpable (other processes of the user kept out)
//! - [`server`]      accept loop, connection cap, TLS / mTLS → `Peer`, hyper's HTTP/1.1 and
//!   HTTP/2 server, graceful drain
//! - [`proxy`]       the tower stack, one step per file: access log, rescue (every refusal,
//!   a `Reject` of `reject.rs`, → one JSON answer), trust, route, callers, body, policy,
//!   limits, forward
//! - [`rules`]       the pure rules the steps apply: trusted networks, route hygiene, named
//!   callers, the init body, callback hosts, which headers cross
//! - [`limits`]      per-caller (named callers' own) and global governor buckets, KwikID's
//!   429 hold, Redis GCRA
//! - [`upstream`]    hyper's HTTP/1.1 and HTTP/2 client connections to KwikID under our pool,
//!   direct or through an HTTP CONNECT egress proxy; each failure's cause said in words
//! - [`access_log`]  one JSON line per request; the scrubbing lives here
//! - [`logging`]     operational logs on stderr
//! - [`metrics`]     Prometheus metrics with bounded labels
//! - [`admin`]       `/healthz`, `/readyz`, `/metrics` on their own listener
//! - [`reload`]      token rotation from a file, on change and on SIGHUP
//! - [`cert_reload`] the TLS listener's certificate and key, reloaded the same way
//! - [`token_watch`] the token's health: its JWT expiry, warnings before it lapses, KwikID's
//!   401s
//! - [`tls`]         rustls set-up and throwaway certificates
//!
//! The command line (`src/main.rs`, `src/cli/`) and the mock KwikID (`src/bin/kwikid-mock.rs`,
//! `src/mock/`) are binaries' code, not part of this library.

pub mod access_log;
pub mod admin;
pub mod cert_reload;
pub mod config;
pub mod hardening;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod rules;
pub mod secret;
pub mod server;
pub mod tls;
pub mod token_watch;
pub mod upstream;

pub use server::{Gateway, serve};
