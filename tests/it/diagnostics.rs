//! What an operator reads when a request fails: the cause in the same log line as the
//! failure, with a hint for the common certificate mistakes, and the target that
//! matched no route.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::support::*;

/// A TLS server presenting `chain`; handshakes that fail are dropped.
async fn tls_server(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

fn key_der(key: &rcgen::KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::try_from(key.serialize_der()).unwrap()
}

/// A self-signed CA certificate for `localhost`, served as the server's own.
async fn ca_as_server_certificate() -> (SocketAddr, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let addr = tls_server(vec![cert.der().clone()], key_der(&key)).await;
    (addr, cert.pem())
}

/// A leaf issued by a trusted CA for another name than the one tokex connects to.
async fn certificate_for_another_name() -> (SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["elsewhere.example".to_string()]).unwrap();
    let leaf = leaf_params
        .signed_by(&leaf_key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    let addr = tls_server(vec![leaf.der().clone()], key_der(&leaf_key)).await;
    (addr, ca.pem())
}

/// The log line of the request to `host`.
fn line_for<'a>(log: &'a str, route: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains("request failed") && l.contains(&format!("route=\"{route}\"")))
        .unwrap_or_else(|| panic!("no failure line for {route}:\n{log}"))
}

/// Each upstream failure's warn line carries its cause; certificate mistakes get a
/// hint; a request that matches no route logs the host and path tokex saw.
#[tokio::test]
async fn failures_log_their_cause_in_the_same_line() {
    let as_ = MockAs::start().await;
    let (ca_addr, ca_pem) = ca_as_server_certificate().await;
    let (san_addr, san_ca_pem) = certificate_for_another_name().await;
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca-as-leaf.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let san_file = dir.path().join("san-ca.pem");
    std::fs::write(&san_file, &san_ca_pem).unwrap();
    let up = Upstream::start().await;
    let route_at = |name: &str, upstream: String, ca: Option<&std::path::Path>, authority: &str| {
        let ca = ca.map_or(String::new(), |p| format!("\n    ca_file: {}", p.display()));
        format!(
            "  - name: {name}\n    match: {{ host: {name}.internal }}\n    upstream: {upstream}{ca}\n    \
             exchange: {{ authority: {authority}, audience: echo-api }}\n"
        )
    };
    let route = |name: &str, upstream: String, ca: Option<&std::path::Path>| {
        route_at(name, upstream, ca, "main")
    };
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\nauthorities:\n  main:\n    token_endpoint: {}\n    \
         client_id: tokex-test\n    auth: {{ method: client_secret_basic, client_secret: s }}\n  \
         dead:\n    token_endpoint: http://{refused}/token\n    client_id: tokex-test\n    \
         auth: {{ method: client_secret_basic, client_secret: s }}\n    retries: 0\nroutes:\n{}{}{}{}",
        as_.endpoint(),
        route_at("deadas", up.url(), None, "dead"),
        route(
            "ca",
            format!("https://localhost:{}", ca_addr.port()),
            Some(&ca_file)
        ),
        route(
            "san",
            format!("https://localhost:{}", san_addr.port()),
            Some(&san_file)
        ),
        route("refused", format!("http://{refused}"), None),
    );
    let path = dir.path().join("t.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut tokex = spawn_tokex(
        &[std::ffi::OsStr::new("run"), "-c".as_ref(), path.as_os_str()],
        &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
        "listening",
    )
    .await;
    let addr = tokex.listen();
    let c = client();
    for (host, path, status) in [
        ("ca.internal", "/", 502),
        ("san.internal", "/", 502),
        ("refused.internal", "/", 502),
        ("nowhere.internal", "/some/path", 404),
        ("deadas.internal", "/", 503),
    ] {
        let r = c
            .get(format!("http://{addr}{path}"))
            .header("host", host)
            .bearer_auth("subject")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{host}");
    }
    assert!(tokex.terminate().await.success());
    let log = tokex.log();
    let ca = line_for(&log, "ca");
    assert!(
        ca.contains("WARN") && ca.contains("upstream_unavailable"),
        "{ca}"
    );
    assert!(ca.contains("TLS handshake with localhost:"), "{ca}");
    assert!(ca.contains("presents a CA certificate as its own"), "{ca}");
    let san = line_for(&log, "san");
    assert!(san.contains("does not name this host"), "{san}");
    let refused = line_for(&log, "refused");
    assert!(refused.contains("refused"), "{refused}");
    let dead = line_for(&log, "deadas");
    assert!(dead.contains("authority_unavailable"), "{dead}");
    assert!(
        dead.contains("connection failed") && dead.contains("refused"),
        "{dead}"
    );
    let unrouted = log
        .lines()
        .find(|l| l.contains("no_route"))
        .unwrap_or_else(|| panic!("no no_route line:\n{log}"));
    assert!(
        unrouted.contains("no route for host nowhere.internal and path /some/path"),
        "{unrouted}"
    );
}

const BIN: &str = env!("CARGO_BIN_EXE_tokex");

/// Usage errors exit 1 (bad input, like a bad config); 2 is kept for failures at run
/// time. Help and version exit 0.
#[test]
fn usage_errors_exit_one() {
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env_remove("TOKEX_CONFIG")
            .output()
            .unwrap()
    };
    for args in [
        &["frobnicate"][..],
        &["run"],
        &["check", "--config"],
        &["run", "--bogus"],
        &[],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    for args in [&["--help"][..], &["--version"], &["run", "--help"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}

/// A listener address in use: exit 2, and the error names that address and its key,
/// not the other one.
#[test]
fn bind_errors_name_the_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    for (listen, admin, key) in [(taken_addr, free, "listen"), (free, taken_addr, "admin")] {
        let path = dir.path().join("t.yaml");
        std::fs::write(
            &path,
            format!(
                "listen: {listen}\nadmin: {admin}\nroutes:\n  - name: a\n    upstream: http://127.0.0.1:9\n    exchange: none\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new(BIN)
            .args(["run", "-c"])
            .arg(&path)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("cannot bind {key} address {taken_addr}")),
            "{stderr}"
        );
        let other = if key == "listen" { admin } else { listen };
        assert!(
            !stderr.contains(&other.to_string()),
            "names only the address in use: {stderr}"
        );
    }
    drop(taken);
}
