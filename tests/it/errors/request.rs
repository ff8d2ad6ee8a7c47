//! Rows tokex answers before any exchange: no route, an unsupported request form, and the
//! app's token missing, malformed or expired.

use super::*;

each_mode!(
    paused:
    missing_token_when_none_or_another_scheme,
    invalid_request_for_bad_token_characters,
    invalid_token_for_an_expired_subject_jwt_without_calling_the_as,
    invalid_token_when_the_as_answers_invalid_request,
    invalid_token_when_the_as_answers_invalid_grant,
);

// ---------------------------------------------------------------------------------------
// 404 no_route

/// An unknown Host, and an absolute-form request naming an unknown authority, get 404
/// `no_route`; neither the AS nor the upstream (nor any other address) is contacted.
#[tokio::test]
async fn no_route_for_unknown_host() {
    let rig = Rig::start(RAW).await;
    let r = get(&rig.tokex, "unknown.internal", "/", Some(SUBJECT)).await;
    assert_refusal(&r, 404, "no_route", None, SUBJECT);
    let r = raw_request(
        rig.tokex.addr,
        &format!(
            "GET http://elsewhere.example/x HTTP/1.1\r\nHost: elsewhere.example\r\n\
             Authorization: Bearer {SUBJECT}\r\n\r\n"
        ),
    )
    .await;
    assert_refusal(&r, 404, "no_route", None, SUBJECT);
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 405 unsupported

/// `CONNECT` is refused with 405 `unsupported` and a body that explains tokex does not
/// tunnel; asterisk-form `OPTIONS *` is another unsupported form.
#[tokio::test]
async fn connect_and_asterisk_form_are_unsupported() {
    let rig = Rig::start(RAW).await;
    let r = raw_request(
        rig.tokex.addr,
        &format!(
            "CONNECT payments.internal:443 HTTP/1.1\r\nHost: payments.internal:443\r\n\
             Proxy-Authorization: Bearer {SUBJECT}\r\n\r\n"
        ),
    )
    .await;
    assert_refusal(&r, 405, "unsupported", None, SUBJECT);
    let description = r.json()["error_description"].as_str().unwrap().to_string();
    assert!(description.contains("CONNECT"), "{description}");
    assert!(description.contains("http://"), "{description}");

    let r = raw_request(
        rig.tokex.addr,
        "OPTIONS * HTTP/1.1\r\nHost: echo.internal\r\n\r\n",
    )
    .await;
    assert_refusal(&r, 405, "unsupported", None, SUBJECT);
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 401 missing_token

/// No Authorization, or another scheme (`Basic`), on a rejecting route is 401
/// `missing_token` with a bare `WWW-Authenticate: Bearer`; the AS is not called.
async fn missing_token_when_none_or_another_scheme(mode: Mode) {
    let rig = Rig::start(mode).await;
    let r = get_in(mode, &rig.tokex, "echo.internal", "/", None).await;
    assert_refusal(&r, 401, "missing_token", None, SUBJECT);
    let basic = "Basic dXNlcjpzM2NyZXQ=";
    let r = rig.call_with_authorization(&[basic]).await;
    assert_refusal(&r, 401, "missing_token", None, "dXNlcjpzM2NyZXQ");
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 400 invalid_request

/// Two Authorization headers are 400 `invalid_request`, whether reqwest or a raw
/// request sends them; the AS is not called.
#[tokio::test]
async fn invalid_request_for_two_authorization_headers() {
    let rig = Rig::start(RAW).await;
    let r = rig
        .call_with_authorization(&[&format!("Bearer {SUBJECT}"), "Bearer other-token"])
        .await;
    assert_refusal(&r, 400, "invalid_request", None, SUBJECT);
    let r = raw_request(
        rig.tokex.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer {SUBJECT}\r\n\
             Authorization: Bearer {SUBJECT}\r\n\r\n"
        ),
    )
    .await;
    assert_refusal(&r, 400, "invalid_request", None, SUBJECT);
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

/// An empty bearer token (`Bearer ` and `Bearer`, sent raw so no client trims or
/// rewrites them) is 400 `invalid_request`; the AS is not called.
#[tokio::test]
async fn invalid_request_for_an_empty_token() {
    let rig = Rig::start(RAW).await;
    for auth in ["Bearer ", "Bearer", "bearer    "] {
        let r = raw_request(
            rig.tokex.addr,
            &format!("GET / HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: {auth}\r\n\r\n"),
        )
        .await;
        assert_refusal(&r, 400, "invalid_request", None, SUBJECT);
    }
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

/// Characters outside RFC 6750 b64token (a comma, an inner space, `=` inside) are 400
/// `invalid_request`, and the malformed token is not echoed; the AS is not called.
async fn invalid_request_for_bad_token_characters(mode: Mode) {
    let rig = Rig::start(mode).await;
    for token in ["secret,part", "secret part", "secret=part"] {
        let r = rig
            .call_with_authorization(&[&format!("Bearer {token}")])
            .await;
        assert_refusal(&r, 400, "invalid_request", None, token);
        assert!(!r.body.contains("secret"), "{}", r.body);
    }
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 401 invalid_token

/// A subject JWT whose `exp` has passed is 401 `invalid_token` without any AS call.
async fn invalid_token_for_an_expired_subject_jwt_without_calling_the_as(mode: Mode) {
    let rig = Rig::start(mode).await;
    let expired = jwt(serde_json::json!({ "sub": "alice", "exp": now() - 60 }));
    let r = get_in(mode, &rig.tokex, "echo.internal", "/", Some(&expired)).await;
    assert_refusal(&r, 401, "invalid_token", None, &expired);
    assert_eq!(rig.as_.count(), 0, "the AS must not be called");
    rig.assert_upstream_untouched();
}

/// The AS answering 400 `invalid_request` means the subject token was unusable: 401
/// `invalid_token`, with the AS's code echoed.
async fn invalid_token_when_the_as_answers_invalid_request(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "invalid_request")).await;
    assert_refusal(&r, 401, "invalid_token", Some("invalid_request"), SUBJECT);
}

/// The AS answering 400 `invalid_grant` is 401 `invalid_token`, with the AS's code echoed.
async fn invalid_token_when_the_as_answers_invalid_grant(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "invalid_grant")).await;
    assert_refusal(&r, 401, "invalid_token", Some("invalid_grant"), SUBJECT);
}
