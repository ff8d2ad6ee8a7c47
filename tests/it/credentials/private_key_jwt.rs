//! `private_key_jwt` against the embedded STS, which verifies each assertion with the
//! client's registered keys: rotation, unregistered keys, every algorithm.

use super::*;

/// private_key_jwt against the embedded STS (which checks iss/sub, aud = its issuer,
/// exp and a one-time jti): accepted with a registered key, refused with another one
/// (502 exchange_misconfigured). Rotating the key file to another registered key fails
/// no request; rotating to an unregistered key is refused from the next file check on,
/// which shows the new key is in use; rotating back recovers as soon.
#[tokio::test(start_paused = true)]
async fn private_key_jwt_against_the_embedded_sts() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, rogue) = (ec_key_pem(), ec_key_pem(), ec_key_pem());
    // tokex derives the kid from the key (RFC 7638), so the JWKS uses the same kids.
    let thumb = |pem: &str| {
        jwk_for(pem, "x")
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap()
    };
    let jwks = serde_json::json!({"keys": [jwk_for(&k1, &thumb(&k1)), jwk_for(&k2, &thumb(&k2))]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let sts = StsServer::start(&format!(
        "realms:
  client:
    clients:
      web: {{ client_secret: web-secret, grants: [client_credentials], audiences: [backend], scopes: [openid], subject: alice }}
  backend:
    trust: [ {{ realm: client, audiences: [backend] }} ]
    scope_mapping: {{ openid: [profile] }}
    clients:
      tokex: {{ jwks_file: {}, grants: [token_exchange], audiences: [echo-api] }}
",
        dir.path().join("jwks.json").display()
    ))
    .await;
    // Every client_credentials token is distinct (jti), so each forces an exchange.
    let mut subjects = Vec::new();
    for _ in 0..120 {
        let r = sts
            .post(
                "client",
                Some(("web", "web-secret")),
                &[
                    ("grant_type", "client_credentials"),
                    ("audience", "backend"),
                ],
            )
            .await;
        subjects.push(r.json()["access_token"].as_str().unwrap().to_string());
    }
    let subjects = std::sync::Mutex::new(subjects.into_iter());
    let take = || subjects.lock().unwrap().next().unwrap();
    let up = Upstream::start().await;
    let yaml = |key: &Path| {
        format!(
            "authorities:
  main:
    token_endpoint: {}
    issuer: {}
    client_id: tokex
    auth: {{ method: private_key_jwt, private_key_file: {}, alg: ES256 }}
    retries: 0
{}",
            sts.token_endpoint("backend"),
            sts.issuer("backend"),
            key.display(),
            route(&up.url())
        )
    };
    let (key_file, rogue_file) = (dir.path().join("key.pem"), dir.path().join("rogue.pem"));
    std::fs::write(&key_file, &k1).unwrap();
    std::fs::write(&rogue_file, &rogue).unwrap();
    let tokex = Tokex::start(&yaml(&key_file)).await;
    let next = async || get(&tokex, "echo.internal", "/", Some(&take())).await;
    let r = next().await;
    assert_eq!(r.status, 200, "{}", r.body);
    let narrowed = r.json()["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    assert_eq!(claims_of(&narrowed)["client_id"], "tokex");

    let wrong = Tokex::start(&yaml(&rogue_file)).await;
    let r = get(&wrong, "echo.internal", "/", Some(&take())).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (502, Some("exchange_misconfigured")),
        "{}",
        r.body
    );
    assert_eq!(r.json()["authority_error"], "invalid_client");

    // Registered key to registered key: no request fails before or after the check
    // that swaps it in.
    rotate(&key_file, &k2);
    let reloaded = "tokex_credential_reloads_total{result=\"ok\"} 1\n";
    let mut sent = 0;
    while !tokex.metrics().await.contains(reloaded) {
        assert_eq!(next().await.status, 200, "rotation between registered keys");
        assert!(
            sent < 25,
            "the key file was not re-read within one file check"
        );
        sent += 1;
        advance(Duration::from_millis(10)).await;
    }
    assert_eq!(next().await.status, 200, "the second registered key");
    // To an unregistered key: refused from the next check on, so the file really is
    // re-read.
    rotate(&key_file, &rogue);
    advance(FILE_POLL).await;
    assert_eq!(next().await.tokex_error(), Some("exchange_misconfigured"));
    rotate(&key_file, &k1);
    advance(FILE_POLL).await;
    assert_eq!(next().await.status, 200, "rotating back");
}

/// private_key_jwt with each supported algorithm (ES256, EdDSA, RS256, PS256) against
/// the embedded STS, which verifies the assertion with the client's JWKS.
#[tokio::test]
async fn private_key_jwt_with_each_algorithm() {
    // openssl-made (PKCS#8 v1, the common form); see fixtures/README.md.
    let ed = include_str!("../fixtures/ed25519.pem").to_string();
    let cases = [
        (Algorithm::ES256, "ES256", ec_key_pem()),
        (Algorithm::EdDSA, "EdDSA", ed),
        (Algorithm::RS256, "RS256", RSA_PEM.to_string()),
        (Algorithm::PS256, "PS256", RSA_PEM.to_string()),
    ];
    for (alg, name, pem) in cases {
        let dir = tempfile::tempdir().unwrap();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(
            jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap(),
        );
        std::fs::write(
            dir.path().join("jwks.json"),
            serde_json::json!({"keys": [jwk]}).to_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("key.pem"), &pem).unwrap();
        let sts = StsServer::start(&format!(
            "realms:\n  r:\n    clients:\n      tokex: {{ jwks_file: {}, grants: [client_credentials], audiences: [echo-api] }}\n",
            dir.path().join("jwks.json").display()
        ))
        .await;
        let up = Upstream::start().await;
        let yaml = format!(
            "authorities:
  main:
    token_endpoint: {}
    issuer: {}
    client_id: tokex
    auth: {{ method: private_key_jwt, private_key_file: {}, alg: {name} }}
routes:
  - name: echo
    match: {{ host: echo.internal }}
    upstream: {}
    on_missing_token: client_credentials
    exchange: {{ authority: main, audience: echo-api }}
",
            sts.token_endpoint("r"),
            sts.issuer("r"),
            dir.path().join("key.pem").display(),
            up.url()
        );
        let tokex = Tokex::start(&yaml).await;
        let r = get(&tokex, "echo.internal", "/", None).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
}

/// A realm can sign with an RS256 key from a file; its JWKS verifies the tokens.
#[tokio::test]
async fn sts_realm_signs_with_an_rs256_key_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("realm.pem"), RSA_PEM).unwrap();
    let sts = StsServer::start(&format!(
        "realms:\n  r:\n    signing_key: {{ alg: RS256, key_file: {} }}\n    clients:\n      c: {{ client_secret: s, grants: [client_credentials], audiences: [api] }}\n",
        dir.path().join("realm.pem").display()
    ))
    .await;
    let token = sts
        .post(
            "r",
            Some(("c", "s")),
            &[("grant_type", "client_credentials")],
        )
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::RS256
    );
    let jwks = got(client()
        .get(format!("{}/realms/r/jwks", sts.base))
        .send()
        .await
        .unwrap())
    .await
    .json();
    let jwk: Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
    v.set_audience(&["api"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["iss"], sts.issuer("r"));
}
