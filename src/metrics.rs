//! Prometheus metrics, lock-free on the request path.
//!
//! Series are plain atomics. A label set's handle is created once (under a mutex) and
//! then held by the route or authority that uses it, so recording a request is an atomic
//! add. `/metrics` renders the text exposition format by walking the families.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds in seconds, from sub-millisecond cache hits to multi-second AS calls.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

/// One metric name and its series by label values.
#[derive(Debug)]
pub struct Family<T> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: Mutex<BTreeMap<Vec<String>, Arc<T>>>,
}

impl<T: Default> Family<T> {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// The series for `values` (one per label), created on first use. Not for the hot
    /// path: callers keep the returned handle.
    pub fn series(&self, values: &[&str]) -> Arc<T> {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    }

    fn snapshot(&self) -> Vec<(Vec<String>, Arc<T>)> {
        let map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn label_text(&self, values: &[String], extra: Option<(&str, &str)>) -> String {
        let mut parts: Vec<String> = self
            .labels
            .iter()
            .zip(values)
            .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
            .collect();
        if let Some((n, v)) = extra {
            parts.push(format!("{n}=\"{v}\""));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", parts.join(","))
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// All of tokex's metrics.
#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<Counter>,
    pub request_duration: Family<Histogram>,
    pub exchanges: Family<Counter>,
    pub exchange_duration: Family<Histogram>,
    pub cache_hits: Family<Counter>,
    pub cache_misses: Family<Counter>,
    pub config_reloads: Family<Counter>,
    pub credential_reloads: Family<Counter>,
    pub body_stalls: Family<Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::new(
                "tokex_requests_total",
                "Requests handled, by route and response status.",
                &["route", "status"],
            ),
            request_duration: Family::new(
                "tokex_request_duration_seconds",
                "Time from request to response headers.",
                &["route"],
            ),
            exchanges: Family::new(
                "tokex_exchanges_total",
                "Token exchanges at an authority, by outcome.",
                &["authority", "outcome"],
            ),
            exchange_duration: Family::new(
                "tokex_exchange_duration_seconds",
                "Duration of token exchange calls.",
                &["authority"],
            ),
            cache_hits: Family::new(
                "tokex_cache_hits_total",
                "Requests served with a cached narrowed token.",
                &["route"],
            ),
            cache_misses: Family::new(
                "tokex_cache_misses_total",
                "Requests that needed a token exchange.",
                &["route"],
            ),
            config_reloads: Family::new(
                "tokex_config_reloads_total",
                "Configuration reloads, by result.",
                &["result"],
            ),
            credential_reloads: Family::new(
                "tokex_credential_reloads_total",
                "Credential file reloads (rotation), by result.",
                &["result"],
            ),
            body_stalls: Family::new(
                "tokex_body_stalls_total",
                "Bodies that made no progress for timeouts.body_idle, by the way they flowed.",
                &["direction"],
            ),
        }
    }
}

impl Metrics {
    /// Renders the Prometheus text format; `cache_entries` is sampled by the caller.
    pub fn render(&self, cache_entries: u64) -> String {
        let mut out = String::with_capacity(4096);
        for f in [
            &self.requests,
            &self.exchanges,
            &self.cache_hits,
            &self.cache_misses,
            &self.config_reloads,
            &self.credential_reloads,
            &self.body_stalls,
        ] {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} counter",
                f.name, f.help, f.name
            );
            for (labels, c) in f.snapshot() {
                let _ = writeln!(out, "{}{} {}", f.name, f.label_text(&labels, None), c.get());
            }
        }
        for f in [&self.request_duration, &self.exchange_duration] {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} histogram",
                f.name, f.help, f.name
            );
            for (labels, h) in f.snapshot() {
                let mut cumulative = 0;
                for (i, bound) in BUCKETS
                    .iter()
                    .map(|b| b.to_string())
                    .chain(["+Inf".to_string()])
                    .enumerate()
                {
                    cumulative += h.counts[i].load(Ordering::Relaxed);
                    let l = f.label_text(&labels, Some(("le", &bound)));
                    let _ = writeln!(out, "{}_bucket{l} {cumulative}", f.name);
                }
                let l = f.label_text(&labels, None);
                let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(
                    out,
                    "{}_sum{l} {sum}\n{}_count{l} {cumulative}",
                    f.name, f.name
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tokex_cache_entries Narrowed tokens held in the cache.\n# TYPE tokex_cache_entries gauge\ntokex_cache_entries {cache_entries}"
        );
        out
    }
}

/// The handles one route records into, resolved when the route is built.
#[derive(Debug)]
pub struct RouteMetrics {
    name: String,
    metrics: Arc<Metrics>,
    /// `tokex_requests_total` by status 100..=599, filled on first use of each status.
    by_status: Box<[OnceLock<Arc<Counter>>]>,
    pub duration: Arc<Histogram>,
    hits: Option<Arc<Counter>>,
    misses: Option<Arc<Counter>>,
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
        Self {
            name: route.to_string(),
            metrics: metrics.clone(),
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
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

    /// Records one finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed);
        let Some(slot) = self.by_status.get(usize::from(status).wrapping_sub(100)) else {
            return;
        };
        slot.get_or_init(|| {
            self.metrics
                .requests
                .series(&[&self.name, &status.to_string()])
        })
        .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters and histograms render in the text format with cumulative buckets.
    #[test]
    fn renders_prometheus_text() {
        let m = Arc::new(Metrics::default());
        let r = RouteMetrics::new(&m, "payments");
        r.record(200, Duration::from_micros(300));
        r.record(200, Duration::from_millis(30));
        r.record(503, Duration::from_secs(20));
        r.hit();
        let none = RouteMetrics::unrouted(&m);
        none.record(404, Duration::from_micros(1));
        let text = m.render(7);
        assert!(text.contains("tokex_requests_total{route=\"none\",status=\"404\"} 1"));
        assert!(
            !text.contains("tokex_cache_hits_total{route=\"none\"}"),
            "{text}"
        );
        assert!(
            text.contains("tokex_requests_total{route=\"payments\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("tokex_requests_total{route=\"payments\",status=\"503\"} 1"));
        assert!(
            text.contains(
                "tokex_request_duration_seconds_bucket{route=\"payments\",le=\"0.0005\"} 1"
            )
        );
        assert!(
            text.contains(
                "tokex_request_duration_seconds_bucket{route=\"payments\",le=\"0.05\"} 2"
            )
        );
        assert!(
            text.contains(
                "tokex_request_duration_seconds_bucket{route=\"payments\",le=\"+Inf\"} 3"
            )
        );
        assert!(text.contains("tokex_request_duration_seconds_count{route=\"payments\"} 3"));
        assert!(text.contains("tokex_cache_hits_total{route=\"payments\"} 1"));
        assert!(text.contains("tokex_cache_entries 7"));
    }
}
