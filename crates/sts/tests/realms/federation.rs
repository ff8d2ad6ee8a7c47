//! Trusting another server's issuer by its JWKS URL.

use serde_json::json;

use crate::support::*;

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
