//! The seed documents' features: confidential-client access, token-type
//! agnosticism and subject-token sources.

use std::time::Duration;

use crate::support::*;

/// on_missing_token: client_credentials sends a token-less request with tokex's own
/// token from the route's authority (audience and scope from the route), cached; a
/// request with a user token is still exchanged as usual.
#[tokio::test]
async fn client_credentials_fallback_against_the_sts() {
    let sts = StsServer::start(
        "realms:
  client:
    clients:
      web: { client_secret: w, grants: [client_credentials], audiences: [backend], scopes: [openid], subject: alice }
  backend:
    trust: [ { realm: client, audiences: [backend] } ]
    scope_mapping: { openid: [orders.read] }
    clients:
      tokex: { client_secret: s, grants: [client_credentials, token_exchange], audiences: [orders-api], scopes: [orders.read] }
",
    )
    .await;
    let up = Upstream::start().await;
    let yaml = format!(
        "authorities:
  backend:
    token_endpoint: {}
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: s }}
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {}
    on_missing_token: client_credentials
    exchange: {{ authority: backend, audience: orders-api, scope: orders.read }}
",
        sts.token_endpoint("backend"),
        up.url()
    );
    let tokex = Tokex::start(&yaml).await;
    let r = get(&tokex, "orders.internal", "/", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let own = r.json()["authorization"].as_str().unwrap().to_string();
    let claims = claims_of(own.trim_start_matches("Bearer "));
    assert_eq!(
        (claims["sub"].as_str(), claims["aud"].as_str()),
        (Some("tokex"), Some("orders-api"))
    );
    assert_eq!(claims["scope"], "orders.read");
    assert!(claims.get("act").is_none());
    assert_eq!(
        get(&tokex, "orders.internal", "/", None).await.json()["authorization"],
        own.as_str(),
        "cached"
    );
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_exchanges_total{authority=\"backend\",outcome=\"ok\"} 1"),
        "{m}"
    );

    let user = sts
        .post(
            "client",
            Some(("web", "w")),
            &[
                ("grant_type", "client_credentials"),
                ("audience", "backend"),
            ],
        )
        .await;
    let user = user.json()["access_token"].as_str().unwrap().to_string();
    let r = get(&tokex, "orders.internal", "/", Some(&user)).await;
    let claims = claims_of(
        r.json()["authorization"]
            .as_str()
            .unwrap()
            .trim_start_matches("Bearer "),
    );
    assert_eq!(
        claims["sub"], "alice",
        "a user token is exchanged, not replaced"
    );
}

/// The client_credentials request carries the route's parameters and no subject, and
/// tokex's own token is refreshed ahead like an exchanged one.
#[tokio::test]
async fn client_credentials_token_is_refreshed_ahead() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, n| issue_with(req, &format!("own-{n}"), Some(33)));
    let yaml = format!(
        "{}cache: {{ early_expiry: 30s, refresh_ahead: 2s }}\n",
        config(&as_, &up.url())
    )
    .replace(
        "    timeout: 1s\n    exchange",
        "    timeout: 1s\n    on_missing_token: client_credentials\n    exchange",
    );
    let tokex = Tokex::start(&yaml).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", None).await.json()["authorization"],
        "Bearer own-1"
    );
    let r = &as_.requests()[0];
    assert_eq!(r.param("grant_type"), Some("client_credentials"));
    assert_eq!(
        (r.param("audience"), r.param("scope")),
        (Some("echo-api"), Some("read write"))
    );
    assert_eq!(
        (r.param("subject_token"), r.param("requested_token_type")),
        (None, None)
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", None).await.json()["authorization"],
        "Bearer own-1",
        "served while refreshing"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(as_.count(), 2, "refreshed in the background");
    assert_eq!(
        get(&tokex, "echo.internal", "/", None).await.json()["authorization"],
        "Bearer own-2"
    );
}

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

/// Audit events: one per exchange and per refusal, written to audit.file as JSON lines,
/// checked field by field (a JWT subject by sub/iss, an opaque one by fingerprint, the
/// issued token's act chain as actor), cache hits not audited by default, and no token
/// or secret anywhere in the file.
#[tokio::test]
async fn audit_events_go_to_their_own_file() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let issued = jwt(
        serde_json::json!({"sub": "alice", "act": {"sub": "svc-b", "act": {"sub": "svc-a"}}, "exp": now() + 600}),
    );
    let issued2 = issued.clone();
    as_.on(move |req, n| match req.param("subject_token") {
        Some("opaque-REFUSED-token") => {
            Reply::json(400, serde_json::json!({"error": "invalid_grant"}))
        }
        _ => issue_with(req, if n == 1 { &issued2 } else { "narrowed-x" }, Some(300)),
    });
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\naudit: {{ enabled: true, file: {} }}\n{}",
        audit.display(),
        config(&as_, &up.url()).replace("test-client-secret", "client-SECRET-audit")
    );
    std::fs::write(dir.path().join("t.yaml"), yaml).unwrap();
    let config = dir.path().join("t.yaml");
    let mut tokex = spawn_tokex(
        &[
            std::ffi::OsStr::new("run"),
            "-c".as_ref(),
            config.as_os_str(),
        ],
        &[("RUST_LOG", "info")],
        "listening",
    )
    .await;
    let addr = tokex.listen();
    let subject =
        jwt(serde_json::json!({"sub": "alice", "iss": "https://idp.example", "exp": now() + 600}));
    let c = client();
    let send = |token: Option<String>| {
        let c = c.clone();
        let url = format!("http://{addr}/x");
        async move {
            let mut r = c.get(url).header("host", "echo.internal");
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(send(Some(subject.clone())).await, 200);
    assert_eq!(
        send(Some(subject.clone())).await,
        200,
        "a cache hit: not audited"
    );
    assert_eq!(send(Some("opaque-REFUSED-token".into())).await, 401);
    assert_eq!(send(None).await, 401);
    tokex.terminate().await;
    assert!(
        !tokex.log().contains("tokex::audit"),
        "audit events go to their file alone"
    );

    let text = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{text}");
    let ok = &events[0];
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(
        (ok["route"].as_str(), ok["authority"].as_str()),
        (Some("echo"), Some("main"))
    );
    assert_eq!(
        (ok["subject_sub"].as_str(), ok["subject_iss"].as_str()),
        (Some("alice"), Some("https://idp.example"))
    );
    assert_eq!(
        ok["actor"],
        serde_json::json!({"sub": "svc-b", "act": {"sub": "svc-a"}})
    );
    assert_eq!(
        (ok["audience"].as_str(), ok["requested_scope"].as_str()),
        (Some("echo-api"), Some("read write"))
    );
    assert_eq!(
        (ok["granted_scope"].as_str(), ok["cache"].as_str()),
        (Some("read write"), Some("miss"))
    );
    assert_eq!(ok["grant"], "token_exchange");
    assert!(ok["as_latency_ms"].is_u64() && ok["time"].as_str().unwrap().ends_with('Z'));
    let refused = &events[1];
    assert_eq!(refused["outcome"], "invalid_token");
    assert!(refused["subject_sub"].is_null());
    assert_eq!(
        refused["subject_fingerprint"].as_str().map(str::len),
        Some(16)
    );
    assert_eq!(events[2]["outcome"], "missing_token");
    for secret in [
        subject.as_str(),
        issued.as_str(),
        "REFUSED",
        "client-SECRET-audit",
    ] {
        assert!(!text.contains(secret), "{secret} in the audit file");
    }
}

/// W3C trace context reaches the upstream unchanged and the AS with the exchange it
/// triggered; a malformed traceparent is not passed to the AS.
#[tokio::test]
async fn trace_context_reaches_upstream_and_authority() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let tokex = Tokex::start(&config(&as_, &up.url())).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let send = |token: &'static str, traceparent: &'static str| {
        client()
            .get(tokex.url("/"))
            .header("host", "echo.internal")
            .bearer_auth(token)
            .header("traceparent", traceparent)
            .header("tracestate", "vendor=1")
            .send()
    };
    assert_eq!(send("t1", tp).await.unwrap().status(), 200);
    let at_as = &as_.requests()[0].headers;
    assert_eq!(
        (
            at_as["traceparent"].to_str().unwrap(),
            at_as["tracestate"].to_str().unwrap()
        ),
        (tp, "vendor=1")
    );
    let at_up = up.seen().pop().unwrap().headers;
    assert_eq!(
        (
            at_up["traceparent"].to_str().unwrap(),
            at_up["tracestate"].to_str().unwrap()
        ),
        (tp, "vendor=1")
    );
    assert_eq!(send("t2", "junk").await.unwrap().status(), 200);
    let at_as = &as_.requests()[1].headers;
    assert!(at_as.get("traceparent").is_none() && at_as.get("tracestate").is_none());
}

/// On a route with the `client_credentials` fallback, a malformed Authorization is the
/// app's token refused, not tokex's own: its audit event says `token_exchange`, and only
/// the fallback's own lookup says `client_credentials`.
#[tokio::test]
async fn malformed_subject_is_not_audited_as_own_token() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\naudit: {{ enabled: true, file: {} }}\n{}",
        audit.display(),
        config(&as_, &up.url()).replace(
            "    timeout: 1s\n    exchange",
            "    timeout: 1s\n    on_missing_token: client_credentials\n    exchange",
        )
    );
    let config = dir.path().join("t.yaml");
    std::fs::write(&config, yaml).unwrap();
    let args = [
        std::ffi::OsStr::new("run"),
        "-c".as_ref(),
        config.as_os_str(),
    ];
    let mut tokex = spawn_tokex(&args, &[("RUST_LOG", "info")], "listening").await;
    let url = format!("http://{}/x", tokex.listen());
    let send = |auth: Option<&'static str>| {
        let mut r = client().get(&url).header("host", "echo.internal");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send(Some("Bearer two tokens")).await, 400);
    assert_eq!(send(None).await, 200);
    tokex.terminate().await;
    let text = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0]["outcome"], "invalid_request");
    assert_eq!(events[0]["grant"], "token_exchange");
    assert_eq!(events[1]["outcome"], "ok");
    assert_eq!(events[1]["grant"], "client_credentials");
}
