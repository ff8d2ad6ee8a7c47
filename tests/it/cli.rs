//! The tokex binary: `check` output and errors, `exchange`, exit codes, and a
//! trace-level log run in which no token, secret or key appears.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tokex");

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `tokex check` prints the effective config with an inline secret, here from the
/// environment, redacted.
#[test]
fn check_prints_effective_config_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "t.yaml",
        "authorities:\n  a:\n    token_endpoint: https://sts.example/token\n    client_id: c\n    auth: { method: client_secret_basic, client_secret: \"${TEST_SECRET}\" }\nroutes: []\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("TEST_SECRET", "very-secret-value-42")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("token_endpoint: https://sts.example/token"));
    assert!(stdout.contains("client_secret: \"[redacted]\""), "{stdout}");
    assert!(!stdout.contains("very-secret-value-42"));
}

/// Every `tokex check` command in the README works as written from a fresh clone: no
/// environment variables, only files the repository ships.
#[test]
fn readme_check_commands_work_as_written() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let commands: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tokex check "))
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .collect();
    assert!(!commands.is_empty(), "the README shows tokex check");
    for args in commands {
        let out = Command::new(BIN)
            .arg("check")
            .args(args.split_whitespace())
            .env_clear()
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tokex check {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Config errors exit 1 and print `FILE:LINE:COL: key: message` naming the key.
#[test]
fn check_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let route = "routes:\n  - name: a\n    upstream: http://127.0.0.1:9\n";
    let cases = [
        ("unknown key", format!("{route}    exchange: none\n    colour: red\n"), ":5:5: routes[0].colour: unknown field `colour`"),
        ("bad duration", format!("{route}    exchange: none\n    timeout: 5 seconds\n"), ":5:14: routes[0].timeout: invalid duration"),
        ("bad url", "routes:\n  - name: a\n    upstream: ftp://x\n    exchange: none\n".to_string(), ":3:15: routes[0].upstream: invalid URL"),
        ("unknown authority", format!("{route}    exchange: {{ authority: nope, audience: x }}\n"), ":4:28: routes[0].exchange.authority: unknown authority `nope`"),
        ("missing secret file", "authorities:\n  a:\n    token_endpoint: https://x/t\n    client_id: c\n    auth: { method: client_secret_basic, client_secret_file: /nonexistent/secret }\nroutes: []\n".to_string(), ":5:62: authorities.a.auth.client_secret_file: cannot read /nonexistent/secret"),
    ];
    for (what, text, expected) in cases {
        let path = write(&dir, "bad.yaml", &text);
        let out = Command::new(BIN)
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.starts_with(&format!("{}{expected}", path.display())),
            "{what}: {stderr}"
        );
    }
}

/// A port already in use is a runtime failure: exit code 2.
#[test]
fn port_in_use_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = write(
        &dir,
        "t.yaml",
        &format!("listen: 127.0.0.1:{port}\nadmin: 127.0.0.1:0\nroutes: []\n"),
    );
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tokex exchange` performs the route's exchange and prints claims, never the token.
#[tokio::test]
async fn exchange_command_prints_claims_not_token() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let issued = jwt(serde_json::json!({"sub": "alice", "aud": "echo-api", "exp": now() + 600}));
    let token = issued.clone();
    as_.on(move |req, _| issue_with(req, &token, Some(300)));
    let out =
        crate::exchange_command::exchange(&config(&as_, &up.url()), "echo", "the-subject-token\n")
            .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["claims"]["sub"], "alice");
    assert_eq!(report["expires_in"], 300);
    assert_eq!(report["cache_ttl_seconds"], 270);
    assert!(!stdout.contains(&issued) && !stdout.contains("the-subject-token"));
    assert_eq!(
        as_.requests()[0].param("subject_token"),
        Some("the-subject-token")
    );
}

/// At `RUST_LOG=trace`, through a success, a cache hit and a refusal, no subject
/// token, issued token, client secret or Basic credential appears in the logs; proxy
/// variables pointing at a dead address are ignored.
#[tokio::test]
async fn trace_logs_carry_no_secrets_and_proxy_env_is_ignored() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let issued = "issued-narrowed-token-SECRETVALUE";
    as_.on(move |req, _| {
        if req.param("subject_token") == Some("refused-subject-TOKENVALUE") {
            Reply::json(400, serde_json::json!({"error": "invalid_grant"}))
        } else {
            issue_with(req, issued, Some(300))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&as_, &up.url()).replace("test-client-secret", "client-SECRET-xyzzy");
    let path = write(
        &dir,
        "t.yaml",
        &format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{yaml}"),
    );
    let dead = "http://127.0.0.1:9";
    // One worker thread: the binary runs on the current-thread runtime (src/main.rs).
    let env = [
        ("RUST_LOG", "trace"),
        ("TOKIO_WORKER_THREADS", "1"),
        ("HTTP_PROXY", dead),
        ("HTTPS_PROXY", dead),
        ("ALL_PROXY", dead),
        ("http_proxy", dead),
    ];
    let mut tokex = spawn_tokex(
        &[std::ffi::OsStr::new("run"), "-c".as_ref(), path.as_os_str()],
        &env,
        "listening",
    )
    .await;
    let addr = tokex.listen();
    let c = client();
    for token in [
        "good-subject-TOKENVALUE",
        "good-subject-TOKENVALUE",
        "refused-subject-TOKENVALUE",
    ] {
        let r = c
            .get(format!("http://{addr}/x"))
            .header("host", "echo.internal")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let expected = if token.starts_with("good") { 200 } else { 401 };
        assert_eq!(r.status().as_u16(), expected);
    }
    assert_eq!(
        up.seen()[0].headers["authorization"],
        format!("Bearer {issued}")
    );
    assert!(tokex.terminate().await.success(), "SIGTERM exits 0");
    let log = tokex.log();
    assert!(
        log.lines().filter(|l| l.contains("TRACE")).count() >= 5,
        "trace logging was on:\n{log}"
    );
    assert!(log.contains("request refused"), "the refusal was logged");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("tokex-test:client-SECRET-xyzzy");
    for secret in [
        "TOKENVALUE",
        "SECRETVALUE",
        "client-SECRET-xyzzy",
        basic.as_str(),
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the logs:\n{}",
            log.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// `tokex demo` starts on loopback, prints the subject and exchanged claims side by side
/// (scopes narrowed, audience set, `act` present), serves the curl command it prints,
/// and exits 0 on SIGTERM.
#[tokio::test]
async fn demo_runs_serves_its_curl_command_and_exits_on_signal() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut output = String::new();
    let curl = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            output.push_str(&line);
            output.push('\n');
            if line.trim_start().starts_with("curl ") {
                return line;
            }
        }
        panic!("demo ended without a curl line:\n{output}");
    })
    .await
    .expect("demo printed its curl command");
    let row = |claim: &str| {
        output
            .lines()
            .find(|l| l.starts_with(&format!("{claim} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("aud").contains("backend") && row("aud").contains("orders-api"),
        "{output}"
    );
    assert!(row("scope").contains("openid read:calendar"), "{output}");
    assert!(
        row("scope").contains("email profile calendar.events.read write:documents"),
        "{output}"
    );
    assert!(
        !row("scope").contains("read:analytics"),
        "narrowed: {output}"
    );
    assert!(row("act").contains("orders-service"), "{output}");
    // The chained route's section: the backend's token for alice, by the jwt-bearer grant.
    let chained = output
        .split("Across authorities")
        .nth(1)
        .unwrap_or_else(|| panic!("no chained section: {output}"));
    let chained_row = |claim: &str| {
        chained
            .lines()
            .find(|l| l.starts_with(&format!("{claim} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(chained_row("iss").ends_with("/realms/backend"), "{output}");
    assert!(chained_row("sub").contains("alice"), "{output}");
    assert!(chained_row("aud").contains("orders-api"), "{output}");
    assert!(
        chained_row("scope").contains("email calendar.events.read"),
        "{output}"
    );
    assert!(chained_row("act").contains("orders-service"), "{output}");

    let token = curl
        .split("Bearer ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let url = curl.split_whitespace().last().unwrap();
    // The claims of the token the echo upstream received through the route on `host`.
    let received = async |host: &str| {
        let r = client()
            .get(url)
            .header("host", host)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let r = got(r).await;
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        r.json()["received_token_claims"].clone()
    };
    for host in ["orders.internal", "orders-chained.internal"] {
        let claims = received(host).await;
        assert_eq!(claims["aud"], "orders-api", "{host}");
        assert_eq!(claims["sub"], "alice", "{host}");
        // On the chained route the grant carried the actor over.
        assert_eq!(claims["act"]["sub"], "orders-service", "{host}");
    }

    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "demo exits 0 on SIGTERM: {status:?}");
}
