//! Authorities configured by `issuer` alone: the token endpoint read from RFC 8414 or
//! OpenID metadata at start and on reload, the issuer check, the auth method check, and
//! what a failed fetch does at start and at reload.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use hyper::Request;
use hyper::body::Incoming;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tokex");

/// A metadata server: answers each path as set, 404 otherwise, and records what was asked.
struct Metadata {
    addr: std::net::SocketAddr,
    answers: Arc<Mutex<HashMap<String, (u16, String)>>>,
    asked: Arc<Mutex<Vec<String>>>,
    _task: Task,
}

impl Metadata {
    async fn start() -> Self {
        let answers: Arc<Mutex<HashMap<String, (u16, String)>>> = Arc::default();
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let (a, k) = (answers.clone(), asked.clone());
        let (addr, task) = serve(move |req: Request<Incoming>| {
            let path = req.uri().path().to_string();
            k.lock().unwrap().push(path.clone());
            let answer = a.lock().unwrap().get(&path).cloned();
            async move {
                match answer {
                    Some((status, body)) => full(status, body),
                    None => full(404, "not found"),
                }
            }
        })
        .await;
        Self {
            addr,
            answers,
            asked,
            _task: task,
        }
    }

    fn set(&self, path: &str, status: u16, body: serde_json::Value) {
        let body = body.to_string();
        self.answers
            .lock()
            .unwrap()
            .insert(path.into(), (status, body));
    }

    fn issuer(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

/// A token endpoint, an upstream and a metadata server.
async fn parts() -> (MockAs, Upstream, Metadata) {
    (
        MockAs::start().await,
        Upstream::start().await,
        Metadata::start().await,
    )
}

/// A config whose authority `backend` has only `issuer`, and route `echo` on it.
fn by_issuer(issuer: &str, upstream: &str, method: &str) -> String {
    format!(
        "authorities:
  backend:
    issuer: {issuer}
    client_id: tokex-test
    auth: {{ method: {method}, client_secret: s }}
    timeout: 1s
    retries: 0
routes:
  - name: echo
    match: {{ host: echo.internal }}
    upstream: {upstream}
    exchange: {{ authority: backend, audience: echo-api }}
"
    )
}

fn metadata(issuer: &str, as_: &MockAs) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "token_endpoint": as_.endpoint(),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
    })
}

/// An issuer with a path has its RFC 8414 metadata at the well-known segment inserted
/// before the path; the token endpoint found there is where exchanges go.
#[tokio::test]
async fn issuer_alone_finds_the_token_endpoint_by_path_insertion() {
    let (as_, up, md) = parts().await;
    let issuer = md.issuer("/tenant/v2");
    md.set(
        "/.well-known/oauth-authorization-server/tenant/v2",
        200,
        metadata(&issuer, &as_),
    );
    let tokex = Tokex::start(&by_issuer(&issuer, &up.url(), "client_secret_basic")).await;
    let r = get(&tokex, "echo.internal", "/", Some("subject")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(as_.count(), 1);
    assert_eq!(
        md.asked(),
        ["/.well-known/oauth-authorization-server/tenant/v2"]
    );
}

/// Without RFC 8414 metadata, OpenID's `/.well-known/openid-configuration` appended to
/// the issuer is read: whether the first URL answers 404, a firewall's 403, a page that
/// is not metadata, or another issuer's document.
#[tokio::test]
async fn openid_configuration_is_the_fallback() {
    let (as_, up, md) = parts().await;
    let issuer = md.issuer("/realms/x");
    md.set(
        "/realms/x/.well-known/openid-configuration",
        200,
        metadata(&issuer, &as_),
    );
    let rfc8414 = "/.well-known/oauth-authorization-server/realms/x";
    let firsts = [
        None,
        Some((403, serde_json::json!({"error": "forbidden"}))),
        Some((200, serde_json::json!("<html>sign in</html>"))),
        Some((200, metadata("https://elsewhere.example", &as_))),
    ];
    for (i, first) in firsts.into_iter().enumerate() {
        if let Some((status, body)) = first {
            md.set(rfc8414, status, body);
        }
        let tokex = Tokex::start(&by_issuer(&issuer, &up.url(), "client_secret_basic")).await;
        let r = get(&tokex, "echo.internal", "/", Some("subject")).await;
        assert_eq!(r.status, 200, "case {i}: {}", r.body);
        assert_eq!(as_.count(), i + 1, "case {i}");
        assert_eq!(
            md.asked()[2 * i..],
            [rfc8414, "/realms/x/.well-known/openid-configuration"],
            "case {i}"
        );
    }
}

/// RFC 8705 §5: with `tls_client_auth`, the token endpoint is the metadata's mTLS alias,
/// where the authority takes client certificates; other methods keep the plain one.
#[tokio::test]
async fn a_client_certificate_goes_to_the_mtls_alias() {
    let (as_, up, md) = parts().await;
    let issuer = md.issuer("");
    let mut doc = metadata(&issuer, &as_);
    doc["token_endpoint"] = "http://127.0.0.1:9/not-for-certificates".into();
    doc["mtls_endpoint_aliases"] = serde_json::json!({"token_endpoint": as_.endpoint()});
    doc["token_endpoint_auth_methods_supported"] = serde_json::json!(["tls_client_auth"]);
    md.set("/.well-known/oauth-authorization-server", 200, doc);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = localhost_cert();
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let yaml = by_issuer(&issuer, &up.url(), "tls_client_auth")
        .replace("client_secret: s", "cert_file: tls.crt, key_file: tls.key");
    let tokex = Tokex::start_in(dir, &yaml).await;
    let r = get(&tokex, "echo.internal", "/", Some("subject")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(as_.count(), 1, "the exchange went to the alias");
}

/// Runs `tokex run` on `yaml` until it exits; its exit code and stderr.
fn run(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokex.yaml");
    let text = format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{yaml}");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs `tokex run` on `yaml`, which must stop it with exit code 1; its stderr.
async fn refused_at_start(yaml: String) -> String {
    let (code, stderr) = tokio::task::spawn_blocking(move || run(&yaml))
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    stderr
}

/// At start, metadata naming another issuer (RFC 8414 §3.3), metadata that does not
/// list the configured auth method, a document past the size bound and an unreachable
/// issuer each stop tokex with a config error naming the URL.
#[tokio::test]
async fn unusable_metadata_at_start_is_a_config_error_naming_the_url() {
    let (as_, md) = (MockAs::start().await, Metadata::start().await);
    let issuer = md.issuer("/a");
    let url = format!("{}/.well-known/oauth-authorization-server/a", md.issuer(""));
    md.set(
        "/.well-known/oauth-authorization-server/a",
        200,
        metadata(&format!("{issuer}/"), &as_),
    );
    let up = "http://127.0.0.1:9";
    let stderr = refused_at_start(by_issuer(&issuer, up, "client_secret_basic")).await;
    assert!(
        stderr.contains(&url) && stderr.contains("names issuer") && stderr.contains("RFC 8414"),
        "{stderr}"
    );

    md.set(
        "/.well-known/oauth-authorization-server/a",
        200,
        metadata(&issuer, &as_),
    );
    let stderr = refused_at_start(by_issuer(&issuer, up, "client_secret_post")).await;
    assert!(
        stderr.contains(
            "auth.method client_secret_post is not in token_endpoint_auth_methods_supported"
        ),
        "{stderr}"
    );

    // A document past the 256 KiB bound is not read: the error names its URL.
    md.set(
        "/.well-known/oauth-authorization-server/a",
        200,
        serde_json::json!({"issuer": issuer, "padding": "x".repeat(300 * 1024)}),
    );
    let stderr = refused_at_start(by_issuer(&issuer, up, "client_secret_basic")).await;
    assert!(
        stderr.contains(&url) && stderr.contains("metadata too large"),
        "{stderr}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}/x", closed.local_addr().unwrap());
    drop(closed);
    let stderr = refused_at_start(by_issuer(&gone, up, "client_secret_basic")).await;
    let tried = gone.replace("/x", "/.well-known/oauth-authorization-server/x");
    assert!(
        stderr.contains(&tried) && stderr.contains("connection failed"),
        "{stderr}"
    );
}

/// On reload, metadata that cannot be read keeps the token endpoint the authority had:
/// the reload succeeds, the failure is counted, and exchanges still go there.
#[tokio::test]
async fn reload_keeps_the_old_endpoint_when_metadata_fails() {
    let (as_, up, md) = parts().await;
    let issuer = md.issuer("");
    let well_known = "/.well-known/oauth-authorization-server";
    md.set(well_known, 200, metadata(&issuer, &as_));
    let yaml = by_issuer(&issuer, &up.url(), "client_secret_basic");
    let tokex = Tokex::start(&yaml).await;
    md.set(well_known, 503, serde_json::json!({}));
    // A changed route, so the reload is a real one.
    let path = tokex.dir.path().join("tokex.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("echo-api", "echo-api-2")).unwrap();
    tokex.proxy.reload_from_source().await.unwrap();
    let r = get(&tokex, "echo.internal", "/", Some("subject")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(as_.requests()[0].param("audience"), Some("echo-api-2"));
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_discovery_failures_total{authority=\"backend\"} 1"),
        "{m}"
    );
}

/// `tokex check --offline` reads no metadata (the issuer here is unreachable), and an
/// authority with neither token_endpoint nor issuer is refused at its key.
#[test]
fn offline_check_does_not_fetch_and_an_endpoint_or_issuer_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.yaml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--offline", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr =
            String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
        (out.status.code(), stderr)
    };
    let yaml = by_issuer(
        "https://sts.invalid/tenant",
        "https://up.example",
        "client_secret_basic",
    );
    assert_eq!(check(&yaml).0, Some(0), "{}", check(&yaml).1);
    let (code, stderr) = check(&yaml.replace("    issuer: https://sts.invalid/tenant\n", ""));
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("FILE:3:5: authorities.backend: give token_endpoint, or issuer"),
        "{stderr}"
    );
    let (code, stderr) =
        check(&yaml.replace("https://sts.invalid/tenant", "https://sts.invalid/?q"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("FILE:3:13: authorities.backend.issuer: `https://sts.invalid/?q` must be an https URL without query"),
        "{stderr}"
    );
}
