//! The series the shared cache counts into, resolved once when it is set up, so a request
//! only increments.

use super::{Failure, Ignored};
use crate::metrics::{Counter, Histogram, Metrics, shared as labels};

/// The series the shared cache counts into, resolved once.
pub(super) struct Counters {
    pub(super) hits: Counter,
    pub(super) misses: Counter,
    pub(super) writes: Counter,
    pub(super) errors: Vec<Counter>,
    pub(super) ignored: Vec<Counter>,
    pub(super) duration: Vec<Histogram>,
    pub(super) filled: Counter,
    pub(super) gave_up: Counter,
}

impl Counters {
    pub(super) fn new(metrics: &Metrics) -> Self {
        let m = &metrics.shared_cache;
        let all = |family: &crate::metrics::Family<Counter>, values: &[&str]| {
            values.iter().map(|v| family.series(&[v])).collect()
        };
        let [filled, gave_up] = labels::LOCK_WAITS;
        Self {
            hits: m.hits.clone(),
            misses: m.misses.clone(),
            writes: m.writes.clone(),
            errors: all(&m.errors, &labels::ERRORS),
            ignored: all(&m.ignored, &labels::IGNORED),
            duration: labels::OPERATIONS
                .iter()
                .map(|op| m.duration.series(&[op]))
                .collect(),
            filled: m.lock_waits.series(&[filled]),
            gave_up: m.lock_waits.series(&[gave_up]),
        }
    }

    pub(super) fn error(&self, failure: Failure) -> &Counter {
        let index = labels::ERRORS
            .iter()
            .position(|k| *k == failure.kind())
            .unwrap_or(0);
        &self.errors[index]
    }

    pub(super) fn ignored(&self, reason: Ignored) -> &Counter {
        &self.ignored[reason as usize]
    }
}
