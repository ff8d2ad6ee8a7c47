//! `tokex inject` over real HTTPS: a webhook served on 127.0.0.1:0 with a certificate from
//! a test CA, reviews posted the way the API server posts them, and the certificate
//! rotated under it the way the kubelet updates a mounted Secret (an atomic `..data`
//! symlink swap).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokex_inject::server::{self, Webhook};

/// A CA and the certificates it issues for `localhost`.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf for localhost: (certificate PEM, key PEM, certificate DER).
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// A running webhook and what the tests need to reach it.
struct Running {
    addr: SocketAddr,
    webhook: Arc<Webhook>,
    ca: Ca,
    dir: tempfile::TempDir,
    version: u32,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Writes a Secret-like volume at `dir`: `tls.crt` and `tls.key` are symlinks through
/// `..data` to a versioned directory, swapped atomically on each call.
fn write_pair(dir: &Path, version: u32, cert: &str, key: &str) {
    let versioned = dir.join(format!("..v{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), cert).unwrap();
    std::fs::write(versioned.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

async fn start() -> (Running, Vec<u8>) {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = ca.leaf();
    write_pair(dir.path(), 1, &cert, &key);
    let config_path = dir.path().join("inject.yaml");
    std::fs::write(
        &config_path,
        "inject:\n  listen: 127.0.0.1:0\n  cert_file: tls.crt\n  key_file: tls.key\n  image: ghcr.io/example/tokex:0.1.0\n",
    )
    .unwrap();
    let config = tokex_inject::config::load(&config_path).unwrap();
    let webhook = Webhook::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(webhook.clone(), listener, async {
        let _ = stopped.await;
    }));
    let task = tokio::spawn(async move {
        task.await.unwrap().unwrap();
    });
    let running = Running {
        addr,
        webhook,
        ca,
        dir,
        version: 1,
        stop: Some(stop),
        task,
    };
    (running, der)
}

impl Running {
    fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls_pki_types::pem::PemObject::from_pem_slice(self.ca.pem.as_bytes()).unwrap();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    fn client(&self) -> reqwest::Client {
        let mut tls = self.client_config();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Posts `body` to /inject: status and body.
    async fn post(&self, body: Vec<u8>) -> (u16, Vec<u8>) {
        let r = self
            .client()
            .post(self.url("/inject"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    /// Posts `review`, expecting 200: the response object.
    async fn review(&self, review: &Value) -> Value {
        let (status, body) = self.post(serde_json::to_vec(review).unwrap()).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let out: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(out["kind"], "AdmissionReview");
        out["response"].clone()
    }

    /// The certificate a new TLS handshake is served.
    async fn served_cert(&self) -> Vec<u8> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.client_config()));
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }

    /// Swaps in a new pair and waits until the webhook has acted on the change.
    async fn rotate(&mut self, cert: &str, key: &str) {
        let before = self.webhook.cert.changes();
        self.version += 1;
        write_pair(self.dir.path(), self.version, cert, key);
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.webhook.cert.changes() == before {
                tokio::time::sleep(server::POLL_EVERY / 5).await;
            }
        })
        .await
        .expect("the webhook noticed the rotated files");
        assert_eq!(
            self.webhook.cert.changes(),
            before + 1,
            "one swap, one change"
        );
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

fn review(uid: &str, kind: Value, operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": kind,
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "orders",
            "operation": operation,
            "userInfo": { "username": "test" },
            "object": object,
        }
    })
}

fn pod(annotations: Value, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "orders", "namespace": "orders", "annotations": annotations, "labels": labels },
        "spec": { "containers": [{ "name": "app", "image": "registry.example.com/orders:1" }] }
    })
}

fn pod_kind() -> Value {
    json!({ "group": "", "version": "v1", "kind": "Pod" })
}

/// A pod with its config annotation comes back allowed, with the request's uid and a
/// base64 JSON Patch that applies to the pod and adds the sidecar first.
#[tokio::test]
async fn allowed_with_patch() {
    let (w, _) = start().await;
    let object = pod(json!({ "tokex.io/config": "orders-tokex" }), json!({}));
    let r = w
        .review(&review("uid-1", pod_kind(), "CREATE", object.clone()))
        .await;
    assert_eq!(
        (r["uid"].as_str(), r["allowed"].as_bool()),
        (Some("uid-1"), Some(true))
    );
    assert_eq!(r["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut patched = object;
    json_patch::patch(&mut patched, &patch.0).unwrap();
    assert_eq!(patched["spec"]["initContainers"][0]["name"], "tokex");
    assert_eq!(
        patched["spec"]["initContainers"][0]["restartPolicy"],
        "Always"
    );
    assert_eq!(patched["metadata"]["labels"]["tokex.io/injected"], "true");
    w.stop().await;
}

/// An opted-out pod, a pod's UPDATE and another kind are allowed with no patch; `POST /`
/// answers like `/inject`.
#[tokio::test]
async fn allowed_without_patch() {
    let (w, _) = start().await;
    let opted_out = pod(
        json!({ "tokex.io/config": "orders-tokex" }),
        json!({ "tokex.io/inject": "disabled" }),
    );
    let update = pod(json!({ "tokex.io/config": "orders-tokex" }), json!({}));
    let deployment = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "x" }, "spec": {} });
    let deployment_kind = json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    for (uid, r) in [
        ("a", review("a", pod_kind(), "CREATE", opted_out)),
        ("b", review("b", pod_kind(), "UPDATE", update)),
        ("c", review("c", deployment_kind, "CREATE", deployment)),
    ] {
        let got = w.review(&r).await;
        assert_eq!(got["uid"], uid);
        assert_eq!(got["allowed"], true, "{uid}");
        assert!(
            got.get("patch").is_none() && got.get("patchType").is_none(),
            "{uid}: {got}"
        );
    }
    let root = w
        .client()
        .post(w.url("/"))
        .body(
            serde_json::to_vec(&review(
                "d",
                pod_kind(),
                "DELETE",
                pod(json!({}), json!({})),
            ))
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 200);
    let body: Value = serde_json::from_slice(&root.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (
            body["response"]["uid"].as_str(),
            body["response"]["allowed"].as_bool()
        ),
        (Some("d"), Some(true))
    );
    w.stop().await;
}

/// Without tokex.io/config, and with a malformed annotation, the pod is denied with a
/// message naming the annotation.
#[tokio::test]
async fn denied_with_message() {
    let (w, _) = start().await;
    let missing = pod(json!({}), json!({ "tokex.io/inject": "enabled" }));
    let r = w
        .review(&review("no-config", pod_kind(), "CREATE", missing))
        .await;
    assert_eq!(
        (r["uid"].as_str(), r["allowed"].as_bool()),
        (Some("no-config"), Some(false))
    );
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("tokex.io/config"),
        "{r}"
    );
    let bad = pod(
        json!({ "tokex.io/config": "orders-tokex", "tokex.io/proxy-cpu-request": "lots" }),
        json!({}),
    );
    let r = w.review(&review("bad", pod_kind(), "CREATE", bad)).await;
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("tokex.io/proxy-cpu-request"),
        "{r}"
    );
    w.stop().await;
}

/// Bodies that are no v1 AdmissionReview are 400 with a message saying what is wrong.
#[tokio::test]
async fn malformed_review_is_400() {
    let (w, _) = start().await;
    let mut v1beta1 = review("x", pod_kind(), "CREATE", pod(json!({}), json!({})));
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let no_request = json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview" });
    let no_metadata = review(
        "y",
        pod_kind(),
        "CREATE",
        json!({ "kind": "Pod", "spec": { "containers": [] } }),
    );
    for (body, says) in [
        (b"{not json".to_vec(), "malformed AdmissionReview"),
        (serde_json::to_vec(&v1beta1).unwrap(), "apiVersion"),
        (serde_json::to_vec(&no_request).unwrap(), "no request"),
        (serde_json::to_vec(&no_metadata).unwrap(), "metadata"),
    ] {
        let (status, text) = w.post(body).await;
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(says), "{text}");
    }
    w.stop().await;
}

/// A body past the limit is refused with 413, and the server keeps serving.
#[tokio::test]
async fn oversized_body_is_413() {
    let (w, _) = start().await;
    let (status, _) = w.post(vec![b' '; server::MAX_BODY + 1]).await;
    assert_eq!(status, 413);
    let health = w.client().get(w.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    w.stop().await;
}

/// The probes answer on the same HTTPS listener, over HTTP/2 and HTTP/1.1.
#[tokio::test]
async fn probes_answer_over_both_protocols() {
    let (w, _) = start().await;
    for path in ["/healthz", "/readyz"] {
        let r = w.client().get(w.url(path)).send().await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.version()),
            (200, reqwest::Version::HTTP_2)
        );
        let mut tls = w.client_config();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let h1 = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap();
        let r = h1.get(w.url(path)).send().await.unwrap();
        assert_eq!(
            (r.status().as_u16(), r.version()),
            (200, reqwest::Version::HTTP_11)
        );
    }
    let r = w.client().get(w.url("/inject")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    w.stop().await;
}

/// A rotated certificate is served to new handshakes without a restart; a rotated pair
/// that does not load (a key of another certificate) keeps the last good one serving.
#[tokio::test]
async fn certificate_rotates_while_serving() {
    let (mut w, first) = start().await;
    assert_eq!(w.served_cert().await, first);

    let (cert, key, second) = w.ca.leaf();
    w.rotate(&cert, &key).await;
    assert_eq!(
        w.served_cert().await,
        second,
        "new handshakes see the new certificate"
    );

    let (other_cert, _, _) = w.ca.leaf();
    w.rotate(&other_cert, &key).await;
    assert_eq!(
        w.served_cert().await,
        second,
        "a bad pair keeps the last good one"
    );
    let r = w
        .review(&review(
            "after",
            pod_kind(),
            "CREATE",
            pod(json!({ "tokex.io/config": "c" }), json!({})),
        ))
        .await;
    assert_eq!(r["allowed"], true);

    let (cert, key, third) = w.ca.leaf();
    w.rotate(&cert, &key).await;
    assert_eq!(
        w.served_cert().await,
        third,
        "a good pair after a bad one is picked up"
    );
    w.stop().await;
}

/// A missing or mismatched pair at start is an error naming the file.
#[test]
fn unusable_pair_at_start_names_the_file() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = ca.leaf();
    let (_, key, _) = ca.leaf();
    let (c, k): (PathBuf, PathBuf) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let e = tokex_inject::certs::ServingCert::load(&c, &k).unwrap_err();
    assert!(e.contains("tls.crt"), "{e}");
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    let e = tokex_inject::certs::ServingCert::load(&c, &k).unwrap_err();
    assert!(e.contains("not a certificate and its key"), "{e}");
}
