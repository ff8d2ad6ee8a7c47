//! `tokex_shared_cache_*`: what the second cache level found, what it wrote, what it
//! ignored and why, how its server answered, and its breaker. Every series exists from
//! the start at 0, with or without a shared cache configured.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Family, latency};

/// Why a command got no usable answer (see `cache::shared`'s `Failure`).
pub const ERRORS: [&str; 5] = ["breaker_open", "timeout", "connect", "io", "reply"];
/// Why a value read from the shared cache was not used.
pub const IGNORED: [&str; 3] = ["undecryptable", "expired", "unusable"];
/// What a command to the server was for.
pub const OPERATIONS: [&str; 4] = ["read", "write", "lock", "unlock"];
/// How a wait for another replica's exchange ended.
pub const LOCK_WAITS: [&str; 2] = ["filled", "gave_up"];

#[derive(Debug)]
pub struct SharedCacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    pub writes: Counter,
    pub errors: Family<Counter>,
    pub ignored: Family<Counter>,
    pub breaker_open: Gauge,
    pub duration: Family<Histogram>,
    pub lock_waits: Family<Counter>,
}

impl SharedCacheMetrics {
    pub(super) fn register(r: &mut Registry) -> Self {
        let counter = Counter::default as fn() -> Counter;
        let m = Self {
            hits: Counter::default(),
            misses: Counter::default(),
            writes: Counter::default(),
            errors: Family::register(
                r,
                "tokex_shared_cache_errors",
                "Shared-cache commands that got no usable answer, by kind (breaker_open: not sent); the request went on without the shared cache.",
                &["kind"],
                counter,
            ),
            ignored: Family::register(
                r,
                "tokex_shared_cache_ignored",
                "Values read from the shared cache and not used, by reason: undecryptable (tampered, or under a key this replica lacks), expired (past the bound it carries) or unusable (not a header value, or longer than 17 KiB).",
                &["reason"],
                counter,
            ),
            breaker_open: Gauge::default(),
            duration: Family::register(
                r,
                "tokex_shared_cache_duration_seconds",
                "Duration of shared-cache commands that were answered, by operation.",
                &["operation"],
                latency,
            ),
            lock_waits: Family::register(
                r,
                "tokex_shared_cache_lock_waits",
                "Waits for another replica's exchange under the fleet lock, by how they ended: filled (its token arrived) or gave_up (the exchange timeout passed; this replica exchanged itself).",
                &["outcome"],
                counter,
            ),
        };
        r.register(
            "tokex_shared_cache_hits",
            "Local misses answered by the shared cache.",
            m.hits.clone(),
        );
        r.register(
            "tokex_shared_cache_misses",
            "Local misses the shared cache had no usable token for.",
            m.misses.clone(),
        );
        r.register(
            "tokex_shared_cache_writes",
            "Tokens written to the shared cache.",
            m.writes.clone(),
        );
        r.register(
            "tokex_shared_cache_breaker_open",
            "1 while the shared cache's circuit breaker is open or probing, else 0.",
            m.breaker_open.clone(),
        );
        for kind in ERRORS {
            m.errors.series(&[kind]);
        }
        for reason in IGNORED {
            m.ignored.series(&[reason]);
        }
        for operation in OPERATIONS {
            m.duration.series(&[operation]);
        }
        for outcome in LOCK_WAITS {
            m.lock_waits.series(&[outcome]);
        }
        m
    }
}
