//! Every row of the error table, end to end through a running tokex.
//!
//! Each test drives tokex into one row (or a few related ones) and checks the whole
//! response: status, `tokex-error`, the JSON body's `error` and `authority_error`, the
//! `WWW-Authenticate` challenge the table asks for, `Retry-After` on 503s, and that tokex
//! failed closed: nothing reached the upstream and no token material came back. Time is
//! paused, so a timeout is answered at its exact virtual instant.
//!
//! - [`request`]: what tokex refuses before any exchange (route, method, the app's token).
//! - [`authority`]: what the authorization server answers, or fails to.
//! - [`upstream`]: the upstream failing, and tokex at its limits.

mod authority;
mod request;
mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::support::*;

/// The subject token most tests send; no response may ever contain it.
const SUBJECT: &str = "subject-token-Zq7xW9.secret";

const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

// ---------------------------------------------------------------------------------------
// Helpers.

/// The `WWW-Authenticate` challenge the error table prescribes for `code`, if any.
fn challenge(code: &str) -> Option<&'static str> {
    match code {
        "missing_token" => Some("Bearer"),
        "invalid_request" => Some("Bearer error=\"invalid_request\""),
        "invalid_token" => Some("Bearer error=\"invalid_token\""),
        "insufficient_scope" => Some("Bearer error=\"insufficient_scope\""),
        _ => None,
    }
}

/// Asserts `r` is the error response for `code` with `status`: the `tokex-error` header,
/// the JSON body, `authority_error` exactly as given, the row's challenge, `Retry-After`
/// on (and only on) 503s, and `secret` nowhere in the body or headers.
fn assert_refusal(r: &Got, status: u16, code: &str, authority_error: Option<&str>, secret: &str) {
    let ctx = format!("{code}: {} {:?} {}", r.status, r.headers, r.body);
    assert_eq!(r.status, status, "{ctx}");
    assert_eq!(r.tokex_error(), Some(code), "{ctx}");
    let body = r.json();
    assert_eq!(body["error"], code, "{ctx}");
    assert!(body["error_description"].is_string(), "{ctx}");
    assert_eq!(body["authority_error"].as_str(), authority_error, "{ctx}");
    let www = r
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap());
    assert_eq!(www, challenge(code), "{ctx}");
    match r.headers.get("retry-after") {
        Some(v) if status == 503 => {
            let secs: u64 = v.to_str().unwrap().parse().expect("Retry-After in seconds");
            assert!(secs >= 1, "{ctx}");
        }
        None if status != 503 => {}
        other => panic!("Retry-After {other:?} on a {status}: {ctx}"),
    }
    assert!(!r.body.contains(secret), "body leaks the token: {ctx}");
    for (name, value) in &r.headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains(secret),
            "header {name} leaks the token: {ctx}"
        );
    }
}

/// A mock AS, an echo upstream and tokex running the harness config, in a mode.
struct Rig {
    mode: Mode,
    as_: MockAs,
    echo: Echo,
    tokex: Tokex,
}

/// The mode of the tests that write raw HTTP/1.1 bytes.
const RAW: Mode = Mode {
    h2c: false,
    tls: false,
};

impl Rig {
    async fn start(mode: Mode) -> Self {
        Self::with(mode, |yaml| yaml).await
    }

    /// Like `start`, with the harness config rewritten by `edit` first.
    async fn with(mode: Mode, edit: impl FnOnce(String) -> String) -> Self {
        let (as_, echo) = (MockAs::start().await, Echo::start(mode).await);
        let tokex = Tokex::start(&edit(config_for(&as_, &echo))).await;
        Self {
            mode,
            as_,
            echo,
            tokex,
        }
    }

    /// GET `path` on the `echo` route with `token` as the bearer token, if any.
    async fn get(&self, path: &str, token: Option<&str>) -> Got {
        get_in(self.mode, &self.tokex, "echo.internal", path, token).await
    }

    /// GET `/` on the `echo` route with `SUBJECT` as the bearer token.
    async fn call(&self) -> Got {
        self.get("/", Some(SUBJECT)).await
    }

    /// GET `/` on the `echo` route with these raw `Authorization` values, in order.
    async fn call_with_authorization(&self, values: &[&str]) -> Got {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("authorization", HeaderValue::from_str(v).unwrap());
        }
        let req = request_in(
            self.mode,
            &self.tokex,
            http::Method::GET,
            "echo.internal",
            "/",
        )
        .headers(headers);
        got(req.send().await.unwrap()).await
    }

    /// Fail closed: the upstream saw no request at all.
    fn assert_upstream_untouched(&self) {
        assert!(
            self.echo.up.seen().is_empty(),
            "upstream was contacted: {:?}",
            self.echo.up.seen()
        );
    }
}

/// Makes the mock AS answer every request with `reply`, sends one request with
/// `SUBJECT`, and checks tokex called the AS once and the upstream never.
async fn when_as_answers(mode: Mode, reply: Reply) -> Got {
    let rig = Rig::start(mode).await;
    rig.as_.on(move |_, _| reply.clone());
    let r = rig.call().await;
    assert_eq!(rig.as_.count(), 1, "one AS call (retries: 0)");
    assert_eq!(rig.as_.requests()[0].param("subject_token"), Some(SUBJECT));
    rig.assert_upstream_untouched();
    r
}

/// An RFC 6749 §5.2 error response from the AS.
fn oauth_error(status: u16, code: &str) -> Reply {
    Reply::json(
        status,
        serde_json::json!({ "error": code, "error_description": "mock says no" }),
    )
}

/// A well-formed RFC 8693 success body for the harness route, with `key` set to `value`.
fn token_response_with(key: &str, value: serde_json::Value) -> Reply {
    let mut body = serde_json::json!({
        "access_token": "narrowed-token",
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "read write",
    });
    body[key] = value;
    Reply::json(200, body)
}

/// A reply with an arbitrary status, body and headers.
fn raw_reply(status: u16, body: &[u8], headers: &[(&'static str, &str)]) -> Reply {
    Reply {
        status,
        body: body.to_vec(),
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        delay: Duration::ZERO,
    }
}

/// `yaml` with the authority's `token_endpoint` replaced by `endpoint`.
fn with_token_endpoint(yaml: &str, endpoint: &str) -> String {
    let mut out = String::new();
    for line in yaml.lines() {
        match line.split_once("token_endpoint:") {
            Some((indent, _)) => out.push_str(&format!("{indent}token_endpoint: {endpoint}")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A loopback port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Writes `request` verbatim on a new connection and reads one response (headers plus
/// `Content-Length` bytes of body), for requests reqwest cannot or will not send.
async fn raw_request(addr: SocketAddr, request: &str) -> Got {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, body_len) = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("tokex answered")
            .unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if buf.len() >= end + 4 + len {
                break (end, len);
            }
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
            HeaderValue::from_str(value.trim()).unwrap(),
        );
    }
    let body = &buf[head_end + 4..head_end + 4 + body_len];
    Got {
        status: status.parse().unwrap(),
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}
