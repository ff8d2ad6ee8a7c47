//! The jwt-bearer grant (RFC 7523 §2.1) across two realms, as the shipped
//! `config/sts-chaining.yaml` configures them: domain B trusts domain A's tokens only as
//! grants addressed to it, so identity chaining works and a user's token does not.

use serde_json::{Value, json};

use crate::support::*;

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DOMAIN_A: &str = "https://as.domain-a.example";
const DOMAIN_B: &str = "https://as.domain-b.example";

async fn shipped() -> StsServer {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sts-chaining.yaml");
    StsServer::start(&std::fs::read_to_string(path).unwrap()).await
}

/// alice's user token, addressed to her application.
async fn alice(sts: &StsServer) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "orders.read profile"),
    ];
    let r = sts
        .post("domain-a", Some(("web-app", "web-app-secret")), &form)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// The first leg: domain A's grant for domain B.
async fn grant_for_b(sts: &StsServer, subject: &str) -> Got {
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN),
        ("requested_token_type", JWT),
        ("audience", DOMAIN_B),
    ];
    sts.post("domain-a", Some(("tokex", "tokex-a-secret")), &form)
        .await
}

/// The second leg: `assertion` presented to domain B.
async fn at_b(sts: &StsServer, assertion: &str, scope: Option<&str>) -> Got {
    let mut form = vec![("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)];
    form.extend(scope.map(|s| ("scope", s)));
    sts.post("domain-b", Some(("tokex", "tokex-b-secret")), &form)
        .await
}

/// Both legs: the grant names domain B and alice; domain B's token is hers, for its
/// API, with her scope mapped into its words and never outliving the grant.
#[tokio::test]
async fn a_grant_from_domain_a_is_exchanged_at_domain_b() {
    let sts = shipped().await;
    let user = alice(&sts).await;
    let r = grant_for_b(&sts, &user).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["issued_token_type"], JWT);
    let grant = r.json()["access_token"].as_str().unwrap().to_string();
    let g = claims_of(&grant);
    assert_eq!(
        (&g["iss"], &g["aud"], &g["sub"]),
        (&json!(DOMAIN_A), &json!(DOMAIN_B), &json!("alice"))
    );
    let r = at_b(&sts, &grant, Some("orders:read")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(
        (&body["token_type"], &body["scope"]),
        (&json!("Bearer"), &json!("orders:read"))
    );
    let t = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(
        (&t["iss"], &t["sub"], &t["aud"], &t["email"]),
        (
            &json!(DOMAIN_B),
            &json!("alice"),
            &json!("orders-api"),
            &json!("alice@domain-a.example")
        )
    );
    assert!(t["exp"].as_u64() <= g["exp"].as_u64(), "{t} outlives {g}");
    // Nothing asked for: all that domain B maps from alice's scopes.
    let r = at_b(&sts, &grant, None).await;
    assert_eq!(r.json()["scope"], "orders:read", "{}", r.body);
}

/// RFC 7523 §3: the assertion names domain B by its issuer or its token endpoint URL.
#[tokio::test]
async fn the_token_endpoint_url_also_names_the_realm() {
    let sts = shipped().await;
    let key = &sts.sts.realms["domain-a"].key;
    let claims = |aud: &str| json!({"iss": DOMAIN_A, "sub": "alice", "aud": aud, "exp": now() + 60, "iat": now(), "scope": "orders.read"});
    let by_endpoint = key
        .sign(&claims(&sts.token_endpoint("domain-b")), "JWT")
        .unwrap();
    assert_eq!(at_b(&sts, &by_endpoint, None).await.status, 200);
    let by_name = key.sign(&claims("domain-b"), "JWT").unwrap();
    assert_oauth_error(
        &at_b(&sts, &by_name, None).await,
        400,
        "invalid_grant",
        "aud names another",
    );
}

/// A grant whose `exp` is a fraction (an RFC 7519 NumericDate may be) still bounds the
/// token issued for it.
#[tokio::test]
async fn a_fractional_exp_bounds_the_token_too() {
    let sts = shipped().await;
    let key = &sts.sts.realms["domain-a"].key;
    let exp = (now() + 30) as f64 + 0.5;
    let claims = json!({"iss": DOMAIN_A, "sub": "alice", "aud": DOMAIN_B, "exp": exp, "iat": now(), "scope": "orders.read"});
    let r = at_b(&sts, &key.sign(&claims, "JWT").unwrap(), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = claims_of(r.json()["access_token"].as_str().unwrap());
    assert!(
        t["exp"].as_u64().unwrap() <= now() + 30,
        "{t} outlives {exp}"
    );
    assert!(r.json()["expires_in"].as_u64().unwrap() <= 30, "{}", r.body);
}

/// A realm that trusts its own tokens as subjects does not take them as grants, even
/// addressed to itself: grants come from another authority.
#[tokio::test]
async fn a_realms_own_token_is_no_grant() {
    let sts = StsServer::start(
        "realms:
  a:
    issuer: https://as.a.example
    trust:
      - { realm: a, audiences: [web-app] }
    clients:
      tokex: { client_secret: s, grants: [jwt_bearer], audiences: [orders-api] }
",
    )
    .await;
    let key = &sts.sts.realms["a"].key;
    let own = json!({"iss": "https://as.a.example", "sub": "alice", "aud": "https://as.a.example", "exp": now() + 60, "scope": "orders:read"});
    let form = [
        ("grant_type", JWT_BEARER_GRANT),
        ("assertion", &key.sign(&own, "JWT").unwrap()),
    ];
    let r = sts.post("a", Some(("tokex", "s")), &form).await;
    assert_oauth_error(&r, 400, "invalid_grant", "its own token");
}

/// Every refusal of the grant, by its RFC 6749 §5.2 / RFC 7523 §3.1 code.
#[tokio::test]
async fn domain_b_refuses_what_is_not_a_grant_for_it() {
    let sts = shipped().await;
    let user = alice(&sts).await;
    // alice's own token is domain A's, but addressed to her application.
    assert_oauth_error(
        &at_b(&sts, &user, None).await,
        400,
        "invalid_grant",
        "a user token",
    );
    let key = &sts.sts.realms["domain-a"].key;
    let base = json!({"iss": DOMAIN_A, "sub": "alice", "aud": DOMAIN_B, "iat": now()});
    let with = |extra: Value| {
        let mut c = base.clone();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let expired = key.sign(&with(json!({"exp": now() - 60})), "JWT").unwrap();
    assert_oauth_error(
        &at_b(&sts, &expired, None).await,
        400,
        "invalid_grant",
        "expired",
    );
    // Within the clock-skew leeway it still verifies, but a token from it would be born
    // expired.
    let just_expired = key.sign(&with(json!({"exp": now() - 2})), "JWT").unwrap();
    assert_oauth_error(
        &at_b(&sts, &just_expired, None).await,
        400,
        "invalid_grant",
        "expired within the leeway",
    );
    let forged = TestKey::new("x").sign_as(&key.kid, &with(json!({"exp": now() + 60})));
    assert_oauth_error(
        &at_b(&sts, &forged, None).await,
        400,
        "invalid_grant",
        "forged",
    );
    let foreign = TestKey::new("y")
        .sign(&json!({"iss": IDP, "sub": "eve", "aud": DOMAIN_B, "exp": now() + 60}));
    assert_oauth_error(
        &at_b(&sts, &foreign, None).await,
        400,
        "invalid_grant",
        "untrusted issuer",
    );
    let form = [("grant_type", JWT_BEARER_GRANT)];
    let r = sts
        .post("domain-b", Some(("tokex", "tokex-b-secret")), &form)
        .await;
    assert_oauth_error(&r, 400, "invalid_request", "no assertion");
    let good = key
        .sign(
            &with(json!({"exp": now() + 60, "scope": "orders.read"})),
            "JWT",
        )
        .unwrap();
    assert_oauth_error(
        &at_b(&sts, &good, Some("orders:admin")).await,
        400,
        "invalid_scope",
        "scope",
    );
    // Domain A's sidecar client may exchange tokens, not present grants.
    let form = [
        ("grant_type", JWT_BEARER_GRANT),
        ("assertion", good.as_str()),
    ];
    let r = sts
        .post("domain-a", Some(("tokex", "tokex-a-secret")), &form)
        .await;
    assert_oauth_error(&r, 400, "unauthorized_client", "grant not allowed");
    // Domain A asks for grants for domain B only.
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", user.as_str()),
        ("subject_token_type", ACCESS_TOKEN),
        ("requested_token_type", JWT),
        ("audience", "https://as.elsewhere.example"),
    ];
    let r = sts
        .post("domain-a", Some(("tokex", "tokex-a-secret")), &form)
        .await;
    assert_oauth_error(&r, 400, "invalid_target", "another audience");
}

/// The metadata says the realm takes the grant.
#[tokio::test]
async fn metadata_lists_the_grant() {
    let sts = shipped().await;
    let url = format!(
        "{}/realms/domain-b/.well-known/oauth-authorization-server",
        sts.base
    );
    let m = got(client().get(url).send().await.unwrap()).await.json();
    let grants = m["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&json!(JWT_BEARER_GRANT)), "{m}");
}
