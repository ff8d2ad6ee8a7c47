//! The worked two-domain example of docs/authorities.md, as shipped: the authorities of
//! `config/sts-chaining.yaml` and the sidecar of `config/chaining.yaml`, moved only to
//! this test's ports.

use crate::support::*;

fn shipped(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(path).unwrap()
}

/// alice's user token at domain A, for her application.
async fn alice(sts: &StsServer) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "orders.read profile"),
    ];
    let r = sts
        .post("domain-a", Some(("web-app", "web-app-secret")), &form)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// The app's call reaches domain B's service with domain B's token for alice, narrowed
/// to one scope; the audit event names both legs. Domain B would refuse alice's own
/// token (its realm test shows it), so this took both legs.
#[tokio::test]
async fn the_worked_example_chains_across_the_two_domains() {
    let (sts, up) = (
        StsServer::start(&shipped("config/sts-chaining.yaml")).await,
        Upstream::start().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let yaml = shipped("config/chaining.yaml")
        .replace("127.0.0.1:15001", "127.0.0.1:0")
        .replace("127.0.0.1:15000", "127.0.0.1:0")
        .replace("http://127.0.0.1:8400", &sts.base)
        .replace("http://127.0.0.1:9000", &up.url())
        + &format!("audit: {{ enabled: true, file: {} }}\n", audit.display());
    let config = dir.path().join("chaining.yaml");
    std::fs::write(&config, yaml).unwrap();
    let args = [
        std::ffi::OsStr::new("run"),
        "-c".as_ref(),
        config.as_os_str(),
    ];
    let mut tokex = spawn_tokex(&args, &[("RUST_LOG", "info")], "listening").await;
    let user = alice(&sts).await;
    let r = client()
        .get(format!("http://{}/orders/7", tokex.listen()))
        .header("host", "orders.domain-b.example")
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    let r = got(r).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let sent = r.json()["authorization"].as_str().unwrap().to_string();
    let token = sent.strip_prefix("Bearer ").unwrap();
    let c = claims_of(token);
    assert_eq!(
        (&c["iss"], &c["sub"], &c["aud"], &c["scope"], &c["email"]),
        (
            &serde_json::json!("https://as.domain-b.example"),
            &serde_json::json!("alice"),
            &serde_json::json!("orders-api"),
            &serde_json::json!("orders:read"),
            &serde_json::json!("alice@domain-a.example"),
        )
    );
    tokex.terminate().await;
    let text = std::fs::read_to_string(&audit).unwrap();
    let event: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            &event["authority"],
            &event["first_authority"],
            &event["first_audience"]
        ),
        (
            &serde_json::json!("domain-b"),
            &serde_json::json!("domain-a"),
            &serde_json::json!("https://as.domain-b.example")
        ),
        "{text}"
    );
    assert_eq!(
        (&event["grant"], &event["outcome"]),
        (&serde_json::json!("jwt_bearer"), &serde_json::json!("ok"))
    );
    assert!(
        !text.contains(&user) && !text.contains(token),
        "no token in the audit trail"
    );
}

/// `tokex exchange` runs both legs as the route would and shows each one's claims.
#[tokio::test]
async fn the_exchange_command_shows_both_legs() {
    let sts = StsServer::start(&shipped("config/sts-chaining.yaml")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chaining.yaml");
    let yaml = shipped("config/chaining.yaml").replace("http://127.0.0.1:8400", &sts.base);
    std::fs::write(&config, yaml).unwrap();
    let user = alice(&sts).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokex"))
        .args(["exchange", "--route", "orders", "-c"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(user.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["authority"], "domain-b");
    assert_eq!(report["claims"]["iss"], "https://as.domain-b.example");
    assert_eq!(report["first_leg"]["authority"], "domain-a");
    assert_eq!(
        report["first_leg"]["claims"]["aud"],
        "https://as.domain-b.example"
    );
    assert_eq!(
        report["first_leg"]["issued_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    assert!(
        !stdout.contains(&user),
        "the report shows claims, never a token"
    );
}

/// The guide shows the files these tests run, whole and as shipped.
#[test]
fn the_guide_shows_the_shipped_files() {
    let guide = shipped("docs/authorities.md");
    for file in ["config/sts-chaining.yaml", "config/chaining.yaml"] {
        let block = format!("```yaml\n{}```", shipped(file));
        assert!(
            guide.contains(&block),
            "docs/authorities.md does not show {file} as shipped"
        );
    }
}
