//! Trust roots beyond a route's or authority's own `ca_file`: `tls.ca_file` for every
//! authority and upstream, `SSL_CERT_FILE` as the root set, and `tls.roots: system`.

use std::convert::Infallible;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

/// A token endpoint over TLS for `localhost` (its own fresh CA, returned as PEM) that
/// issues `narrowed` to every request.
async fn tls_authority() -> (std::net::SocketAddr, String, Task) {
    let (acceptor, ca_pem) = tls_acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(|_req| async {
                    let body = serde_json::json!({
                        "access_token": "narrowed",
                        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                        "token_type": "Bearer",
                        "expires_in": 60,
                    });
                    Ok::<_, Infallible>(full(200, body.to_string()))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca_pem, Task(task))
}

/// A TLS authority and a TLS upstream with two unrelated CAs, and a config (without
/// `listen`/`admin`, with `tls` as given) routing `echo.internal` through both; the PEM
/// of both CAs in one bundle.
struct Rig {
    yaml: String,
    bundle: String,
    up: Upstream,
    _authority: Task,
}

async fn rig(tls: &str) -> Rig {
    let (as_addr, as_ca, task) = tls_authority().await;
    let (up, up_ca) = Upstream::start_tls().await;
    let yaml = format!(
        "{tls}authorities:
  main:
    token_endpoint: https://localhost:{}/token
    client_id: tokex-test
    auth: {{ method: client_secret_post, client_secret: s }}
    retries: 0
routes:
  - name: echo
    match: {{ host: echo.internal }}
    upstream: https://localhost:{}
    exchange: {{ authority: main, audience: echo-api }}
",
        as_addr.port(),
        up.addr.port()
    );
    Rig {
        yaml,
        bundle: format!("{as_ca}{up_ca}"),
        up,
        _authority: task,
    }
}

/// `tls.ca_file` alone lets tokex trust both a token endpoint and an upstream whose CA
/// it names; without it neither is trusted.
#[tokio::test]
async fn tls_ca_file_is_trusted_for_authorities_and_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let untrusted = rig("").await;
    let tokex = Tokex::start(&untrusted.yaml).await;
    let r = get(&tokex, "echo.internal", "/", Some("subject")).await;
    assert_ne!(r.status, 200, "{}", r.body);

    let ca = dir.path().join("roots.pem");
    let trusted = rig(&format!("tls: {{ ca_file: {} }}\n", ca.display())).await;
    std::fs::write(&ca, &trusted.bundle).unwrap();
    let tokex = Tokex::start(&trusted.yaml).await;
    let r = get(&tokex, "echo.internal", "/", Some("subject")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        trusted.up.seen()[0].headers["authorization"],
        "Bearer narrowed"
    );
}

/// The binary with `yaml` and `env`, one request through its route; the status.
async fn status_with(rig: &Rig, env: &[(&str, &str)]) -> u16 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokex.yaml");
    let yaml = format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{}", rig.yaml);
    std::fs::write(&path, yaml).unwrap();
    let mut tokex = spawn_tokex(
        &["run".as_ref(), "-c".as_ref(), path.as_os_str()],
        env,
        "listening",
    )
    .await;
    let r = client()
        .get(format!("http://{}/", tokex.listen()))
        .header("host", "echo.internal")
        .bearer_auth("subject")
        .send()
        .await
        .unwrap();
    assert!(tokex.terminate().await.success(), "{}", tokex.log());
    r.status().as_u16()
}

/// `SSL_CERT_FILE` is the root set, as for OpenSSL and rustls-native-certs: a CA given
/// only there is trusted for the token endpoint and the upstream.
#[tokio::test]
async fn ssl_cert_file_is_the_root_set() {
    let rig = rig("").await;
    assert_ne!(status_with(&rig, &[]).await, 200);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, &rig.bundle).unwrap();
    let env = [("SSL_CERT_FILE", bundle.to_str().unwrap())];
    assert_eq!(status_with(&rig, &env).await, 200);
}

/// `tls.roots: system` reads the operating system's store through rustls-native-certs,
/// which `SSL_CERT_DIR` points elsewhere; the default `webpki` does not read it.
#[tokio::test]
async fn system_roots_are_read_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let webpki = rig("").await;
    std::fs::write(dir.path().join("a1b2c3d4.0"), &webpki.bundle).unwrap();
    let env = [("SSL_CERT_DIR", dir.path().to_str().unwrap())];
    assert_ne!(status_with(&webpki, &env).await, 200);
    let system = rig("tls: { roots: system }\n").await;
    std::fs::write(dir.path().join("a1b2c3d4.0"), &system.bundle).unwrap();
    assert_eq!(status_with(&system, &env).await, 200);
}
