//! Transparent interception with real kernel rules: `tokex init` in a pod namespace, an
//! app that calls upstream addresses directly with no proxy settings, and tokex (as its
//! own uid) exchanging tokens on the redirected connections. Needs root, `ip`, `nft`,
//! `iptables`, `curl` and `python3`; scripts/test.sh installs the Debian packages.

mod support;

use base64::Engine;
use serde_json::Value;
use support::{Net, PROXY_UID, echo_script, tokex_bin};

/// Intercepted: the upstream's HTTP ports, a TLS port, a port only route B names, and one
/// no route names. 8081 is served too but never intercepted.
const PORTS: &str = "[80, 8080, 8443, 9000, 9001]";

fn sts_yaml(net: &Net) -> String {
    format!(
        "listen: {}:8400
realms:
  client:
    clients:
      web-app:
        client_secret: web-secret
        grants: [client_credentials]
        audiences: [backend]
        subject: alice
  backend:
    trust:
      - {{ realm: client, audiences: [backend] }}
    clients:
      tokex:
        client_secret: tokex-secret
        grants: [token_exchange]
        audiences: [orders-api, a-api]
",
        net.up_ip
    )
}

fn sidecar_yaml(net: &Net, unmatched: &str) -> String {
    let up = &net.up_ip;
    format!(
        "authorities:
  backend:
    token_endpoint: http://{up}:8400/realms/backend/token
    allow_insecure_http: true
    issuer: http://{up}:8400/realms/backend
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: tokex-secret }}
routes:
  - name: a-service
    match: {{ host: a.internal }}
    upstream: http://{up}:8080
    exchange: {{ authority: backend, audience: a-api }}
  - name: orders
    match: {{ destination: '{up}:80' }}
    upstream: http://{up}:80
    exchange: {{ authority: backend, audience: orders-api }}
  - name: b-service
    match: {{ destination: '{up}:9000' }}
    upstream: http://{up}:9000
    exchange: none
  - name: by-name
    match: {{ host: names.internal }}
    exchange: {{ authority: backend, audience: orders-api }}
  - name: moved
    match: {{ host: moved.internal }}
    exchange: {{ authority: backend, audience: a-api }}
transparent:
  ports: {PORTS}
  exclude_cidrs: [169.254.169.254/32]
  proxy_uid: {PROXY_UID}
  unmatched: {unmatched}
"
    )
}

/// Namespaces with the upstream's servers (STS, echo on plain and TLS ports) running.
fn upstream_side(id: u8) -> Net {
    let mut net = Net::new(id);
    let sts = net.write("sts.yaml", &sts_yaml(&net));
    let cmd = net.command(
        &net.up,
        None,
        &[
            tokex_bin().to_str().unwrap(),
            "sts",
            "--config",
            sts.to_str().unwrap(),
        ],
    );
    net.start(cmd, "tokex sts");
    let cert = rcgen::generate_simple_self_signed(vec![net.up_ip.clone()]).unwrap();
    let cert_file = net.write("up.pem", &cert.cert.pem());
    let key_file = net.write("up-key.pem", &cert.signing_key.serialize_pem());
    let up = net.up_ip.clone();
    let mut args = vec!["python3".to_string(), echo_script().display().to_string()];
    for port in [80, 8080, 8081, 9000, 9001] {
        args.extend(["--http".into(), format!("{up}:{port}")]);
    }
    args.extend(["--https".into(), format!("{up}:8443")]);
    args.extend(["--cert".into(), cert_file.display().to_string()]);
    args.extend(["--key".into(), key_file.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = net.command(&net.up, None, &args);
    net.start_until_ready(cmd, "echo upstream");
    let metadata =
        format!("http://{up}:8400/realms/backend/.well-known/oauth-authorization-server");
    net.wait_for("tokex sts", || {
        net.run(&net.up, &["curl", "-sf", &metadata])
            .status
            .success()
    });
    net
}

/// `tokex init` with `args` in the pod; its exit code and output.
fn init(net: &Net, config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut cmd = vec![
        tokex_bin().to_str().unwrap(),
        "init",
        "--config",
        config.to_str().unwrap(),
    ];
    cmd.extend_from_slice(args);
    let out = net.run(&net.pod, &cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Starts the sidecar in the pod as PROXY_UID and waits for /readyz.
fn start_sidecar(net: &mut Net, config: &std::path::Path) {
    let cmd = net.command(
        &net.pod,
        Some(PROXY_UID),
        &[
            tokex_bin().to_str().unwrap(),
            "run",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    net.start(cmd, "tokex run");
    net.wait_for("tokex ready", || {
        net.app_curl(&["http://127.0.0.1:15000/readyz"]).0 == 200
    });
}

/// A user token from the client realm, minted in the upstream namespace.
fn subject_token(net: &Net) -> String {
    let url = format!("http://{}:8400/realms/client/token", net.up_ip);
    let out = net.run(
        &net.up,
        &[
            "curl",
            "-sf",
            "-u",
            "web-app:web-secret",
            "-d",
            "grant_type=client_credentials",
            &url,
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("token response");
    v["access_token"].as_str().unwrap().to_string()
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The echo's JSON for a request the app sends to `url` with `subject` as its token.
fn app_get(net: &Net, url: &str, subject: &str, extra: &[&str]) -> (u16, Value, String) {
    let auth = format!("Authorization: Bearer {subject}");
    let mut args = vec!["-H", auth.as_str()];
    args.extend_from_slice(extra);
    args.push(url);
    let (status, body) = net.app_curl(&args);
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::Null),
        body,
    )
}

fn redirected_count(net: &Net) -> f64 {
    let (_, text) = net.app_curl(&["http://127.0.0.1:15000/metrics"]);
    text.lines()
        .filter(|l| l.starts_with("tokex_redirected_connections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The whole transparent flow under one back end.
fn transparent_flow(id: u8, backend: &str) {
    let mut net = upstream_side(id);
    let moved = format!("10.251.{id}.3");
    net.pod_hosts(&[
        (&net.up_ip.clone(), "names.internal"),
        (&moved, "moved.internal"),
    ]);
    let config = net.write("tokex.yaml", &sidecar_yaml(&net, "passthrough"));
    let (code, out) = init(&net, &config, &["--check"]);
    assert_eq!(code, 2, "--check fails without rules: {out}");
    assert!(out.contains("not redirected"), "{out}");
    for _ in 0..2 {
        let (code, out) = init(&net, &config, &["--backend", backend]);
        assert_eq!(code, 0, "tokex init --backend {backend}: {out}");
        assert!(
            out.contains("redirect ok") && out.contains("is exempt"),
            "{out}"
        );
    }
    let (code, out) = init(&net, &config, &["--check"]);
    assert_eq!(code, 0, "--check passes with the rules: {out}");
    start_sidecar(&mut net, &config);
    let subject = subject_token(&net);
    let up = net.up_ip.clone();

    // The app calls the upstream's address directly; tokex exchanged on the way.
    let (status, echo, body) = app_get(&net, &format!("http://{up}/orders/1"), &subject, &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo["port"], 80);
    let token = echo["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_string();
    assert_ne!(token, subject, "the upstream never sees the app's token");
    assert_eq!(claims(&token)["aud"], "orders-api");
    assert_eq!(claims(&token)["sub"], "alice");

    // Host names route A, the address is route B's: A's token goes only to A's upstream.
    let (status, echo, body) = app_get(
        &net,
        &format!("http://{up}:9000/x"),
        &subject,
        &["-H", "Host: a.internal"],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        echo["port"], 8080,
        "served by route A's own upstream, not B's address"
    );
    assert_eq!(
        claims(
            echo["authorization"]
                .as_str()
                .unwrap()
                .strip_prefix("Bearer ")
                .unwrap()
        )["aud"],
        "a-api"
    );
    let (status, echo, _) = app_get(&net, &format!("http://{up}:9000/x"), &subject, &[]);
    assert_eq!((status, echo["port"].as_u64()), (200, Some(9000)));
    assert_eq!(
        echo["authorization"],
        Value::Null,
        "route B exchanges nothing and forwards no token"
    );

    // No upstream: back to where the app connected, because the Host resolves there.
    let (status, echo, body) = app_get(
        &net,
        &format!("http://{up}:9001/named"),
        &subject,
        &["-H", "Host: names.internal"],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (echo["port"].as_u64(), echo["host"].as_str()),
        (Some(9001), Some("names.internal"))
    );
    let token = echo["authorization"].as_str().unwrap();
    assert_eq!(
        claims(token.strip_prefix("Bearer ").unwrap())["aud"],
        "orders-api"
    );
    // A Host that resolves elsewhere: refused before any token work, sent nowhere.
    let (status, _, body) = app_get(
        &net,
        &format!("http://{up}:9001/moved"),
        &subject,
        &["-H", "Host: moved.internal"],
    );
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("misdirected_request"), "{body}");

    // No route: passed through untouched, the app's own Authorization included.
    let (status, echo, _) = app_get(&net, &format!("http://{up}:9001/free"), &subject, &[]);
    assert_eq!((status, echo["port"].as_u64()), (200, Some(9001)));
    assert_eq!(echo["authorization"], format!("Bearer {subject}"));

    // TLS on an intercepted port: relayed, the upstream's handshake completes unchanged.
    let ca = net.dir.path().join("up.pem");
    let (status, echo, body) = app_get(
        &net,
        &format!("https://{up}:8443/tls"),
        &subject,
        &["--cacert", ca.to_str().unwrap()],
    );
    assert_eq!((status, echo["port"].as_u64()), (200, Some(8443)), "{body}");

    // A port not intercepted is not redirected at all.
    let before = redirected_count(&net);
    let (status, echo, _) = app_get(&net, &format!("http://{up}:8081/"), &subject, &[]);
    assert_eq!((status, echo["port"].as_u64()), (200, Some(8081)));
    assert_eq!(redirected_count(&net), before, "8081 never reached tokex");

    let (code, out) = init(&net, &config, &["--remove"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = init(&net, &config, &["--check"]);
    assert_eq!(code, 2, "--check fails once the rules are removed: {out}");
}

#[test]
fn transparent_with_nftables() {
    transparent_flow(1, "nft");
}

#[test]
fn transparent_with_iptables_nft() {
    transparent_flow(2, "iptables-nft");
}

#[test]
fn transparent_with_iptables_legacy() {
    transparent_flow(3, "iptables-legacy");
}

/// `unmatched: reject`: unmatched HTTP gets no_route, TLS is closed, routes still work.
#[test]
fn unmatched_reject() {
    let mut net = upstream_side(4);
    let config = net.write("tokex.yaml", &sidecar_yaml(&net, "reject"));
    let (code, out) = init(&net, &config, &[]);
    assert_eq!(code, 0, "{out}");
    start_sidecar(&mut net, &config);
    let subject = subject_token(&net);
    let up = net.up_ip.clone();
    let (status, _, body) = app_get(&net, &format!("http://{up}:9001/"), &subject, &[]);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no_route"), "{body}");
    let ca = net.dir.path().join("up.pem");
    let (status, _, _) = app_get(
        &net,
        &format!("https://{up}:8443/"),
        &subject,
        &["--cacert", ca.to_str().unwrap()],
    );
    assert_eq!(
        status, 0,
        "TLS is refused: the connection closes without a response"
    );
    let (status, echo, body) = app_get(&net, &format!("http://{up}/orders/2"), &subject, &[]);
    assert_eq!((status, echo["port"].as_u64()), (200, Some(80)), "{body}");
}
