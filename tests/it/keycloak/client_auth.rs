//! How tokex authenticates to Keycloak: client secret in the form body, a signed JWT
//! (`private_key_jwt`, Keycloak's "Signed JWT") and a TLS client certificate
//! (`tls_client_auth`, Keycloak's "X509 Certificate").

use super::*;

/// The private key of the realm's `tokex-jwt` client, whose public JWK (with its RFC 7638
/// thumbprint as `kid`, tokex's default `key_id`) the realm file registers.
const JWT_CLIENT_KEY: &str = include_str!("../fixtures/keycloak-client-ec.pem");

/// Exchanges a fresh user token through `tokex` and returns the upstream's view.
async fn exchange_through(kc: &Server, tokex: &Tokex) -> Got {
    let (subject, _) = user_token(kc, "app").await;
    get(tokex, "orders.internal", "/", Some(&subject)).await
}

/// client_secret_post: the secret in the form body is accepted like Basic.
#[tokio::test]
async fn client_secret_post() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let auth = "    client_id: tokex-post\n    auth: { method: client_secret_post, client_secret: tokex-post-secret }\n";
    let tokex = Tokex::start(&config(&kc, auth, &up.url(), NARROW, "")).await;
    let token = forwarded(&exchange_through(&kc, &tokex).await);
    let claims = verified(&token, &jwks(&kc).await, &kc.issuer());
    assert_eq!(claims["azp"], "tokex-post");
    assert_eq!(claims["scope"], "orders:read");
}

/// private_key_jwt (ES256, the key registered as a JWKS on the client): Keycloak accepts
/// an assertion addressed to the realm issuer, which tokex uses when the authority's
/// `issuer` is set, and one addressed to the token endpoint URL, tokex's default without
/// `issuer`. Any other `aud` is refused with `invalid_client`, which tokex reports as
/// 502 exchange_misconfigured.
#[tokio::test]
async fn private_key_jwt_with_the_realm_issuer_as_audience() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, JWT_CLIENT_KEY).unwrap();
    let auth = |audience: &str| {
        format!(
            "    client_id: tokex-jwt\n    auth: {{ method: private_key_jwt, private_key_file: {}{audience} }}\n",
            key.display()
        )
    };
    let issuer_line = format!("    issuer: {}\n", kc.issuer());
    let with_issuer = config(&kc, &auth(""), &up.url(), NARROW, "");
    let without_issuer = with_issuer.replace(&issuer_line, "");
    assert_ne!(with_issuer, without_issuer);
    let elsewhere = config(
        &kc,
        &auth(", audience: 'https://elsewhere.example'"),
        &up.url(),
        NARROW,
        "",
    );
    for (case, yaml, accepted) in [
        ("issuer", with_issuer, true),
        ("token endpoint", without_issuer, true),
        ("another audience", elsewhere, false),
    ] {
        let tokex = Tokex::start(&yaml).await;
        let r = exchange_through(&kc, &tokex).await;
        if accepted {
            let claims = verified(&forwarded(&r), &jwks(&kc).await, &kc.issuer());
            assert_eq!(claims["azp"], "tokex-jwt", "{case}");
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
}

/// tls_client_auth over Keycloak's HTTPS listener: tokex presents the certificate the
/// realm's `tokex-mtls` client names (subject and issuer DN), and trusts Keycloak's
/// certificate through the authority's `ca_file`. The user token is minted over HTTPS
/// too: Keycloak takes its issuer from the request's origin and exchanges only tokens
/// of the issuer it is reached as.
#[tokio::test]
async fn tls_client_auth_over_https() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(kc.ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let endpoint = format!("{}/protocol/openid-connect/token", kc.https_issuer());
    let (user, pass) = USER;
    let form = [
        ("grant_type", "password"),
        ("client_id", "app"),
        ("username", user),
        ("password", pass),
    ];
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let r = got(https
        .post(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let subject = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(claims_of(&subject)["iss"], kc.https_issuer());

    let yaml = format!(
        "authorities:
  keycloak:
    token_endpoint: {endpoint}
    issuer: {}
    client_id: tokex-mtls
    auth: {{ method: tls_client_auth, cert_file: {}, key_file: {} }}
    ca_file: {}
    timeout: 10s
    retries: 0
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {}
    exchange: {{ authority: keycloak, {NARROW} }}
",
        kc.https_issuer(),
        kc.file("client.pem").display(),
        kc.file("client.key").display(),
        kc.file("ca.pem").display(),
        up.url(),
    );
    let tokex = Tokex::start(&yaml).await;
    let token = forwarded(&get(&tokex, "orders.internal", "/", Some(&subject)).await);
    let claims = verified(&token, &jwks(&kc).await, &kc.https_issuer());
    assert_eq!(claims["azp"], "tokex-mtls");
    assert_eq!(claims["aud"], TARGET);
}
