//! Listeners: the egress listener the app talks to and the admin listener, with
//! connection limits and graceful shutdown.
//!
//! The caller binds (so tests bind `127.0.0.1:0`) and passes a shutdown future. On
//! shutdown tokex stops accepting, marks itself not ready, and lets in-flight requests
//! finish within the drain timeout.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::{Code, ProxyError};
use crate::proxy::Proxy;

mod connection;
mod detect;
mod redirected;

/// The bound listeners.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
    /// Where redirected connections arrive (`transparent.listen`, and `[::1]` at its port
    /// for IPv6 connections); empty without the transparent section.
    pub transparent: Vec<TcpListener>,
}

/// A listener that could not be bound, named by its config key and address.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {key} address {addr}: {source}")]
pub struct BindError {
    pub key: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

impl Listeners {
    /// Binds both addresses; a port in use is an error for the caller to report.
    pub async fn bind(proxy: SocketAddr, admin: SocketAddr) -> Result<Self, BindError> {
        let bind = |key, addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { key, addr, source })
        };
        Ok(Self {
            proxy: bind("listen", proxy).await?,
            admin: bind("admin", admin).await?,
            transparent: Vec::new(),
        })
    }

    /// Adds the transparent listener. A redirect lands on the loopback address of the
    /// connection's family, so IPv6 connections need `[::1]` at the same port; where the
    /// machine has no IPv6 that one is skipped (no IPv6 connection can arrive either).
    pub async fn bind_transparent(&mut self, addr: SocketAddr) -> Result<(), BindError> {
        let key = "transparent.listen";
        let listener =
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { key, addr, source })?;
        self.transparent.push(listener);
        if addr.ip() == IpAddr::from([127, 0, 0, 1]) {
            let v6 = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port());
            match TcpListener::bind(v6).await {
                Ok(l) => self.transparent.push(l),
                Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                    tracing::info!(addr = %v6, "no IPv6 loopback here; redirected IPv6 connections cannot arrive");
                }
                Err(source) => {
                    return Err(BindError {
                        key,
                        addr: v6,
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    pub fn proxy_addr(&self) -> io::Result<SocketAddr> {
        self.proxy.local_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

/// Serves until `shutdown` completes, then drains.
pub async fn run(proxy: Arc<Proxy>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let config = proxy.config();
    let drain = config.timeouts.drain;
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let poller = tokio::spawn(poll_credentials(proxy.clone()));
    let admin = tokio::spawn(crate::admin::run(proxy.clone(), listeners.admin, async {
        let _ = admin_stopped.await;
    }));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let settings = Arc::new(connection::Settings {
        header_read: config.timeouts.client_header_read,
        stop: stopped,
    });
    let max_connections = config.limits.max_connections;
    let connections = Arc::new(Semaphore::new(max_connections as usize));
    proxy.set_ready(true);
    tracing::info!(listen = %listeners.proxy.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "tokex ready");
    let accepting = Accepting {
        proxy: proxy.clone(),
        settings: settings.clone(),
        connections: connections.clone(),
    };
    let mut loops = tokio::task::JoinSet::new();
    loops.spawn(accepting.clone().accept(listeners.proxy, false));
    for listener in listeners.transparent {
        tracing::info!(transparent = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()), "accepting redirected connections");
        loops.spawn(accepting.clone().accept(listener, true));
    }
    shutdown.await;
    proxy.set_ready(false);
    // Stops accepting: the listeners close with their loops.
    loops.shutdown().await;
    tracing::info!(?drain, "shutting down: draining in-flight requests");
    // Idle connections close at once, busy ones after their response; every connection
    // holds a permit until it is gone, so having all permits back means drained.
    let _ = stop.send(true);
    tokio::select! {
        _ = connections.acquire_many(max_connections) => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
    let _ = stop_admin.send(());
    let _ = admin.await;
    poller.abort();
}

/// What an accept loop hands each connection.
#[derive(Clone)]
struct Accepting {
    proxy: Arc<Proxy>,
    settings: Arc<connection::Settings>,
    connections: Arc<Semaphore>,
}

impl Accepting {
    /// Accepts until aborted; `redirected` listeners get connections the kernel redirected.
    async fn accept(self, listener: TcpListener, redirected: bool) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection limit reached");
                tokio::spawn(refuse_overloaded(TokioIo::new(stream)));
                continue;
            };
            let (proxy, settings) = (self.proxy.clone(), self.settings.clone());
            tokio::spawn(async move {
                if redirected {
                    redirected::serve(proxy, stream, settings).await;
                } else {
                    connection::serve(proxy, stream, settings).await;
                }
                drop(permit);
            });
        }
    }
}

/// How often credential files and the config file are checked; rotation and reload
/// take effect within this.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Re-reads rotated credential files of whatever config is in force, reloads the
/// config when its file changes (Kubernetes' ConfigMap symlink swap included), and
/// closes pooled upstream connections that idled too long.
async fn poll_credentials(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let config = proxy.config();
        crate::credentials::poll_all(&config.watched, |result| {
            proxy.metrics.credential_reloads.series(&[result]).inc();
        });
        // Any change, even one that breaks the file, is a reload attempt: the error is
        // logged and counted, and the running config stays.
        let changed = config.source.as_ref().is_some_and(|s| {
            crate::credentials::Poll::poll(s) != crate::credentials::Polled::Unchanged
        });
        if changed {
            let _ = proxy.reload_from_source().await;
        }
        proxy.sweep_idle_upstreams();
    }
}

/// Answers one request with 503 `overloaded` and closes the connection.
async fn refuse_overloaded(io: TokioIo<tokio::net::TcpStream>) {
    let svc = service_fn(|_req: Request<Incoming>| async {
        Ok::<_, std::convert::Infallible>(
            ProxyError::new(Code::Overloaded, "tokex has reached its connection limit")
                .to_response(),
        )
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(io, svc);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}
