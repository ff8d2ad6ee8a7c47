//! HTTP/1.1 protocol switches through tokex: a WebSocket handshake goes through every
//! step of a request (the upstream sees the narrowed token), then frames pass both
//! ways until a clean close; a switch that cannot be authorized is refused and never
//! tunnelled; a switch to HTTP itself (`h2c`) is served as a plain request.
//!
//! Both ends are real WebSocket implementations (tokio-tungstenite), the upstream on
//! plain TCP or on TLS.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};

use crate::support::*;

/// A WebSocket echo server that records the `Authorization` of every handshake.
struct WsEcho {
    url: String,
    route_lines: String,
    authorizations: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
    _task: Task,
}

impl WsEcho {
    async fn start(tls: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let authorizations: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = authorizations.clone();
        let (acceptor, dir) = if tls {
            let (acceptor, ca) = tls_acceptor();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
            (Some(acceptor), Some(dir))
        } else {
            (None, None)
        };
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (seen, acceptor) = (seen.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => echo_frames(a.accept(stream).await.unwrap(), seen).await,
                        None => echo_frames(stream, seen).await,
                    }
                });
            }
        });
        let (url, route_lines) = match &dir {
            Some(d) => (
                format!("https://localhost:{port}"),
                format!("    ca_file: {}\n", d.path().join("ca.pem").display()),
            ),
            None => (format!("http://127.0.0.1:{port}"), String::new()),
        };
        Self {
            url,
            route_lines,
            authorizations,
            _dir: dir,
            _task: Task(task),
        }
    }
}

async fn echo_frames<S>(stream: S, seen: Arc<Mutex<Vec<String>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The callback's type is tungstenite's, error response and all.
    #[allow(clippy::result_large_err)]
    let record = |req: &WsRequest, resp: WsResponse| {
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        seen.lock().unwrap().push(auth.unwrap_or_default());
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
        return;
    };
    use futures_util::{SinkExt, StreamExt};
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_text() || msg.is_binary() {
            ws.send(msg).await.unwrap();
        }
    }
}

async fn tokex_for(ws: &WsEcho) -> (MockAs, Tokex) {
    let as_ = MockAs::start().await;
    let yaml = with_route_lines(&config(&as_, &ws.url), &ws.route_lines);
    let tokex = Tokex::start(&yaml).await;
    (as_, tokex)
}

/// The handshake a WebSocket client sends to `echo.internal` through tokex.
fn handshake(token: Option<&str>) -> http::Request<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = "ws://echo.internal/socket".into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

/// A WebSocket session through tokex, to a plain and a TLS upstream: the handshake
/// carries the narrowed token (never the app's), text and binary frames come back, and
/// the close is clean on both sides.
#[tokio::test]
async fn websocket_frames_pass_both_ways_with_the_token_swapped() {
    use futures_util::{SinkExt, StreamExt};
    for tls in [false, true] {
        let ws = WsEcho::start(tls).await;
        let (_as, tokex) = tokex_for(&ws).await;
        let stream = TcpStream::connect(tokex.addr).await.unwrap();
        let (mut socket, response) =
            tokio_tungstenite::client_async(handshake(Some("app-token")), stream)
                .await
                .unwrap_or_else(|e| panic!("tls={tls}: {e}"));
        assert_eq!(response.status(), 101);
        assert_eq!(
            *ws.authorizations.lock().unwrap(),
            ["Bearer narrowed-1"],
            "tls={tls}"
        );
        socket.send(Message::text("hello")).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text("hello")
        );
        socket
            .send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::binary(vec![0u8, 1, 2, 255])
        );
        socket.close(None).await.unwrap();
        // The server answers the close, and then the stream ends.
        while let Some(msg) = socket.next().await {
            assert!(matches!(msg, Ok(Message::Close(_))), "tls={tls}: {msg:?}");
        }
    }
}

/// A handshake without a token on a route that needs one is 401 `missing_token`: no
/// switch, and the upstream never hears of it.
#[tokio::test]
async fn an_unauthorized_upgrade_is_refused_and_never_tunnelled() {
    let ws = WsEcho::start(false).await;
    let (as_, tokex) = tokex_for(&ws).await;
    let stream = TcpStream::connect(tokex.addr).await.unwrap();
    let err = tokio_tungstenite::client_async(handshake(None), stream)
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 401);
            assert_eq!(resp.headers()["tokex-error"], "missing_token");
        }
        other => panic!("{other:?}"),
    }
    assert!(ws.authorizations.lock().unwrap().is_empty());
    assert_eq!(as_.count(), 0);
}

/// `Upgrade: h2c` is served as a plain HTTP/1.1 request: a tunnel would carry the
/// requests inside it to the upstream with the caller's own token.
#[tokio::test]
async fn a_switch_to_http_is_served_as_plain_http() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let tokex = Tokex::start(&config(&as_, &up.url())).await;
    let mut app = App::connect(&tokex).await;
    app.send("GET /plain HTTP/1.1\r\nHost: echo.internal\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nAuthorization: Bearer app-token\r\n\r\n").await;
    let (head, body) = app.response().await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("narrowed-1"));
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_11);
    for gone in ["upgrade", "http2-settings"] {
        assert!(!seen.headers.contains_key(gone), "{gone} was forwarded");
    }
}
