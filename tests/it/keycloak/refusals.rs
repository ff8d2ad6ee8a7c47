//! Refusals as the app sees them: the row of tokex's error table each of Keycloak's lands
//! on, with Keycloak's OAuth error code in `authority_error`, and tokex's own refusals of
//! what Keycloak issued or was asked for. Nothing reaches the upstream.

use std::time::Duration;

use super::*;

/// What the app's token is in a refusal case.
enum Subject {
    Fresh,
    /// Revoked at Keycloak's revocation endpoint (RFC 7009).
    Revoked,
    /// Its user session ended (RP-initiated logout with the refresh token).
    LoggedOut,
    /// From `app-short`, whose tokens live 1 s, used after its `exp`.
    Expired,
}

/// Each refusal: Keycloak's answer, and the status and `tokex-error` tokex gives the app.
///
/// Keycloak answers `invalid_request` both for a bad subject token and for two refusals
/// of policy (the client may not exchange at all, or may not reach the audience); tokex's
/// table reads `invalid_request` as a bad subject token (RFC 8693 §2.2.2), so those two
/// come out as 401 invalid_token too. Keycloak's `error_description`, in tokex's log
/// line, tells them apart. A token Keycloak did issue is refused when its granted scope is
/// wider than asked (502 bad_exchange_response), and an expired subject token never goes
/// to Keycloak.
#[tokio::test]
async fn refusals_land_on_their_rows() {
    let kc = server::shared().await;
    let up = Upstream::start().await;
    let wrong_secret = "    client_id: tokex-basic\n    auth: { method: client_secret_basic, client_secret: wrong }\n";
    let cases = [
        // (case, authority lines, exchange, subject, status, tokex-error, authority_error)
        (
            "wrong client secret",
            wrong_secret.to_string(),
            NARROW,
            Subject::Fresh,
            502,
            "exchange_misconfigured",
            Some("unauthorized_client"),
        ),
        (
            "client not in the subject token's audience",
            basic("tokex-not-audience"),
            NARROW,
            Subject::Fresh,
            403,
            "exchange_denied",
            Some("access_denied"),
        ),
        (
            "standard token exchange off for the client",
            basic("tokex-exchange-off"),
            NARROW,
            Subject::Fresh,
            401,
            "invalid_token",
            Some("invalid_request"),
        ),
        (
            "audience that is no client of the realm",
            basic("tokex-basic"),
            "audience: inventory-api, scope: 'orders:read'",
            Subject::Fresh,
            502,
            "exchange_misconfigured",
            Some("invalid_client"),
        ),
        (
            "audience the client's scopes do not reach",
            basic("tokex-basic"),
            "audience: billing-api, scope: 'orders:read'",
            Subject::Fresh,
            401,
            "invalid_token",
            Some("invalid_request"),
        ),
        (
            "scope the client may not have",
            basic("tokex-basic"),
            "audience: orders-api, scope: 'orders:admin'",
            Subject::Fresh,
            403,
            "insufficient_scope",
            Some("invalid_scope"),
        ),
        (
            // Keycloak adds the client's default scopes that are "included in token scope"
            // to the granted scope; tokex refuses a grant wider than it asked for.
            "default client scope widening the grant",
            basic("tokex-profile-default"),
            NARROW,
            Subject::Fresh,
            502,
            "bad_exchange_response",
            None,
        ),
        (
            "revoked subject token",
            basic("tokex-basic"),
            NARROW,
            Subject::Revoked,
            401,
            "invalid_token",
            Some("invalid_request"),
        ),
        (
            "subject token of an ended session",
            basic("tokex-basic"),
            NARROW,
            Subject::LoggedOut,
            401,
            "invalid_token",
            Some("invalid_request"),
        ),
        (
            // tokex reads the JWT's exp and refuses without asking Keycloak.
            "expired subject token",
            basic("tokex-basic"),
            NARROW,
            Subject::Expired,
            401,
            "invalid_token",
            None,
        ),
    ];
    for (case, authority, exchange, subject, status, code, oauth) in cases {
        let tokex = Tokex::start(&config(&kc, &authority, &up.url(), exchange, "")).await;
        let token = subject_token(&kc, subject).await;
        let r = get(&tokex, "orders.internal", "/", Some(&token)).await;
        assert_eq!(
            (r.status, r.tokex_error()),
            (status, Some(code)),
            "{case}: {}",
            r.body
        );
        assert_eq!(
            r.json()["authority_error"].as_str(),
            oauth,
            "{case}: {}",
            r.body
        );
    }
    assert!(up.seen().is_empty(), "nothing was forwarded");
}

async fn subject_token(kc: &Server, subject: Subject) -> String {
    let endpoint = |path: &str| format!("{}/protocol/openid-connect/{path}", kc.issuer());
    match subject {
        Subject::Fresh => user_token(kc, "app").await.0,
        Subject::Revoked => {
            let (token, _) = user_token(kc, "app").await;
            let form = [
                ("client_id", "app"),
                ("token", token.as_str()),
                ("token_type_hint", "access_token"),
            ];
            let r = post_form(&endpoint("revoke"), &form).await;
            assert_eq!(r.status, 200, "revocation: {}", r.body);
            token
        }
        Subject::LoggedOut => {
            let (token, refresh) = user_token(kc, "app").await;
            let form = [("client_id", "app"), ("refresh_token", refresh.as_str())];
            let r = post_form(&endpoint("logout"), &form).await;
            assert_eq!(r.status, 204, "logout: {}", r.body);
            token
        }
        Subject::Expired => {
            let (token, _) = user_token(kc, "app-short").await;
            let exp = claims_of(&token)["exp"].as_u64().unwrap();
            // Keycloak's clock is this machine's: wait for the second after exp.
            while now() <= exp {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            token
        }
    }
}
