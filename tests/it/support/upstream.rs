//! Echo upstreams, plain and TLS, that record every request they receive.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Either};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::{FramesBody, Task, TestBody, full, serve_counted, tls_acceptor_offering};

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

impl Seen {
    /// The path and query the upstream saw, whatever form the target had.
    pub fn target(&self) -> String {
        let uri: http::Uri = self.uri.parse().unwrap();
        uri.path_and_query().unwrap().to_string()
    }
}
