//! The shared cache against a real `redis-server`: replicas sharing exchanged tokens, what
//! Redis gets to see, and Redis failing in every way while requests go on.
//!
//! The replicas of a fleet are `tokex run` processes ([`TokexProcess`]), as in a
//! deployment; a test of one replica against a failing Redis runs it in-process. These
//! tests run on the real clock: Redis is another process, and paused time would move past a
//! command's timeout while Redis answers. Waits are for conditions (a metric, a count),
//! with a deadline.

mod failures;
mod fleet;
mod opaque;

use crate::support::*;

/// `config`'s authority and route, with `cache.shared` at `redis` under `key_file` and the
/// `extra` lines (indented into `shared:`).
fn shared_config(
    as_: &MockAs,
    up: &Upstream,
    url: &str,
    key_file: &std::path::Path,
    extra: &str,
) -> String {
    with_shared_cache(config(as_, &up.url()), url, key_file, extra)
}

/// `yaml` (with no `cache` section) and `cache.shared` at `url` under `key_file`, with
/// the `extra` lines indented into `shared:`.
pub(crate) fn with_shared_cache(
    mut yaml: String,
    url: &str,
    key_file: &std::path::Path,
    extra: &str,
) -> String {
    yaml.push_str(&format!(
        "cache:\n  shared:\n    url: {url}\n    key_file: {}\n",
        key_file.display()
    ));
    for line in extra.lines() {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml
}

/// The value of `series` (a full name with labels) in `metrics`; 0 when it is absent.
fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// `series` on `tokex` now.
pub(crate) async fn read_metric(tokex: &impl Sidecar, series: &str) -> f64 {
    metric(&tokex.metrics().await, series)
}

/// Waits until `tokex` has written `n` tokens to the shared cache.
pub(crate) async fn written(tokex: &impl Sidecar, n: f64) {
    eventually(&format!("{n} writes to the shared cache"), async || {
        read_metric(tokex, "tokex_shared_cache_writes_total").await >= n
    })
    .await;
}

/// A request for `token` through `tokex`: it must succeed; the token the upstream saw.
async fn narrowed(tokex: &impl Sidecar, up: &Upstream, token: &str) -> String {
    let got = get(tokex, "echo.internal", "/", Some(token)).await;
    assert_eq!(got.status, 200, "{got:?}");
    up.seen()
        .last()
        .map(|s| s.headers["authorization"].to_str().unwrap().to_string())
        .unwrap()
}

/// Fresh random keys for a key file.
pub(crate) fn random_keys<const N: usize>() -> [[u8; 32]; N] {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut keys = [[0u8; 32]; N];
    for k in &mut keys {
        rng.fill(k).unwrap();
    }
    keys
}
