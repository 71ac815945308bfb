//! The label sets of the gateway's metric families, each a fixed set of bounded values (see
//! the parent module): configured routes and callers, status and outcome codes, and fixed
//! words.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    /// The matched route's configured path, or `none`.
    pub(super) route: Arc<str>,
    pub(super) status: u16,
    pub(super) outcome: &'static str,
}

/// What became of a request, coarsely, so that the latency of KwikID's answers is not
/// blurred by refusals (fast) or timeouts (slow): `forwarded`, `refused` (the gateway
/// answered itself before sending), `upstream_error` (502/504) or `client_closed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClassLabel {
    pub(super) class: &'static str,
}

/// The request duration histogram's classes (see [`ClassLabel`]).
pub const CLASSES: [&str; 4] = ["forwarded", "refused", "upstream_error", "client_closed"];

pub(super) fn class(outcome: &str) -> &'static str {
    match outcome {
        "forwarded" => "forwarded",
        "client_closed" => "client_closed",
        "upstream_unavailable" | "upstream_timeout" => "upstream_error",
        _ => "refused",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabel {
    pub(super) version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ScopeLabel {
    pub(super) scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabel {
    pub(super) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BackendLabel {
    pub(super) backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FingerprintLabel {
    pub(super) fingerprint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CallerLabels {
    /// A name from `[[callers]]`, or `other` for every caller that is not listed (SPEC §10).
    pub(super) caller: Arc<str>,
    pub(super) outcome: &'static str,
}

/// The label set of a metric without labels that may be absent: it encodes no label list, and
/// a family without members is left out of the exposition.
pub(super) type Unlabelled = [(&'static str, &'static str); 0];
