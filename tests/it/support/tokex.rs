//! tokex itself, serving in-process on ephemeral ports, and the config most tests use.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use tokex::proxy::Proxy;
use tokex::server::{self, Listeners};

use super::{MockAs, client};

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
        let config = tokex::discovery::resolve(config, None, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
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
}

impl Sidecar for Tokex {
    fn proxy_addr(&self) -> SocketAddr {
        self.addr
    }
    fn admin_addr(&self) -> SocketAddr {
        self.admin
    }
}

impl<T: Sidecar> Sidecar for Arc<T> {
    fn proxy_addr(&self) -> SocketAddr {
        (**self).proxy_addr()
    }
    fn admin_addr(&self) -> SocketAddr {
        (**self).admin_addr()
    }
}

/// A running tokex, in-process or a process of its own: where the app and the admin
/// client reach it.
pub trait Sidecar {
    fn proxy_addr(&self) -> SocketAddr;
    fn admin_addr(&self) -> SocketAddr;

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr())
    }

    /// What `/metrics` serves now.
    async fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.admin_addr()))
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
