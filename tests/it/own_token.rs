//! tokex's own token (`on_missing_token: client_credentials`): a request without a
//! subject token is sent with a token tokex gets for itself from the route's authority,
//! cached and refreshed ahead like an exchanged one.

use std::time::Duration;

use crate::support::*;

/// on_missing_token: client_credentials sends a token-less request with tokex's own
/// token from the route's authority (audience and scope from the route), cached; a
/// request with a user token is still exchanged as usual.
#[tokio::test]
async fn client_credentials_fallback_against_the_sts() {
    let sts = StsServer::start(
        "realms:
  client:
    clients:
      web: { client_secret: w, grants: [client_credentials], audiences: [backend], scopes: [openid], subject: alice }
  backend:
    trust: [ { realm: client, audiences: [backend] } ]
    scope_mapping: { openid: [orders.read] }
    clients:
      tokex: { client_secret: s, grants: [client_credentials, token_exchange], audiences: [orders-api], scopes: [orders.read] }
",
    )
    .await;
    let up = Upstream::start().await;
    let yaml = format!(
        "authorities:
  backend:
    token_endpoint: {}
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: s }}
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {}
    on_missing_token: client_credentials
    exchange: {{ authority: backend, audience: orders-api, scope: orders.read }}
",
        sts.token_endpoint("backend"),
        up.url()
    );
    let tokex = Tokex::start(&yaml).await;
    let r = get(&tokex, "orders.internal", "/", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let own = r.json()["authorization"].as_str().unwrap().to_string();
    let claims = claims_of(own.trim_start_matches("Bearer "));
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str()),
        (Some("tokex"), Some("orders-api"))
    );
    assert_eq!(claims["scope"], "orders.read");
    assert!(claims.get("act").is_none());
    assert_eq!(
        get(&tokex, "orders.internal", "/", None).await.json()["authorization"],
        own.as_str(),
        "cached"
    );
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_exchanges_total{authority=\"backend\",outcome=\"ok\"} 1"),
        "{m}"
    );

    let user = sts
        .post(
            "client",
            Some(("web", "w")),
            &[
                ("grant_type", "client_credentials"),
                ("audience", "backend"),
            ],
        )
        .await;
    let user = user.json()["access_token"].as_str().unwrap().to_string();
    let r = get(&tokex, "orders.internal", "/", Some(&user)).await;
    let claims = claims_of(
        r.json()["authorization"]
            .as_str()
            .unwrap()
            .trim_start_matches("Bearer "),
    );
    assert_eq!(
        claims["sub"], "alice",
        "a user token is exchanged, not replaced"
    );
}

/// The client_credentials request carries the route's parameters and no subject, and
/// tokex's own token is refreshed ahead like an exchanged one: 3 s in the cache, the
/// first hit from 1.5 s on refreshes it in the background while the old one is served.
#[tokio::test(start_paused = true)]
async fn client_credentials_token_is_refreshed_ahead() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, n| issue_with(req, &format!("own-{n}"), Some(33)));
    let yaml = format!(
        "{}cache: {{ early_expiry: 30s, refresh_ahead: 2s }}\n",
        config(&as_, &up.url())
    )
    .replace(
        "    timeout: 1s\n    exchange",
        "    timeout: 1s\n    on_missing_token: client_credentials\n    exchange",
    );
    let tokex = Tokex::start(&yaml).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", None).await.json()["authorization"],
        "Bearer own-1"
    );
    let r = &as_.requests()[0];
    assert_eq!(r.param("grant_type"), Some("client_credentials"));
    assert_eq!(
        (r.param("audience"), r.param("scope")),
        (Some("echo-api"), Some("read write"))
    );
    assert_eq!(
        (r.param("subject_token"), r.param("requested_token_type")),
        (None, None)
    );
    tokio::time::advance(Duration::from_millis(1499)).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", None).await.json()["authorization"],
        "Bearer own-1",
    );
    assert_eq!(as_.count(), 1, "not yet in the refresh window");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", None).await.json()["authorization"],
        "Bearer own-1",
        "served while refreshing"
    );
    settled("refreshed in the background", async || {
        tokex.exchanges_answered().await == 2
    })
    .await;
    assert_eq!(as_.count(), 2);
    assert_eq!(
        get(&tokex, "echo.internal", "/", None).await.json()["authorization"],
        "Bearer own-2"
    );
}
