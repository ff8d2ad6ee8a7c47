//! What tokex tells operators about each exchange: audit events in their own file, W3C
//! trace context passed to the upstream and the AS, and OpenTelemetry spans.

use crate::support::*;

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
