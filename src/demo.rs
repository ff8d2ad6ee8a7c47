//! `tokex demo`: the whole flow on one machine, no setup.
//!
//! On loopback: a "client" authority that issues user tokens, a "backend" authority that
//! trusts it and holds scope mappings and claim rules (`read:calendar` becomes
//! `calendar.events.read`, admins get `write:documents`), an echo upstream that reports
//! the claims of the token it received, and the sidecar routing
//! `orders.internal` to it with tokex's own identity as actor, and `orders-chained.internal`
//! by identity chaining: a JWT grant from the client authority, presented to the backend
//! with the jwt-bearer grant. It sends one request on each route, prints the subject and
//! exchanged claims side by side, then serves until Ctrl-C.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

mod report;

use crate::cli::{EXIT_CONFIG, EXIT_RUNTIME};
use tokex::proxy::Proxy;
use tokex::server::{self, Listeners};
use tokex_sts::Sts;

const STS_CONFIG: &str = "
realms:
  client:                       # the client authority: users of the web application
    token_ttl: 1h
    clients:
      web-app:                  # mints alice's user token (client_credentials, demo only)
        client_secret: demo-web-secret
        grants: [client_credentials]
        audiences: [backend]
        scopes: [openid, read:calendar]
        subject: alice
        claims: { name: Alice, email: alice@example.com, group: [staff, admin], department: engineering }
      orders-service:           # the workload tokex runs beside: its identity is the actor
        client_secret: demo-orders-secret
        grants: [client_credentials]
        audiences: [backend]
      tokex:                    # identity chaining, leg one: grants for the backend authority
        client_secret: demo-tokex-client-secret
        grants: [token_exchange]
        audiences: ['BACKEND_ISSUER']
    trust:
      - { realm: client, audiences: [backend] }
    claims:
      copy: [email, group, department]
  backend:                      # the backend authority: internal services
    token_ttl: 10m
    trust:
      - { realm: client, audiences: [backend] }
    clients:
      tokex:                    # token exchange, and leg two of identity chaining
        client_secret: demo-tokex-secret
        grants: [token_exchange, jwt_bearer]
        audiences: [orders-api]
    scope_mapping:
      openid: [email, profile]
      read:calendar: [calendar.events.read]
    claim_rules:
      - { claim: group, contains: admin, grant: [write:documents] }
      - { claim: department, equals: marketing, grant: [read:analytics] }
    claims:
      copy: [email, department]
      rename: { department: dept }
";

/// Runs the demo with the sidecar on `listen`; returns when interrupted.
pub async fn run(listen: SocketAddr) -> ExitCode {
    match start(listen).await {
        Ok(demo) => {
            println!("{}", demo.report);
            server_until_signal(demo).await
        }
        Err((code, message)) => {
            eprintln!("demo: {message}");
            ExitCode::from(code)
        }
    }
}

struct Running {
    report: String,
    proxy: Arc<Proxy>,
    listeners: Listeners,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: TempDir,
}

async fn server_until_signal(demo: Running) -> ExitCode {
    let Running {
        proxy,
        listeners,
        _tasks,
        _dir,
        ..
    } = demo;
    server::run(proxy, listeners, crate::cli::shutdown_signal()).await;
    for t in _tasks {
        t.abort();
    }
    ExitCode::SUCCESS
}

type Failure = (u8, String);

async fn start(listen: SocketAddr) -> Result<Running, Failure> {
    let runtime = |e: &dyn std::fmt::Display| (EXIT_RUNTIME, e.to_string());
    let sts_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| runtime(&e))?;
    let base = format!(
        "http://{}",
        sts_listener.local_addr().map_err(|e| runtime(&e))?
    );
    // The client realm addresses its grants to the backend realm by its issuer URL.
    let sts_yaml = STS_CONFIG.replace("BACKEND_ISSUER", &format!("{base}/realms/backend"));
    let sts_config = tokex_sts::config::parse(&sts_yaml, Path::new("demo-sts.yaml"))
        .map_err(|e| (EXIT_CONFIG, e.to_string()))?;
    let sts = Sts::new(sts_config, &base).map_err(|e| runtime(&e))?;
    let mut tasks = vec![tokio::spawn(
        sts.clone().serve(sts_listener, std::future::pending()),
    )];
    let upstream = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| runtime(&e))?;
    let upstream_addr = upstream.local_addr().map_err(|e| runtime(&e))?;
    tasks.push(tokio::spawn(echo_upstream(upstream)));

    let client_token = format!("{base}/realms/client/token");
    let user_token = mint(
        &client_token,
        "web-app",
        "demo-web-secret",
        "openid read:calendar",
    )
    .await?;
    let actor_token = mint(&client_token, "orders-service", "demo-orders-secret", "").await?;
    let dir = TempDir::new().map_err(|e| runtime(&e))?;
    let actor_file = dir.0.join("actor.jwt");
    std::fs::write(&actor_file, &actor_token).map_err(|e| runtime(&e))?;

    let listeners =
        match Listeners::bind(listen, "127.0.0.1:0".parse().map_err(|e| runtime(&e))?).await {
            Ok(l) => l,
            Err(e) => {
                return Err((
                    EXIT_RUNTIME,
                    format!("cannot listen on {listen}: {e} (try --listen 127.0.0.1:0)"),
                ));
            }
        };
    let sidecar_addr = listeners.proxy_addr().map_err(|e| runtime(&e))?;
    let yaml = format!(
        "listen: {sidecar_addr}
admin: {admin}
authorities:
  client:
    token_endpoint: {base}/realms/client/token
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: demo-tokex-client-secret }}
    actor_token: {{ file: {actor}, type: urn:ietf:params:oauth:token-type:jwt }}
  backend-grants:               # the backend again, for the jwt-bearer leg: it takes no actor
    token_endpoint: {base}/realms/backend/token
    issuer: {base}/realms/backend
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: demo-tokex-secret }}
  backend:
    token_endpoint: {base}/realms/backend/token
    client_id: tokex
    auth: {{ method: client_secret_basic, client_secret: demo-tokex-secret }}
    actor_token: {{ file: {actor}, type: urn:ietf:params:oauth:token-type:jwt }}
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: http://{upstream_addr}
    exchange:
      authority: backend
      audience: orders-api
      scope: email profile calendar.events.read write:documents read:analytics
  - name: orders-chained
    match: {{ host: orders-chained.internal }}
    upstream: http://{upstream_addr}
    exchange:
      chain:
        - authority: client
        - authority: backend-grants
          scope: email calendar.events.read
",
        admin = listeners.admin_addr().map_err(|e| runtime(&e))?,
        actor = actor_file.display(),
    );
    let config = tokex::config::parse(&yaml, &dir.0.join("tokex.yaml"))
        .map_err(|e| (EXIT_CONFIG, e.to_string()))?;
    let proxy = Proxy::new(config).map_err(|e| runtime(&e))?;

    // The sample request goes through the real listener, so serve it first.
    let probe = Listeners::bind(
        "127.0.0.1:0".parse().map_err(|e| runtime(&e))?,
        "127.0.0.1:0".parse().map_err(|e| runtime(&e))?,
    )
    .await
    .map_err(|e| runtime(&e))?;
    let probe_addr = probe.proxy_addr().map_err(|e| runtime(&e))?;
    let (stop_probe, probe_stopped) = tokio::sync::oneshot::channel::<()>();
    let probe_task = tokio::spawn(server::run(proxy.clone(), probe, async {
        let _ = probe_stopped.await;
    }));
    let answer = sample_request(probe_addr, "orders.internal", &user_token).await;
    let chained = sample_request(probe_addr, "orders-chained.internal", &user_token).await;
    let _ = stop_probe.send(());
    let _ = probe_task.await;
    let (answer, chained) = (answer?, chained?);
    let report = report::report(&user_token, &answer, &chained, sidecar_addr);
    Ok(Running {
        report,
        proxy,
        listeners,
        _tasks: tasks,
        _dir: dir,
    })
}

fn http_client() -> Result<reqwest::Client, Failure> {
    let builder =
        tokex::tls::reqwest_builder(None, None).map_err(|e| (EXIT_RUNTIME, e.to_string()))?;
    builder.build().map_err(|e| (EXIT_RUNTIME, e.to_string()))
}

/// A client_credentials token from the client authority (demo users and services).
async fn mint(endpoint: &str, client: &str, secret: &str, scope: &str) -> Result<String, Failure> {
    let http = http_client()?;
    let mut form = vec![
        ("grant_type", tokex::oauth::GRANT_TYPE_CLIENT_CREDENTIALS),
        ("audience", "backend"),
    ];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let resp = http
        .post(endpoint)
        .basic_auth(client, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| (EXIT_RUNTIME, format!("minting a token for {client}: {e}")))?;
    let v: Value = serde_json::from_slice(
        &resp
            .bytes()
            .await
            .map_err(|e| (EXIT_RUNTIME, e.to_string()))?,
    )
    .map_err(|e| (EXIT_RUNTIME, e.to_string()))?;
    v["access_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| (EXIT_RUNTIME, format!("no token for {client}: {v}")))
}

async fn sample_request(addr: SocketAddr, host: &str, token: &str) -> Result<Value, Failure> {
    let http = http_client()?;
    let resp = http
        .get(format!("http://{addr}/orders/42"))
        .header("host", host)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| (EXIT_RUNTIME, format!("sample request failed: {e}")))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| (EXIT_RUNTIME, e.to_string()))?;
    if !status.is_success() {
        return Err((
            EXIT_RUNTIME,
            format!("sample request answered {status}: {body}"),
        ));
    }
    serde_json::from_str(&body).map_err(|e| (EXIT_RUNTIME, e.to_string()))
}

/// An upstream that answers with the claims of the token it was sent (never the token).
async fn echo_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let svc = service_fn(|req: Request<Incoming>| async move {
            let token = tokex::bearer::extract(req.headers()).ok().flatten();
            let claims = token.and_then(|t| tokex::jwt::unverified_claims(t.expose()));
            let body = json!({ "path": req.uri().path(), "received_token_claims": claims });
            let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(r)
        });
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A private temp directory removed on drop (holds the demo's actor token).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let mut random = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
        let name = random.iter().fold(String::from("tokex-demo-"), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
