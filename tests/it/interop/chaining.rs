//! idpyoidc as the first leg of identity chaining: its token exchange issues the JWT
//! grant, verified by its JWKS at the embedded STS, which takes it with the jwt-bearer
//! grant. idpyoidc 5.0.0 has no jwt-bearer grant of its own, so it cannot be the second
//! leg (tests/interop/README.md).

use super::Idp;
use crate::support::*;

/// The second authority's issuer: idpyoidc must know it before it starts, to allow it as
/// an exchange audience.
const REALM_B: &str = "https://as-b.example";

#[tokio::test]
async fn idpyoidc_issues_the_grant_the_sts_accepts() {
    let audiences = format!("{},{REALM_B}", super::AUDIENCE);
    let idp = Idp::start(&["--exchange-audiences", &audiences]).await;
    let issuer = idp.info["issuer"].as_str().unwrap().to_string();
    let sts = StsServer::start(&format!(
        "realms:
  b:
    issuer: {REALM_B}
    trust:
      - {{ issuer: '{issuer}', jwks_url: '{issuer}/jwks.json' }}
    clients:
      tokex: {{ client_secret: b-secret, grants: [jwt_bearer], audiences: [orders-api] }}
    scope_mapping:
      read: [orders:read]
"
    ))
    .await;
    let up = Upstream::start().await;
    let yaml = format!(
        "authorities:
  idp:
    token_endpoint: {}
    issuer: {issuer}
    client_id: tokex-basic
    auth: {{ method: client_secret_basic, client_secret: {} }}
    timeout: 5s
  b:
    token_endpoint: {}
    issuer: {REALM_B}
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: b-secret }}
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {}
    exchange:
      chain:
        - {{ authority: idp, scope: read }}
        - {{ authority: b, scope: orders:read }}
",
        idp.info["token_endpoint"].as_str().unwrap(),
        idp.secret("tokex-basic"),
        sts.token_endpoint("b"),
        up.url()
    );
    let tokex = Tokex::start(&yaml).await;
    let subject = idp.subject_token().await;
    let r = get(&tokex, "orders.internal", "/o/1", Some(&subject)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = r.json()["authorization"].as_str().unwrap().to_string();
    let c = claims_of(sent.strip_prefix("Bearer ").unwrap());
    assert_eq!(
        (&c["iss"], &c["sub"], &c["aud"], &c["scope"]),
        (
            &serde_json::json!(REALM_B),
            &serde_json::json!("alice"),
            &serde_json::json!("orders-api"),
            &serde_json::json!("orders:read")
        )
    );
    let again = get(&tokex, "orders.internal", "/o/2", Some(&subject)).await;
    assert_eq!(again.json()["authorization"], sent.as_str());
    assert_eq!(idp.token_requests().await, 1, "one grant, then the cache");
    idp.stop().await;
}
