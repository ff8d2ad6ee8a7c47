//! Each leg against its own mock authority: the exact forms, each leg's cache and
//! lifetime, one call per leg for concurrent misses, the purge of a refused grant, and
//! every refusal on its row of the error table.

use std::time::Duration;

use super::{ISSUER_B, chained, early, grants, parts, route, single_use, tokens};
use crate::support::*;

fn form(r: &AsRequest) -> Vec<(&str, &str)> {
    r.form.iter().map(|(k, v)| (&**k, &**v)).collect()
}

/// Leg one asks the first authority for a JWT for the second (its issuer, by default);
/// leg two presents exactly that grant with jwt-bearer and the route's scope. The
/// upstream gets the second authority's token, never the app's or the grant.
#[tokio::test]
async fn the_legs_send_a_token_exchange_then_the_grant() {
    let (a, b, up) = parts().await;
    grants(&a, 300);
    tokens(&b, 300);
    let tokex = Tokex::start(&chained(&a, &b, &up.url(), "")).await;
    let r = get(&tokex, "orders.internal", "/o/1", Some("alice-token")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization"], "Bearer orders-1");
    let (to_a, to_b) = (a.requests(), b.requests());
    assert_eq!(
        form(&to_a[0]),
        [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ),
            ("subject_token", "alice-token"),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token"
            ),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:jwt"
            ),
            ("audience", ISSUER_B),
            ("client_id", "tokex-a"),
            ("client_secret", "a-secret"),
        ]
    );
    assert_eq!(
        form(&to_b[0]),
        [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "grant-1"),
            ("scope", "orders.read"),
            ("client_id", "tokex-b"),
            ("client_secret", "b-secret"),
        ]
    );
    let again = get(&tokex, "orders.internal", "/o/2", Some("alice-token")).await;
    assert_eq!(again.json()["authorization"], "Bearer orders-1");
    assert_eq!(
        (a.count(), b.count()),
        (1, 1),
        "the route's token is cached"
    );
}

/// Each leg lives as long as its own token says (less `early_expiry`): when the
/// second's expires, the cached grant is presented again; when the grant expires, a
/// new one is asked for.
#[tokio::test(start_paused = true)]
async fn each_leg_keeps_its_own_lifetime() {
    let (a, b, up) = parts().await;
    grants(&a, 40);
    tokens(&b, 31);
    let tokex = Tokex::start(&early(&a, &b, &up.url())).await;
    let seen = |n: usize| format!("Bearer orders-{n}");
    let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
    assert_eq!(r.json()["authorization"], seen(1));
    tokio::time::advance(Duration::from_millis(999)).await;
    let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
    assert_eq!(r.json()["authorization"], seen(1), "leg two still fresh");
    tokio::time::advance(Duration::from_millis(1)).await;
    let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
    assert_eq!(r.json()["authorization"], seen(2));
    assert_eq!(
        b.requests()[1].param("assertion"),
        Some("grant-1"),
        "the cached grant"
    );
    assert_eq!(a.count(), 1);
    // The grant: 10 s in the cache.
    tokio::time::advance(Duration::from_secs(9)).await;
    let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
    assert_eq!(r.json()["authorization"], seen(3));
    assert_eq!(
        (a.count(), b.requests()[2].param("assertion")),
        (2, Some("grant-2"))
    );
}

/// Refresh-ahead renews the route's token through the chain, in the background, with
/// the grant from the cache.
#[tokio::test(start_paused = true)]
async fn refresh_ahead_renews_through_the_chain() {
    let (a, b, up) = parts().await;
    grants(&a, 300);
    tokens(&b, 36);
    let yaml = format!(
        "{}cache: {{ early_expiry: 30s, refresh_ahead: 2s }}\n",
        chained(&a, &b, &up.url(), "")
    );
    let tokex = Tokex::start(&yaml).await;
    let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
    assert_eq!(r.json()["authorization"], "Bearer orders-1");
    // 6 s in the cache, refreshed by the first hit from 4 s on.
    tokio::time::advance(Duration::from_secs(4)).await;
    let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
    assert_eq!(
        r.json()["authorization"],
        "Bearer orders-1",
        "served while refreshing"
    );
    settled("the refreshed token is served", async || {
        let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
        r.json()["authorization"] == "Bearer orders-2"
    })
    .await;
    assert_eq!(b.count(), 2, "one refresh");
    assert_eq!(a.count(), 1, "the cached grant was presented again");
}

/// The app token's `exp` bounds both legs: the grant is asked for again with the
/// route's token, though its own lifetime would have lasted.
#[tokio::test(start_paused = true)]
async fn the_app_tokens_expiry_bounds_both_legs() {
    let (a, b, up) = parts().await;
    grants(&a, 300);
    tokens(&b, 300);
    let tokex = Tokex::start(&early(&a, &b, &up.url())).await;
    let subject = jwt(serde_json::json!({"sub": "alice", "exp": now() + 40}));
    let r = get(&tokex, "orders.internal", "/", Some(&subject)).await;
    assert_eq!(r.json()["authorization"], "Bearer orders-1");
    tokio::time::advance(Duration::from_secs(9)).await;
    get(&tokex, "orders.internal", "/", Some(&subject)).await;
    assert_eq!((a.count(), b.count()), (1, 1));
    tokio::time::advance(Duration::from_secs(1)).await;
    let r = get(&tokex, "orders.internal", "/", Some(&subject)).await;
    assert_eq!(r.json()["authorization"], "Bearer orders-2");
    assert_eq!(
        (a.count(), b.count()),
        (2, 2),
        "both legs bounded by the app token"
    );
}

/// Concurrent misses make one call per leg; a second route that needs the same grant
/// shares it, and pays only its own second leg.
#[tokio::test]
async fn concurrent_misses_make_one_call_per_leg() {
    let (a, b, up) = parts().await;
    a.on(|req, n| {
        issue_with(req, &format!("grant-{n}"), Some(300)).delayed(Duration::from_millis(100))
    });
    tokens(&b, 300);
    let other = route("invoices", &up.url(), "invoices.read");
    let tokex = std::sync::Arc::new(Tokex::start(&chained(&a, &b, &up.url(), &other)).await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let t = tokex.clone();
        let host = if i % 2 == 0 {
            "orders.internal"
        } else {
            "invoices.internal"
        };
        tasks.push(tokio::spawn(async move {
            get(&t, host, "/", Some("alice")).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(a.count(), 1, "one grant for both routes");
    assert_eq!(b.count(), 2, "one token per route");
    assert!(
        b.requests()
            .iter()
            .all(|r| r.param("assertion") == Some("grant-1"))
    );
}

/// `invalid_grant` from the second authority purges the grant. One that came from the
/// cache (here: spent by the first route) is asked for once more; a fresh one is not,
/// and the next request starts from a new grant.
#[tokio::test]
async fn a_refused_grant_is_purged_and_asked_for_again() {
    let (a, b, up) = parts().await;
    grants(&a, 300);
    let spent = single_use(&b);
    let other = route("invoices", &up.url(), "invoices.read");
    let tokex = Tokex::start(&chained(&a, &b, &up.url(), &other)).await;
    let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(&tokex, "invoices.internal", "/", Some("alice")).await;
    assert_eq!(r.status, 200, "the spent grant was replaced: {}", r.body);
    assert_eq!(r.json()["authorization"], "Bearer orders-3");
    assert_eq!(a.count(), 2);
    assert_eq!(spent.lock().unwrap().as_slice(), ["grant-1", "grant-2"]);
    // From now on b refuses every grant: a fresh one is refused once, not retried.
    b.on(|_, _| Reply::json(400, serde_json::json!({"error": "invalid_grant"})));
    let r = get(&tokex, "orders.internal", "/", Some("bob")).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (401, Some("invalid_token")),
        "{}",
        r.body
    );
    assert_eq!((a.count(), b.count()), (3, 4));
    let r = get(&tokex, "orders.internal", "/", Some("bob")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        (a.count(), b.count()),
        (4, 5),
        "the refused grant was not kept"
    );
}

/// Either leg's refusal lands on the error table's row for its OAuth error, names the
/// authority that said it, and forwards nothing.
#[tokio::test]
async fn every_refusal_maps_to_its_row() {
    let rows = [
        ("a", "invalid_request", 401, "invalid_token"),
        ("a", "invalid_target", 403, "exchange_denied"),
        ("a", "unauthorized_client", 502, "exchange_misconfigured"),
        ("b", "invalid_grant", 401, "invalid_token"),
        ("b", "invalid_scope", 403, "insufficient_scope"),
        ("b", "access_denied", 403, "exchange_denied"),
        ("b", "invalid_client", 502, "exchange_misconfigured"),
    ];
    let (a, b, up) = parts().await;
    let tokex = Tokex::start(&chained(&a, &b, &up.url(), "")).await;
    for (i, (leg, oauth_error, status, code)) in rows.into_iter().enumerate() {
        let refuse =
            move |_: &AsRequest, _| Reply::json(400, serde_json::json!({"error": oauth_error}));
        grants(&a, 300);
        tokens(&b, 300);
        match leg {
            "a" => a.on(refuse),
            _ => b.on(refuse),
        }
        let r = get(
            &tokex,
            "orders.internal",
            "/",
            Some(&format!("subject-{i}")),
        )
        .await;
        assert_eq!(
            (r.status, r.tokex_error()),
            (status, Some(code)),
            "{leg} {oauth_error}: {}",
            r.body
        );
        assert_eq!(r.json()["authority_error"], oauth_error);
    }
    // The first authority down: 503 with Retry-After, like any authority.
    a.on(|_, _| Reply::json(503, serde_json::json!({})));
    let r = get(&tokex, "orders.internal", "/", Some("subject-down")).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (503, Some("authority_unavailable")),
        "{}",
        r.body
    );
    assert!(up.seen().is_empty(), "nothing forwarded");
}
