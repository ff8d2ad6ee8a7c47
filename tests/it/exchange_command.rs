//! `tokex exchange` when things go wrong: the AS's own words on a refusal (without the
//! tokens it may echo), the routes there are for a mistyped `--route`, and a hint for
//! a subject pasted with its `Bearer ` scheme.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tokex");

/// `tokex exchange --route ROUTE -c CONFIG` with `stdin`.
pub async fn exchange(config: &str, route: &str, stdin: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, config).unwrap();
    let (route, stdin) = (route.to_string(), stdin.to_string());
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["exchange", "--route", &route, "-c"])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        let out = child.wait_with_output().unwrap();
        drop(dir);
        out
    })
    .await
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refusal shows the AS's `error_description`, with the subject token it echoed cut
/// out, and exits 2.
#[tokio::test]
async fn refusal_shows_the_authoritys_description_without_tokens() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, _| {
        let subject = req.param("subject_token").unwrap_or_default().to_string();
        Reply::json(
            400,
            serde_json::json!({
                "error": "invalid_grant",
                "error_description": format!("subject token {subject} is not active"),
            }),
        )
    });
    let out = exchange(&config(&as_, &up.url()), "echo", "subject-TOKENVALUE-1\n").await;
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.starts_with("invalid_token: "), "{text}");
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(
        text.contains("subject token [redacted] is not active"),
        "{text}"
    );
    assert!(!text.contains("TOKENVALUE"), "{text}");
}

/// A description outside RFC 6749's characters is left out rather than printed.
#[tokio::test]
async fn unprintable_descriptions_are_dropped() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|_, _| {
        Reply::json(
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": "bad\u{1b}[31m \"token\""}),
        )
    });
    let out = exchange(&config(&as_, &up.url()), "echo", "subject\n").await;
    let text = stderr(&out);
    assert!(text.contains("`invalid_grant` (HTTP 400)\n"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
}

/// A route that does not exist, or does no exchange, lists the routes that do.
#[tokio::test]
async fn unknown_route_lists_the_routes_that_exchange() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = format!(
        "{}  - name: open\n    match: {{ host: open.internal }}\n    upstream: {}\n    exchange: none\n",
        config(&as_, &up.url()),
        up.url()
    );
    for route in ["nope", "open"] {
        let out = exchange(&yaml, route, "subject\n").await;
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(
            text.contains("routes that exchange: echo\n"),
            "{route}: {text}"
        );
    }
    assert_eq!(as_.count(), 0);
}

/// A subject pasted with its scheme gets a hint and no AS call.
#[tokio::test]
async fn bearer_prefix_gets_a_hint() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    for input in ["Bearer abc.def\n", "bearer abc\n"] {
        let out = exchange(&config(&as_, &up.url()), "echo", input).await;
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("give the token alone"), "{text}");
    }
    assert_eq!(as_.count(), 0);
}
