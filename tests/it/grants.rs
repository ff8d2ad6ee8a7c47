//! The grant a route exchanges with (`exchange.grant`) and its extra form parameters
//! (`exchange.extra_params`): the exact RFC 7523 §2.1 request sent, the refusals mapped
//! to the error table like RFC 8693 ones, the cache key, and what the config refuses.

use crate::support::*;

/// A subject JWT the app sends; Entra's on-behalf-of takes the app's access token.
const SUBJECT: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.c2ln";

/// The config for an Entra-style authority and a `graph` route using jwt-bearer.
fn entra(as_: &MockAs, upstream: &str, extra: &str) -> String {
    format!(
        "authorities:
  entra:
    token_endpoint: {}
    client_id: orders-app
    auth: {{ method: client_secret_post, client_secret: app-secret }}
    timeout: 1s
    retries: 0
routes:
  - name: graph
    match: {{ host: graph.internal }}
    upstream: {upstream}
    exchange:
      authority: entra
      grant: jwt-bearer
      scope: https://graph.microsoft.com/.default
      extra_params: {{ requested_token_use: on_behalf_of{extra} }}
",
        as_.endpoint()
    )
}

/// Entra's on-behalf-of: a jwt-bearer grant with the subject token as `assertion`, the
/// route's scope and `requested_token_use=on_behalf_of`, nothing else; an RFC 6749 §5.1
/// answer (no `issued_token_type`) is forwarded as the narrowed token. Entra answers
/// `.default` with the permissions it resolved, which tokex takes.
#[tokio::test]
async fn jwt_bearer_sends_exactly_the_on_behalf_of_form() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|_, _| {
        Reply::json(
            200,
            serde_json::json!({ "access_token": "graph-token", "token_type": "Bearer", "expires_in": 3599,
                "scope": "User.Read profile openid email", "ext_expires_in": 3599 }),
        )
    });
    let tokex = Tokex::start(&entra(&as_, &up.url(), "")).await;
    let r = get(&tokex, "graph.internal", "/v1.0/me", Some(SUBJECT)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization"], "Bearer graph-token");
    let sent = as_.requests();
    assert_eq!(sent.len(), 1);
    let form: Vec<(&str, &str)> = sent[0].form.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(
        form,
        [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", SUBJECT),
            ("scope", "https://graph.microsoft.com/.default"),
            ("requested_token_use", "on_behalf_of"),
            ("client_id", "orders-app"),
            ("client_secret", "app-secret"),
        ]
    );
    // Cached like any exchanged token.
    let again = get(&tokex, "graph.internal", "/v1.0/me", Some(SUBJECT)).await;
    assert_eq!(again.json()["authorization"], "Bearer graph-token");
    assert_eq!(as_.count(), 1);
}

/// The AS's refusals of a jwt-bearer grant land on the same rows as RFC 8693 ones,
/// and nothing reaches the upstream.
#[tokio::test]
async fn jwt_bearer_refusals_map_to_the_error_table() {
    let rows = [
        ("invalid_grant", 401, "invalid_token"),
        ("invalid_request", 401, "invalid_token"),
        ("invalid_scope", 403, "insufficient_scope"),
        ("access_denied", 403, "exchange_denied"),
        ("unsupported_grant_type", 502, "exchange_misconfigured"),
        ("unauthorized_client", 502, "exchange_misconfigured"),
    ];
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let tokex = Tokex::start(&entra(&as_, &up.url(), "")).await;
    for (i, (oauth_error, status, code)) in rows.into_iter().enumerate() {
        as_.on(move |_, _| {
            Reply::json(
                400,
                serde_json::json!({ "error": oauth_error, "error_description": "AADSTS50013" }),
            )
        });
        // A distinct subject per row, so no refusal is answered from another's call.
        let subject = format!("{SUBJECT}{i}");
        let r = get(&tokex, "graph.internal", "/", Some(&subject)).await;
        assert_eq!(r.status, status, "{oauth_error}: {}", r.body);
        assert_eq!(r.tokex_error(), Some(code), "{oauth_error}");
        assert_eq!(r.json()["authority_error"], oauth_error);
        assert!(!r.body.contains(&subject), "{}", r.body);
    }
    assert_eq!(as_.count(), rows.len());
    assert!(up.seen().is_empty(), "nothing forwarded");
}

/// Extra parameters shape the issued token, so they are part of the cache key: two
/// routes that differ only in one get one AS call each for the same subject.
#[tokio::test]
async fn extra_params_are_part_of_the_cache_key() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = format!(
        "{}  - name: graph-b
    match: {{ host: graph-b.internal }}
    upstream: {}
    exchange:
      authority: entra
      grant: jwt-bearer
      scope: https://graph.microsoft.com/.default
      extra_params: {{ requested_token_use: on_behalf_of_b }}
",
        entra(&as_, &up.url(), ""),
        up.url()
    );
    let tokex = Tokex::start(&yaml).await;
    for host in ["graph.internal", "graph-b.internal", "graph.internal"] {
        let r = get(&tokex, host, "/", Some(SUBJECT)).await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
    let sent = as_.requests();
    assert_eq!(sent.len(), 2, "one call per distinct parameter set");
    assert_eq!(sent[0].param("requested_token_use"), Some("on_behalf_of"));
    assert_eq!(sent[1].param("requested_token_use"), Some("on_behalf_of_b"));
}

/// extra_params also ride on an RFC 8693 exchange, after tokex's own parameters.
#[tokio::test]
async fn extra_params_ride_on_token_exchange() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = config(&as_, &up.url()).replace(
        "exchange: { authority: main, audience: echo-api, scope: read write }",
        "exchange: { authority: main, audience: echo-api, scope: read write, extra_params: { tenant: \"t 1\" } }",
    );
    let tokex = Tokex::start(&yaml).await;
    let r = get(&tokex, "echo.internal", "/", Some(SUBJECT)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = &as_.requests()[0];
    assert_eq!(
        sent.param("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(
        sent.form.last().map(|(k, v)| (&**k, &**v)),
        Some(("tenant", "t 1"))
    );
}

/// What the config refuses about grants and extra parameters, each at FILE:LINE:COL
/// with its key.
#[test]
fn grant_and_extra_params_refusals_name_their_place() {
    let authority = "authorities:
  a:
    token_endpoint: https://as.example/token
    client_id: c
    auth: { method: none }
  delegating:
    token_endpoint: https://as.example/token
    client_id: c
    auth: { method: none }
    actor_token: { file: /nonexistent/actor.jwt }
routes:
  - name: r
    upstream: https://r.example
";
    // Each case: the route's exchange line, where in it the error points, the message.
    let cases = [
        (
            "    exchange: { authority: a, audience: x, extra_params: { grant_type: password } }\n",
            "password",
            "routes[0].exchange.extra_params.grant_type: tokex sets `grant_type` itself",
        ),
        (
            "    exchange: { authority: a, audience: x, extra_params: { client_secret: s } }\n",
            "s }",
            "routes[0].exchange.extra_params.client_secret: tokex sets",
        ),
        (
            "    exchange: { authority: a, audience: x, extra_params: { Scope: admin } }\n",
            "admin",
            "routes[0].exchange.extra_params.Scope: tokex sets `Scope` itself",
        ),
        (
            "    exchange: { authority: a, audience: x, extra_params: { \"a b\": v } }\n",
            "v }",
            "routes[0].exchange.extra_params.a b: `a b` is not a form parameter name",
        ),
        (
            "    exchange: { authority: a, audience: x, extra_params: { k: \"v\\u0001\" } }\n",
            "\"v",
            "routes[0].exchange.extra_params.k: the value must be non-empty",
        ),
        (
            "    exchange: { authority: a, audience: x, extra_params: { k: \"\" } }\n",
            "\"\"",
            "routes[0].exchange.extra_params.k: the value must be non-empty",
        ),
        (
            "    exchange: { authority: a, grant: jwt-bearer, audience: x }\n",
            "x }",
            "routes[0].exchange.audience: a token-exchange parameter, not sent with grant jwt-bearer",
        ),
        (
            "    exchange: { authority: a, grant: jwt-bearer, scope: s, subject_token_type: urn:x }\n",
            "urn:x",
            "routes[0].exchange.subject_token_type: a token-exchange parameter",
        ),
        (
            "    exchange: { authority: a, grant: jwt-bearer, scope: s, requested_token_type: urn:x }\n",
            "urn:x",
            "routes[0].exchange.requested_token_type: a token-exchange parameter",
        ),
        (
            "    exchange: { authority: delegating, grant: jwt-bearer, scope: s }\n",
            "jwt-bearer",
            "routes[0].exchange.grant: jwt-bearer has no actor token, but authority `delegating` sets actor_token",
        ),
        (
            "    exchange: { authority: a, grant: jwt-bearer }\n",
            "a,",
            "routes[0].exchange: give scope and/or resource",
        ),
        (
            "    exchange: { authority: a, grant: password, scope: s }\n",
            "password",
            "routes[0].exchange.grant: unknown variant `password`",
        ),
    ];
    assert_refused_at(authority, 14, &cases);
}
