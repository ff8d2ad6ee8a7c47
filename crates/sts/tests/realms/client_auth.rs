//! `private_key_jwt` client authentication (RFC 7523).

use serde_json::{Value, json};

use crate::support::*;

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
