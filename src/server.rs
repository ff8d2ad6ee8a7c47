//! Listeners: the egress listener the app talks to and the admin listener, with
//! connection limits and graceful shutdown.
//!
//! The caller binds (so tests bind `127.0.0.1:0`) and passes a shutdown future. On
//! shutdown tokex stops accepting, marks itself not ready, and lets in-flight requests
//! finish within the drain timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
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

/// The two bound listeners.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
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
        })
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
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listeners.proxy.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                match connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let serving = connection::serve(proxy.clone(), stream, settings.clone());
                        tokio::spawn(async move {
                            serving.await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "connection limit reached");
                        tokio::spawn(refuse_overloaded(TokioIo::new(stream)));
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    proxy.set_ready(false);
    drop(listeners.proxy);
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
            let _ = proxy.reload_from_source();
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
