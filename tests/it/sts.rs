//! The sidecar against the embedded authorization server, configured as
//! `config/sts-example.yaml` ships it, and the `tokex sts` command. The server's own
//! behaviour is tested in its crate (`crates/sts/tests`).

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tokex");
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// What the sidecar's `orders` route asks for: more than alice may have.
const ORDERS_SCOPE: &str = "email profile calendar.events.read write:documents read:analytics";

/// The shipped example's realms, on an ephemeral port.
async fn example_sts() -> StsServer {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sts-example.yaml");
    StsServer::start(&std::fs::read_to_string(path).unwrap()).await
}

/// A `client_credentials` token from the example's client realm (audience `backend`).
async fn mint(sts: &StsServer, client: &str, secret: &str, scope: Option<&str>) -> String {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("audience", "backend"),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let r = sts.post("client", Some((client, secret)), &form).await;
    assert_eq!(r.status, 200, "minting for {client}: {}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// alice's user token: scopes `openid read:calendar`, group admin, engineering.
async fn alice(sts: &StsServer) -> String {
    mint(
        sts,
        "web-app",
        "demo-web-secret",
        Some("openid read:calendar"),
    )
    .await
}

/// The token the echo upstream received, from its `authorization` field.
fn upstream_token(r: &Got) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["authorization"]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer token upstream: {}", r.body))
        .to_string()
}

/// The sidecar config: authority `backend` at the STS, routes to `up`; `actor` is an
/// optional actor token file.
fn sidecar_yaml(sts: &StsServer, up: &Upstream, actor: Option<&std::path::Path>) -> String {
    let actor = actor.map_or(String::new(), |p| {
        format!(
            "    actor_token: {{ file: {}, type: {JWT} }}\n",
            p.display()
        )
    });
    format!(
        "authorities:
  backend:
    token_endpoint: {te}
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: demo-tokex-secret }}
{actor}    timeout: 2s
    retries: 0
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {up}
    exchange: {{ authority: backend, audience: orders-api, scope: {ORDERS_SCOPE} }}
  - name: payments
    match: {{ host: payments.internal }}
    upstream: {up}
    exchange: {{ authority: backend, audience: payments-api }}
",
        te = sts.token_endpoint("backend"),
        up = up.url(),
    )
}

/// Writes `token` to a file in `dir` (an actor token for the sidecar).
fn write_token(dir: &tempfile::TempDir, name: &str, token: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, token).unwrap();
    path
}

/// End to end: tokex exchanges alice's client-realm token at the backend realm; the
/// upstream receives a backend token for orders-api, scopes mapped (openid -> email
/// profile, read:calendar -> calendar.events.read) plus the admin rule's
/// write:documents, read:analytics withheld (alice is not in marketing), claims copied
/// and renamed, and no `act` (impersonation: tokex has no actor token).
#[tokio::test]
async fn sidecar_exchange_maps_scopes_and_claims_by_policy() {
    let sts = example_sts().await;
    let up = Upstream::start().await;
    let tokex = Tokex::start(&sidecar_yaml(&sts, &up, None)).await;
    let subject = alice(&sts).await;
    let subject_exp = claims_of(&subject)["exp"].as_u64().unwrap();

    let token = upstream_token(&get(&tokex, "orders.internal", "/orders/42", Some(&subject)).await);
    assert_ne!(token, subject);
    let c = claims_of(&token);
    assert_eq!(c["iss"], sts.issuer("backend"));
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "orders-api");
    assert_eq!(c["client_id"], "tokex");
    assert_eq!(
        c["scope"], "email profile calendar.events.read write:documents",
        "mapped + rule-granted, in request order, read:analytics withheld"
    );
    assert_eq!(c["email"], "alice@example.com", "copied");
    assert_eq!(c["dept"], "engineering", "copied and renamed");
    for absent in ["department", "name", "group", "act", "may_act"] {
        assert!(c.get(absent).is_none(), "{absent} in {c}");
    }
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert!(exp <= iat + 600 && exp <= subject_exp, "token_ttl 10m: {c}");
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().typ.as_deref(),
        Some("at+jwt")
    );
}

/// Delegation: with an actor token configured, tokex sends it and the issued token's
/// `act` names the actor (orders-service, issued by the client realm) while `sub` stays alice.
#[tokio::test]
async fn sidecar_with_actor_token_gets_a_delegated_token() {
    let sts = example_sts().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let actor = write_token(
        &dir,
        "actor.jwt",
        &mint(&sts, "orders-service", "demo-orders-secret", None).await,
    );
    let tokex = Tokex::start(&sidecar_yaml(&sts, &up, Some(&actor))).await;
    let c = claims_of(&upstream_token(
        &get(
            &tokex,
            "orders.internal",
            "/orders/42",
            Some(&alice(&sts).await),
        )
        .await,
    ));
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "orders-api");
    assert_eq!(c["act"]["sub"], "orders-service", "{c}");
    assert_eq!(c["act"]["iss"], sts.issuer("client"), "{c}");
    assert!(c["act"].get("act").is_none(), "one actor, no chain: {c}");
}

/// The sidecar maps STS refusals to the error table: an untrusted subject (the STS says
/// invalid_request) is 401 invalid_token; a route whose audience the client may not ask
/// for (invalid_target) is 403 exchange_denied; nothing reaches the upstream.
#[tokio::test]
async fn sidecar_maps_sts_refusals() {
    let sts = example_sts().await;
    let up = Upstream::start().await;
    let tokex = Tokex::start(&sidecar_yaml(&sts, &up, None)).await;
    let untrusted = jwt(serde_json::json!({
        "iss": "https://stranger.test", "sub": "alice", "aud": "backend", "exp": now() + 300
    }));
    let r = get(&tokex, "orders.internal", "/", Some(&untrusted)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.tokex_error(), Some("invalid_token"));
    assert_eq!(r.json()["authority_error"], "invalid_request");
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );

    let r = get(&tokex, "payments.internal", "/", Some(&alice(&sts).await)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.tokex_error(), Some("exchange_denied"));
    assert_eq!(r.json()["error"], "exchange_denied");
    assert_eq!(r.json()["authority_error"], "invalid_target");
    assert!(up.seen().is_empty(), "fails closed");
}

/// `tokex sts --config FILE` serves on the configured (ephemeral) port, logs
/// `sts listening listen=URL`, answers metadata there, and exits 0 on SIGTERM.
#[tokio::test]
async fn sts_binary_serves_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sts.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:0
realms:
  r:
    clients:
      c: { client_secret: s, grants: [client_credentials], audiences: [api] }
",
    )
    .unwrap();
    let mut sts = spawn_tokex(
        &[
            std::ffi::OsStr::new("sts"),
            "--config".as_ref(),
            path.as_os_str(),
        ],
        &[],
        "sts listening",
    )
    .await;
    assert!(
        !sts.ready.contains('\u{1b}'),
        "no ANSI in logs: {:?}",
        sts.ready
    );
    let base = sts.listen();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let m = got(client()
        .get(format!(
            "{base}/realms/r/.well-known/oauth-authorization-server"
        ))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(m.json()["issuer"], format!("{base}/realms/r"));
    let r = got(client()
        .post(format!("{base}/realms/r/token"))
        .basic_auth("c", Some("s"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let status = sts.terminate().await;
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

/// A bad STS config (an unknown key, an unknown trusted realm) exits 1 and prints
/// `FILE:LINE:COL: key: message`.
#[test]
fn sts_binary_config_error_exits_1_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sts.yaml");
    let cases = [
        (
            "unknown key",
            "realms:\n  r:\n    clients:\n      c:\n        client_secret: s\n        grants: [client_credentials]\n        colour: red\n",
            ":7:9: ",
            "realms.r.clients.c.colour: unknown field `colour`",
        ),
        (
            "unknown realm",
            "realms:\n  r:\n    trust:\n      - { realm: nope, audiences: [r] }\n",
            ":4:9: ",
            "realms.r.trust[0].realm: unknown realm `nope`",
        ),
    ];
    for (what, text, location, message) in cases {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["sts", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.starts_with(&format!("{}{location}", path.display())),
            "{what}: {stderr}"
        );
        assert!(stderr.contains(message), "{what}: {stderr}");
    }
}
