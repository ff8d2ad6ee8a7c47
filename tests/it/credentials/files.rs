//! Secret, assertion and actor-token files: sent as they are, rotated while requests
//! flow, and named when they do not load.

use super::*;

/// client_secret_file rotates; an empty rewrite keeps the last good secret in use and
/// is counted; the next good write is picked up.
#[tokio::test(start_paused = true)]
async fn client_secret_file_rotates_and_keeps_last_good() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "secret-one\n").unwrap();
    let auth = format!(
        "{{ method: client_secret_basic, client_secret_file: {} }}",
        secret.display()
    );
    let tokex = Tokex::start_in(
        dir,
        &format!("{}{}", authority(&as_, &auth), route(&up.url())),
    )
    .await;
    let seen = |s: &'static str| {
        let as_ = as_.clone();
        move || {
            as_.requests()
                .iter()
                .any(|r| basic_secret(r).as_deref() == Some(s))
        }
    };
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t0")).await.status,
        200
    );
    assert!(
        seen("secret-one")(),
        "trailing newline is not part of the secret"
    );
    rotate_while_flowing(
        &tokex,
        "echo.internal",
        &secret,
        "secret-two",
        seen("secret-two"),
    )
    .await;

    rotate(&secret, "");
    advance(FILE_POLL).await;
    let before = as_.count();
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("after-bad-write"))
            .await
            .status,
        200
    );
    assert_eq!(
        basic_secret(&as_.requests()[before]).as_deref(),
        Some("secret-two"),
        "last good secret kept"
    );
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_credential_reloads_total{result=\"error\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tokex_credential_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
    rotate_while_flowing(
        &tokex,
        "echo.internal",
        &secret,
        "secret-three",
        seen("secret-three"),
    )
    .await;
}

/// client_assertion sends the file's assertion with its type and the client id, and
/// picks up a rotated assertion (a Kubernetes projected token) at the next file check.
#[tokio::test(start_paused = true)]
async fn client_assertion_file_is_sent_and_rotates() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let first_exp = now() + 3600;
    let first = jwt(
        serde_json::json!({"sub": "system:serviceaccount:shop:orders", "exp": first_exp, "n": 1}),
    );
    let second = jwt(
        serde_json::json!({"sub": "system:serviceaccount:shop:orders", "exp": now() + 3600, "n": 2}),
    );
    std::fs::write(&file, &first).unwrap();
    let auth = format!(
        "{{ method: client_assertion, assertion_file: {} }}",
        file.display()
    );
    let tokex = Tokex::start_in(
        dir,
        &format!("{}{}", authority(&as_, &auth), route(&up.url())),
    )
    .await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t0")).await.status,
        200
    );
    let r = &as_.requests()[0];
    assert_eq!(r.param("client_assertion"), Some(first.as_str()));
    assert_eq!(
        r.param("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(r.param("client_id"), Some("tokex-test"));
    assert!(r.headers.get("authorization").is_none());
    let m = tokex.metrics().await;
    let series = format!(
        "tokex_credential_expiry_timestamp_seconds{{authority=\"main\",credential=\"client_assertion\"}} {first_exp}\n"
    );
    assert!(m.contains(&series), "{series} in:\n{m}");
    let want = second.clone();
    let as2 = as_.clone();
    rotate_while_flowing(&tokex, "echo.internal", &file, &second, move || {
        as2.requests()
            .iter()
            .any(|r| r.param("client_assertion") == Some(want.as_str()))
    })
    .await;
}

/// The actor token rotates, and the cache key includes the actor: the same subject
/// token exchanges again under the new actor instead of reusing the old entry.
#[tokio::test(start_paused = true)]
async fn actor_token_rotates_and_never_reuses_the_old_actors_tokens() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("actor");
    std::fs::write(&file, "actor-one").unwrap();
    let yaml = format!(
        "{}    actor_token: {{ file: {}, type: urn:ietf:params:oauth:token-type:jwt }}\n{}",
        authority(&as_, "{ method: client_secret_post, client_secret: s }"),
        file.display(),
        route(&up.url())
    );
    let tokex = Tokex::start_in(dir, &yaml).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("same-subject"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("same-subject"))
            .await
            .status,
        200
    );
    assert_eq!(as_.count(), 1, "cached under actor-one");
    assert_eq!(as_.requests()[0].param("actor_token"), Some("actor-one"));
    assert_eq!(
        as_.requests()[0].param("actor_token_type"),
        Some("urn:ietf:params:oauth:token-type:jwt")
    );
    let as2 = as_.clone();
    rotate_while_flowing(&tokex, "echo.internal", &file, "actor-two", move || {
        as2.requests()
            .iter()
            .any(|r| r.param("actor_token") == Some("actor-two"))
    })
    .await;
    let before = as_.count();
    let r = get(&tokex, "echo.internal", "/", Some("same-subject")).await;
    assert_eq!(r.status, 200);
    assert_eq!(as_.count(), before + 1, "a new actor means a new exchange");
    assert_eq!(
        as_.requests()[before].param("actor_token"),
        Some("actor-two")
    );
}

/// Bad credential files are config errors naming the file and key: missing files, a key
/// that does not match the algorithm, an expired assertion, a certificate without its key.
#[test]
fn bad_credential_files_are_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("ec.pem"), ec_key_pem()).unwrap();
    std::fs::write(
        p("expired.jwt"),
        jwt(serde_json::json!({"exp": now() - 10})),
    )
    .unwrap();
    let client = pki();
    let (cert, _) = leaf(&client, "x");
    let (_, other_key) = leaf(&client, "y");
    std::fs::write(p("tls.crt"), cert).unwrap();
    std::fs::write(p("other.key"), other_key).unwrap();
    let cases = [
        (
            "{ method: private_key_jwt, private_key_file: missing.pem }",
            "auth.private_key_file: cannot read",
            "missing.pem",
        ),
        (
            "{ method: private_key_jwt, private_key_file: ec.pem, alg: RS256 }",
            "auth.private_key_file:",
            "is not a RS256 private key",
        ),
        (
            "{ method: private_key_jwt, private_key_file: ec.pem, alg: HS256 }",
            "auth.alg: unsupported alg",
            "HS256",
        ),
        (
            "{ method: client_assertion, assertion_file: expired.jwt }",
            "auth.assertion_file:",
            "expired at",
        ),
        (
            "{ method: tls_client_auth, cert_file: tls.crt, key_file: other.key }",
            "auth.cert_file:",
            "do not form a client identity",
        ),
        (
            "{ method: tls_client_auth, cert_file: tls.crt }",
            "needs key_file",
            "",
        ),
        (
            "{ method: client_secret_post, client_secret_file: nope }",
            "auth.client_secret_file: cannot read",
            "nope",
        ),
    ];
    for (auth, expected, detail) in cases {
        let text = format!(
            "authorities:\n  a:\n    token_endpoint: https://as.example/token\n    client_id: c\n    auth: {auth}\nroutes: []\n"
        );
        let path = p("tokex.yaml");
        std::fs::write(&path, &text).unwrap();
        let err = tokex::config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:5:", path.display())),
            "{auth}: {err}"
        );
        assert!(
            err.contains(expected) && err.contains(detail),
            "{auth}: {err}"
        );
    }
}
