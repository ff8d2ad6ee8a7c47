//! Refusals at the token endpoint: each RFC 6749 and RFC 8693 error where it belongs, and
//! the endpoint's request rules.

use serde_json::json;

use crate::support::*;

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
