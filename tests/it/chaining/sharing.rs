//! Which entries chained routes share: a grant only with routes that would have got the
//! same one, never with a plain route's token, and never one that another request may
//! have spent.

use std::time::Duration;

use super::{ISSUER_B, chained, grants, parts, route, single_use, tokens};
use crate::support::*;

/// A plain route asking authority a for exactly what leg one asks (a JWT for b's issuer,
/// injected without a scheme) has its own token: the chained route does not take it as
/// its grant, nor does that route's token stand in for the grant.
#[tokio::test]
async fn a_grant_is_never_a_plain_routes_token() {
    let (a, b, up) = parts().await;
    grants(&a, 300);
    tokens(&b, 300);
    let direct = format!(
        "  - name: direct
    match: {{ host: direct.internal }}
    upstream: {}
    exchange:
      authority: a
      audience: '{ISSUER_B}'
      requested_token_type: urn:ietf:params:oauth:token-type:jwt
      inject: {{ scheme: none }}
",
        up.url()
    );
    let tokex = Tokex::start(&chained(&a, &b, &up.url(), &direct)).await;
    let r = get(&tokex, "direct.internal", "/", Some("alice")).await;
    assert_eq!(r.json()["authorization"], "grant-1", "{}", r.body);
    let r = get(&tokex, "orders.internal", "/", Some("alice")).await;
    assert_eq!(r.json()["authorization"], "Bearer orders-1", "{}", r.body);
    assert_eq!(a.count(), 2, "the chain asked for its own grant");
    assert_eq!(b.requests()[0].param("assertion"), Some("grant-2"));
}

/// Two chained routes through the same legs, one with its own `early_expiry`: each has
/// its own grant, whose lifetime its own settings bound.
#[tokio::test]
async fn routes_with_other_cache_settings_keep_their_own_grants() {
    let (a, b, up) = parts().await;
    grants(&a, 300);
    tokens(&b, 300);
    let other = format!(
        "{}    cache: {{ early_expiry: 100s }}\n",
        route("invoices", &up.url(), "invoices.read")
    );
    let tokex = Tokex::start(&chained(&a, &b, &up.url(), &other)).await;
    for host in ["orders.internal", "invoices.internal"] {
        let r = get(&tokex, host, "/", Some("alice")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(a.count(), 2, "one grant per route's cache settings");
}

/// Three routes through the same first leg, their first requests together, at a second
/// authority that takes each grant once: all three waited for one grant, one spent it,
/// and each of the other two asks for a fresh grant of its own, so no request presents
/// a grant another has spent.
#[tokio::test]
async fn a_fresh_grant_after_a_refusal_is_the_requests_own() {
    let (a, b, up) = parts().await;
    a.on(|req, n| {
        issue_with(req, &format!("grant-{n}"), Some(300)).delayed(Duration::from_millis(100))
    });
    let spent = single_use(&b);
    let more = route("invoices", &up.url(), "invoices.read")
        + &route("payments", &up.url(), "payments.read");
    let tokex = std::sync::Arc::new(Tokex::start(&chained(&a, &b, &up.url(), &more)).await);
    let requests = ["orders", "invoices", "payments"].map(|name| {
        let t = tokex.clone();
        tokio::spawn(async move { get(&t, &format!("{name}.internal"), "/", Some("alice")).await })
    });
    for r in requests {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(a.count(), 3, "the shared grant, then one fresh grant each");
    let mut taken = spent.lock().unwrap().clone();
    taken.sort();
    assert_eq!(taken, ["grant-1", "grant-2", "grant-3"]);
}
