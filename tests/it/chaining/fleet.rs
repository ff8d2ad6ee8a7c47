//! Chained routes on a fleet sharing one Redis: the route's token is shared, the grant
//! between the legs never is.

use super::{chained, grants, parts, route, tokens};
use crate::shared_cache::{random_keys, read_metric, written};
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
    let yaml = format!(
        "{}cache:\n  shared:\n    url: {}\n    key_file: {}\n",
        chained(
            &a,
            &b,
            &up.url(),
            &route("invoices", &up.url(), "invoices.read")
        ),
        redis.url(),
        keys.display()
    );
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
