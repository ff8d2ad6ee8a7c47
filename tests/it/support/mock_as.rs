//! The mock authorization server: a token endpoint that records every request and
//! answers as a test tells it to, well or badly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Task, full, serve};

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
