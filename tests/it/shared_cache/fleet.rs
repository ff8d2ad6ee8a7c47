//! Replicas sharing one Redis: one exchange per key across the fleet, with and without
//! the fleet lock, a late replica warm from the start, TLS to Redis, keys rotated on a
//! running replica.

use std::time::Duration;

use super::*;

/// With 2 and then 5 replica processes, with the fleet lock and without, a key exchanged
/// on one is served by all the others with no further AS call (each has its own, empty
/// local cache), and a replica started later serves it warm.
#[tokio::test]
async fn one_exchange_per_key_across_the_fleet() {
    for (replicas, lock) in [(2, false), (2, true), (5, false), (5, true)] {
        let (redis, as_, up) = (
            Redis::start().await,
            MockAs::start().await,
            Upstream::start().await,
        );
        let dir = tempfile::tempdir().unwrap();
        let keys = key_file(dir.path(), &random_keys::<1>());
        let extra = if lock { "lock: {}" } else { "" };
        let yaml = shared_config(&as_, &up, &redis.url(), &keys, extra);
        let fleet = start_fleet(replicas, &yaml).await;
        for (i, subject) in ["subject-a", "subject-b"].iter().enumerate() {
            let first = narrowed(&fleet[i], &up, subject).await;
            written(&fleet[i], 1.0).await;
            for replica in &fleet {
                assert_eq!(narrowed(replica, &up, subject).await, first);
            }
        }
        let setup = format!("{replicas} replicas, lock {lock}");
        assert_eq!(as_.count(), 2, "{setup}: one exchange per key");
        let mut hits = 0.0;
        for replica in &fleet {
            hits += read_metric(replica, "tokex_shared_cache_hits_total").await;
        }
        assert_eq!(
            hits,
            2.0 * (replicas as f64 - 1.0),
            "{setup}: the others read Redis"
        );
        let late = TokexProcess::start(&yaml).await;
        narrowed(&late, &up, "subject-a").await;
        narrowed(&late, &up, "subject-b").await;
        assert_eq!(as_.count(), 2, "{setup}: a later replica starts warm");
        let late_hits = read_metric(&late, "tokex_shared_cache_hits_total").await;
        assert_eq!(late_hits, 2.0, "{setup}");
    }
}

/// With the fleet lock, five replica processes missing one key at the same moment make
/// one exchange: one takes the lock, the others wait for its token. Without the lock the
/// replicas that miss before the first token is written each exchange (the AS takes 600 ms,
/// far longer than their lookups).
#[tokio::test]
async fn the_fleet_lock_makes_concurrent_misses_one_exchange() {
    for lock in [true, false] {
        let (redis, as_, up) = (
            Redis::start().await,
            MockAs::start().await,
            Upstream::start().await,
        );
        as_.on(|req, n| issue(req, n).delayed(Duration::from_millis(600)));
        let dir = tempfile::tempdir().unwrap();
        let keys = key_file(dir.path(), &random_keys::<1>());
        let extra = if lock {
            "lock: { poll_interval: 10ms }"
        } else {
            ""
        };
        let yaml = shared_config(&as_, &up, &redis.url(), &keys, extra);
        let fleet = start_fleet(5, &yaml).await;
        let all = fleet
            .iter()
            .map(|replica| get(replica, "echo.internal", "/", Some("subject-together")));
        let answers = futures_util::future::join_all(all).await;
        assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
        if lock {
            assert_eq!(as_.count(), 1, "one exchange under the fleet lock");
            let mut filled = 0.0;
            for replica in &fleet {
                filled += read_metric(
                    replica,
                    "tokex_shared_cache_lock_waits_total{outcome=\"filled\"}",
                )
                .await;
            }
            assert_eq!(filled, 4.0, "four replicas waited for the fifth's token");
        } else {
            assert!(
                as_.count() > 1,
                "without the lock, replicas exchange side by side"
            );
        }
    }
}

/// `n` replica processes on `yaml`, started side by side.
async fn start_fleet(n: usize, yaml: &str) -> Vec<TokexProcess> {
    futures_util::future::join_all((0..n).map(|_| TokexProcess::start(yaml))).await
}

/// `rediss://` to a TLS-only Redis whose certificate a test CA signed, trusted through
/// `ca_file`: the replicas share the token over TLS. Without the CA nothing connects,
/// and requests still succeed through the AS.
#[tokio::test]
async fn replicas_share_over_tls() {
    let ((redis, ca), as_, up) = (
        Redis::start_tls().await,
        MockAs::start().await,
        Upstream::start().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &random_keys::<1>());
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let trusted = format!("ca_file: {}", ca_file.display());
    let yaml = shared_config(&as_, &up, &redis.url(), &keys, &trusted);
    let (a, b) = (Tokex::start(&yaml).await, Tokex::start(&yaml).await);
    let first = narrowed(&a, &up, "subject-tls").await;
    written(&a, 1.0).await;
    assert_eq!(narrowed(&b, &up, "subject-tls").await, first);
    assert_eq!(as_.count(), 1);
    let untrusted = Tokex::start(&shared_config(&as_, &up, &redis.url(), &keys, "")).await;
    narrowed(&untrusted, &up, "subject-tls").await;
    assert_eq!(as_.count(), 2, "an unverified server is not used");
    let errors = read_metric(
        &untrusted,
        "tokex_shared_cache_errors_total{kind=\"connect\"}",
    )
    .await;
    assert!(errors >= 1.0, "counted as a connect failure: {errors}");
}

/// A key put on top of the key file of a running replica is used for its next writes,
/// which a replica holding only the new key reads; the old key still reads what was
/// written under it.
#[tokio::test]
async fn keys_rotate_without_a_restart() {
    let (redis, as_, up) = (
        Redis::start().await,
        MockAs::start().await,
        Upstream::start().await,
    );
    let [old, new] = random_keys::<2>();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keys_a = key_file(dir_a.path(), &[old]);
    let a = Tokex::start(&shared_config(&as_, &up, &redis.url(), &keys_a, "")).await;
    narrowed(&a, &up, "before-rotation").await;
    written(&a, 1.0).await;
    key_file(dir_a.path(), &[new, old]);
    eventually("the rotated key file is read", async || {
        read_metric(&a, "tokex_credential_reloads_total{result=\"ok\"}").await >= 1.0
    })
    .await;
    narrowed(&a, &up, "after-rotation").await;
    written(&a, 2.0).await;
    let keys_b = key_file(dir_b.path(), &[new, old]);
    let b = Tokex::start(&shared_config(&as_, &up, &redis.url(), &keys_b, "")).await;
    narrowed(&b, &up, "before-rotation").await;
    narrowed(&b, &up, "after-rotation").await;
    assert_eq!(
        as_.count(),
        2,
        "both read: the old key's entry and the new key's"
    );
    let dir_c = tempfile::tempdir().unwrap();
    let only_new = key_file(dir_c.path(), &[new]);
    let c = Tokex::start(&shared_config(&as_, &up, &redis.url(), &only_new, "")).await;
    narrowed(&c, &up, "after-rotation").await;
    assert_eq!(as_.count(), 2, "written under the new key");
    narrowed(&c, &up, "before-rotation").await;
    assert_eq!(as_.count(), 3, "the retired key's entry is out of reach");
}
