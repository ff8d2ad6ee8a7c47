//! The embedded authorization server over real sockets, alone and behind the sidecar.
//!
//! Most tests share one STS built from [`seed_yaml`]: a "client" realm that mints user and
//! workload tokens with `client_credentials`, and a "backend" realm that trusts it (and
//! itself, and a test IdP whose JWKS is a file), holding scope mappings and claim rules.
//! Tokens are checked by decoding them; the JWKS test verifies the signature.

use std::path::PathBuf;
use std::process::Command;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tokex");
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The external IdP the backend realm trusts through a JWKS file.
const IDP: &str = "https://idp.test";
/// What the sidecar's `orders` route asks for: more than alice may have.
const ORDERS_SCOPE: &str = "email profile calendar.events.read write:documents read:analytics";

// ---------------------------------------------------------------------------------------
// Helpers.

/// An ES256 key made in the test: signs tokens and client assertions, publishes a JWKS.
struct TestKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl TestKey {
    fn new(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        Self {
            kid: kid.to_string(),
            encoding,
            jwk,
        }
    }

    /// Signs `claims` with this key, under `kid`.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_string());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Writes `{"keys":[jwk]}` to `dir/name` and returns the path.
    fn write_jwks(&self, dir: &tempfile::TempDir, name: &str) -> PathBuf {
        let path = dir.path().join(name);
        let set = JwkSet {
            keys: vec![self.jwk.clone()],
        };
        std::fs::write(&path, serde_json::to_string(&set).unwrap()).unwrap();
        path
    }
}

/// 16 random bytes, hex: a fresh `jti`.
fn random_id() -> String {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The shared config: the demo's two realms plus the clients and trust the tests need.
fn seed_yaml(idp_jwks: &std::path::Path, reporter_jwks: &std::path::Path) -> String {
    format!(
        "realms:
  client:
    token_ttl: 1h
    clients:
      web-app:                  # alice's user token
        client_secret: web-secret
        grants: [client_credentials]
        audiences: [backend]
        scopes: [openid, read:calendar]
        subject: alice
        claims: {{ name: Alice, email: alice@example.com, group: [staff, admin], department: engineering }}
      marketing-app:            # bob's user token: marketing, not admin
        client_secret: marketing-secret
        grants: [client_credentials]
        audiences: [backend]
        scopes: [openid]
        subject: bob
        claims: {{ email: bob@example.com, group: [staff], department: marketing }}
      svc-a:                    # workloads whose tokens are actor tokens
        client_secret: svc-a-secret
        grants: [client_credentials]
        audiences: [backend]
      svc-b:
        client_secret: svc-b-secret
        grants: [client_credentials]
        audiences: [backend]
  backend:
    token_ttl: 10m
    trust:
      - {{ realm: client, audiences: [backend] }}
      - {{ realm: backend, audiences: [orders-api] }}
      - {{ issuer: '{IDP}', jwks_file: '{idp}', audiences: [backend] }}
    clients:
      tokex:                    # the sidecar beside svc-a
        client_secret: tokex-secret
        grants: [token_exchange]
        audiences: [orders-api]
        resources: ['https://orders.example/']
      orders-svc:               # svc-b's second hop, from orders-api onwards
        client_secret: orders-secret
        grants: [token_exchange]
        audiences: [inventory-api]
      reporter:                 # private_key_jwt
        jwks_file: '{reporter}'
        grants: [client_credentials]
        audiences: [reports-api]
        scopes: [reports.read]
    scope_mapping:
      openid: [email, profile]
      read:calendar: [calendar.events.read]
    claim_rules:
      - {{ claim: group, contains: admin, grant: [write:documents] }}
      - {{ claim: department, equals: marketing, grant: [read:analytics] }}
    claims:
      copy: [email, department]
      rename: {{ department: dept }}
",
        idp = idp_jwks.display(),
        reporter = reporter_jwks.display(),
    )
}

/// A running STS on [`seed_yaml`], with the test IdP's and the reporter's keys.
struct Fixture {
    sts: StsServer,
    idp: TestKey,
    reporter: TestKey,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (idp, reporter) = (TestKey::new("idp-1"), TestKey::new("reporter-1"));
        let yaml = seed_yaml(
            &idp.write_jwks(&dir, "idp.jwks"),
            &reporter.write_jwks(&dir, "reporter.jwks"),
        );
        Self {
            sts: StsServer::start(&yaml).await,
            idp,
            reporter,
            _dir: dir,
        }
    }

    /// A `client_credentials` token from the client realm (audience `backend`).
    async fn mint(&self, client: &str, secret: &str, scope: Option<&str>) -> String {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("audience", "backend"),
        ];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let r = self.sts.post("client", Some((client, secret)), &form).await;
        assert_eq!(r.status, 200, "minting for {client}: {}", r.body);
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    /// alice's user token: scopes `openid read:calendar`, group admin, engineering.
    async fn alice(&self) -> String {
        self.mint("web-app", "web-secret", Some("openid read:calendar"))
            .await
    }

    /// A subject token from the test IdP with `claims` over sensible defaults.
    fn idp_token(&self, claims: Value) -> String {
        let mut c =
            json!({"iss": IDP, "sub": "carol", "aud": "backend", "exp": now() + 300, "iat": now()});
        c.as_object_mut()
            .unwrap()
            .extend(claims.as_object().unwrap().clone());
        self.idp.sign(&c)
    }

    /// A token exchange at the backend realm by `tokex` (Basic auth) with `extra` params.
    async fn exchange(&self, subject: &str, extra: &[(&str, &str)]) -> Got {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
        ];
        form.extend_from_slice(extra);
        self.sts
            .post("backend", Some(("tokex", "tokex-secret")), &form)
            .await
    }
}

/// Asserts an RFC 6749 §5.2 error response: status, `error`, a description, no-store.
fn assert_oauth_error(r: &Got, status: u16, code: &str, what: &str) {
    let ctx = format!("{what}: {} {:?} {}", r.status, r.headers, r.body);
    assert_eq!(r.status, status, "{ctx}");
    let body = r.json();
    assert_eq!(body["error"], code, "{ctx}");
    assert!(body["error_description"].is_string(), "{ctx}");
    assert!(body.get("access_token").is_none(), "{ctx}");
    assert_eq!(r.headers["cache-control"], "no-store", "{ctx}");
}

/// The token the echo upstream received, from its `authorization` field.
fn upstream_token(r: &Got) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["authorization"]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer token upstream: {}", r.body))
        .to_string()
}

/// The sidecar config: authority `backend` at the STS, routes to `up`; `actor` is an
/// optional actor token file.
fn sidecar_yaml(sts: &StsServer, up: &Upstream, actor: Option<&std::path::Path>) -> String {
    let actor = actor.map_or(String::new(), |p| {
        format!(
            "    actor_token: {{ file: {}, type: {JWT} }}\n",
            p.display()
        )
    });
    format!(
        "authorities:
  backend:
    token_endpoint: {te}
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: tokex-secret }}
{actor}    timeout: 2s
    retries: 0
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {up}
    exchange: {{ authority: backend, audience: orders-api, scope: {ORDERS_SCOPE} }}
  - name: payments
    match: {{ host: payments.internal }}
    upstream: {up}
    exchange: {{ authority: backend, audience: payments-api }}
",
        te = sts.token_endpoint("backend"),
        up = up.url(),
    )
}

/// Writes `token` to a file in `dir` (an actor token for the sidecar).
fn write_token(dir: &tempfile::TempDir, name: &str, token: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, token).unwrap();
    path
}

// ---------------------------------------------------------------------------------------
// Metadata and keys.

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

// ---------------------------------------------------------------------------------------
// client_credentials.

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

// ---------------------------------------------------------------------------------------
// Token exchange through the sidecar.

/// End to end: tokex exchanges alice's client-realm token at the backend realm; the
/// upstream receives a backend token for orders-api, scopes mapped (openid -> email
/// profile, read:calendar -> calendar.events.read) plus the admin rule's
/// write:documents, read:analytics withheld (alice is not in marketing), claims copied
/// and renamed, and no `act` (impersonation: tokex has no actor token). bob, in
/// marketing, gets read:analytics but not write:documents.
#[tokio::test]
async fn sidecar_exchange_maps_scopes_and_claims_by_policy() {
    let fx = Fixture::start().await;
    let up = Upstream::start().await;
    let tokex = Tokex::start(&sidecar_yaml(&fx.sts, &up, None)).await;
    let subject = fx.alice().await;
    let subject_exp = claims_of(&subject)["exp"].as_u64().unwrap();

    let token = upstream_token(&get(&tokex, "orders.internal", "/orders/42", Some(&subject)).await);
    assert_ne!(token, subject);
    let c = claims_of(&token);
    assert_eq!(c["iss"], fx.sts.issuer("backend"));
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "orders-api");
    assert_eq!(c["client_id"], "tokex");
    assert_eq!(
        c["scope"], "email profile calendar.events.read write:documents",
        "mapped + rule-granted, in request order, read:analytics withheld"
    );
    assert_eq!(c["email"], "alice@example.com", "copied");
    assert_eq!(c["dept"], "engineering", "copied and renamed");
    for absent in ["department", "name", "group", "act", "may_act"] {
        assert!(c.get(absent).is_none(), "{absent} in {c}");
    }
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert!(exp <= iat + 600 && exp <= subject_exp, "token_ttl 10m: {c}");
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().typ.as_deref(),
        Some("at+jwt")
    );

    let bob = fx
        .mint("marketing-app", "marketing-secret", Some("openid"))
        .await;
    let c = claims_of(&upstream_token(
        &get(&tokex, "orders.internal", "/orders/43", Some(&bob)).await,
    ));
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["scope"], "email profile read:analytics");
    assert_eq!(c["dept"], "marketing");
    assert!(c.get("act").is_none(), "{c}");
}

/// Delegation: with an actor token configured, tokex sends it and the issued token's
/// `act` names the actor (svc-a, issued by the client realm) while `sub` stays alice.
#[tokio::test]
async fn sidecar_with_actor_token_gets_a_delegated_token() {
    let fx = Fixture::start().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let actor = write_token(
        &dir,
        "actor.jwt",
        &fx.mint("svc-a", "svc-a-secret", None).await,
    );
    let tokex = Tokex::start(&sidecar_yaml(&fx.sts, &up, Some(&actor))).await;
    let c = claims_of(&upstream_token(
        &get(
            &tokex,
            "orders.internal",
            "/orders/42",
            Some(&fx.alice().await),
        )
        .await,
    ));
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "orders-api");
    assert_eq!(c["act"]["sub"], "svc-a", "{c}");
    assert_eq!(c["act"]["iss"], fx.sts.issuer("client"), "{c}");
    assert!(c["act"].get("act").is_none(), "one actor, no chain: {c}");
}

/// A two-hop chain: hop 1 (tokex, actor svc-a) gives T1 {sub alice, act svc-a}; hop 2
/// exchanges T1 at the backend realm, which trusts its own tokens, with actor svc-b: T2
/// has act {sub svc-b, act {sub svc-a}}. T1's backend scopes carry over (same realm),
/// narrowed to the request; without a new actor the existing chain is kept.
#[tokio::test]
async fn two_hop_delegation_nests_act() {
    let fx = Fixture::start().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let actor_a = write_token(
        &dir,
        "actor-a.jwt",
        &fx.mint("svc-a", "svc-a-secret", None).await,
    );
    let tokex = Tokex::start(&sidecar_yaml(&fx.sts, &up, Some(&actor_a))).await;
    let t1 = upstream_token(&get(&tokex, "orders.internal", "/", Some(&fx.alice().await)).await);
    assert_eq!(claims_of(&t1)["act"]["sub"], "svc-a");

    let actor_b = fx.mint("svc-b", "svc-b-secret", None).await;
    let hop2 = |actor: Option<String>| {
        let (t1, sts) = (t1.clone(), &fx.sts);
        async move {
            let mut form = vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", t1.as_str()),
                ("subject_token_type", ACCESS_TOKEN),
                ("audience", "inventory-api"),
                (
                    "scope",
                    "calendar.events.read write:documents inventory.admin",
                ),
            ];
            if let Some(a) = &actor {
                form.push(("actor_token", a.as_str()));
                form.push(("actor_token_type", JWT));
            }
            sts.post("backend", Some(("orders-svc", "orders-secret")), &form)
                .await
        }
    };
    let r = hop2(Some(actor_b)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["scope"], "calendar.events.read write:documents");
    let t2 = claims_of(r.json()["access_token"].as_str().unwrap());
    assert_eq!(t2["sub"], "alice");
    assert_eq!(t2["aud"], "inventory-api");
    assert_eq!(t2["client_id"], "orders-svc");
    assert_eq!(t2["act"]["sub"], "svc-b", "{t2}");
    assert_eq!(t2["act"]["act"]["sub"], "svc-a", "{t2}");
    assert!(t2["act"]["act"].get("act").is_none(), "{t2}");
    assert!(t2["exp"].as_u64().unwrap() <= claims_of(&t1)["exp"].as_u64().unwrap());

    let r = hop2(None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let kept = claims_of(r.json()["access_token"].as_str().unwrap());
    assert_eq!(
        kept["act"],
        claims_of(&t1)["act"],
        "chain kept, not dropped"
    );
}

/// RFC 8693 §4.4: a subject token's `may_act` limits who may act for it: svc-a (named)
/// is accepted, svc-b is refused with invalid_request; `may_act` is not carried over.
/// The subject comes from a trusted IdP (a JWKS file), since a realm never mints
/// `may_act` from client claims (it is reserved).
#[tokio::test]
async fn may_act_admits_only_the_named_actor() {
    let fx = Fixture::start().await;
    let subject = fx.idp_token(json!({"scope": "openid", "may_act": {"sub": "svc-a"}}));
    let svc_a = fx.mint("svc-a", "svc-a-secret", None).await;
    let svc_b = fx.mint("svc-b", "svc-b-secret", None).await;
    let exchange_with = |actor: String| {
        let (fx, subject) = (&fx, subject.clone());
        async move {
            fx.exchange(
                &subject,
                &[
                    ("audience", "orders-api"),
                    ("actor_token", &actor),
                    ("actor_token_type", JWT),
                ],
            )
            .await
        }
    };
    let ok = exchange_with(svc_a).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let c = claims_of(ok.json()["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].clone(), c["act"]["sub"].clone()),
        (json!("carol"), json!("svc-a"))
    );
    assert!(c.get("may_act").is_none(), "{c}");
    assert_eq!(c["scope"], "email profile");

    let refused = exchange_with(svc_b).await;
    assert_oauth_error(&refused, 400, "invalid_request", "actor not in may_act");
    assert!(
        refused.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("may_act"),
        "{}",
        refused.body
    );

    // A realm client's `may_act` claim is dropped: it cannot grant itself delegation rules.
    let yaml = "realms:
  r:
    clients:
      c:
        client_secret: s
        grants: [client_credentials]
        audiences: [api]
        claims: { may_act: { sub: svc-a }, act: { sub: mallory }, team: blue }
";
    let sts = StsServer::start(yaml).await;
    let r = sts
        .post(
            "r",
            Some(("c", "s")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let c = claims_of(r.json()["access_token"].as_str().unwrap());
    assert_eq!(c["team"], "blue");
    assert!(c.get("may_act").is_none() && c.get("act").is_none(), "{c}");
}

// ---------------------------------------------------------------------------------------
// Error codes at the token endpoint.

/// invalid_request: no subject_token; a subject token the realm does not trust (signed
/// by a foreign key under the realm's own iss and kid, from an untrusted issuer, for an
/// audience the trust does not name, unsigned, expired); actor_token without its type.
#[tokio::test]
async fn invalid_request_for_missing_untrusted_or_expired_tokens() {
    let fx = Fixture::start().await;
    let aud = [("audience", "orders-api")];
    let r = fx
        .sts
        .post(
            "backend",
            Some(("tokex", "tokex-secret")),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token_type", ACCESS_TOKEN),
                ("audience", "orders-api"),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request", "no subject_token");

    let alice = fx.alice().await;
    let client_kid = fx.sts.sts.realms["client"].key.kid.clone();
    let forged = TestKey::new("forger").sign_as(
        &client_kid,
        &claims_of(&alice), // the very claims of a good token, another key
    );
    let unsigned = format!("{}.", alice.rsplit_once('.').unwrap().0);
    let cases = [
        ("foreign key, realm's iss and kid", forged),
        (
            "untrusted issuer",
            fx.idp_token(json!({"iss": "https://evil.test"})),
        ),
        (
            "audience not in the trust",
            fx.idp_token(json!({"aud": "elsewhere"})),
        ),
        (
            "expired",
            fx.idp_token(json!({"exp": now() - 120, "iat": now() - 600})),
        ),
        ("stripped signature", unsigned),
        ("not a JWT", "opaque-token".to_string()),
    ];
    for (what, token) in &cases {
        let r = fx.exchange(token, &aud).await;
        assert_oauth_error(&r, 400, "invalid_request", what);
    }
    // The same IdP token, valid, is accepted: the refusals above are the trust checks.
    let r = fx.exchange(&fx.idp_token(json!({})), &aud).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let actor = fx.mint("svc-a", "svc-a-secret", None).await;
    let r = fx
        .exchange(
            &alice,
            &[("audience", "orders-api"), ("actor_token", &actor)],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request", "actor_token without type");
    let r = fx
        .exchange(
            &alice,
            &[
                ("audience", "orders-api"),
                ("actor_token", "opaque"),
                ("actor_token_type", JWT),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request", "untrusted actor token");
}

/// invalid_target: an audience or a resource the client may not ask for (one bad one
/// spoils the request); the allowed resource alone is accepted and becomes the `aud`.
#[tokio::test]
async fn invalid_target_for_audiences_and_resources_not_allowed() {
    let fx = Fixture::start().await;
    let alice = fx.alice().await;
    for (what, extra) in [
        ("audience", vec![("audience", "payments-api")]),
        (
            "one of two audiences",
            vec![("audience", "orders-api"), ("audience", "payments-api")],
        ),
        ("resource", vec![("resource", "https://payments.example/")]),
    ] {
        let r = fx.exchange(&alice, &extra).await;
        assert_oauth_error(&r, 400, "invalid_target", what);
    }
    let r = fx
        .exchange(&alice, &[("resource", "https://orders.example/")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        claims_of(r.json()["access_token"].as_str().unwrap())["aud"],
        "https://orders.example/"
    );
    // client_credentials checks targets the same way.
    let r = fx
        .sts
        .post(
            "client",
            Some(("svc-a", "svc-a-secret")),
            &[
                ("grant_type", "client_credentials"),
                ("audience", "orders-api"),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_target", "client_credentials audience");
}

/// invalid_scope: only scopes this subject cannot get (read:analytics for a non-marketing
/// user, an unmapped scope); one available scope among them is narrowed instead.
#[tokio::test]
async fn invalid_scope_when_nothing_requested_is_available() {
    let fx = Fixture::start().await;
    let alice = fx.alice().await;
    for scope in [
        "read:analytics",
        "read:analytics openid admin",
        "payments.write",
    ] {
        let r = fx
            .exchange(&alice, &[("audience", "orders-api"), ("scope", scope)])
            .await;
        assert_oauth_error(&r, 400, "invalid_scope", scope);
    }
    let r = fx
        .exchange(
            &alice,
            &[
                ("audience", "orders-api"),
                ("scope", "read:analytics email"),
            ],
        )
        .await;
    assert_eq!(r.json()["scope"], "email", "{}", r.body);
    // client_credentials: outside the client's scopes.
    let r = fx
        .sts
        .post(
            "client",
            Some(("web-app", "web-secret")),
            &[("grant_type", "client_credentials"), ("scope", "admin")],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_scope", "client_credentials scope");
}

/// invalid_client is 401: wrong secret or unknown client, by Basic (with a `Basic`
/// challenge, RFC 6749 §5.2) or in the form (no challenge); no credentials at all; two
/// methods at once is invalid_request.
#[tokio::test]
async fn invalid_client_is_401_with_a_basic_challenge_after_basic() {
    let fx = Fixture::start().await;
    let alice = fx.alice().await;
    let form = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", alice.as_str()),
        ("subject_token_type", ACCESS_TOKEN),
        ("audience", "orders-api"),
    ];
    for (what, creds) in [
        ("wrong secret", ("tokex", "wrong-secret")),
        ("unknown client", ("nobody", "tokex-secret")),
        ("another realm's client", ("web-app", "web-secret")),
    ] {
        let r = fx.sts.post("backend", Some(creds), &form).await;
        assert_oauth_error(&r, 401, "invalid_client", what);
        let www = r.headers["www-authenticate"].to_str().unwrap();
        assert!(www.starts_with("Basic "), "{what}: {www}");
    }
    let posted = |id: &'static str, secret: &'static str| {
        let mut f = form.to_vec();
        f.push(("client_id", id));
        f.push(("client_secret", secret));
        f
    };
    for (what, f) in [
        ("post, wrong secret", posted("tokex", "wrong-secret")),
        ("post, unknown client", posted("nobody", "x")),
        ("no credentials", form.to_vec()),
    ] {
        let r = fx.sts.post("backend", None, &f).await;
        assert_oauth_error(&r, 401, "invalid_client", what);
        assert!(r.headers.get("www-authenticate").is_none(), "{what}");
    }
    let r = fx
        .sts
        .post(
            "backend",
            Some(("tokex", "tokex-secret")),
            &posted("tokex", "tokex-secret"),
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request", "two methods");
}

/// unsupported_grant_type for `password` (and a missing grant_type is invalid_request);
/// unauthorized_client when a client uses a grant it is not allowed.
#[tokio::test]
async fn unsupported_grant_type_and_unauthorized_client() {
    let fx = Fixture::start().await;
    let tokex = Some(("tokex", "tokex-secret"));
    let r = fx
        .sts
        .post(
            "backend",
            tokex,
            &[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "pw"),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "unsupported_grant_type", "password");
    let r = fx.sts.post("backend", tokex, &[("scope", "x")]).await;
    assert_oauth_error(&r, 400, "invalid_request", "no grant_type");
    let r = fx
        .sts
        .post(
            "backend",
            tokex,
            &[
                ("grant_type", "client_credentials"),
                ("audience", "orders-api"),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "unauthorized_client", "tokex: client_credentials");
    let r = fx
        .sts
        .post(
            "client",
            Some(("web-app", "web-secret")),
            &[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", "x"),
                ("subject_token_type", ACCESS_TOKEN),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "unauthorized_client", "web-app: token exchange");
}

/// The sidecar maps STS refusals to the error table: an untrusted subject (the STS says
/// invalid_request) is 401 invalid_token; a route whose audience the client may not ask
/// for (invalid_target) is 403 exchange_denied; nothing reaches the upstream.
#[tokio::test]
async fn sidecar_maps_sts_refusals() {
    let fx = Fixture::start().await;
    let up = Upstream::start().await;
    let tokex = Tokex::start(&sidecar_yaml(&fx.sts, &up, None)).await;
    let untrusted = TestKey::new("stranger").sign(&json!({
        "iss": "https://stranger.test", "sub": "alice", "aud": "backend", "exp": now() + 300
    }));
    let r = get(&tokex, "orders.internal", "/", Some(&untrusted)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.tokex_error(), Some("invalid_token"));
    assert_eq!(r.json()["authority_error"], "invalid_request");
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );

    let r = get(&tokex, "payments.internal", "/", Some(&fx.alice().await)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.tokex_error(), Some("exchange_denied"));
    assert_eq!(r.json()["error"], "exchange_denied");
    assert_eq!(r.json()["authority_error"], "invalid_target");
    assert!(up.seen().is_empty(), "fails closed");
}

// ---------------------------------------------------------------------------------------
// private_key_jwt.

/// RFC 7523 client authentication: an assertion signed with the client's registered key
/// (iss = sub = client, aud = the realm's issuer, exp, jti) is accepted once; its replay,
/// one signed by another key, one addressed to the token endpoint instead of the issuer,
/// one without jti and one that expired are invalid_client (401, no Basic challenge).
#[tokio::test]
async fn private_key_jwt_client_authentication() {
    let fx = Fixture::start().await;
    let issuer = fx.sts.issuer("backend");
    let assertion_claims = |patch: Value| {
        let mut c = json!({
            "iss": "reporter", "sub": "reporter", "aud": issuer,
            "exp": now() + 60, "iat": now(), "jti": random_id(),
        });
        c.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        c.as_object_mut().unwrap().retain(|_, v| !v.is_null());
        c
    };
    let post = |assertion: String| {
        let sts = &fx.sts;
        async move {
            sts.post(
                "backend",
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "reports.read"),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let good = fx.reporter.sign(&assertion_claims(json!({})));
    let r = post(good.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = claims_of(r.json()["access_token"].as_str().unwrap());
    assert_eq!(
        (&c["sub"], &c["client_id"], &c["aud"], &c["scope"]),
        (
            &json!("reporter"),
            &json!("reporter"),
            &json!("reports-api"),
            &json!("reports.read")
        )
    );

    let other_key = TestKey::new("reporter-1");
    let cases = [
        ("replay", good),
        ("another key", other_key.sign(&assertion_claims(json!({})))),
        (
            "aud = token endpoint",
            fx.reporter.sign(&assertion_claims(
                json!({"aud": fx.sts.token_endpoint("backend")}),
            )),
        ),
        (
            "no jti",
            fx.reporter.sign(&assertion_claims(json!({"jti": null}))),
        ),
        (
            "expired",
            fx.reporter
                .sign(&assertion_claims(json!({"exp": now() - 120}))),
        ),
        (
            "iss is another client",
            fx.reporter.sign(&assertion_claims(json!({"iss": "tokex"}))),
        ),
    ];
    for (what, assertion) in cases {
        let r = post(assertion).await;
        assert_oauth_error(&r, 401, "invalid_client", what);
        assert!(r.headers.get("www-authenticate").is_none(), "{what}");
    }
    // A fresh assertion still works: the refusals were about the assertions.
    let r = post(fx.reporter.sign(&assertion_claims(json!({})))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The wrong assertion type is invalid_request.
    let r = fx
        .sts
        .post(
            "backend",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:example:other"),
                (
                    "client_assertion",
                    &fx.reporter.sign(&assertion_claims(json!({}))),
                ),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request", "assertion type");
}

// ---------------------------------------------------------------------------------------
// Configuration and the binary.

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
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sts-example.yaml");
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

/// `tokex sts --config FILE` serves on the configured (ephemeral) port, logs
/// `sts listening listen=URL`, answers metadata there, and exits 0 on SIGTERM.
#[tokio::test]
async fn sts_binary_serves_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sts.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:0
realms:
  r:
    clients:
      c: { client_secret: s, grants: [client_credentials], audiences: [api] }
",
    )
    .unwrap();
    let mut sts = spawn_tokex(
        &[
            std::ffi::OsStr::new("sts"),
            "--config".as_ref(),
            path.as_os_str(),
        ],
        &[],
        "sts listening",
    )
    .await;
    assert!(
        !sts.ready.contains('\u{1b}'),
        "no ANSI in logs: {:?}",
        sts.ready
    );
    let base = sts.listen();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let m = got(client()
        .get(format!(
            "{base}/realms/r/.well-known/oauth-authorization-server"
        ))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(m.json()["issuer"], format!("{base}/realms/r"));
    let r = got(client()
        .post(format!("{base}/realms/r/token"))
        .basic_auth("c", Some("s"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let status = sts.terminate().await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

/// A bad STS config (an unknown key, an unknown trusted realm) exits 1 and prints
/// `FILE:LINE:COL: key: message`.
#[test]
fn sts_binary_config_error_exits_1_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sts.yaml");
    let cases = [
        (
            "unknown key",
            "realms:\n  r:\n    clients:\n      c:\n        client_secret: s\n        grants: [client_credentials]\n        colour: red\n",
            ":7:9: ",
            "realms.r.clients.c.colour: unknown field `colour`",
        ),
        (
            "unknown realm",
            "realms:\n  r:\n    trust:\n      - { realm: nope, audiences: [r] }\n",
            ":4:9: ",
            "realms.r.trust[0].realm: unknown realm `nope`",
        ),
    ];
    for (what, text, location, message) in cases {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["sts", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.starts_with(&format!("{}{location}", path.display())),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(message), "{what}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// Federation and the token endpoint's request rules.

/// A realm trusts an external issuer by `jwks_url`: here a realm of another STS, whose
/// JWKS is fetched over HTTP. Its tokens are exchanged (scopes mapped); a token that
/// claims that issuer but is signed by another key is invalid_request.
#[tokio::test]
async fn trusts_a_remote_issuer_by_jwks_url() {
    let idp = StsServer::start(
        "realms:
  idp:
    clients:
      app: { client_secret: s, grants: [client_credentials], audiences: [rp], scopes: [openid], subject: dave }
",
    )
    .await;
    let idp_issuer = idp.issuer("idp");
    let rp = StsServer::start(&format!(
        "realms:
  rp:
    trust:
      - {{ issuer: '{idp_issuer}', jwks_url: '{idp_issuer}/jwks', audiences: [rp] }}
    clients:
      x: {{ client_secret: s, grants: [token_exchange], audiences: [api] }}
    scope_mapping:
      openid: [profile]
"
    ))
    .await;
    let r = idp
        .post(
            "idp",
            Some(("app", "s")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let subject = r.json()["access_token"].as_str().unwrap().to_string();
    let exchange = |token: String| {
        let rp = &rp;
        async move {
            rp.post(
                "rp",
                Some(("x", "s")),
                &[
                    ("grant_type", TOKEN_EXCHANGE),
                    ("subject_token", &token),
                    ("subject_token_type", ACCESS_TOKEN),
                    ("audience", "api"),
                ],
            )
            .await
        }
    };
    let r = exchange(subject.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let c = claims_of(r.json()["access_token"].as_str().unwrap());
    assert_eq!(
        (&c["iss"], &c["sub"], &c["scope"]),
        (&json!(rp.issuer("rp")), &json!("dave"), &json!("profile"))
    );
    let idp_kid = idp.sts.realms["idp"].key.kid.clone();
    let forged = TestKey::new("x").sign_as(&idp_kid, &claims_of(&subject));
    assert_oauth_error(
        &exchange(forged).await,
        400,
        "invalid_request",
        "forged remote token",
    );
}

/// Request rules: the token endpoint takes only form POSTs (GET is 405, JSON is
/// invalid_request); parameters may not repeat except `audience`/`resource` (several
/// targets make an `aud` array); `requested_token_type` jwt is honoured and an unknown
/// one, or an unsupported `subject_token_type`, is invalid_request.
#[tokio::test]
async fn token_endpoint_request_rules() {
    let fx = Fixture::start().await;
    let c = client();
    let r = got(c
        .get(fx.sts.token_endpoint("backend"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 405, "{}", r.body);
    let r = got(c
        .post(fx.sts.token_endpoint("backend"))
        .basic_auth("tokex", Some("tokex-secret"))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#)
        .send()
        .await
        .unwrap())
    .await;
    assert_oauth_error(&r, 400, "invalid_request", "JSON body");

    let alice = fx.alice().await;
    let r = fx
        .exchange(
            &alice,
            &[
                ("audience", "orders-api"),
                ("scope", "email"),
                ("scope", "profile"),
            ],
        )
        .await;
    assert_oauth_error(&r, 400, "invalid_request", "repeated scope");
    let r = fx
        .exchange(
            &alice,
            &[
                ("audience", "orders-api"),
                ("resource", "https://orders.example/"),
                ("requested_token_type", JWT),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["issued_token_type"], JWT);
    assert_eq!(
        claims_of(r.json()["access_token"].as_str().unwrap())["aud"],
        json!(["orders-api", "https://orders.example/"])
    );
    for (what, extra) in [
        (
            "unknown requested_token_type",
            ("requested_token_type", "urn:example:unknown"),
        ),
        (
            "saml2 subject_token_type",
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:saml2",
            ),
        ),
    ] {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", alice.as_str()),
            ("audience", "orders-api"),
            extra,
        ];
        if extra.0 != "subject_token_type" {
            form.push(("subject_token_type", ACCESS_TOKEN));
        }
        let r = fx
            .sts
            .post("backend", Some(("tokex", "tokex-secret")), &form)
            .await;
        assert_oauth_error(&r, 400, "invalid_request", what);
    }
}

/// RFC 9068 §2.2: a client_credentials token always names an audience; a client with
/// none configured that asks for none is refused rather than given `aud: []`.
#[tokio::test]
async fn client_credentials_without_any_audience_is_refused() {
    let sts = StsServer::start("realms:\n  r:\n    clients:\n      c: { client_secret: s, grants: [client_credentials] }\n").await;
    let r = sts
        .post(
            "r",
            Some(("c", "s")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_target"))
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
