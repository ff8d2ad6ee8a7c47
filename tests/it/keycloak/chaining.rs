//! Keycloak in identity chaining, as either leg.
//!
//! As the second leg, its JWT Authorization Grant (RFC 7523, on by default since 26.6)
//! takes a grant from `tokex sts`, which plays the first authority with a fixed key the
//! realm's identity provider `domain-a` holds (tests/interop/keycloak-chain-domain-a.key).
//! The realm takes each grant once (`jwtAuthorizationGrantAssertionReuseAllowed: false`),
//! so a second route that reuses the cached grant meets a real `invalid_grant` and tokex
//! asks for a fresh one.
//!
//! As the first leg, its token exchange refuses the `jwt` token type, so the leg asks for
//! an access token; the realm's client `https://as.domain-b.example`, reached through the
//! audience mapper of client scope `domain-b-audience`, addresses it to the second domain.

use super::*;

/// The first authority: domain A's realm, its grants addressed to Keycloak's realm.
fn domain_a(kc: &Server) -> String {
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/keycloak-chain-domain-a.key");
    format!(
        "realms:
  domain-a:
    issuer: https://as.domain-a.example
    signing_key: {{ alg: ES256, key_file: {}, key_id: domain-a-1 }}
    token_ttl: 5m
    trust:
      - {{ realm: domain-a, audiences: [web-app] }}
    clients:
      web-app: {{ client_secret: w, grants: [client_credentials], audiences: [web-app], subject: alice }}
      bob-app: {{ client_secret: b, grants: [client_credentials], audiences: [web-app], subject: bob }}
      tokex: {{ client_secret: t, grants: [token_exchange], audiences: ['{}'] }}
",
        key.display(),
        kc.issuer()
    )
}

/// A user's token at domain A, from the client that mints it.
async fn user_at_a(sts: &StsServer, client: (&str, &str)) -> String {
    let form = [("grant_type", "client_credentials")];
    let r = sts.post("domain-a", Some(client), &form).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn keycloak_takes_the_grant_of_another_domain() {
    let kc = server::shared().await;
    let (sts, up) = (
        StsServer::start(&domain_a(&kc)).await,
        Upstream::start().await,
    );
    let route = |name: &str, scope: &str| {
        format!(
            "  - name: {name}
    match: {{ host: {name}.internal }}
    upstream: {}
    exchange:
      chain:
        - authority: domain-a
        - {{ authority: keycloak, scope: '{scope}' }}
",
            up.url()
        )
    };
    let yaml = format!(
        "authorities:
  domain-a:
    token_endpoint: {}
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: t }}
  keycloak:
    token_endpoint: {}
    issuer: {}
{}    timeout: 10s
    retries: 0
routes:
{}{}",
        sts.token_endpoint("domain-a"),
        kc.token_endpoint(),
        kc.issuer(),
        basic("tokex-chain"),
        route("orders", "orders:read"),
        route("orders-write", "orders:write"),
    );
    let tokex = Tokex::start(&yaml).await;
    let subject = user_at_a(&sts, ("web-app", "w")).await;
    let (keycloak_alice, _) = user_token(&kc, "app").await;
    let keys = jwks(&kc).await;
    let read = forwarded(&get(&tokex, "orders.internal", "/", Some(&subject)).await);
    let claims = verified(&read, &keys, &kc.issuer());
    assert_eq!(
        (&claims["scope"], &claims["azp"]),
        (
            &serde_json::json!("orders:read"),
            &serde_json::json!("tokex-chain")
        )
    );
    assert_eq!(
        claims["sub"],
        claims_of(&keycloak_alice)["sub"],
        "the linked user"
    );
    // The second route shares the cached grant; Keycloak refuses it as spent, tokex asks
    // domain A for a fresh one and the request succeeds.
    let write = forwarded(&get(&tokex, "orders-write.internal", "/", Some(&subject)).await);
    assert_eq!(
        verified(&write, &keys, &kc.issuer())["scope"],
        "orders:write"
    );
    let at = |authority: &str, outcome: &str| {
        format!("tokex_exchanges_total{{authority=\"{authority}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(
        metric(&tokex, &at("domain-a", "ok")).await,
        2,
        "one fresh grant"
    );
    assert_eq!(metric(&tokex, &at("keycloak", "ok")).await, 2);
    assert_eq!(
        metric(&tokex, &at("keycloak", "invalid_token")).await,
        1,
        "the spent grant"
    );
    // bob has no Keycloak user linked to domain A: Keycloak refuses his fresh grant,
    // which is not asked for again, and nothing is forwarded.
    let seen = up.seen().len();
    let bob = user_at_a(&sts, ("bob-app", "b")).await;
    let r = get(&tokex, "orders.internal", "/", Some(&bob)).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (401, Some("invalid_token")),
        "{}",
        r.body
    );
    assert_eq!(r.json()["authority_error"], "invalid_grant");
    assert_eq!(metric(&tokex, &at("domain-a", "ok")).await, 3);
    assert_eq!(metric(&tokex, &at("keycloak", "invalid_token")).await, 2);
    assert_eq!(up.seen().len(), seen);
}

/// The second authority: domain B, taking Keycloak's tokens only as grants addressed to it.
fn domain_b(kc: &Server) -> String {
    format!(
        "realms:
  domain-b:
    issuer: {DOMAIN_B}
    trust:
      - {{ issuer: '{issuer}', jwks_url: '{issuer}/protocol/openid-connect/certs' }}
    clients:
      tokex: {{ client_secret: t, grants: [jwt_bearer], audiences: [orders-api] }}
    scope_mapping:
      'orders:read': [orders.read]
",
        issuer = kc.issuer()
    )
}

/// The issuer of domain B, and the Keycloak client Keycloak's grants are addressed to.
const DOMAIN_B: &str = "https://as.domain-b.example";

/// Keycloak's token exchange gives an access token for domain B, which domain B takes
/// with the jwt-bearer grant: the upstream gets domain B's token for Keycloak's user, and
/// the repeat is a cache hit. A Keycloak user token presented to domain B as the grant
/// itself is refused: it is not addressed there.
#[tokio::test]
async fn keycloak_issues_the_grant_another_domain_takes() {
    let kc = server::shared().await;
    let (sts, up) = (
        StsServer::start(&domain_b(&kc)).await,
        Upstream::start().await,
    );
    let yaml = format!(
        "authorities:
  keycloak:
    token_endpoint: {}
    issuer: {}
{}    timeout: 10s
    retries: 0
  domain-b:
    token_endpoint: {}
    issuer: {DOMAIN_B}
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: t }}
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {}
    exchange:
      chain:
        - authority: keycloak
          requested_token_type: urn:ietf:params:oauth:token-type:access_token
          scope: 'orders:read'
        - {{ authority: domain-b, scope: orders.read }}
",
        kc.token_endpoint(),
        kc.issuer(),
        basic("tokex-chain-first"),
        sts.token_endpoint("domain-b"),
        up.url(),
    );
    let tokex = Tokex::start(&yaml).await;
    let (subject, _) = user_token(&kc, "app").await;
    let token = forwarded(&get(&tokex, "orders.internal", "/", Some(&subject)).await);
    let claims = claims_of(&token);
    assert_eq!(
        (&claims["iss"], &claims["aud"], &claims["scope"]),
        (
            &serde_json::json!(DOMAIN_B),
            &serde_json::json!("orders-api"),
            &serde_json::json!("orders.read")
        ),
        "{claims}"
    );
    assert_eq!(claims["sub"], claims_of(&subject)["sub"], "Keycloak's user");
    let again = forwarded(&get(&tokex, "orders.internal", "/", Some(&subject)).await);
    assert_eq!(again, token, "the route's token is cached");
    let ok = |authority: &str| {
        format!("tokex_exchanges_total{{authority=\"{authority}\",outcome=\"ok\"}}")
    };
    assert_eq!(metric(&tokex, &ok("keycloak")).await, 1);
    assert_eq!(metric(&tokex, &ok("domain-b")).await, 1);
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", subject.as_str()),
    ];
    let r = sts.post("domain-b", Some(("tokex", "t")), &form).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_grant")),
        "{}",
        r.body
    );
}
