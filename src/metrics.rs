//! Prometheus metrics on `prometheus-client`, in the OpenMetrics text format.
//!
//! A label set's handle is created once and held by the route, authority or
//! connection that records into it, so the request path does an atomic add (a
//! histogram takes its own uncontended lock) and never looks a series up. Series whose
//! label values are known up front start at 0, so a rate over them exists from the
//! first scrape.

mod process;
mod route;
pub mod shared;

use std::time::Duration;

use prometheus_client::encoding::text::encode;
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as Families;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

pub use route::RouteMetrics;
pub use shared::SharedCacheMetrics;

use crate::config::model::{Authority, ClientAuth};
use crate::credentials::expiry::not_after;

/// Label values, in the order of the family's label names.
type Labels = Vec<(&'static str, String)>;

/// Upper bounds in seconds, from sub-millisecond cache hits to multi-second AS calls.
const LATENCY: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds in seconds for issued-token lifetimes, ten seconds to a day.
const LIFETIME: [f64; 11] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 86400.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY)
}

fn lifetime() -> Histogram {
    Histogram::new(LIFETIME)
}

/// One metric name and its series by label values.
#[derive(Debug)]
pub struct Family<M, C = fn() -> M> {
    labels: &'static [&'static str],
    inner: Families<Labels, M, C>,
}

impl<M, C> Family<M, C>
where
    M: Clone + Metric,
    C: prometheus_client::metrics::family::MetricConstructor<M> + Clone + Send + Sync + 'static,
    Families<Labels, M, C>: Metric,
{
    fn register(
        registry: &mut Registry,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        constructor: C,
    ) -> Self {
        let inner = Families::new_with_constructor(constructor);
        registry.register(name, help, inner.clone());
        Self { labels, inner }
    }

    /// The series for `values` (one per label), created on first use. Not for the hot
    /// path: callers keep the returned handle.
    pub fn series(&self, values: &[&str]) -> M {
        let labels: Labels = self
            .labels
            .iter()
            .zip(values)
            .map(|(n, v)| (*n, v.to_string()))
            .collect();
        self.inner.get_or_create(&labels).clone()
    }
}

/// All of tokex's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<Counter>,
    pub request_duration: Family<Histogram>,
    pub exchanges: Family<Counter>,
    pub exchange_duration: Family<Histogram>,
    pub exchange_retries: Family<Counter>,
    pub retry_budget_exhausted: Family<Counter>,
    pub circuit_open: Family<Gauge>,
    pub issued_lifetime: Family<Histogram>,
    pub cache_hits: Family<Counter>,
    pub cache_misses: Family<Counter>,
    cache_entries: Gauge,
    pub config_reloads: Family<Counter>,
    pub discovery_failures: Family<Counter>,
    config_last_reload_ok: Gauge,
    config_last_success: Gauge,
    pub credential_reloads: Family<Counter>,
    credential_expiry: Family<Gauge>,
    pub body_stalls: Family<Counter>,
    pub redirected: Family<Counter>,
    pub shared_cache: SharedCacheMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let counter = Counter::default as fn() -> Counter;
        let gauge = Gauge::default as fn() -> Gauge;
        let m = Self {
            requests: Family::register(
                &mut r,
                "tokex_requests",
                "Requests handled, by route, response status and, for responses tokex made itself, its tokex-error code.",
                &["route", "status", "code"],
                counter,
            ),
            request_duration: Family::register(
                &mut r,
                "tokex_request_duration_seconds",
                "Time from request to response headers.",
                &["route"],
                latency,
            ),
            exchanges: Family::register(
                &mut r,
                "tokex_exchanges",
                "Token exchanges at an authority, by outcome.",
                &["authority", "outcome"],
                counter,
            ),
            exchange_duration: Family::register(
                &mut r,
                "tokex_exchange_duration_seconds",
                "Duration of token exchange calls, retries included.",
                &["authority"],
                latency,
            ),
            exchange_retries: Family::register(
                &mut r,
                "tokex_exchange_retries",
                "Token requests sent again after a transient failure.",
                &["authority"],
                counter,
            ),
            retry_budget_exhausted: Family::register(
                &mut r,
                "tokex_retry_budget_exhausted",
                "Retries not made because the authority's retry budget was spent.",
                &["authority"],
                counter,
            ),
            circuit_open: Family::register(
                &mut r,
                "tokex_circuit_breaker_open",
                "1 while an authority's circuit breaker is open or probing, else 0.",
                &["authority"],
                gauge,
            ),
            issued_lifetime: Family::register(
                &mut r,
                "tokex_issued_token_lifetime_seconds",
                "Lifetime of issued tokens as the authority gave it (expires_in, or the JWT's exp).",
                &["authority"],
                lifetime,
            ),
            cache_hits: Family::register(
                &mut r,
                "tokex_cache_hits",
                "Requests served with a cached narrowed token.",
                &["route"],
                counter,
            ),
            cache_misses: Family::register(
                &mut r,
                "tokex_cache_misses",
                "Requests that needed a token exchange.",
                &["route"],
                counter,
            ),
            cache_entries: Gauge::default(),
            config_reloads: Family::register(
                &mut r,
                "tokex_config_reloads",
                "Configuration reloads, by result.",
                &["result"],
                counter,
            ),
            discovery_failures: Family::register(
                &mut r,
                "tokex_discovery_failures",
                "Reloads that could not read an authority's metadata and kept its token endpoint, by authority.",
                &["authority"],
                counter,
            ),
            config_last_reload_ok: Gauge::default(),
            config_last_success: Gauge::default(),
            credential_reloads: Family::register(
                &mut r,
                "tokex_credential_reloads",
                "Credential file reloads (rotation), by result.",
                &["result"],
                counter,
            ),
            credential_expiry: Family::register(
                &mut r,
                "tokex_credential_expiry_timestamp_seconds",
                "When a credential tokex presents expires (a client certificate's notAfter, a client assertion's or actor token's exp), in Unix seconds.",
                &["authority", "credential"],
                gauge,
            ),
            body_stalls: Family::register(
                &mut r,
                "tokex_body_stalls",
                "Bodies that made no progress for timeouts.body_idle, by the way they flowed.",
                &["direction"],
                counter,
            ),
            redirected: Family::register(
                &mut r,
                "tokex_redirected_connections",
                "Connections that arrived through the transparent redirect, by what they spoke (http, tls, other) and what tokex did (proxied, passthrough, rejected).",
                &["protocol", "outcome"],
                counter,
            ),
            shared_cache: SharedCacheMetrics::register(&mut r),
            registry: Registry::default(),
        };
        r.register(
            "tokex_cache_entries",
            "Narrowed tokens held in the cache.",
            m.cache_entries.clone(),
        );
        r.register(
            "tokex_config_last_reload_successful",
            "1 if the last configuration load or reload succeeded, else 0.",
            m.config_last_reload_ok.clone(),
        );
        r.register(
            "tokex_config_last_reload_success_timestamp_seconds",
            "When the configuration in force was loaded, in Unix seconds.",
            m.config_last_success.clone(),
        );
        r.register(
            "tokex_build",
            "The tokex build serving.",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register_collector(Box::new(process::Process::default()));
        for result in ["ok", "error"] {
            m.config_reloads.series(&[result]);
            m.credential_reloads.series(&[result]);
        }
        for direction in ["to_upstream", "to_app"] {
            m.body_stalls.series(&[direction]);
        }
        for (protocol, outcome) in [
            ("http", "proxied"),
            ("tls", "passthrough"),
            ("tls", "rejected"),
            ("other", "passthrough"),
            ("other", "rejected"),
        ] {
            m.redirected.series(&[protocol, outcome]);
        }
        m.config_loaded(true);
        Self { registry: r, ..m }
    }
}

impl Metrics {
    /// Records the result of loading or reloading the config.
    pub fn config_loaded(&self, ok: bool) {
        self.config_last_reload_ok.set(i64::from(ok));
        if ok {
            self.config_last_success
                .set(i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX));
        }
    }

    /// Samples the expiry of every credential the authorities in force present; an
    /// authority gone with a reload takes its series with it.
    pub fn credential_expiry<'a>(&self, authorities: impl Iterator<Item = &'a Authority>) {
        self.credential_expiry.inner.clear();
        for authority in authorities {
            for (kind, at) in presented_expiry(authority) {
                self.credential_expiry
                    .series(&[&authority.name, kind])
                    .set(at);
            }
        }
    }

    /// Renders the OpenMetrics text format; `cache_entries` is sampled by the caller.
    pub fn render(&self, cache_entries: u64) -> String {
        self.cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(8192);
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The credentials of `authority` that carry an expiry, by kind, in Unix seconds.
fn presented_expiry(authority: &Authority) -> Vec<(&'static str, i64)> {
    let mut found = Vec::new();
    match &authority.auth {
        ClientAuth::TlsClientAuth { identity } => {
            if let Some(at) = identity.with(|i| i.certs.first().and_then(|c| not_after(c))) {
                found.push(("client_certificate", at));
            }
        }
        ClientAuth::ClientAssertion { assertion, .. } => {
            if let Some(at) = assertion.with(|a| jwt_exp(a.expose())) {
                found.push(("client_assertion", at));
            }
        }
        _ => {}
    }
    if let Some(at) = authority
        .actor_token
        .as_ref()
        .and_then(|actor| actor.token.with(|a| jwt_exp(a.token.expose())))
    {
        found.push(("actor_token", at));
    }
    found
}

fn jwt_exp(token: &str) -> Option<i64> {
    crate::jwt::unverified_exp(token).and_then(|exp| i64::try_from(exp).ok())
}

/// Seconds as a histogram observes them.
pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests;
