//! The handles one route records into, resolved when the route is built.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::Metrics;
use crate::error::Code;

/// `tokex_requests_total` and friends for one route.
#[derive(Debug)]
pub struct RouteMetrics {
    name: String,
    metrics: Arc<Metrics>,
    /// Upstream answers by status 100..=599 (no `code`), filled on first use of each.
    by_status: Box<[OnceLock<Counter>]>,
    /// tokex's own answers, by code: each code has one status.
    by_code: [Counter; Code::ALL.len()],
    pub duration: Histogram,
    hits: Option<Counter>,
    misses: Option<Counter>,
}

impl RouteMetrics {
    pub fn new(metrics: &Arc<Metrics>, route: &str) -> Self {
        Self {
            hits: Some(metrics.cache_hits.series(&[route])),
            misses: Some(metrics.cache_misses.series(&[route])),
            ..Self::new_bare(metrics, route)
        }
    }

    /// For requests that matched no route: they have a status and a duration, but no
    /// cache, so no cache series is created for them.
    pub fn unrouted(metrics: &Arc<Metrics>) -> Self {
        Self::new_bare(metrics, "none")
    }

    fn new_bare(metrics: &Arc<Metrics>, route: &str) -> Self {
        // Created up front, at 0, only where the route can answer so: `no_route` only for
        // the unrouted requests, everything else only for routes.
        let own = |code: Code| {
            let series = || {
                metrics
                    .requests
                    .series(&[route, code.status().as_str(), code.as_str()])
            };
            let possible = (code == Code::NoRoute) == (route == "none");
            possible.then(series).unwrap_or_default()
        };
        Self {
            name: route.to_string(),
            metrics: metrics.clone(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            by_code: Code::ALL.map(own),
            duration: metrics.request_duration.series(&[route]),
            hits: None,
            misses: None,
        }
    }

    pub fn hit(&self) {
        if let Some(c) = &self.hits {
            c.inc();
        }
    }

    pub fn miss(&self) {
        if let Some(c) = &self.misses {
            c.inc();
        }
    }

    /// Records one finished request: the upstream's `status` (or 408 for a request whose
    /// body stalled, which gets no answer), or tokex's own answer by its `code`.
    pub fn record(&self, status: u16, code: Option<Code>, elapsed: Duration) {
        self.duration.observe(super::seconds(elapsed));
        if let Some(code) = code {
            if let Some(i) = Code::ALL.iter().position(|c| *c == code) {
                self.by_code[i].inc();
            }
            return;
        }
        let Some(slot) = self.by_status.get(usize::from(status).wrapping_sub(100)) else {
            return;
        };
        slot.get_or_init(|| {
            self.metrics
                .requests
                .series(&[&self.name, &status.to_string(), ""])
        })
        .inc();
    }
}
