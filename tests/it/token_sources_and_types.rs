//! Tokens beyond a Bearer JWT in `Authorization`: a subject token from a cookie or
//! another header, a SAML assertion injected into a custom header, and token types named
//! by any absolute URI.

use crate::support::*;

const SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";

/// A SAML-typed exchange injected into a custom header without a scheme: the AS answers
/// token_type N_A, which this route accepts because it asked for a non-Bearer injection;
/// the upstream gets the assertion in its header and no Authorization.
#[tokio::test]
async fn saml_assertion_into_a_custom_header() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|_, _| {
        Reply::json(200, serde_json::json!({
            "access_token": "PHNhbWw6QXNzZXJ0aW9uPg", "issued_token_type": SAML2, "token_type": "N_A", "expires_in": 300
        }))
    });
    let yaml = config(&as_, &up.url()).replace(
        "exchange: { authority: main, audience: echo-api, scope: read write }",
        &format!("exchange: {{ authority: main, audience: echo-api, requested_token_type: '{SAML2}', inject: {{ header: X-Saml-Assertion, scheme: none }} }}"),
    );
    let tokex = Tokex::start(&yaml).await;
    let r = get(&tokex, "echo.internal", "/", Some("user-token")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.headers["x-saml-assertion"], "PHNhbWw6QXNzZXJ0aW9uPg");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(as_.requests()[0].param("requested_token_type"), Some(SAML2));
}

/// A subject token from a cookie: exchanged, and that cookie (only) removed before
/// forwarding; a subject from another header is removed too.
#[tokio::test]
async fn subject_from_a_cookie_or_a_header() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let route = |name: &str, host: &str, from: &str| {
        format!(
            "  - name: {name}\n    match: {{ host: {host} }}\n    upstream: {}\n    exchange: {{ authority: main, audience: echo-api, subject_token_from: {from} }}\n",
            up.url()
        )
    };
    let yaml = format!(
        "{}{}{}",
        config(&as_, &up.url()),
        route("by-cookie", "cookie.internal", "{ cookie: session }"),
        route(
            "by-header",
            "header.internal",
            "{ header: X-Forwarded-Access-Token }"
        )
    );
    let tokex = Tokex::start(&yaml).await;
    let r = got(client()
        .get(tokex.url("/"))
        .header("host", "cookie.internal")
        .header("cookie", "theme=dark; session=cookie-subject; lang=en")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        as_.requests()[0].param("subject_token"),
        Some("cookie-subject")
    );
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.headers["cookie"], "theme=dark; lang=en");
    assert_eq!(seen.headers["authorization"], "Bearer narrowed-1");

    let r = got(client()
        .get(tokex.url("/"))
        .header("host", "header.internal")
        .header("x-forwarded-access-token", "header-subject")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        as_.requests()[1].param("subject_token"),
        Some("header-subject")
    );
    let seen = up.seen().pop().unwrap();
    assert!(
        seen.headers.get("x-forwarded-access-token").is_none(),
        "the source header is removed"
    );
    let r = got(client()
        .get(tokex.url("/"))
        .header("host", "cookie.internal")
        .header("cookie", "theme=dark")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.tokex_error(), Some("missing_token"));
}

/// Token types are any absolute URI (custom URNs as some providers use), sent as given.
#[tokio::test]
async fn custom_token_type_uris() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = config(&as_, &up.url()).replace(
        "exchange: { authority: main, audience: echo-api, scope: read write }",
        "exchange: { authority: main, audience: echo-api, subject_token_type: 'urn:example:cic-token', requested_token_type: 'https://example.com/token-types/internal' }",
    );
    let tokex = Tokex::start(&yaml).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t")).await.status,
        200
    );
    let r = &as_.requests()[0];
    assert_eq!(r.param("subject_token_type"), Some("urn:example:cic-token"));
    assert_eq!(
        r.param("requested_token_type"),
        Some("https://example.com/token-types/internal")
    );
}
