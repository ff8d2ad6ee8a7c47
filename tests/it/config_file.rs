//! The config file through the binary: hostile input on `tokex check` and on a live reload.

use std::process::Command;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tokex");

/// A config whose `listen` is one scalar of `len` bytes.
fn huge_scalar(len: usize) -> String {
    format!("listen: {}\nroutes: []\n", "A".repeat(len))
}

/// `tokex check` refuses a file past the size limit unread, and an error about a huge
/// value under the limit echoes a few dozen characters of it.
#[test]
fn check_bounds_what_a_hostile_file_costs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    for (len, expected) in [
        (
            50 << 20,
            "cannot read config: the file is larger than 1 MiB",
        ),
        (900 << 10, "listen: invalid socket address `AAAA"),
    ] {
        std::fs::write(&path, huge_scalar(len)).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", &stderr[..200]);
        assert!(
            stderr.len() < 300,
            "{} bytes: {}",
            stderr.len(),
            &stderr[..300]
        );
        assert!(
            stderr.starts_with(&format!("{}:", path.display())) && stderr.contains(expected),
            "{stderr}"
        );
    }
}

/// A reload to an oversized file, or to one with a huge bad value, keeps the running
/// config, and the error it logs is one short line.
#[tokio::test]
async fn reload_keeps_the_config_and_logs_a_bounded_error() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokex.yaml");
    let good = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nroutes:\n  - name: up\n    upstream: {}\n    exchange: none\n",
        up.url()
    );
    std::fs::write(&path, &good).unwrap();
    let mut tokex = spawn_tokex(
        &["run".as_ref(), "-c".as_ref(), path.as_os_str()],
        &[],
        "listening",
    )
    .await;
    let url = format!("http://{}/x", tokex.listen());
    for (n, text) in [huge_scalar(50 << 20), huge_scalar(900 << 10)]
        .iter()
        .enumerate()
    {
        // Written beside and renamed over, as Kubernetes swaps a ConfigMap.
        let next = dir.path().join("next.yaml");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &path).unwrap();
        let failed = |log: &str| log.matches("config reload failed").count();
        eventually("the reload was attempted", async || {
            failed(&tokex.log()) > n
        })
        .await;
        let log = tokex.log();
        assert_eq!(failed(&log), n + 1, "reload {n} was attempted and failed");
        let longest = log.lines().map(str::len).max().unwrap_or_default();
        assert!(longest < 600, "a log line of {longest} bytes");
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "the running config still routes");
    }
    assert!(tokex.log().contains("larger than 1 MiB"), "{}", tokex.log());
    assert!(tokex.terminate().await.success());
}

/// Runs `tokex check [--offline]` on `text` in an empty environment but for `env`; the
/// exit code and stderr.
fn check(text: &str, offline: bool, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokex.yaml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("check");
    if offline {
        cmd.arg("--offline");
    }
    let out = cmd
        .arg("--config")
        .arg(&path)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (
        out.status.code(),
        stderr,
        String::from_utf8_lossy(&out.stdout).into(),
    )
}

/// Every credential, trust and reference kind, none of them resolvable here.
const UNRESOLVED: &str = "tls: { ca_file: /nonexistent/roots.pem }
authorities:
  secret:
    token_endpoint: ${STS_URL}
    client_id: ${CLIENT_ID}
    auth: { method: client_secret_basic, client_secret: \"${CLIENT_SECRET}\" }
    timeout: ${EXCHANGE_TIMEOUT}
    attempt_timeout: 500ms
  files:
    token_endpoint: https://sts.example/token
    client_id: c
    auth: { method: private_key_jwt, private_key_file: /nonexistent/key.pem, alg: ES256 }
    actor_token: { file: /nonexistent/actor.jwt }
    ca_file: missing-ca.pem
  mtls:
    token_endpoint: https://sts.example/token
    client_id: c
    auth: { method: tls_client_auth, cert_file: tls.crt, key_file: tls.key }
  secret-file:
    token_endpoint: https://sts.example/token
    client_id: c
    auth: { method: client_secret_post, client_secret_file: \"${SECRET_DIR}/secret\" }
routes:
  - name: a
    upstream: ${UPSTREAM}
    ca_file: /nonexistent/up-ca.pem
    exchange: { authority: secret, audience: \"${AUDIENCE}\", resource: \"${RESOURCE}\" }
  - name: b
    upstream: https://b.example
    exchange: { authority: files, audience: b }
";

/// Offline, the config passes with no environment and no credential or CA file, and
/// `SSL_CERT_FILE` is not read; online the same file fails.
#[test]
fn offline_check_reads_no_secrets_and_no_environment() {
    let (code, stderr, stdout) = check(UNRESOLVED, true, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("offline"), "{stdout}");
    let (code, _, _) = check(
        UNRESOLVED,
        true,
        &[("SSL_CERT_FILE", "/nonexistent/bundle.pem")],
    );
    assert_eq!(code, Some(0));
    let (code, stderr, _) = check(UNRESOLVED, false, &[]);
    assert_eq!(code, Some(1), "{stderr}");
}

/// Offline still fails on what the file itself gets wrong, with FILE:LINE:COL.
#[test]
fn offline_check_still_fails_on_structure() {
    let route = "routes:\n  - name: a\n    upstream: https://a.example\n";
    let authority =
        "authorities:\n  x:\n    token_endpoint: https://x.example/t\n    client_id: c\n";
    for (text, expected) in [
        (
            format!("{route}    exchange: none\n    colour: red\n"),
            "FILE:5:5: routes[0].colour: unknown field",
        ),
        (
            format!("{route}    exchange: {{ authority: nope, audience: x }}\n"),
            "FILE:4:28: routes[0].exchange.authority: unknown authority `nope`",
        ),
        (
            format!("{route}    exchange: none\n    timeout: soon\n"),
            "FILE:5:14: routes[0].timeout: invalid duration",
        ),
        (
            format!("{authority}    auth: {{ method: none, client_secret_file: s }}\nroutes: []\n"),
            "FILE:5:21: authorities.x.auth.client_secret_file does not apply",
        ),
        (
            format!("{authority}    auth: {{ method: private_key_jwt }}\nroutes: []\n"),
            "FILE:5:21: authorities.x.auth: private_key_jwt needs private_key_file",
        ),
        (
            format!(
                "{authority}    auth: {{ method: none }}\n    timeout: 1s\n    attempt_timeout: 2s\nroutes: []\n"
            ),
            "FILE:7:22: authorities.x.attempt_timeout",
        ),
        (
            "routes: []\nroutes: []\n".to_string(),
            "FILE:2:1: key `routes` appears twice",
        ),
    ] {
        let (code, stderr, _) = check(&text, true, &[]);
        assert_eq!(code, Some(1), "{text}: {stderr}");
        assert!(stderr.starts_with(expected), "{text}: {stderr}");
    }
}
