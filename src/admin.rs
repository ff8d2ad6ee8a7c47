//! The admin listener, framework-free:
//!
//! - `GET /healthz`: the process is alive (never depends on the AS);
//! - `GET /readyz`: config loaded and listeners serving; 503 before and while draining;
//! - `GET /metrics`: Prometheus text exposition.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proxy::Proxy;

/// Serves the admin endpoints until `shutdown` completes.
pub async fn run(proxy: Arc<Proxy>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let p = proxy.clone();
                let svc = service_fn(move |req| {
                    let p = p.clone();
                    async move { Ok::<_, Infallible>(respond(&p, &req)) }
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
            }
            () = &mut shutdown => return,
        }
    }
}

fn respond(proxy: &Proxy, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        (&Method::GET, "/readyz") if proxy.is_ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        (&Method::GET, "/readyz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".to_string(),
        ),
        (&Method::GET, "/metrics") => {
            let config = proxy.config();
            proxy
                .metrics
                .credential_expiry(config.authorities.values().map(|a| &**a));
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                proxy.metrics.render(proxy.cache.entry_count()),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
