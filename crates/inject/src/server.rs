//! The webhook's HTTPS server (hyper over rustls, HTTP/1.1 and HTTP/2): the API server
//! posts reviews, the kubelet probes health, all on one listener.
//!
//! - `POST /inject` and `POST /`: an `AdmissionReview` in, one out (see [`review`]);
//!   bodies past [`MAX_BODY`] are 413, unreadable reviews 400.
//! - `GET /healthz` and `GET /readyz`: 200 while serving.
//!
//! The caller binds (tests bind `127.0.0.1:0`) and passes a shutdown future; then the
//! listener closes and requests in flight finish within [`DRAIN`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::certs::ServingCert;
use crate::config::InjectConfig;
use crate::review::{self, BadReview, Decision};

/// The largest review accepted. The API server caps objects at about 1.5 MiB, so a real
/// review of the biggest pod fits; anything past this is refused with 413.
pub const MAX_BODY: usize = 2 << 20;
/// How long requests in flight may take to finish after the shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for rotation.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// A TLS handshake or request head that takes longer is dropped: the API server's own
/// webhook timeout is at most 30s.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running webhook's shared state.
pub struct Webhook {
    pub config: InjectConfig,
    pub cert: Arc<ServingCert>,
}

impl Webhook {
    /// Loads the serving certificate the config names.
    pub fn new(config: InjectConfig) -> Result<Arc<Self>, String> {
        let cert = Arc::new(ServingCert::load(&config.cert_file, &config.key_file)?);
        Ok(Arc::new(Self { config, cert }))
    }
}

/// Serves until `shutdown` completes, then drains.
pub async fn serve(
    webhook: Arc<Webhook>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), rustls::Error> {
    let tls = crate::certs::server_config(webhook.cert.clone())?;
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let poller = tokio::spawn(poll_cert(webhook.cert.clone()));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let webhook = webhook.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let svc = service_fn(move |req| {
                        let webhook = webhook.clone();
                        async move { Ok::<_, Infallible>(handle(&webhook, req).await) }
                    });
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HANDSHAKE_TIMEOUT);
                    let conn = builder.serve_connection(TokioIo::new(tls), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(?DRAIN, "shutting down: finishing requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(DRAIN) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
    poller.abort();
    Ok(())
}

async fn poll_cert(cert: Arc<ServingCert>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        cert.poll();
    }
}

async fn handle(webhook: &Webhook, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject" | "/") => admit(webhook, req).await,
        (&Method::GET, "/healthz" | "/readyz") => text(StatusCode::OK, "ok\n"),
        (_, "/inject" | "/") => {
            with_allow(text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"), "POST")
        }
        (_, "/healthz" | "/readyz") => {
            with_allow(text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"), "GET")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// One review: read within [`MAX_BODY`], answered, the decision logged once.
async fn admit(webhook: &Webhook, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            tracing::warn!(limit = MAX_BODY, "review refused: body too large");
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the AdmissionReview is larger than {} MiB\n",
                    MAX_BODY >> 20
                ),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "review refused: cannot read the body");
            return text(StatusCode::BAD_REQUEST, "cannot read the request body\n");
        }
    };
    match review::answer(&body, &webhook.config) {
        Ok((json, decision)) => {
            match &decision {
                Decision::Inject(p) => tracing::info!(operations = p.0.len(), "pod injected"),
                Decision::Allow(why) => tracing::debug!(reason = %why, "allowed unchanged"),
                Decision::Warn(why) => tracing::warn!(reason = %why, "allowed without tokex"),
                Decision::Deny(why) => tracing::warn!(reason = %why, "pod denied"),
            }
            let mut r = Response::new(Full::new(Bytes::from(json)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            let status = match e {
                BadReview::Encode(_) | BadReview::Patch(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            tracing::warn!(error = %e, "review refused");
            text(status, &format!("{e}\n"))
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// RFC 9110 §15.5.6: a 405 names the methods allowed.
fn with_allow(mut r: Response<Full<Bytes>>, allow: &'static str) -> Response<Full<Bytes>> {
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}
