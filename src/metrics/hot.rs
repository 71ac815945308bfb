//! The series requests land in, kept at hand: a `Family` finds a series by hashing its labels
//! (SipHash) under a lock, which cost ~450 instructions per lookup, three lookups per request
//! (`benches/count.sh`). A request's few series are found here by a short scan instead.

use std::sync::{Mutex, OnceLock, PoisonError};

use prometheus_client::metrics::histogram::Histogram;

use super::CLASSES;

/// How many series of one family are kept at hand; past that, lookups go to the family. A
/// gateway's requests land in a handful (one route, a few statuses and outcomes).
const KEPT: usize = 32;

/// A family's series most requests land in, by their labels.
pub(super) struct Hot<L, M> {
    series: Mutex<Vec<(L, M)>>,
}

impl<L, M> Default for Hot<L, M> {
    fn default() -> Self {
        Self {
            series: Mutex::new(Vec::new()),
        }
    }
}

impl<L: PartialEq + Clone, M: Clone> Hot<L, M> {
    /// Applies `f` to the series of `labels`, taken from `family` (and kept) the first time.
    pub(super) fn with(&self, labels: &L, family: impl FnOnce(&L) -> M, f: impl FnOnce(&M)) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, metric)) = series.iter().find(|(l, _)| l == labels) {
            return f(metric);
        }
        let metric = family(labels);
        f(&metric);
        if series.len() < KEPT {
            series.push((labels.clone(), metric));
        }
    }
}

/// One request-duration histogram per class, taken from the family the first time.
#[derive(Default)]
pub(super) struct Classes([OnceLock<Histogram>; CLASSES.len()]);

impl Classes {
    /// The histogram of `class` (one of [`CLASSES`]).
    pub(super) fn get(&self, class: &str, family: impl FnOnce() -> Histogram) -> &Histogram {
        let i = CLASSES.iter().position(|&c| c == class).unwrap_or(0);
        self.0[i].get_or_init(family)
    }
}
