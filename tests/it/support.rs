//! Test helpers: a recording token endpoint that can be told to misbehave, echo
//! upstreams (plain and TLS), and a running tokex, all on ephemeral loopback ports.
//!
//! Everything runs in-process on the test's runtime, which is what lets a test pause
//! time: a loopback write is readable when it returns, so the runtime never idles in
//! the middle of a request and paused time moves only when the test moves it. Servers
//! here set `TCP_NODELAY` for the same reason.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use tokex::proxy::Proxy;
use tokex::server::{self, Listeners};

pub type TestBody = Either<Incoming, Either<Full<Bytes>, FramesBody>>;

/// Aborts the server task when the owner is dropped.
pub struct Task(pub JoinHandle<()>);
impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `handler` on a fresh loopback port (HTTP/1.1 and h2c).
pub async fn serve<F, Fut>(handler: F) -> (SocketAddr, Task)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let (addr, task, _) = serve_counted(handler).await;
    (addr, task)
}

/// [`serve`], counting the connections it accepts.
pub async fn serve_counted<F, Fut>(handler: F) -> (SocketAddr, Task, Arc<AtomicUsize>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nodelay(true);
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, Task(task), connections)
}

pub fn full(status: u16, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut r = Response::new(Either::Right(Either::Left(Full::new(body.into()))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

// ---------------------------------------------------------------------------------------
// The mock authorization server.

/// One request the token endpoint received.
#[derive(Debug, Clone)]
pub struct AsRequest {
    pub headers: HeaderMap,
    pub form: Vec<(String, String)>,
}

impl AsRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the token endpoint answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            body: body.to_string().into_bytes(),
            headers: vec![("content-type", "application/json".into())],
            delay: Duration::ZERO,
        }
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

type Behaviour = Arc<dyn Fn(&AsRequest, usize) -> Reply + Send + Sync>;

/// A token endpoint that records every request and answers as told.
#[derive(Clone)]
pub struct MockAs {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<AsRequest>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    _task: Arc<Task>,
}

/// The default, well-behaved answer: `narrowed-N`, the requested type and scope.
pub fn issue(req: &AsRequest, n: usize) -> Reply {
    issue_with(req, &format!("narrowed-{n}"), Some(300))
}

pub fn issue_with(req: &AsRequest, token: &str, expires_in: Option<u64>) -> Reply {
    let mut body = serde_json::json!({ "access_token": token, "token_type": "Bearer" });
    // A client_credentials response (RFC 6749 §5.1) has no issued_token_type.
    if let Some(t) = req.param("requested_token_type") {
        body["issued_token_type"] = t.into();
    }
    if let Some(e) = expires_in {
        body["expires_in"] = e.into();
    }
    if let Some(s) = req.param("scope") {
        body["scope"] = s.into();
    }
    Reply::json(200, body).header("cache-control", "no-store")
}

impl MockAs {
    pub async fn start() -> Self {
        let requests: Arc<Mutex<Vec<AsRequest>>> = Arc::default();
        let behaviour: Arc<Mutex<Behaviour>> = Arc::new(Mutex::new(Arc::new(issue)));
        let counter = Arc::new(AtomicUsize::new(0));
        let (r, b) = (requests.clone(), behaviour.clone());
        let (addr, task) = serve(move |req: Request<Incoming>| {
            let (r, b, counter) = (r.clone(), b.clone(), counter.clone());
            async move {
                let headers = req.headers().clone();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let form = form_urlencoded::parse(&body).into_owned().collect();
                let recorded = AsRequest { headers, form };
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                r.lock().unwrap().push(recorded.clone());
                let behaviour = b.lock().unwrap().clone();
                let reply = behaviour(&recorded, n);
                tokio::time::sleep(reply.delay).await;
                let mut resp = full(reply.status, reply.body);
                for (k, v) in reply.headers {
                    resp.headers_mut().insert(k, v.parse().unwrap());
                }
                resp
            }
        })
        .await;
        Self {
            addr,
            requests,
            behaviour,
            _task: Arc::new(task),
        }
    }

    pub fn on(&self, f: impl Fn(&AsRequest, usize) -> Reply + Send + Sync + 'static) {
        *self.behaviour.lock().unwrap() = Arc::new(f);
    }

    pub fn requests(&self) -> Vec<AsRequest> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

// ---------------------------------------------------------------------------------------
// Upstreams.

/// One request an upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body_len: usize,
    pub trailers: Option<HeaderMap>,
}

/// An echo upstream. `/stream...` echoes the request body back as it arrives,
/// `/slow...` answers after 2 s, `/redirect` answers 302, `.../grpc` echoes the message
/// with gRPC trailers; anything else answers 200
/// with the Authorization it saw after reading the whole body.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    _task: Arc<Task>,
}

async fn echo(req: Request<Incoming>, seen: Arc<Mutex<Vec<Seen>>>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    let mut record = Seen {
        uri: req.uri().to_string(),
        version: req.version(),
        headers: req.headers().clone(),
        body_len: 0,
        trailers: None,
    };
    if path.ends_with("/grpc") {
        // gRPC-shaped: echo the message, answer with trailers, record request trailers.
        let collected = req.into_body().collect().await.unwrap();
        record.trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        record.body_len = data.len();
        seen.lock().unwrap().push(record);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "ok".parse().unwrap());
        let frames = FramesBody(
            [Frame::data(data), Frame::trailers(trailers)]
                .into_iter()
                .collect(),
        );
        let mut r = Response::new(Either::Right(Either::Right(frames)));
        r.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        return r;
    }
    if path.starts_with("/stream") {
        seen.lock().unwrap().push(record);
        return Response::new(Either::Left(req.into_body()));
    }
    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    record.body_len = body.len();
    seen.lock().unwrap().push(record);
    if path == "/redirect" {
        let mut r = full(302, "");
        r.headers_mut()
            .insert("location", "http://elsewhere.invalid/".parse().unwrap());
        return r;
    }
    full(
        200,
        serde_json::json!({ "authorization": auth, "path": path, "body_len": body.len() })
            .to_string(),
    )
}

impl Upstream {
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        let (addr, task, connections) = serve_counted(move |req| echo(req, s.clone())).await;
        Self {
            addr,
            seen,
            connections,
            _task: Arc::new(task),
        }
    }

    /// An HTTPS echo upstream for `localhost` with a fresh CA (h2 and http/1.1 by
    /// ALPN); returns the CA PEM.
    pub async fn start_tls() -> (Self, String) {
        Self::start_tls_offering(&[b"h2", b"http/1.1"]).await
    }

    /// An HTTPS echo upstream that offers only these protocols by ALPN.
    pub async fn start_tls_offering(alpn: &[&[u8]]) -> (Self, String) {
        let (acceptor, ca_pem) = tls_acceptor_offering(alpn);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, counted) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                // Without it a TLS record can wait in the kernel for the peer's delayed
                // ACK: real time that paused tests cannot see.
                let _ = stream.set_nodelay(true);
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(echo(req, s).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (
            Self {
                addr,
                seen,
                connections,
                _task: Arc::new(Task(task)),
            },
            ca_pem,
        )
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A TLS acceptor for `localhost` (h2 and http/1.1 by ALPN) with a fresh CA, and the
/// CA's PEM.
pub fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    tls_acceptor_offering(&[b"h2", b"http/1.1"])
}

/// [`tls_acceptor`] offering only `alpn`.
pub fn tls_acceptor_offering(alpn: &[&[u8]]) -> (tokio_rustls::TlsAcceptor, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

// ---------------------------------------------------------------------------------------
// tokex itself.

/// A tokex serving in-process on ephemeral ports, with its config in a temp dir.
pub struct Tokex {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Tokex {
    /// Starts tokex with `yaml` (without `listen`/`admin`, which are added).
    pub async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, yaml).await
    }

    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Self {
        let text = format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{yaml}");
        let path = dir.path().join("tokex.yaml");
        std::fs::write(&path, &text).unwrap();
        let config = tokex::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let proxy = Proxy::new(config).unwrap();
        let listeners = Listeners::bind(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let (addr, admin) = (
            listeners.proxy_addr().unwrap(),
            listeners.admin_addr().unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::run(proxy.clone(), listeners, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            admin,
            proxy,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting and waits for the drain.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Exchanges that reached an authority and ended, whatever their outcome.
    pub async fn exchanges_answered(&self) -> usize {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("tokex_exchange_duration_seconds_count{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
            .sum()
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Tokex {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// The config most tests use: authority `main` at `as_`, route `echo` by host.
pub fn config(as_: &MockAs, upstream: &str) -> String {
    format!(
        "authorities:
  main:
    token_endpoint: {}
    client_id: tokex-test
    auth: {{ method: client_secret_basic, client_secret: test-client-secret }}
    timeout: 1s
    retries: 0
routes:
  - name: echo
    match: {{ host: echo.internal }}
    upstream: {upstream}
    timeout: 1s
    exchange: {{ authority: main, audience: echo-api, scope: read write }}
",
        as_.endpoint()
    )
}

// ---------------------------------------------------------------------------------------
// Modes: how the app speaks to tokex and how tokex reaches the upstream.

/// The app's protocol and the upstream's scheme a test runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// h2c with prior knowledge from the app, instead of HTTP/1.1.
    pub h2c: bool,
    /// An https upstream (TLS by a CA the route trusts by `ca_file`, h2 by ALPN).
    pub tls: bool,
}

/// Runs each `async fn(Mode)` test once per app protocol and upstream scheme, as a
/// module of four tests named after the mode. With `paused:` first, time is paused: a
/// timeout or a slow server's delay passes as soon as nothing else can happen.
macro_rules! each_mode {
    (paused: $($test:ident),* $(,)?) => {
        $crate::support::each_mode!(@with tokio::test(start_paused = true); $($test),*);
    };
    (@with $attr:meta; $($test:ident),*) => {$(
        mod $test {
            use crate::support::Mode;
            /// The test above, HTTP/1.1 from the app to an http upstream.
            #[$attr]
            async fn h1_to_http() {
                super::$test(Mode { h2c: false, tls: false }).await
            }
            /// The test above, HTTP/1.1 from the app to an https upstream.
            #[$attr]
            async fn h1_to_https() {
                super::$test(Mode { h2c: false, tls: true }).await
            }
            /// The test above, h2c from the app to an http upstream.
            #[$attr]
            async fn h2c_to_http() {
                super::$test(Mode { h2c: true, tls: false }).await
            }
            /// The test above, h2c from the app to an https upstream.
            #[$attr]
            async fn h2c_to_https() {
                super::$test(Mode { h2c: true, tls: true }).await
            }
        }
    )*};
    ($($test:ident),* $(,)?) => {
        $crate::support::each_mode!(@with tokio::test; $($test),*);
    };
}
pub(crate) use each_mode;

/// An echo upstream in a mode's scheme, with what a route needs to reach it.
pub struct Echo {
    pub up: Upstream,
    /// The URL routes forward to.
    pub url: String,
    /// For https: the CA file routes trust (`ca_file`), kept in a temp dir.
    ca: Option<(std::path::PathBuf, tempfile::TempDir)>,
}

impl Echo {
    pub async fn start(mode: Mode) -> Self {
        if !mode.tls {
            let up = Upstream::start().await;
            return Self {
                url: up.url(),
                up,
                ca: None,
            };
        }
        let (up, ca_pem) = Upstream::start_tls().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca_pem).unwrap();
        Self {
            url: format!("https://localhost:{}", up.addr.port()),
            up,
            ca: Some((path, dir)),
        }
    }

    /// The lines a route to this upstream adds after `upstream:` (indented for a route).
    pub fn route_lines(&self) -> String {
        match &self.ca {
            Some((path, _)) => format!("    ca_file: {}\n", path.display()),
            None => String::new(),
        }
    }

    /// The authority the upstream saw a request for (`Host`, or HTTP/2's `:authority`).
    pub fn authority_of(seen: &Seen) -> String {
        match seen.headers.get("host") {
            Some(h) => h.to_str().unwrap().to_string(),
            None => seen
                .uri
                .parse::<http::Uri>()
                .unwrap()
                .authority()
                .unwrap()
                .to_string(),
        }
    }

    /// The authority a request to this upstream names.
    pub fn authority(&self) -> String {
        self.url.split("://").nth(1).unwrap().to_string()
    }
}

impl Seen {
    /// The path and query the upstream saw, whatever form the target had.
    pub fn target(&self) -> String {
        let uri: http::Uri = self.uri.parse().unwrap();
        uri.path_and_query().unwrap().to_string()
    }
}

/// `config` for an echo upstream of any scheme: the route trusts its CA.
pub fn config_for(as_: &MockAs, echo: &Echo) -> String {
    with_route_lines(&config(as_, &echo.url), &echo.route_lines())
}

/// Adds `lines` to every route of `yaml`, after its `upstream:`.
pub fn with_route_lines(yaml: &str, lines: &str) -> String {
    let mut out = String::new();
    for line in yaml.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("upstream:") {
            out.push_str(lines);
        }
    }
    out
}

/// A client that sends to tokex in `mode`'s protocol with `host` as the request's
/// authority: `Host` for HTTP/1.1, `:authority` for h2c (the name resolves to tokex).
pub fn app_client(mode: Mode, tokex: &Tokex, host: &str) -> (reqwest::Client, String) {
    if !mode.h2c {
        return (client(), tokex.url(""));
    }
    let name = host.split(':').next().unwrap();
    let c = app_builder()
        .http2_prior_knowledge()
        .resolve(name, tokex.addr)
        .build()
        .unwrap();
    (c, format!("http://{name}:{}", tokex.addr.port()))
}

/// A request builder for `path` on tokex with `host` as its authority, in `mode`.
pub fn request_in(
    mode: Mode,
    tokex: &Tokex,
    method: http::Method,
    host: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    let (c, base) = app_client(mode, tokex, host);
    let req = c.request(method, format!("{base}{path}"));
    if mode.h2c {
        req
    } else {
        req.header("host", host)
    }
}

/// GET `path` with `host` and, if given, `Authorization: Bearer token`, in `mode`.
pub async fn get_in(mode: Mode, tokex: &Tokex, host: &str, path: &str, token: Option<&str>) -> Got {
    let mut req = request_in(mode, tokex, http::Method::GET, host, path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    got(req.send().await.unwrap()).await
}

/// One app connection to tokex over hyper's client, in a mode's protocol.
pub enum AppConn {
    Http1(hyper::client::conn::http1::SendRequest<ChannelBody>),
    H2c(hyper::client::conn::http2::SendRequest<ChannelBody>),
}

impl AppConn {
    pub async fn connect(mode: Mode, tokex: &Tokex) -> Self {
        let io = TokioIo::new(TcpStream::connect(tokex.addr).await.unwrap());
        if mode.h2c {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Self::H2c(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Self::Http1(sender)
        }
    }

    /// A request for `path` at `host`: `Host` for HTTP/1.1, the URI's authority for h2c.
    pub fn request(&self, method: http::Method, host: &str, path: &str) -> http::request::Builder {
        match self {
            Self::Http1(_) => Request::builder()
                .method(method)
                .uri(path)
                .header("host", host),
            Self::H2c(_) => Request::builder()
                .method(method)
                .uri(format!("http://{host}{path}")),
        }
    }

    pub async fn send(&mut self, req: Request<ChannelBody>) -> Response<Incoming> {
        match self {
            Self::Http1(s) => s.send_request(req).await.unwrap(),
            Self::H2c(s) => s.send_request(req).await.unwrap(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The app side.

/// A plain HTTP client that reads no proxy variables and follows no redirects.
pub fn client() -> reqwest::Client {
    app_builder().build().unwrap()
}

/// What every app-side client starts from. The TLS settings are made once: reading the
/// system's roots anew for each client would cost every request milliseconds.
fn app_builder() -> reqwest::ClientBuilder {
    static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls =
        TLS.get_or_init(|| tokex::tls::client_config(None, None, &[b"h2", b"http/1.1"]).unwrap());
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
}

/// A response as the app sees it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
    pub fn tokex_error(&self) -> Option<&str> {
        self.headers.get("tokex-error").map(|v| v.to_str().unwrap())
    }
}

/// GET `path` on tokex with `Host: host` and, if given, `Authorization: Bearer token`.
pub async fn get(tokex: &Tokex, host: &str, path: &str, token: Option<&str>) -> Got {
    let mut req = client().get(tokex.url(path)).header("host", host);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    got(req.send().await.unwrap()).await
}

pub async fn got(resp: reqwest::Response) -> Got {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Got {
        status,
        headers,
        body,
    }
}

/// A JWT-shaped token with the given claims (unsigned: tokex never verifies it).
pub fn jwt(claims: serde_json::Value) -> String {
    use base64::Engine;
    let enc = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2ln",
        enc(&serde_json::json!({"alg": "none"})),
        enc(&claims)
    )
}

/// Seconds since the Unix epoch on tokex's clock, which paused tests advance.
pub fn now() -> u64 {
    tokex::clock::unix_now()
}

// ---------------------------------------------------------------------------------------
// Waiting for a condition.

/// How often tokex checks its config and credential files (documented: every 250 ms).
pub const FILE_POLL: Duration = Duration::from_millis(250);

/// Polls `done` every 5 ms until it holds, and fails the test with `what` after 5 s of
/// real time. For waits on something that takes its own time: a file poller on the real
/// clock, a child process writing its log.
pub async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    // Real time, so the bound holds on paused time too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lets every other task run, without moving the clock, until `done` holds; fails the
/// test with `what` after 10 000 rounds. For paused-time tests that wait for work already
/// under way (a background refresh, bytes on loopback), so that what they check next
/// still happens at the virtual instant they chose.
pub async fn settled(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..10_000 {
        if done().await {
            return;
        }
        // Yielding lets the runtime poll its sockets without moving paused time.
        tokio::task::yield_now().await;
    }
    panic!("not settled after 10 000 rounds: {what}");
}

/// A request body fed chunk by chunk from a channel, for streaming tests.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A body of fixed frames, trailers included.
pub struct FramesBody(pub std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for FramesBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

// ---------------------------------------------------------------------------------------
// The embedded authorization server.

/// `tokex sts` in-process on an ephemeral port, configured from YAML (without `listen`).
pub struct StsServer {
    pub base: String,
    pub sts: Arc<tokex::sts::Sts>,
    _task: Task,
}

impl StsServer {
    pub async fn start(yaml: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = tokex::sts::config::parse(yaml, std::path::Path::new("sts.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let sts = tokex::sts::Sts::new(config, &base).unwrap();
        let task = tokio::spawn(sts.clone().serve(listener, std::future::pending()));
        Self {
            base,
            sts,
            _task: Task(task),
        }
    }

    /// `http://127.0.0.1:PORT/realms/{realm}/token`.
    pub fn token_endpoint(&self, realm: &str) -> String {
        format!("{}/realms/{realm}/token", self.base)
    }

    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.base)
    }

    /// POSTs a form to a realm's token endpoint, optionally with HTTP Basic credentials.
    pub async fn post(
        &self,
        realm: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Got {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = client()
            .post(self.token_endpoint(realm))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        got(req.send().await.unwrap()).await
    }
}

/// The claims of a JWT (unverified; tests check the STS's own output).
pub fn claims_of(token: &str) -> serde_json::Value {
    serde_json::Value::Object(tokex::bearer::jwt_claims(token).expect("a JWT"))
}

// ---------------------------------------------------------------------------------------
// The tokex binary in a subprocess.

/// A `tokex` process with its stderr collected.
pub struct Spawned {
    pub child: tokio::process::Child,
    /// The first stderr line containing the ready marker.
    pub ready: String,
    log: Arc<Mutex<String>>,
    /// The thread collecting stderr; it ends when the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Runs `tokex args...` with `env` and waits (20 s at most) for a stderr line containing
/// `ready`. The trust-root variables of the machine running the tests are not passed on
/// (only those in `env`), so what tokex trusts does not depend on it.
pub async fn spawn_tokex<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    env: &[(&str, &str)],
    ready: &str,
) -> Spawned {
    use std::io::BufRead;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokex"))
        .args(args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap().into_owned_fd().unwrap();
    let log: Arc<Mutex<String>> = Arc::default();
    let (l, (tx, rx), marker) = (
        log.clone(),
        std::sync::mpsc::channel::<String>(),
        ready.to_string(),
    );
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(std::fs::File::from(stderr))
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(&marker) {
                let _ = tx.send(line.clone());
            }
            l.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let ready =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)).unwrap())
            .await
            .unwrap();
    Spawned {
        child,
        ready,
        log,
        reader: Some(reader),
    }
}

impl Spawned {
    /// The address after `listen=` on the ready line.
    pub fn listen(&self) -> String {
        let after = self
            .ready
            .split("listen=")
            .nth(1)
            .unwrap_or_else(|| panic!("no listen= in {}", self.ready));
        after.split_whitespace().next().unwrap().to_string()
    }

    /// Everything written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits up to 20 s for the exit and for the rest of its stderr,
    /// so [`Spawned::log`] is complete afterwards.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        if let Some(reader) = self.reader.take() {
            tokio::task::spawn_blocking(move || reader.join().unwrap())
                .await
                .unwrap();
        }
        status
    }
}

// ---------------------------------------------------------------------------------------
// Raw app connections.

/// Reads one message (head and body, framed by Content-Length or chunked coding, whose
/// chunks it joins) from `s`, `buf` holding what was read before; `None` at EOF or on a
/// malformed message.
pub async fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    read_message_teed(s, buf, None).await
}

/// [`read_message`], also appending every byte read from `s` to `tee`.
async fn read_message_teed(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    tee: Option<&Mutex<Vec<u8>>>,
) -> Option<(String, Vec<u8>)> {
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(s, buf, tee).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
    buf.drain(..end + 4);
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let chunked = field("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if !chunked {
        let len = field("content-length").map_or(0, |v| v.parse::<usize>().unwrap());
        while buf.len() < len {
            fill(s, buf, tee).await?;
        }
        return Some((head, buf.drain(..len).collect()));
    }
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            fill(s, buf, tee).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    buf.drain(..i + 2);
                    if i == 0 {
                        return Some((head, body));
                    }
                } else {
                    fill(s, buf, tee).await?;
                }
            }
        }
        while buf.len() < size + 2 {
            fill(s, buf, tee).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Reads more of `s` into `buf` (and `tee`); `None` at EOF or on an error.
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, tee: Option<&Mutex<Vec<u8>>>) -> Option<()> {
    let mut more = [0u8; 8192];
    match s.read(&mut more).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&more[..n]);
            if let Some(tee) = tee {
                tee.lock().unwrap().extend_from_slice(&more[..n]);
            }
            Some(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// A scripted raw upstream, for faults a well-behaved server never commits.

/// What the scripted upstream does with one request.
pub enum Act {
    /// Write these pieces (a short pause between them), keep the connection.
    Reply(Vec<&'static [u8]>),
    /// Write the reply, then close.
    ReplyClose(&'static [u8]),
    /// Close without answering.
    Drop,
}

/// One request as the scripted upstream parsed it.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub connection: usize,
    pub head: String,
    pub body: Vec<u8>,
}

/// A raw upstream answering by `script(path, connection number, request number on
/// it)`, recording every byte it received and every request it parsed.
pub struct Scripted {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    parsed: Arc<Mutex<Vec<Parsed>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    _task: Task,
}

type Script = fn(&str, usize, usize) -> Act;

impl Scripted {
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let parsed: Arc<Mutex<Vec<Parsed>>> = Arc::default();
        let raw: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (c, p, r) = (connections.clone(), parsed.clone(), raw.clone());
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(scripted_conn(stream, n, script, p.clone(), r.clone()));
            }
        });
        Self {
            addr,
            connections,
            parsed,
            raw,
            _task: Task(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request heads it parsed, in order.
    pub fn heads(&self) -> Vec<String> {
        self.parsed().into_iter().map(|p| p.head).collect()
    }

    pub fn parsed(&self) -> Vec<Parsed> {
        self.parsed.lock().unwrap().clone()
    }

    /// Every byte it received, on all connections.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().unwrap()).to_string()
    }
}

async fn scripted_conn(
    mut s: TcpStream,
    connection: usize,
    script: Script,
    parsed: Arc<Mutex<Vec<Parsed>>>,
    raw: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = Vec::new();
    for nth in 1.. {
        let Some((head, body)) = read_message_teed(&mut s, &mut buf, Some(&raw)).await else {
            return;
        };
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        parsed.lock().unwrap().push(Parsed {
            connection,
            head,
            body,
        });
        match script(&path, connection, nth) {
            Act::Reply(pieces) => {
                for piece in pieces {
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Act::ReplyClose(reply) => {
                let _ = s.write_all(reply).await;
                return;
            }
            Act::Drop => return,
        }
    }
}

/// One app connection: raw writes, and reads of whole responses.
pub struct App {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl App {
    pub async fn connect(tokex: &Tokex) -> Self {
        Self {
            s: TcpStream::connect(tokex.addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Forgets what was read so far.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub async fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).await.unwrap();
    }

    /// Reads until `needle` has been seen `times` times in all bytes received so far.
    pub async fn read_until(&mut self, needle: &str, times: usize) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = String::from_utf8_lossy(&self.buf).to_string();
            if text.matches(needle).count() >= times {
                return text;
            }
            let mut more = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.s.read(&mut more))
                .await
                .unwrap_or_else(|_| panic!("timed out; got so far: {text:?}"))
                .unwrap();
            assert!(n > 0, "closed early; got so far: {text:?}");
            self.buf.extend_from_slice(&more[..n]);
        }
    }

    /// Reads one whole response (Content-Length framed): its head and body.
    pub async fn response(&mut self) -> (String, Vec<u8>) {
        tokio::time::timeout(
            Duration::from_secs(5),
            read_message(&mut self.s, &mut self.buf),
        )
        .await
        .expect("a response within 5 s")
        .expect("a response before the connection closed")
    }

    /// Reads to EOF.
    pub async fn read_to_close(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.s.read_to_end(&mut self.buf))
            .await
            .expect("tokex closes the connection")
            .unwrap();
        String::from_utf8_lossy(&self.buf).to_string()
    }
}
