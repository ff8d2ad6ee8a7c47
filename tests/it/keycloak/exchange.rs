//! Exchanges that succeed: narrowing, the cache, tokex's own token, refresh-ahead, and
//! the shipped example config.

use std::time::{Duration, Instant};

use super::*;

/// The user's token (audience: the exchange clients; scopes orders:read, orders:write and
/// orders:admin) reaches the upstream as Keycloak's token for the target alone, with
/// only orders:read, signed by the realm for the same user; the repeat is a cache hit.
#[tokio::test]
async fn a_user_token_is_narrowed_to_the_target_and_cached() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let tokex = Tokex::start(&config(&kc, &basic("tokex-basic"), &up.url(), NARROW, "")).await;
    let (subject, _) = user_token(&kc, "app").await;
    let subject_claims = claims_of(&subject);
    let mut wide: Vec<&str> = subject_claims["scope"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    wide.sort_unstable();
    assert_eq!(
        wide,
        ["orders:admin", "orders:read", "orders:write"],
        "the user token is wide"
    );

    let narrowed = forwarded(&get(&tokex, "orders.internal", "/orders", Some(&subject)).await);
    assert_ne!(narrowed, subject);
    let claims = verified(&narrowed, &jwks(&kc).await, &kc.issuer());
    assert_eq!(claims["aud"], TARGET);
    assert_eq!(claims["scope"], "orders:read");
    assert_eq!(claims["azp"], "tokex-basic");
    assert_eq!(claims["sub"], subject_claims["sub"]);

    let again = forwarded(&get(&tokex, "orders.internal", "/orders", Some(&subject)).await);
    assert_eq!(again, narrowed);
    assert_eq!(exchanges(&tokex).await, 1, "the repeat was a cache hit");
    assert_eq!(
        metric(&tokex, "tokex_cache_hits_total{route=\"orders\"}").await,
        1
    );
}

/// Twenty requests with the same new token at once: one exchange at Keycloak, and all
/// twenty carry its token.
#[tokio::test]
async fn concurrent_misses_make_one_exchange() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let tokex = Tokex::start(&config(&kc, &basic("tokex-basic"), &up.url(), NARROW, "")).await;
    let (subject, _) = user_token(&kc, "app").await;
    let requests = (0..20).map(|_| get(&tokex, "orders.internal", "/", Some(&subject)));
    let tokens: Vec<String> = futures_util::future::join_all(requests)
        .await
        .iter()
        .map(forwarded)
        .collect();
    assert!(tokens.iter().all(|t| t == &tokens[0]), "one token for all");
    verified(&tokens[0], &jwks(&kc).await, &kc.issuer());
    assert_eq!(exchanges(&tokex).await, 1);
}

/// `on_missing_token: client_credentials`: a request without a token goes out with
/// tokex's own token from Keycloak: the service account of tokex-cc, not a user, with the
/// target as audience (by the client's audience mapper) and scope orders:read.
#[tokio::test]
async fn client_credentials_stand_in_for_a_missing_token() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let tokex = Tokex::start(&config(
        &kc,
        &basic("tokex-cc"),
        &up.url(),
        NARROW,
        "    on_missing_token: client_credentials\n",
    ))
    .await;
    let own = forwarded(&get(&tokex, "orders.internal", "/", None).await);
    let claims = verified(&own, &jwks(&kc).await, &kc.issuer());
    assert_eq!(claims["azp"], "tokex-cc");
    assert_eq!(claims["scope"], "orders:read");
    let (user, _) = user_token(&kc, "app").await;
    assert_ne!(claims["sub"], claims_of(&user)["sub"], "not the user");
    let again = forwarded(&get(&tokex, "orders.internal", "/", None).await);
    assert_eq!(again, own, "cached like an exchanged token");
    assert_eq!(exchanges(&tokex).await, 1);
}

/// Refresh-ahead against Keycloak: tokex-refresh's tokens live 6 s, so with
/// early_expiry 1s an entry lives 4 to 5 s (Keycloak's `iat` is whole seconds) and
/// refresh_ahead 4s replaces it from half-way. Requests every 100 ms all succeed, the new
/// token appears before the old entry ends, and only the first request missed the cache.
#[tokio::test]
async fn refresh_ahead_replaces_the_token_before_it_expires() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let tokex = Tokex::start(&config(
        &kc,
        &basic("tokex-refresh"),
        &up.url(),
        NARROW,
        "    cache: { early_expiry: 1s, refresh_ahead: 4s }\n",
    ))
    .await;
    let (subject, _) = user_token(&kc, "app").await;
    let first = forwarded(&get(&tokex, "orders.internal", "/", Some(&subject)).await);
    let started = Instant::now();
    let lifetime = {
        let c = claims_of(&first);
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap()
    };
    assert_eq!(lifetime, 6, "the client's access token lifespan");
    let replaced_after = loop {
        let token = forwarded(&get(&tokex, "orders.internal", "/", Some(&subject)).await);
        if token != first {
            verified(&token, &jwks(&kc).await, &kc.issuer());
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not refreshed before the entry's end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        replaced_after >= Duration::from_secs(1),
        "refreshed before half-way: {replaced_after:?}"
    );
    assert_eq!(exchanges(&tokex).await, 2, "one refresh");
    assert_eq!(
        metric(&tokex, "tokex_cache_misses_total{route=\"orders\"}").await,
        1,
        "no request waited for the refresh"
    );
}

/// config/keycloak-example.yaml, the config docs/keycloak.md shows, works as shipped
/// against the realm file once its Keycloak address and upstream are this test's.
#[tokio::test]
async fn the_shipped_example_config_works() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config");
    let yaml = std::fs::read_to_string(root.join("keycloak-example.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8080", &kc.base())
        .replace("http://orders-api.internal:8080", &up.url());
    assert!(yaml.contains(&kc.token_endpoint()), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("keycloak-client-secret"),
        dir.path().join("keycloak-client-secret"),
    )
    .unwrap();
    let tokex = Tokex::start_in(dir, &yaml).await;
    let (subject, _) = user_token(&kc, "app").await;
    let narrowed = forwarded(&get(&tokex, "orders.internal", "/", Some(&subject)).await);
    let claims = verified(&narrowed, &jwks(&kc).await, &kc.issuer());
    assert_eq!(claims["scope"], "orders:read");
}
