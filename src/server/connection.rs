//! One app connection: its protocol decided once from its first bytes, then served by
//! hyper's HTTP/1.1 or HTTP/2 server until it closes or tokex drains. Its requests
//! share one [`Session`].

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::detect::{self, Protocol};
use crate::idle::WriteStall;
use crate::proxy::Proxy;
use crate::session::Session;

/// The largest request head an app may send (431 past it): well above what clients
/// send, and a bound on what one connection makes tokex hold.
const MAX_HEAD: usize = 64 * 1024;

/// What every connection shares.
pub struct Settings {
    /// `timeouts.client_header_read`: the wait for a request head, and so also for the
    /// next request on an idle HTTP/1.1 connection.
    pub header_read: Duration,
    /// Turns true when tokex starts draining.
    pub stop: watch::Receiver<bool>,
}

/// Drives a hyper server connection; once the drain begins, lets it finish what it
/// started and close. (A macro: hyper's two connection types share the method but no
/// trait.)
macro_rules! until_drained {
    ($conn:expr, $stop:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let mut stop = $stop;
        // The connection first: a request already read is served even when the drain
        // has begun.
        let finished = tokio::select! {
            biased;
            result = conn.as_mut() => Some(result),
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        match finished {
            Some(result) => result,
            None => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }};
}

/// Serves one app connection until it closes or the drain closes it.
pub async fn serve(proxy: Arc<Proxy>, stream: TcpStream, settings: Arc<Settings>) {
    serve_io(proxy, stream, settings, Arc::new(Session::default())).await;
}

/// [`serve`] over any byte stream (a redirected connection comes with the bytes read to
/// tell what it speaks in front), for requests that share `session`.
pub async fn serve_io<T>(
    proxy: Arc<Proxy>,
    stream: T,
    settings: Arc<Settings>,
    session: Arc<Session>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = WriteStall::new(stream, proxy.watch_to_app());
    let mut stop = settings.stop.clone();
    let detected = tokio::select! {
        detected = tokio::time::timeout(settings.header_read, detect::detect(io)) => detected,
        // A connection that has sent nothing yet has nothing to finish.
        _ = stop.wait_for(|stopped| *stopped) => return,
    };
    let (protocol, io) = match detected {
        Ok(Ok(Some(detected))) => detected,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return tracing::debug!(error = %e, "app connection failed"),
        Err(_) => return tracing::debug!("no request within client_header_read; closing"),
    };
    let io = TokioIo::new(io);
    let svc = service_fn(move |req| {
        let (proxy, session) = (proxy.clone(), session.clone());
        async move { proxy.handle(req, &session).await }
    });
    let result = match protocol {
        Protocol::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read)
                .max_header_size(MAX_HEAD)
                .serve_connection(io, svc)
                .with_upgrades();
            until_drained!(conn, stop)
        }
        Protocol::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(io, svc);
            until_drained!(conn, stop)
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %crate::error::cause::describe(&e), "app connection ended with an error");
    }
}
