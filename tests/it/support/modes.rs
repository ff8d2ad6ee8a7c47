//! Modes: how the app speaks to tokex (HTTP/1.1 or h2c) and how tokex reaches the
//! upstream (http or https), and the clients and upstreams a test in a mode uses.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{
    ChannelBody, Got, MockAs, Seen, Sidecar, Tokex, Upstream, app_builder, client, config, got,
    with_route_lines,
};

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

/// `config` for an echo upstream of any scheme: the route trusts its CA.
pub fn config_for(as_: &MockAs, echo: &Echo) -> String {
    with_route_lines(&config(as_, &echo.url), &echo.route_lines())
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
