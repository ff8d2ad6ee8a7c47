//! The credentials tokex presents: every client authentication method, and rotation of
//! every credential file (secrets, keys, assertions, certificates, actor tokens, CA
//! bundles) while requests flow, with no failed request.
//!
//! Time is paused: tokex checks credential files every 250 ms of its clock, so each
//! rotation test shows the new file in use by the first request after the next check.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, advance};

use base64::Engine;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::support::*;

/// Writes `text` to `path` atomically (write a sibling, then rename), as tools that
/// rotate credentials do.
fn rotate(path: &Path, text: &str) {
    let tmp = path.with_extension("rotating");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn ec_key_pem() -> String {
    rcgen::KeyPair::generate().unwrap().serialize_pem()
}

fn jwk_for(pem: &str, kid: &str) -> Jwk {
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk
}

/// Sends requests with fresh subject tokens (each needs an exchange), 10 ms of the clock
/// apart, until `done`; every one must succeed, and `done` must hold within one file
/// check (250 ms) of the call. Returns how many were sent.
async fn flow_until(tokex: &Tokex, host: &str, mut done: impl AsyncFnMut() -> bool) -> usize {
    // Subjects never repeat, also across calls: a repeated one would be a cache hit.
    static SUBJECTS: AtomicUsize = AtomicUsize::new(0);
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let subject = format!("subject-{}", SUBJECTS.fetch_add(1, Ordering::SeqCst));
        let r = get(tokex, host, "/", Some(&subject)).await;
        assert_eq!(
            r.status, 200,
            "request {n} failed during rotation: {}",
            r.body
        );
        if done().await {
            return n;
        }
        assert!(
            started.elapsed() < FILE_POLL,
            "the rotated credential was not in use one file check after the change"
        );
        advance(Duration::from_millis(10)).await;
    }
}

/// Rotates `path` to `text` while requests flow, and asserts the AS saw the new
/// credential (`uses_new`) by the next file check, with no failed request.
async fn rotate_while_flowing(
    tokex: &Tokex,
    host: &str,
    path: &Path,
    text: &str,
    uses_new: impl Fn() -> bool,
) {
    for i in 0..5 {
        assert_eq!(
            get(tokex, host, "/", Some(&format!("warm-{i}")))
                .await
                .status,
            200
        );
    }
    assert!(
        !uses_new(),
        "the new credential must not be in use before the rotation"
    );
    rotate(path, text);
    flow_until(tokex, host, async || uses_new()).await;
    for i in 0..5 {
        assert_eq!(
            get(tokex, host, "/", Some(&format!("after-{i}")))
                .await
                .status,
            200
        );
    }
}

fn authority(as_: &MockAs, auth: &str) -> String {
    format!(
        "authorities:
  main:
    token_endpoint: {}
    client_id: tokex-test
    auth: {auth}
    timeout: 1s
    retries: 0
",
        as_.endpoint()
    )
}

fn route(upstream: &str) -> String {
    format!(
        "routes:
  - name: echo
    match: {{ host: echo.internal }}
    upstream: {upstream}
    exchange: {{ authority: main, audience: echo-api }}
"
    )
}

fn basic_secret(req: &AsRequest) -> Option<String> {
    let value = req
        .headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?
        .to_string();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    Some(
        String::from_utf8(decoded)
            .ok()?
            .split_once(':')?
            .1
            .to_string(),
    )
}

/// client_secret_file rotates; an empty rewrite keeps the last good secret in use and
/// is counted; the next good write is picked up.
#[tokio::test(start_paused = true)]
async fn client_secret_file_rotates_and_keeps_last_good() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "secret-one\n").unwrap();
    let auth = format!(
        "{{ method: client_secret_basic, client_secret_file: {} }}",
        secret.display()
    );
    let tokex = Tokex::start_in(
        dir,
        &format!("{}{}", authority(&as_, &auth), route(&up.url())),
    )
    .await;
    let seen = |s: &'static str| {
        let as_ = as_.clone();
        move || {
            as_.requests()
                .iter()
                .any(|r| basic_secret(r).as_deref() == Some(s))
        }
    };
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t0")).await.status,
        200
    );
    assert!(
        seen("secret-one")(),
        "trailing newline is not part of the secret"
    );
    rotate_while_flowing(
        &tokex,
        "echo.internal",
        &secret,
        "secret-two",
        seen("secret-two"),
    )
    .await;

    rotate(&secret, "");
    advance(FILE_POLL).await;
    let before = as_.count();
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("after-bad-write"))
            .await
            .status,
        200
    );
    assert_eq!(
        basic_secret(&as_.requests()[before]).as_deref(),
        Some("secret-two"),
        "last good secret kept"
    );
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_credential_reloads_total{result=\"error\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tokex_credential_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
    rotate_while_flowing(
        &tokex,
        "echo.internal",
        &secret,
        "secret-three",
        seen("secret-three"),
    )
    .await;
}

/// client_assertion sends the file's assertion with its type and the client id, and
/// picks up a rotated assertion (a Kubernetes projected token) at the next file check.
#[tokio::test(start_paused = true)]
async fn client_assertion_file_is_sent_and_rotates() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let first_exp = now() + 3600;
    let first = jwt(
        serde_json::json!({"sub": "system:serviceaccount:shop:orders", "exp": first_exp, "n": 1}),
    );
    let second = jwt(
        serde_json::json!({"sub": "system:serviceaccount:shop:orders", "exp": now() + 3600, "n": 2}),
    );
    std::fs::write(&file, &first).unwrap();
    let auth = format!(
        "{{ method: client_assertion, assertion_file: {} }}",
        file.display()
    );
    let tokex = Tokex::start_in(
        dir,
        &format!("{}{}", authority(&as_, &auth), route(&up.url())),
    )
    .await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t0")).await.status,
        200
    );
    let r = &as_.requests()[0];
    assert_eq!(r.param("client_assertion"), Some(first.as_str()));
    assert_eq!(
        r.param("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(r.param("client_id"), Some("tokex-test"));
    assert!(r.headers.get("authorization").is_none());
    let m = tokex.metrics().await;
    let series = format!(
        "tokex_credential_expiry_timestamp_seconds{{authority=\"main\",credential=\"client_assertion\"}} {first_exp}\n"
    );
    assert!(m.contains(&series), "{series} in:\n{m}");
    let want = second.clone();
    let as2 = as_.clone();
    rotate_while_flowing(&tokex, "echo.internal", &file, &second, move || {
        as2.requests()
            .iter()
            .any(|r| r.param("client_assertion") == Some(want.as_str()))
    })
    .await;
}

/// The actor token rotates, and the cache key includes the actor: the same subject
/// token exchanges again under the new actor instead of reusing the old entry.
#[tokio::test(start_paused = true)]
async fn actor_token_rotates_and_never_reuses_the_old_actors_tokens() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("actor");
    std::fs::write(&file, "actor-one").unwrap();
    let yaml = format!(
        "{}    actor_token: {{ file: {}, type: urn:ietf:params:oauth:token-type:jwt }}\n{}",
        authority(&as_, "{ method: client_secret_post, client_secret: s }"),
        file.display(),
        route(&up.url())
    );
    let tokex = Tokex::start_in(dir, &yaml).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("same-subject"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("same-subject"))
            .await
            .status,
        200
    );
    assert_eq!(as_.count(), 1, "cached under actor-one");
    assert_eq!(as_.requests()[0].param("actor_token"), Some("actor-one"));
    assert_eq!(
        as_.requests()[0].param("actor_token_type"),
        Some("urn:ietf:params:oauth:token-type:jwt")
    );
    let as2 = as_.clone();
    rotate_while_flowing(&tokex, "echo.internal", &file, "actor-two", move || {
        as2.requests()
            .iter()
            .any(|r| r.param("actor_token") == Some("actor-two"))
    })
    .await;
    let before = as_.count();
    let r = get(&tokex, "echo.internal", "/", Some("same-subject")).await;
    assert_eq!(r.status, 200);
    assert_eq!(as_.count(), before + 1, "a new actor means a new exchange");
    assert_eq!(
        as_.requests()[before].param("actor_token"),
        Some("actor-two")
    );
}

/// private_key_jwt against the embedded STS (which checks iss/sub, aud = its issuer,
/// exp and a one-time jti): accepted with a registered key, refused with another one
/// (502 exchange_misconfigured). Rotating the key file to another registered key fails
/// no request; rotating to an unregistered key is refused from the next file check on,
/// which shows the new key is in use; rotating back recovers as soon.
#[tokio::test(start_paused = true)]
async fn private_key_jwt_against_the_embedded_sts() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, rogue) = (ec_key_pem(), ec_key_pem(), ec_key_pem());
    // tokex derives the kid from the key (RFC 7638), so the JWKS uses the same kids.
    let thumb = |pem: &str| {
        jwk_for(pem, "x")
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap()
    };
    let jwks = serde_json::json!({"keys": [jwk_for(&k1, &thumb(&k1)), jwk_for(&k2, &thumb(&k2))]});
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    let sts = StsServer::start(&format!(
        "realms:
  client:
    clients:
      web: {{ client_secret: web-secret, grants: [client_credentials], audiences: [backend], scopes: [openid], subject: alice }}
  backend:
    trust: [ {{ realm: client, audiences: [backend] }} ]
    scope_mapping: {{ openid: [profile] }}
    clients:
      tokex: {{ jwks_file: {}, grants: [token_exchange], audiences: [echo-api] }}
",
        dir.path().join("jwks.json").display()
    ))
    .await;
    // Every client_credentials token is distinct (jti), so each forces an exchange.
    let mut subjects = Vec::new();
    for _ in 0..120 {
        let r = sts
            .post(
                "client",
                Some(("web", "web-secret")),
                &[
                    ("grant_type", "client_credentials"),
                    ("audience", "backend"),
                ],
            )
            .await;
        subjects.push(r.json()["access_token"].as_str().unwrap().to_string());
    }
    let subjects = std::sync::Mutex::new(subjects.into_iter());
    let take = || subjects.lock().unwrap().next().unwrap();
    let up = Upstream::start().await;
    let yaml = |key: &Path| {
        format!(
            "authorities:
  main:
    token_endpoint: {}
    issuer: {}
    client_id: tokex
    auth: {{ method: private_key_jwt, private_key_file: {}, alg: ES256 }}
    retries: 0
{}",
            sts.token_endpoint("backend"),
            sts.issuer("backend"),
            key.display(),
            route(&up.url())
        )
    };
    let (key_file, rogue_file) = (dir.path().join("key.pem"), dir.path().join("rogue.pem"));
    std::fs::write(&key_file, &k1).unwrap();
    std::fs::write(&rogue_file, &rogue).unwrap();
    let tokex = Tokex::start(&yaml(&key_file)).await;
    let next = async || get(&tokex, "echo.internal", "/", Some(&take())).await;
    let r = next().await;
    assert_eq!(r.status, 200, "{}", r.body);
    let narrowed = r.json()["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    assert_eq!(claims_of(&narrowed)["client_id"], "tokex");

    let wrong = Tokex::start(&yaml(&rogue_file)).await;
    let r = get(&wrong, "echo.internal", "/", Some(&take())).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (502, Some("exchange_misconfigured")),
        "{}",
        r.body
    );
    assert_eq!(r.json()["authority_error"], "invalid_client");

    // Registered key to registered key: no request fails before or after the check
    // that swaps it in.
    rotate(&key_file, &k2);
    let reloaded = "tokex_credential_reloads_total{result=\"ok\"} 1\n";
    let mut sent = 0;
    while !tokex.metrics().await.contains(reloaded) {
        assert_eq!(next().await.status, 200, "rotation between registered keys");
        assert!(
            sent < 25,
            "the key file was not re-read within one file check"
        );
        sent += 1;
        advance(Duration::from_millis(10)).await;
    }
    assert_eq!(next().await.status, 200, "the second registered key");
    // To an unregistered key: refused from the next check on, so the file really is
    // re-read.
    rotate(&key_file, &rogue);
    advance(FILE_POLL).await;
    assert_eq!(next().await.tokex_error(), Some("exchange_misconfigured"));
    rotate(&key_file, &k1);
    advance(FILE_POLL).await;
    assert_eq!(next().await.status, 200, "rotating back");
}

// -----------------------------------------------------------------------------------
// tls_client_auth: a TLS token endpoint that records the client certificate presented.

struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn pki() -> Pki {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A leaf certificate (PEM) and its key (PEM) signed by `pki`.
fn leaf(pki: &Pki, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, &pki.issuer)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

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

/// Bad credential files are config errors naming the file and key: missing files, a key
/// that does not match the algorithm, an expired assertion, a certificate without its key.
#[test]
fn bad_credential_files_are_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("ec.pem"), ec_key_pem()).unwrap();
    std::fs::write(
        p("expired.jwt"),
        jwt(serde_json::json!({"exp": now() - 10})),
    )
    .unwrap();
    let client = pki();
    let (cert, _) = leaf(&client, "x");
    let (_, other_key) = leaf(&client, "y");
    std::fs::write(p("tls.crt"), cert).unwrap();
    std::fs::write(p("other.key"), other_key).unwrap();
    let cases = [
        (
            "{ method: private_key_jwt, private_key_file: missing.pem }",
            "auth.private_key_file: cannot read",
            "missing.pem",
        ),
        (
            "{ method: private_key_jwt, private_key_file: ec.pem, alg: RS256 }",
            "auth.private_key_file:",
            "is not a RS256 private key",
        ),
        (
            "{ method: private_key_jwt, private_key_file: ec.pem, alg: HS256 }",
            "auth.alg: unsupported alg",
            "HS256",
        ),
        (
            "{ method: client_assertion, assertion_file: expired.jwt }",
            "auth.assertion_file:",
            "expired at",
        ),
        (
            "{ method: tls_client_auth, cert_file: tls.crt, key_file: other.key }",
            "auth.cert_file:",
            "do not form a client identity",
        ),
        (
            "{ method: tls_client_auth, cert_file: tls.crt }",
            "needs key_file",
            "",
        ),
        (
            "{ method: client_secret_post, client_secret_file: nope }",
            "auth.client_secret_file: cannot read",
            "nope",
        ),
    ];
    for (auth, expected, detail) in cases {
        let text = format!(
            "authorities:\n  a:\n    token_endpoint: https://as.example/token\n    client_id: c\n    auth: {auth}\nroutes: []\n"
        );
        let path = p("tokex.yaml");
        std::fs::write(&path, &text).unwrap();
        let err = tokex::config::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:5:", path.display())),
            "{auth}: {err}"
        );
        assert!(
            err.contains(expected) && err.contains(detail),
            "{auth}: {err}"
        );
    }
}

const RSA_PEM: &str = include_str!("fixtures/rsa-2048.pem");

/// private_key_jwt with each supported algorithm (ES256, EdDSA, RS256, PS256) against
/// the embedded STS, which verifies the assertion with the client's JWKS.
#[tokio::test]
async fn private_key_jwt_with_each_algorithm() {
    // openssl-made (PKCS#8 v1, the common form); see fixtures/README.md.
    let ed = include_str!("fixtures/ed25519.pem").to_string();
    let cases = [
        (Algorithm::ES256, "ES256", ec_key_pem()),
        (Algorithm::EdDSA, "EdDSA", ed),
        (Algorithm::RS256, "RS256", RSA_PEM.to_string()),
        (Algorithm::PS256, "PS256", RSA_PEM.to_string()),
    ];
    for (alg, name, pem) in cases {
        let dir = tempfile::tempdir().unwrap();
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(
            jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap(),
        );
        std::fs::write(
            dir.path().join("jwks.json"),
            serde_json::json!({"keys": [jwk]}).to_string(),
        )
        .unwrap();
        std::fs::write(dir.path().join("key.pem"), &pem).unwrap();
        let sts = StsServer::start(&format!(
            "realms:\n  r:\n    clients:\n      tokex: {{ jwks_file: {}, grants: [client_credentials], audiences: [echo-api] }}\n",
            dir.path().join("jwks.json").display()
        ))
        .await;
        let up = Upstream::start().await;
        let yaml = format!(
            "authorities:
  main:
    token_endpoint: {}
    issuer: {}
    client_id: tokex
    auth: {{ method: private_key_jwt, private_key_file: {}, alg: {name} }}
routes:
  - name: echo
    match: {{ host: echo.internal }}
    upstream: {}
    on_missing_token: client_credentials
    exchange: {{ authority: main, audience: echo-api }}
",
            sts.token_endpoint("r"),
            sts.issuer("r"),
            dir.path().join("key.pem").display(),
            up.url()
        );
        let tokex = Tokex::start(&yaml).await;
        let r = get(&tokex, "echo.internal", "/", None).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
}

/// A realm can sign with an RS256 key from a file; its JWKS verifies the tokens.
#[tokio::test]
async fn sts_realm_signs_with_an_rs256_key_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("realm.pem"), RSA_PEM).unwrap();
    let sts = StsServer::start(&format!(
        "realms:\n  r:\n    signing_key: {{ alg: RS256, key_file: {} }}\n    clients:\n      c: {{ client_secret: s, grants: [client_credentials], audiences: [api] }}\n",
        dir.path().join("realm.pem").display()
    ))
    .await;
    let token = sts
        .post(
            "r",
            Some(("c", "s")),
            &[("grant_type", "client_credentials")],
        )
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().alg,
        Algorithm::RS256
    );
    let jwks = got(client()
        .get(format!("{}/realms/r/jwks", sts.base))
        .send()
        .await
        .unwrap())
    .await
    .json();
    let jwk: Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
    v.set_audience(&["api"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &v,
    )
    .unwrap();
    assert_eq!(data.claims["iss"], sts.issuer("r"));
}
