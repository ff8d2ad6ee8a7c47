//! `tls_client_auth` to a TLS token endpoint that records the certificates presented,
//! and an upstream's CA bundle re-read when it changes.

use super::*;

/// A token endpoint over TLS that accepts client certificates from `clients` and
/// records the DER of each one presented; without one, it answers invalid_client.
async fn tls_token_endpoint(
    server: &Pki,
    clients: &Pki,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>, Task) {
    use rustls_pki_types::pem::PemObject;
    let (cert_pem, key_pem) = leaf(server, "localhost");
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(clients.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (s, peer) = (s.clone(), peer.clone());
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let form: Vec<(String, String)> =
                            form_urlencoded::parse(&body).into_owned().collect();
                        let recorded = AsRequest {
                            headers: http::HeaderMap::new(),
                            form,
                        };
                        let Some(peer) = peer else {
                            let r =
                                Reply::json(401, serde_json::json!({"error": "invalid_client"}));
                            return Ok::<_, Infallible>(full(r.status, r.body));
                        };
                        s.lock().unwrap().push(peer);
                        let r = issue(&recorded, 1);
                        Ok(full(r.status, r.body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen, Task(task))
}

fn der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// tls_client_auth presents the configured certificate to a TLS token endpoint (trusted
/// through the authority's ca_file); a rotated certificate and key are presented within
/// one file check, with no failed request; the token endpoint refuses a client without
/// one.
#[tokio::test(start_paused = true)]
async fn tls_client_auth_presents_the_certificate_and_rotates() {
    let (server_pki, client_pki) = (pki(), pki());
    let (addr, seen, _task) = tls_token_endpoint(&server_pki, &client_pki).await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert1, key1) = leaf(&client_pki, "tokex-one");
    let (cert2, key2) = leaf(&client_pki, "tokex-two");
    let (cert_file, key_file, ca_file) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert_file, &cert1).unwrap();
    std::fs::write(&key_file, &key1).unwrap();
    std::fs::write(&ca_file, &server_pki.ca_pem).unwrap();
    let yaml = format!(
        "authorities:
  main:
    token_endpoint: https://localhost:{}/token
    client_id: tokex-test
    ca_file: {}
    auth: {{ method: tls_client_auth, cert_file: {}, key_file: {} }}
    retries: 0
{}",
        addr.port(),
        ca_file.display(),
        cert_file.display(),
        key_file.display(),
        route(&up.url())
    );
    let tokex = Tokex::start_in(dir, &yaml).await;
    let r = get(&tokex, "echo.internal", "/", Some("t0")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen.lock().unwrap()[0], der(&cert1));
    let not_after = tokex::credentials::expiry::not_after(&der(&cert1)).unwrap();
    let m = tokex.metrics().await;
    let series = format!(
        "tokex_credential_expiry_timestamp_seconds{{authority=\"main\",credential=\"client_certificate\"}} {not_after}\n"
    );
    assert!(m.contains(&series), "{series} in:\n{m}");

    // Rotation: both files change; write the key first so the pair is briefly
    // mismatched, which must keep the old identity rather than fail requests.
    for i in 0..5 {
        assert_eq!(
            get(&tokex, "echo.internal", "/", Some(&format!("warm-{i}")))
                .await
                .status,
            200
        );
    }
    rotate(&key_file, &key2);
    advance(FILE_POLL).await;
    let kept = "tokex_credential_reloads_total{result=\"error\"} 1\n";
    let m = tokex.metrics().await;
    assert!(m.contains(kept), "the mismatched pair was refused:\n{m}");
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("mismatched"))
            .await
            .status,
        200,
        "the old identity is kept"
    );
    rotate(&cert_file, &cert2);
    let want = der(&cert2);
    let s2 = seen.clone();
    flow_until(&tokex, "echo.internal", async || {
        s2.lock().unwrap().contains(&want)
    })
    .await;

    // Without tls_client_auth the same endpoint refuses the client.
    let plain = format!(
        "authorities:
  main:
    token_endpoint: https://localhost:{}/token
    client_id: tokex-test
    ca_file: {}
    auth: {{ method: none }}
    retries: 0
{}",
        addr.port(),
        tokex.dir.path().join("ca.pem").display(),
        route(&up.url())
    );
    let no_cert = Tokex::start(&plain).await;
    let r = get(&no_cert, "echo.internal", "/", Some("t1")).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (502, Some("exchange_misconfigured")),
        "{}",
        r.body
    );
}

/// An upstream's ca_file is re-read: trust that starts wrong (502) becomes right at the
/// next file check after the file changes.
#[tokio::test(start_paused = true)]
async fn upstream_ca_file_rotates() {
    let as_ = MockAs::start().await;
    let (up, ca_pem) = Upstream::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki().ca_pem).unwrap();
    let url = format!("https://localhost:{}", up.addr.port());
    let yaml = config(&as_, &url).replace(
        "    timeout: 1s\n    exchange",
        &format!(
            "    timeout: 1s\n    ca_file: {}\n    exchange",
            ca_file.display()
        ),
    );
    let tokex = Tokex::start_in(dir, &yaml).await;
    let r = get(&tokex, "echo.internal", "/", Some("t")).await;
    assert_eq!(r.tokex_error(), Some("upstream_unavailable"));
    rotate(&ca_file, &ca_pem);
    advance(FILE_POLL).await;
    let r = get(&tokex, "echo.internal", "/", Some("t")).await;
    assert_eq!(r.status, 200, "the new CA is in use: {}", r.body);
}
