//! Chained routes on a fleet sharing one Redis: the route's token is shared, the grant
//! between the legs never is.

use std::time::Duration;

use super::{chained, grants, parts, route, tokens};
use crate::shared_cache::{random_keys, read_metric, with_shared_cache, written};
use crate::support::*;

/// The first replica's chained exchange writes one entry, the route's token, which the
/// second replica serves with neither leg called. A second route on the second replica
/// needs a grant, and none is in Redis, so leg one is asked again; its token, once
/// shared, serves the first replica's second route with no call at all.
#[tokio::test]
async fn the_fleet_shares_the_routes_token_and_never_the_grant() {
    let ((a, b, up), redis) = (parts().await, Redis::start().await);
    grants(&a, 300);
    tokens(&b, 300);
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &random_keys::<1>());
    let routes = route("invoices", &up.url(), "invoices.read");
    let yaml = with_shared_cache(chained(&a, &b, &up.url(), &routes), &redis.url(), &keys, "");
    let (one, two) = (Tokex::start(&yaml).await, Tokex::start(&yaml).await);
    let through = async |replica: &Tokex, host: &str| {
        let r = get(replica, host, "/", Some("alice-token")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["authorization"].as_str().unwrap().to_string()
    };

    assert_eq!(through(&one, "orders.internal").await, "Bearer orders-1");
    written(&one, 1.0).await;
    assert_eq!(through(&two, "orders.internal").await, "Bearer orders-1");
    assert_eq!(
        (a.count(), b.count()),
        (1, 1),
        "the second replica read Redis"
    );
    assert_eq!(
        redis.dump().await.len(),
        1,
        "the route's token and no grant"
    );

    assert_eq!(through(&two, "invoices.internal").await, "Bearer orders-2");
    assert_eq!(
        (a.count(), b.count()),
        (2, 2),
        "no grant in Redis: leg one again"
    );
    written(&two, 1.0).await;
    assert_eq!(through(&one, "invoices.internal").await, "Bearer orders-2");
    assert_eq!(
        (a.count(), b.count()),
        (2, 2),
        "the second route's token is shared"
    );
    assert_eq!(
        redis.dump().await.len(),
        2,
        "two routes' tokens, still no grant"
    );
    let hits = read_metric(&one, "tokex_shared_cache_hits_total").await
        + read_metric(&two, "tokex_shared_cache_hits_total").await;
    assert_eq!(hits, 2.0);
}

/// Under the fleet lock, replicas missing a chained route's token together make one call
/// per leg, though the two legs take longer together (1.2 s) than either authority's
/// timeout (1 s): the lock and the wait cover both.
#[tokio::test]
async fn the_fleet_lock_covers_both_legs() {
    let ((a, b, up), redis) = (parts().await, Redis::start().await);
    let slow = Duration::from_millis(600);
    a.on(move |req, n| issue_with(req, &format!("grant-{n}"), Some(300)).delayed(slow));
    b.on(move |req, n| issue_with(req, &format!("orders-{n}"), Some(300)).delayed(slow));
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &random_keys::<1>());
    let lock = "lock: { poll_interval: 10ms }";
    let yaml = with_shared_cache(chained(&a, &b, &up.url(), ""), &redis.url(), &keys, lock);
    let fleet = futures_util::future::join_all((0..3).map(|_| Tokex::start(&yaml))).await;
    let all = fleet
        .iter()
        .map(|replica| get(replica, "orders.internal", "/", Some("alice-token")));
    let answers = futures_util::future::join_all(all).await;
    assert!(answers.iter().all(|r| r.status == 200), "{answers:?}");
    assert_eq!(
        (a.count(), b.count()),
        (1, 1),
        "one call per leg for the fleet"
    );
}
