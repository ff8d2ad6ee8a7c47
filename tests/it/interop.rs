//! Interoperability with an independently written authorization server: IdentityPython's
//! idpyoidc 5.0.0, bound to HTTP by `tests/interop/idpy_server.py` (all OAuth decisions
//! are the library's). `scripts/test.sh` installs it into `target/interop-venv`; without
//! it these tests fail loudly rather than skip.

mod chaining;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::support::*;

const AUDIENCE: &str = "https://api.example.com";

fn python() -> PathBuf {
    let path = std::env::var_os("TOKEX_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python")
        });
    assert!(
        path.exists(),
        "no interop Python at {}: run scripts/test.sh, which installs idpyoidc into target/interop-venv",
        path.display()
    );
    path
}

/// A running idpyoidc server.
struct Idp {
    info: Value,
    child: tokio::process::Child,
}

impl Idp {
    async fn start(args: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/idpy_server.py");
        let mut child = tokio::process::Command::new(python())
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the idpyoidc binding");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("idpyoidc binding started within 60 s")
            .unwrap()
            .expect("idpyoidc binding printed its startup line");
        let info: Value =
            serde_json::from_str(&first).unwrap_or_else(|_| panic!("startup line: {first}"));
        Self { info, child }
    }

    fn port(&self) -> u16 {
        self.info["port"].as_u64().unwrap() as u16
    }

    fn secret(&self, client: &str) -> String {
        self.info["clients"][client]["secret"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A subject token from an authorization-code flow inside the library.
    async fn subject_token(&self) -> String {
        let url = self.info["subject_token_endpoint"].as_str().unwrap();
        let r = got(client().get(url).send().await.unwrap()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    /// Requests the token endpoint has received from outside (tokex).
    async fn token_requests(&self) -> u64 {
        let url = self.info["stats_endpoint"].as_str().unwrap();
        got(client().get(url).send().await.unwrap()).await.json()["token_requests"]
            .as_u64()
            .unwrap()
    }

    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// tokex with one authority at `idp` using `client`, and route `echo` asking for
/// `audience` and `scope`, plus `extra` route keys.
fn config_for(
    idp: &Idp,
    client: &str,
    upstream: &str,
    audience: &str,
    scope: &str,
    extra: &str,
) -> String {
    let method = idp.info["clients"][client]["auth"].as_str().unwrap();
    format!(
        "authorities:
  idp:
    token_endpoint: {}
    issuer: {}
    client_id: {client}
    auth: {{ method: {method}, client_secret: {} }}
    timeout: 5s
    retries: 0
routes:
  - name: echo
    match: {{ host: echo.internal }}
    upstream: {upstream}
    exchange: {{ authority: idp, audience: '{audience}', scope: '{scope}' }}
{extra}",
        idp.info["token_endpoint"].as_str().unwrap(),
        idp.info["issuer"].as_str().unwrap(),
        idp.secret(client)
    )
}

/// client_secret_basic: the narrowed token (the library's JWT, issued to tokex-basic)
/// reaches the upstream instead of the subject token, and the second call is a cache hit
/// (the server counts one token request).
#[tokio::test]
async fn exchange_with_client_secret_basic_and_cache_hit() {
    let (idp, up) = (Idp::start(&[]).await, Upstream::start().await);
    let tokex = Tokex::start(&config_for(
        &idp,
        "tokex-basic",
        &up.url(),
        AUDIENCE,
        "read",
        "",
    ))
    .await;
    let subject = idp.subject_token().await;
    let r = get(&tokex, "echo.internal", "/x", Some(&subject)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let auth = r.json()["authorization"].as_str().unwrap().to_string();
    let narrowed = auth.strip_prefix("Bearer ").unwrap();
    assert_ne!(narrowed, subject);
    let claims = claims_of(narrowed);
    assert_eq!(claims["client_id"], "tokex-basic");
    assert_eq!(claims["iss"], idp.info["issuer"]);
    assert_eq!(claims["scope"], "read");
    let r = get(&tokex, "echo.internal", "/y", Some(&subject)).await;
    assert_eq!(r.json()["authorization"], auth.as_str());
    assert_eq!(
        idp.token_requests().await,
        1,
        "the second call was a cache hit"
    );
    idp.stop().await;
}

/// client_secret_post is accepted the same way.
#[tokio::test]
async fn exchange_with_client_secret_post() {
    let (idp, up) = (Idp::start(&[]).await, Upstream::start().await);
    let tokex = Tokex::start(&config_for(
        &idp,
        "tokex-post",
        &up.url(),
        AUDIENCE,
        "read write",
        "",
    ))
    .await;
    let r = get(
        &tokex,
        "echo.internal",
        "/",
        Some(&idp.subject_token().await),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let claims = claims_of(
        r.json()["authorization"]
            .as_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap(),
    );
    assert_eq!(claims["client_id"], "tokex-post");
    idp.stop().await;
}

/// The library's refusals land on the error-table rows: invalid_target -> 403
/// exchange_denied, invalid_scope -> 403 insufficient_scope, a bad subject token
/// (invalid_request) -> 401 invalid_token; nothing reaches the upstream.
#[tokio::test]
async fn refusals_map_to_spec_rows() {
    let (idp, up) = (Idp::start(&[]).await, Upstream::start().await);
    let subject = idp.subject_token().await;
    let cases = [
        (
            "https://elsewhere.example.com",
            "read",
            "good",
            403,
            "exchange_denied",
            "invalid_target",
        ),
        (
            AUDIENCE,
            "admin",
            "good",
            403,
            "insufficient_scope",
            "invalid_scope",
        ),
        (
            AUDIENCE,
            "read",
            "garbage-subject-token",
            401,
            "invalid_token",
            "invalid_request",
        ),
    ];
    for (audience, scope, token, status, code, oauth) in cases {
        let tokex = Tokex::start(&config_for(
            &idp,
            "tokex-basic",
            &up.url(),
            audience,
            scope,
            "",
        ))
        .await;
        let token = if token == "good" {
            subject.as_str()
        } else {
            token
        };
        let r = get(&tokex, "echo.internal", "/", Some(token)).await;
        assert_eq!(
            (r.status, r.tokex_error()),
            (status, Some(code)),
            "{}",
            r.body
        );
        assert_eq!(r.json()["authority_error"], oauth);
    }
    assert!(up.seen().is_empty(), "nothing was forwarded");
    idp.stop().await;
}

/// idpyoidc reports expires_in as the subject token's remaining lifetime (~300 s) but
/// signs the exchanged JWT with exp = iat + 60: the cache takes the shorter. With
/// early_expiry 60 s nothing of the JWT's minute is left to cache, so the next request
/// exchanges again (by expires_in, 240 s would be); with the default early_expiry
/// (30 s) the next request is a cache hit.
#[tokio::test]
async fn cache_lifetime_is_bounded_by_the_shorter_jwt_exp() {
    let (idp, up) = (Idp::start(&[]).await, Upstream::start().await);
    let bounded = Tokex::start(&config_for(
        &idp,
        "tokex-basic",
        &up.url(),
        AUDIENCE,
        "read",
        "    cache: { early_expiry: 60s }\n",
    ))
    .await;
    let control = Tokex::start(&config_for(
        &idp,
        "tokex-basic",
        &up.url(),
        AUDIENCE,
        "read",
        "",
    ))
    .await;
    let subject = idp.subject_token().await;
    let r = get(&bounded, "echo.internal", "/", Some(&subject)).await;
    let claims = claims_of(
        r.json()["authorization"]
            .as_str()
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap(),
    );
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 60, "the library's exchanged JWTs live 60 s");
    assert_eq!(
        get(&control, "echo.internal", "/", Some(&subject))
            .await
            .status,
        200
    );
    assert_eq!(idp.token_requests().await, 2);
    assert_eq!(
        get(&control, "echo.internal", "/", Some(&subject))
            .await
            .status,
        200
    );
    assert_eq!(idp.token_requests().await, 2, "the control is still cached");
    assert_eq!(
        get(&bounded, "echo.internal", "/", Some(&subject))
            .await
            .status,
        200
    );
    assert_eq!(
        idp.token_requests().await,
        3,
        "the exp-bounded entry was not cached"
    );
    idp.stop().await;
}

/// The server stopped mid-run: cached tokens keep flowing, a new subject gets 503
/// authority_unavailable with Retry-After, and exchanges work again once it returns.
#[tokio::test]
async fn outage_gives_authority_unavailable_and_recovers() {
    let args = ["--basic-secret", "interop-basic-secret"];
    let (idp, up) = (Idp::start(&args).await, Upstream::start().await);
    let port = idp.port().to_string();
    let tokex = Tokex::start(&config_for(
        &idp,
        "tokex-basic",
        &up.url(),
        AUDIENCE,
        "read",
        "",
    ))
    .await;
    let cached = idp.subject_token().await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some(&cached))
            .await
            .status,
        200
    );
    let unused = idp.subject_token().await;
    idp.stop().await;

    assert_eq!(
        get(&tokex, "echo.internal", "/", Some(&cached))
            .await
            .status,
        200,
        "cached token still served"
    );
    let r = get(&tokex, "echo.internal", "/", Some(&unused)).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (503, Some("authority_unavailable")),
        "{}",
        r.body
    );
    assert!(r.headers.contains_key("retry-after"));

    let back = Idp::start(&[&args[..], &["--port", &port]].concat()).await;
    assert_eq!(
        back.port().to_string(),
        port,
        "back on the port tokex knows"
    );
    // The restarted server has new keys: it accepts only tokens it issued itself.
    let fresh = back.subject_token().await;
    let r = get(&tokex, "echo.internal", "/", Some(&fresh)).await;
    assert_eq!(r.status, 200, "recovered: {}", r.body);
    back.stop().await;
}

/// tokex with one authority at `idp` authenticating as `tokex-jwt` with private_key_jwt;
/// `issuer` and `audience` are the optional authority and `auth` keys that choose the
/// assertion's `aud`.
fn private_key_jwt_config(
    idp: &Idp,
    key_file: &std::path::Path,
    upstream: &str,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> String {
    let issuer = issuer.map_or(String::new(), |i| format!("    issuer: {i}\n"));
    let audience = audience.map_or(String::new(), |a| format!(", audience: '{a}'"));
    format!(
        "authorities:
  idp:
    token_endpoint: {}
{issuer}    client_id: tokex-jwt
    auth: {{ method: private_key_jwt, private_key_file: {}{audience} }}
    timeout: 5s
    retries: 0
routes:
  - name: echo
    match: {{ host: echo.internal }}
    upstream: {upstream}
    exchange: {{ authority: idp, audience: '{AUDIENCE}', scope: read }}
",
        idp.info["token_endpoint"].as_str().unwrap(),
        key_file.display(),
    )
}

/// private_key_jwt against the library's verifier (signature with the registered public
/// key, one-time `jti`, `aud` among the audiences the token endpoint accepts): without
/// `issuer` the assertion is addressed to the token endpoint URL, with `issuer` to the
/// issuer, and `auth.audience` overrides both. The wrong audience is invalid_client.
#[tokio::test]
async fn private_key_jwt_assertion_audience() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    for accepts in ["endpoint", "issuer"] {
        let idp = Idp::start(&["--assertion-audience", accepts]).await;
        let key_file = dir.path().join(format!("{accepts}.pem"));
        let pem = idp.info["clients"]["tokex-jwt"]["private_key_pem"]
            .as_str()
            .unwrap();
        std::fs::write(&key_file, pem).unwrap();
        let (issuer, endpoint) = (
            idp.info["issuer"].as_str().unwrap(),
            idp.info["token_endpoint"].as_str().unwrap(),
        );
        // (issuer key, auth.audience, accepted by a server that wants `accepts`)
        let cases = [
            (None, None, accepts == "endpoint"),
            (Some(issuer), None, accepts == "issuer"),
            (Some(issuer), Some(endpoint), accepts == "endpoint"),
            (None, Some(issuer), accepts == "issuer"),
        ];
        for (issuer_key, audience, accepted) in cases {
            let config = private_key_jwt_config(&idp, &key_file, &up.url(), issuer_key, audience);
            let tokex = Tokex::start(&config).await;
            let r = get(
                &tokex,
                "echo.internal",
                "/",
                Some(&idp.subject_token().await),
            )
            .await;
            let case =
                format!("server wants {accepts}; issuer {issuer_key:?}, audience {audience:?}");
            if accepted {
                assert_eq!(r.status, 200, "{case}: {}", r.body);
                let auth = r.json()["authorization"].as_str().unwrap().to_string();
                let claims = claims_of(auth.strip_prefix("Bearer ").unwrap());
                assert_eq!(claims["client_id"], "tokex-jwt", "{case}");
            } else {
                assert_eq!(
                    (r.status, r.tokex_error()),
                    (502, Some("exchange_misconfigured")),
                    "{case}: {}",
                    r.body
                );
                assert_eq!(r.json()["authority_error"], "invalid_client", "{case}");
            }
        }
        idp.stop().await;
    }
}
