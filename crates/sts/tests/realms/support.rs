//! The authorization server in-process on an ephemeral port, the keys and tokens the
//! tests make, and the realms most tests share ([`seed_yaml`]).

use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The external IdP the backend realm trusts through a JWKS file.
pub const IDP: &str = "https://idp.test";
/// What a sidecar's `orders` route asks for: more than alice may have.
pub const ORDERS_SCOPE: &str = "email profile calendar.events.read write:documents read:analytics";

/// The STS serving on a fresh loopback port, configured from YAML (`listen` unused).
pub struct StsServer {
    pub base: String,
    pub sts: Arc<tokex_sts::Sts>,
    task: JoinHandle<()>,
}

impl Drop for StsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StsServer {
    pub async fn start(yaml: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = tokex_sts::config::parse(yaml, std::path::Path::new("sts.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let sts = tokex_sts::Sts::new(config, &base).unwrap();
        let task = tokio::spawn(sts.clone().serve(listener, std::future::pending()));
        Self { base, sts, task }
    }

    /// `http://127.0.0.1:PORT/realms/{realm}/token`.
    pub fn token_endpoint(&self, realm: &str) -> String {
        format!("{}/realms/{realm}/token", self.base)
    }

    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.base)
    }

    /// POSTs a form to a realm's token endpoint, optionally with HTTP Basic credentials.
    pub async fn post(
        &self,
        realm: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Got {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = client()
            .post(self.token_endpoint(realm))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        got(req.send().await.unwrap()).await
    }
}

/// A response as a client of the STS sees it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

pub async fn got(resp: reqwest::Response) -> Got {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Got {
        status,
        headers,
        body,
    }
}

/// A client with the platform's roots, no proxy and no redirects.
pub fn client() -> reqwest::Client {
    static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = TLS.get_or_init(|| {
        tokex_common::tls::client_config(None, None, &[b"h2", b"http/1.1"]).unwrap()
    });
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The claims of a JWT (unverified; the tests check the STS's own output).
pub fn claims_of(token: &str) -> Value {
    Value::Object(tokex_common::jwt::unverified_claims(token).expect("a JWT"))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    tokex_common::clock::unix_now()
}

/// An ES256 key made in the test: signs tokens and client assertions, publishes a JWKS.
pub struct TestKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
}

impl TestKey {
    pub fn new(kid: &str) -> Self {
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
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_string());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Writes `{"keys":[jwk]}` to `dir/name` and returns the path.
    pub fn write_jwks(&self, dir: &tempfile::TempDir, name: &str) -> PathBuf {
        let path = dir.path().join(name);
        let set = JwkSet {
            keys: vec![self.jwk.clone()],
        };
        std::fs::write(&path, serde_json::to_string(&set).unwrap()).unwrap();
        path
    }
}

/// 16 random bytes, hex: a fresh `jti`.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The shared config: the demo's two realms plus the clients and trust the tests need.
pub fn seed_yaml(idp_jwks: &std::path::Path, reporter_jwks: &std::path::Path) -> String {
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
pub struct Fixture {
    pub sts: StsServer,
    pub idp: TestKey,
    pub reporter: TestKey,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Self {
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
    pub async fn mint(&self, client: &str, secret: &str, scope: Option<&str>) -> String {
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
    pub async fn alice(&self) -> String {
        self.mint("web-app", "web-secret", Some("openid read:calendar"))
            .await
    }

    /// A subject token from the test IdP with `claims` over sensible defaults.
    pub fn idp_token(&self, claims: Value) -> String {
        let mut c =
            json!({"iss": IDP, "sub": "carol", "aud": "backend", "exp": now() + 300, "iat": now()});
        c.as_object_mut()
            .unwrap()
            .extend(claims.as_object().unwrap().clone());
        self.idp.sign(&c)
    }

    /// A token exchange at the backend realm by `tokex` (Basic auth) with `extra` params.
    pub async fn exchange(&self, subject: &str, extra: &[(&str, &str)]) -> Got {
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
pub fn assert_oauth_error(r: &Got, status: u16, code: &str, what: &str) {
    let ctx = format!("{what}: {} {:?} {}", r.status, r.headers, r.body);
    assert_eq!(r.status, status, "{ctx}");
    let body = r.json();
    assert_eq!(body["error"], code, "{ctx}");
    assert!(body["error_description"].is_string(), "{ctx}");
    assert!(body.get("access_token").is_none(), "{ctx}");
    assert_eq!(r.headers["cache-control"], "no-store", "{ctx}");
}
