//! What a realm publishes (metadata, JWKS), the tokens `client_credentials` issues, and
//! configurations that load.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::support::*;

/// Both metadata URLs (path-suffix and RFC 8414 §3.1 well-known-prefix) publish the
/// realm's issuer, token endpoint, JWKS URI and grants; the JWKS holds only the public key,
/// and that key verifies a token the realm issued; an unknown realm is 404.
#[tokio::test]
async fn metadata_and_jwks_describe_the_realm_and_verify_its_tokens() {
    let fx = Fixture::start().await;
    let (base, issuer) = (&fx.sts.base, fx.sts.issuer("backend"));
    let c = client();
    for url in [
        format!("{base}/realms/backend/.well-known/oauth-authorization-server"),
        format!("{base}/.well-known/oauth-authorization-server/realms/backend"),
    ] {
        let r = got(c.get(&url).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let m = r.json();
        assert_eq!(m["issuer"], issuer.as_str(), "{url}");
        assert_eq!(m["token_endpoint"], fx.sts.token_endpoint("backend"));
        assert_eq!(m["jwks_uri"], format!("{issuer}/jwks"));
        let grants = m["grant_types_supported"].as_array().unwrap();
        assert!(grants.contains(&json!("client_credentials")), "{m}");
        assert!(grants.contains(&json!(TOKEN_EXCHANGE)), "{m}");
        let methods = m["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap();
        for method in [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ] {
            assert!(methods.contains(&json!(method)), "{method}: {m}");
        }
    }
    let client_meta = got(c
        .get(format!(
            "{base}/.well-known/oauth-authorization-server/realms/client"
        ))
        .send()
        .await
        .unwrap())
    .await
    .json();
    assert_eq!(client_meta["issuer"], fx.sts.issuer("client"));

    let jwks = got(c.get(format!("{issuer}/jwks")).send().await.unwrap()).await;
    assert_eq!(jwks.status, 200);
    let set: JwkSet = serde_json::from_str(&jwks.body).unwrap();
    assert_eq!(set.keys.len(), 1);
    let raw = jwks.json();
    assert!(raw["keys"][0].get("d").is_none(), "private key published");
    assert_eq!(raw["keys"][0]["kty"], "EC");

    let r = fx
        .exchange(&fx.alice().await, &[("audience", "orders-api")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = set.find(&kid).expect("the token's kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["orders-api"]);
    v.set_issuer(&[&issuer]);
    let data = jsonwebtoken::decode::<Value>(&token, &key, &v).expect("verifies with the JWKS");
    assert_eq!(data.claims["sub"], "alice");
    // The other realm's key does not verify it.
    let other: JwkSet = serde_json::from_str(
        &got(c
            .get(format!("{}/jwks", fx.sts.issuer("client")))
            .send()
            .await
            .unwrap())
        .await
        .body,
    )
    .unwrap();
    let other_key = DecodingKey::from_jwk(&other.keys[0]).unwrap();
    assert!(jsonwebtoken::decode::<Value>(&token, &other_key, &v).is_err());

    for path in [
        "/realms/nope/jwks",
        "/realms/nope/.well-known/oauth-authorization-server",
        "/elsewhere",
    ] {
        let r = got(c.get(format!("{base}{path}")).send().await.unwrap()).await;
        assert_eq!(r.status, 404, "{path}");
    }
}

/// client_secret_basic and client_secret_post both mint an RFC 9068 access token (typ
/// `at+jwt`, kid, iss/sub/aud/client_id/scope/exp/iat/jti) with the client's configured
/// subject and claims, in an RFC 8693/6749 response with `Cache-Control: no-store`.
#[tokio::test]
async fn client_credentials_with_basic_and_post_issue_rfc9068_tokens() {
    let fx = Fixture::start().await;
    let issuer = fx.sts.issuer("client");
    let kid = fx.sts.sts.realms["client"].key.kid.clone();
    let basic = fx
        .sts
        .post(
            "client",
            Some(("web-app", "web-secret")),
            &[
                ("grant_type", "client_credentials"),
                ("audience", "backend"),
                ("scope", "openid read:calendar"),
            ],
        )
        .await;
    let post = fx
        .sts
        .post(
            "client",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "web-app"),
                ("client_secret", "web-secret"),
                ("scope", "openid read:calendar"),
            ],
        )
        .await;
    let mut jtis = Vec::new();
    for (how, r) in [("basic", &basic), ("post", &post)] {
        assert_eq!(r.status, 200, "{how}: {}", r.body);
        assert_eq!(r.headers["cache-control"], "no-store", "{how}");
        let body = r.json();
        assert_eq!(body["token_type"], "Bearer", "{how}");
        assert_eq!(body["issued_token_type"], ACCESS_TOKEN, "{how}");
        assert_eq!(body["expires_in"], 3600, "{how}: token_ttl 1h");
        assert_eq!(body["scope"], "openid read:calendar", "{how}");
        assert!(body.get("refresh_token").is_none(), "{how}");
        let token = body["access_token"].as_str().unwrap();
        let header = jsonwebtoken::decode_header(token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"), "{how}");
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()), "{how}");
        assert_eq!(header.alg, Algorithm::ES256, "{how}");
        let c = claims_of(token);
        assert_eq!(c["iss"], issuer.as_str(), "{how}");
        assert_eq!(c["sub"], "alice", "{how}");
        assert_eq!(
            c["aud"], "backend",
            "{how}: the requested or default audience"
        );
        assert_eq!(c["client_id"], "web-app", "{how}");
        assert_eq!(c["scope"], "openid read:calendar", "{how}");
        assert_eq!(c["email"], "alice@example.com", "{how}");
        assert_eq!(c["group"], json!(["staff", "admin"]), "{how}");
        let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
        assert!(iat.abs_diff(now()) <= 5, "{how}: iat {iat}");
        assert_eq!(exp, iat + 3600, "{how}");
        jtis.push(c["jti"].as_str().unwrap().to_string());
    }
    assert_ne!(jtis[0], jtis[1], "every token has its own jti");

    // A workload without a configured subject is its own subject; scope is narrowed.
    let r = fx
        .sts
        .post(
            "client",
            Some(("web-app", "web-secret")),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "openid admin"),
            ],
        )
        .await;
    assert_eq!(r.json()["scope"], "openid", "{}", r.body);
    let svc = claims_of(&fx.mint("svc-a", "svc-a-secret", None).await);
    assert_eq!(svc["sub"], "svc-a");
    assert!(svc.get("scope").is_none(), "{svc}");
}

/// A realm may trust another realm whatever the names: here `zulu` trusts `alpha`, which
/// sorts (and is built) first, and exchanges alpha's token.
#[tokio::test]
async fn a_realm_may_trust_a_realm_that_sorts_before_it() {
    let yaml = "realms:
  alpha:
    clients:
      app: { client_secret: s, grants: [client_credentials], audiences: [zulu], subject: alice }
  zulu:
    trust:
      - { realm: alpha, audiences: [zulu] }
    clients:
      x: { client_secret: s, grants: [token_exchange], audiences: [api] }
";
    let sts = StsServer::start(yaml).await;
    let r = sts
        .post(
            "alpha",
            Some(("app", "s")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let subject = r.json()["access_token"].as_str().unwrap().to_string();
    let r = sts
        .post(
            "zulu",
            Some(("x", "s")),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", &subject),
                ("subject_token_type", ACCESS_TOKEN),
                ("audience", "api"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        claims_of(r.json()["access_token"].as_str().unwrap())["sub"],
        "alice"
    );
}

/// The shipped `config/sts-example.yaml` loads, and builds a running STS whose realms
/// trust each other as documented.
#[test]
fn shipped_sts_example_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/sts-example.yaml");
    let config = tokex_sts::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, "127.0.0.1:8400".parse().unwrap());
    assert!(config.realms.contains_key("client") && config.realms.contains_key("backend"));
    let backend = &config.realms["backend"];
    assert!(!backend.policy.scope_mapping.is_empty());
    assert!(!backend.policy.claim_rules.is_empty());
    assert!(!backend.trust.is_empty());
    let sts = tokex_sts::Sts::new(config, "http://127.0.0.1:8400").unwrap();
    assert_eq!(
        sts.token_endpoint("backend").as_deref(),
        Some("http://127.0.0.1:8400/realms/backend/token")
    );
}

/// A 405 from the token endpoint names the allowed method, and a custom issuer does not
/// move the published endpoints away from where the realm is served.
#[tokio::test]
async fn allow_header_and_custom_issuer_endpoints() {
    let sts = StsServer::start("realms:\n  r:\n    issuer: https://login.example.com\n    clients:\n      c: { client_secret: s, grants: [client_credentials], audiences: [api] }\n").await;
    let r = got(client().get(sts.token_endpoint("r")).send().await.unwrap()).await;
    assert_eq!(
        (
            r.status,
            r.headers.get("allow").map(|v| v.to_str().unwrap())
        ),
        (405, Some("POST"))
    );
    let url = format!(
        "{}/realms/r/.well-known/oauth-authorization-server",
        sts.base
    );
    let m = got(client().get(url).send().await.unwrap()).await.json();
    assert_eq!(m["issuer"], "https://login.example.com");
    assert_eq!(m["token_endpoint"], sts.token_endpoint("r"));
    assert_eq!(m["jwks_uri"], format!("{}/realms/r/jwks", sts.base));
    let token = sts
        .post(
            "r",
            Some(("c", "s")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(
        claims_of(token.json()["access_token"].as_str().unwrap())["iss"],
        "https://login.example.com"
    );
}
