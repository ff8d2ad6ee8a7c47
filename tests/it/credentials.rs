//! The credentials tokex presents: every client authentication method, and rotation of
//! every credential file (secrets, keys, assertions, certificates, actor tokens, CA
//! bundles) while requests flow, with no failed request.
//!
//! Time is paused: tokex checks credential files every 250 ms of its clock, so each
//! rotation test shows the new file in use by the first request after the next check.
//!
//! - [`files`]: client secrets, assertions and actor tokens, and files that do not load.
//! - [`private_key_jwt`]: signed assertions against the embedded STS, every algorithm.
//! - [`mtls`]: client certificates to a TLS token endpoint, and upstream CA bundles.

mod files;
mod mtls;
mod private_key_jwt;

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

/// A CA: its certificate, and what signs with its key.
struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A fresh CA for client and server certificates.
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

const RSA_PEM: &str = include_str!("fixtures/rsa-2048.pem");
