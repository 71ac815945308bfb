//! Operational logs (start, reload, upstream errors) on stderr through `tracing`.
//!
//! The level applies to every target, dependencies included: nothing the gateway or its
//! dependencies log at any level carries the token or `redirection_url` (the scrubbing tests
//! run at `trace` to prove it). rustls and hyper are built without their logging features.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::{Log, LogFormat};

/// Installs the global subscriber; a second call is ignored.
pub fn init(log: &Log) {
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    let layer = match log.format {
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(log.level)
            .boxed(),
        LogFormat::Text => layer.with_filter(log.level).boxed(),
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
}
