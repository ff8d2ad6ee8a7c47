//! Unit tests of the cache: lifetimes, refresh claims, keys and coalescing, on paused
//! time where time matters.

use super::*;

fn settings() -> CacheSettings {
    CacheSettings {
        max_ttl: Duration::from_secs(600),
        default_ttl: Duration::from_secs(60),
        early_expiry: Duration::from_secs(30),
        refresh_ahead: Duration::from_secs(60),
    }
}

/// Each bound of step 5 of the request flow can be the one that wins, minus early_expiry.
#[test]
fn lifetime_takes_the_smallest_bound() {
    let s = settings();
    let now = 1_000_000;
    let b = |expires_in, issued_exp, subject_exp| Bounds {
        now_unix: now,
        expires_in,
        issued_exp,
        subject_exp,
    };
    let secs = Duration::from_secs;
    assert_eq!(
        lifetime(b(Some(300), None, None), &s),
        secs(270),
        "expires_in"
    );
    assert_eq!(lifetime(b(None, None, None), &s), secs(30), "default_ttl");
    assert_eq!(
        lifetime(b(Some(3600), None, None), &s),
        secs(570),
        "max_ttl"
    );
    assert_eq!(
        lifetime(b(Some(300), Some(now + 100), None), &s),
        secs(70),
        "issued exp"
    );
    assert_eq!(
        lifetime(b(Some(300), Some(now + 200), Some(now + 90)), &s),
        secs(60),
        "subject exp"
    );
    assert_eq!(
        lifetime(b(Some(20), None, None), &s),
        Duration::ZERO,
        "shorter than early_expiry"
    );
    assert_eq!(
        lifetime(b(Some(300), Some(now - 5), None), &s),
        Duration::ZERO,
        "issued exp passed"
    );
}

/// Refresh starts refresh_ahead before expiry, never in the first half of the lifetime.
#[test]
fn refresh_window() {
    let now = clock::now();
    let s = settings();
    assert_eq!(
        refresh_at(now, Duration::from_secs(570), &s),
        Some(now + Duration::from_secs(510))
    );
    assert_eq!(
        refresh_at(now, Duration::from_secs(40), &s),
        Some(now + Duration::from_secs(20))
    );
    assert_eq!(refresh_at(now, Duration::ZERO, &s), None);
    let off = CacheSettings {
        refresh_ahead: Duration::ZERO,
        ..s
    };
    assert_eq!(refresh_at(now, Duration::from_secs(570), &off), None);
}

/// Keys differ for any differing field or token, and field boundaries cannot be shifted.
#[test]
fn keys_separate_every_input() {
    let cache = TokenCache::new(10).unwrap();
    let a = cache
        .key_builder(&["auth", "client", "aud-a", "scope"])
        .key(b"", "tok");
    assert_eq!(
        a,
        cache
            .key_builder(&["auth", "client", "aud-a", "scope"])
            .key(b"", "tok")
    );
    assert_ne!(
        a,
        cache
            .key_builder(&["auth", "client", "aud-b", "scope"])
            .key(b"", "tok")
    );
    assert_ne!(
        a,
        cache
            .key_builder(&["auth", "client", "aud-a", "scope"])
            .key(b"", "tok2")
    );
    assert_ne!(
        cache.key_builder(&["ab", "c"]).key(b"", "t"),
        cache.key_builder(&["a", "bc"]).key(b"", "t")
    );
    let other = TokenCache::new(10).unwrap();
    assert_ne!(
        a,
        other
            .key_builder(&["auth", "client", "aud-a", "scope"])
            .key(b"", "tok"),
        "per-process key"
    );
}

/// Concurrent misses for one key run the exchange once; later lookups are hits. The
/// exchange takes 50 ms of paused time, so every lookup arrives while it runs.
#[tokio::test(start_paused = true)]
async fn concurrent_misses_coalesce() {
    let cache = TokenCache::new(10).unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let key = cache.key_builder(&["x"]).key(b"", "t");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (cache, calls) = (cache.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_exchange::<(), _, _>(key, || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let v = HeaderValue::from_static("Bearer x");
                    Ok(Arc::new(Entry::new(
                        v,
                        clock::now() + Duration::from_secs(60),
                        None,
                    )))
                })
                .await
                .map(|(_, l)| l)
        }));
    }
    let mut misses = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Lookup::Miss {
            misses += 1;
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(misses, 1);
}

/// An exchange for `cache` that counts its calls and issues `Bearer n<calls>` for
/// `ttl` from now.
async fn issue(calls: &std::sync::atomic::AtomicUsize, ttl: Duration) -> Result<Arc<Entry>, ()> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    let v = HeaderValue::from_str(&format!("Bearer n{n}")).unwrap();
    Ok(Arc::new(Entry::new(v, clock::now() + ttl, None)))
}

/// An entry is a hit up to its bound and a miss at it, on tokex's paused clock:
/// moka, whose clock does not pause, still holds the entry when the lookup refuses it.
#[tokio::test(start_paused = true)]
async fn an_entry_is_served_until_its_bound() {
    let cache = TokenCache::new(10).unwrap();
    let key = cache.key_builder(&["x"]).key(b"", "t");
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let lookup = async || {
        let (v, l) = cache
            .get_or_exchange(key, || issue(&calls, Duration::from_secs(60)))
            .await
            .unwrap();
        (v.authorization.to_str().unwrap().to_string(), l)
    };
    assert_eq!(lookup().await, ("Bearer n1".into(), Lookup::Miss));
    tokio::time::advance(Duration::from_secs(60) - Duration::from_millis(1)).await;
    assert_eq!(lookup().await, ("Bearer n1".into(), Lookup::Hit));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(cache.inner.contains_key(&key), "moka has not expired it");
    assert_eq!(
        lookup().await,
        ("Bearer n2".into(), Lookup::Miss),
        "at its bound"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A refresh is claimed by exactly one hit from its instant on, and again after a
/// failed refresh lets go of it.
#[test]
fn one_hit_claims_the_refresh() {
    let now = clock::now();
    let at = refresh_at(now, Duration::from_secs(570), &settings()).unwrap();
    let entry = Entry::new(
        HeaderValue::from_static("Bearer x"),
        now + Duration::from_secs(570),
        Some(at),
    );
    assert!(!entry.claim_refresh(at - Duration::from_millis(1)));
    assert!(entry.claim_refresh(at));
    assert!(
        !entry.claim_refresh(at + Duration::from_secs(1)),
        "one refresh at a time"
    );
    entry.release_refresh();
    assert!(entry.claim_refresh(at + Duration::from_secs(1)));
}
