//! Every row of the error table, end to end through a running tokex.
//!
//! Each test drives tokex into one row (or a few related ones) and checks the whole
//! response: status, `tokex-error`, the JSON body's `error` and `authority_error`, the
//! `WWW-Authenticate` challenge the table asks for, `Retry-After` on 503s, and that tokex
//! failed closed: nothing reached the upstream and no token material came back. Time is
//! paused, so a timeout is answered at its exact virtual instant.

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

each_mode!(
    paused:
    missing_token_when_none_or_another_scheme,
    invalid_request_for_bad_token_characters,
    invalid_token_for_an_expired_subject_jwt_without_calling_the_as,
    invalid_token_when_the_as_answers_invalid_request,
    invalid_token_when_the_as_answers_invalid_grant,
    insufficient_scope_when_the_as_answers_invalid_scope,
    exchange_denied_when_the_as_answers_invalid_target,
    exchange_denied_when_the_as_answers_access_denied,
    exchange_misconfigured_when_the_as_answers_invalid_client,
    exchange_misconfigured_when_the_as_answers_unauthorized_client,
    bad_exchange_response_for_token_type_n_a,
    bad_exchange_response_for_the_wrong_issued_token_type,
    bad_exchange_response_for_a_garbage_body,
    bad_exchange_response_for_a_widened_scope,
    bad_exchange_response_for_an_oversized_body,
    bad_exchange_response_for_a_redirect_that_is_never_followed,
    authority_unavailable_when_the_as_answers_503,
    authority_unavailable_when_the_as_answers_429_passes_retry_after_on,
    authority_unavailable_when_the_as_answers_temporarily_unavailable,
    authority_unavailable_when_the_as_port_is_closed,
    authority_unavailable_when_the_as_times_out,
    authority_unavailable_after_retries,
    upstream_unavailable_when_the_upstream_port_is_closed,
    upstream_timeout_when_the_upstream_is_slow,
    overloaded_when_exchanges_are_at_their_limit,
);

// ---------------------------------------------------------------------------------------
// 404 no_route

/// An unknown Host, and an absolute-form request naming an unknown authority, get 404
/// `no_route`; neither the AS nor the upstream (nor any other address) is contacted.
#[tokio::test]
async fn no_route_for_unknown_host() {
    let rig = Rig::start(RAW).await;
    let r = get(&rig.tokex, "unknown.internal", "/", Some(SUBJECT)).await;
    assert_refusal(&r, 404, "no_route", None, SUBJECT);
    let r = raw_request(
        rig.tokex.addr,
        &format!(
            "GET http://elsewhere.example/x HTTP/1.1\r\nHost: elsewhere.example\r\n\
             Authorization: Bearer {SUBJECT}\r\n\r\n"
        ),
    )
    .await;
    assert_refusal(&r, 404, "no_route", None, SUBJECT);
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 405 unsupported

/// `CONNECT` is refused with 405 `unsupported` and a body that explains tokex does not
/// tunnel; asterisk-form `OPTIONS *` is another unsupported form.
#[tokio::test]
async fn connect_and_asterisk_form_are_unsupported() {
    let rig = Rig::start(RAW).await;
    let r = raw_request(
        rig.tokex.addr,
        &format!(
            "CONNECT payments.internal:443 HTTP/1.1\r\nHost: payments.internal:443\r\n\
             Proxy-Authorization: Bearer {SUBJECT}\r\n\r\n"
        ),
    )
    .await;
    assert_refusal(&r, 405, "unsupported", None, SUBJECT);
    let description = r.json()["error_description"].as_str().unwrap().to_string();
    assert!(description.contains("CONNECT"), "{description}");
    assert!(description.contains("http://"), "{description}");

    let r = raw_request(
        rig.tokex.addr,
        "OPTIONS * HTTP/1.1\r\nHost: echo.internal\r\n\r\n",
    )
    .await;
    assert_refusal(&r, 405, "unsupported", None, SUBJECT);
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 401 missing_token

/// No Authorization, or another scheme (`Basic`), on a rejecting route is 401
/// `missing_token` with a bare `WWW-Authenticate: Bearer`; the AS is not called.
async fn missing_token_when_none_or_another_scheme(mode: Mode) {
    let rig = Rig::start(mode).await;
    let r = get_in(mode, &rig.tokex, "echo.internal", "/", None).await;
    assert_refusal(&r, 401, "missing_token", None, SUBJECT);
    let basic = "Basic dXNlcjpzM2NyZXQ=";
    let r = rig.call_with_authorization(&[basic]).await;
    assert_refusal(&r, 401, "missing_token", None, "dXNlcjpzM2NyZXQ");
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 400 invalid_request

/// Two Authorization headers are 400 `invalid_request`, whether reqwest or a raw
/// request sends them; the AS is not called.
#[tokio::test]
async fn invalid_request_for_two_authorization_headers() {
    let rig = Rig::start(RAW).await;
    let r = rig
        .call_with_authorization(&[&format!("Bearer {SUBJECT}"), "Bearer other-token"])
        .await;
    assert_refusal(&r, 400, "invalid_request", None, SUBJECT);
    let r = raw_request(
        rig.tokex.addr,
        &format!(
            "GET / HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer {SUBJECT}\r\n\
             Authorization: Bearer {SUBJECT}\r\n\r\n"
        ),
    )
    .await;
    assert_refusal(&r, 400, "invalid_request", None, SUBJECT);
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

/// An empty bearer token (`Bearer ` and `Bearer`, sent raw so no client trims or
/// rewrites them) is 400 `invalid_request`; the AS is not called.
#[tokio::test]
async fn invalid_request_for_an_empty_token() {
    let rig = Rig::start(RAW).await;
    for auth in ["Bearer ", "Bearer", "bearer    "] {
        let r = raw_request(
            rig.tokex.addr,
            &format!("GET / HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: {auth}\r\n\r\n"),
        )
        .await;
        assert_refusal(&r, 400, "invalid_request", None, SUBJECT);
    }
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

/// Characters outside RFC 6750 b64token (a comma, an inner space, `=` inside) are 400
/// `invalid_request`, and the malformed token is not echoed; the AS is not called.
async fn invalid_request_for_bad_token_characters(mode: Mode) {
    let rig = Rig::start(mode).await;
    for token in ["secret,part", "secret part", "secret=part"] {
        let r = rig
            .call_with_authorization(&[&format!("Bearer {token}")])
            .await;
        assert_refusal(&r, 400, "invalid_request", None, token);
        assert!(!r.body.contains("secret"), "{}", r.body);
    }
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 401 invalid_token

/// A subject JWT whose `exp` has passed is 401 `invalid_token` without any AS call.
async fn invalid_token_for_an_expired_subject_jwt_without_calling_the_as(mode: Mode) {
    let rig = Rig::start(mode).await;
    let expired = jwt(serde_json::json!({ "sub": "alice", "exp": now() - 60 }));
    let r = get_in(mode, &rig.tokex, "echo.internal", "/", Some(&expired)).await;
    assert_refusal(&r, 401, "invalid_token", None, &expired);
    assert_eq!(rig.as_.count(), 0, "the AS must not be called");
    rig.assert_upstream_untouched();
}

/// The AS answering 400 `invalid_request` means the subject token was unusable: 401
/// `invalid_token`, with the AS's code echoed.
async fn invalid_token_when_the_as_answers_invalid_request(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "invalid_request")).await;
    assert_refusal(&r, 401, "invalid_token", Some("invalid_request"), SUBJECT);
}

/// The AS answering 400 `invalid_grant` is 401 `invalid_token`, with the AS's code echoed.
async fn invalid_token_when_the_as_answers_invalid_grant(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "invalid_grant")).await;
    assert_refusal(&r, 401, "invalid_token", Some("invalid_grant"), SUBJECT);
}

// ---------------------------------------------------------------------------------------
// 403 insufficient_scope

/// The AS answering `invalid_scope` is 403 `insufficient_scope` with the RFC 6750
/// challenge and the AS's code echoed.
async fn insufficient_scope_when_the_as_answers_invalid_scope(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "invalid_scope")).await;
    assert_refusal(
        &r,
        403,
        "insufficient_scope",
        Some("invalid_scope"),
        SUBJECT,
    );
}

// ---------------------------------------------------------------------------------------
// 403 exchange_denied

/// The AS answering `invalid_target` is 403 `exchange_denied`, no challenge.
async fn exchange_denied_when_the_as_answers_invalid_target(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "invalid_target")).await;
    assert_refusal(&r, 403, "exchange_denied", Some("invalid_target"), SUBJECT);
}

/// The AS answering 403 `access_denied` is 403 `exchange_denied`.
async fn exchange_denied_when_the_as_answers_access_denied(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(403, "access_denied")).await;
    assert_refusal(&r, 403, "exchange_denied", Some("access_denied"), SUBJECT);
}

// ---------------------------------------------------------------------------------------
// 502 exchange_misconfigured

/// The AS answering 401 `invalid_client` means tokex's own credentials are wrong: 502
/// `exchange_misconfigured`.
async fn exchange_misconfigured_when_the_as_answers_invalid_client(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(401, "invalid_client")).await;
    assert_refusal(
        &r,
        502,
        "exchange_misconfigured",
        Some("invalid_client"),
        SUBJECT,
    );
}

/// The AS answering `unauthorized_client` is 502 `exchange_misconfigured`.
async fn exchange_misconfigured_when_the_as_answers_unauthorized_client(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "unauthorized_client")).await;
    assert_refusal(
        &r,
        502,
        "exchange_misconfigured",
        Some("unauthorized_client"),
        SUBJECT,
    );
}

// ---------------------------------------------------------------------------------------
// 502 bad_exchange_response

/// A success response with `token_type: N_A` is refused: 502 `bad_exchange_response`,
/// and the issued token is not echoed.
async fn bad_exchange_response_for_token_type_n_a(mode: Mode) {
    let r = when_as_answers(mode, token_response_with("token_type", "N_A".into())).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert!(!r.body.contains("narrowed-token"), "{}", r.body);
}

/// A success response whose `issued_token_type` is not the requested one is 502
/// `bad_exchange_response`.
async fn bad_exchange_response_for_the_wrong_issued_token_type(mode: Mode) {
    let wrong = "urn:ietf:params:oauth:token-type:id_token";
    let r = when_as_answers(mode, token_response_with("issued_token_type", wrong.into())).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert!(!r.body.contains("narrowed-token"), "{}", r.body);
}

/// A 200 whose body is not JSON is 502 `bad_exchange_response`.
async fn bad_exchange_response_for_a_garbage_body(mode: Mode) {
    let garbage = raw_reply(
        200,
        b"<html>access_token=oops</html>",
        &[("content-type", "text/html")],
    );
    let r = when_as_answers(mode, garbage).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
}

/// A granted scope wider than the requested `read write` is 502 `bad_exchange_response`.
async fn bad_exchange_response_for_a_widened_scope(mode: Mode) {
    let r = when_as_answers(
        mode,
        token_response_with("scope", "read write admin".into()),
    )
    .await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert!(!r.body.contains("narrowed-token"), "{}", r.body);
}

/// A 10 MB token response is over the size cap: 502 `bad_exchange_response`.
async fn bad_exchange_response_for_an_oversized_body(mode: Mode) {
    let huge = "x".repeat(10 << 20);
    let r = when_as_answers(mode, token_response_with("access_token", huge.into())).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert!(r.body.len() < 1024, "error body stays small");
}

/// A 302 from the token endpoint is 502 `bad_exchange_response` and is never followed:
/// the AS it points at receives nothing, so the subject token goes nowhere else.
async fn bad_exchange_response_for_a_redirect_that_is_never_followed(mode: Mode) {
    let elsewhere = MockAs::start().await;
    let redirect = raw_reply(302, b"", &[("location", &elsewhere.endpoint())]);
    let r = when_as_answers(mode, redirect).await;
    assert_refusal(&r, 502, "bad_exchange_response", None, SUBJECT);
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
}

// ---------------------------------------------------------------------------------------
// 503 authority_unavailable

/// The AS answering 503 is 503 `authority_unavailable` with `Retry-After`.
async fn authority_unavailable_when_the_as_answers_503(mode: Mode) {
    let r = when_as_answers(mode, raw_reply(503, b"down for maintenance", &[])).await;
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
}

/// The AS answering 429 with `Retry-After: 7` is 503 `authority_unavailable`, and tokex
/// passes the AS's `Retry-After: 7` on to the app.
async fn authority_unavailable_when_the_as_answers_429_passes_retry_after_on(mode: Mode) {
    let r = when_as_answers(mode, raw_reply(429, b"slow down", &[("retry-after", "7")])).await;
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
    assert_eq!(r.headers["retry-after"], "7");
}

/// The AS answering 400 `temporarily_unavailable` is 503 `authority_unavailable`, with
/// the AS's code echoed.
async fn authority_unavailable_when_the_as_answers_temporarily_unavailable(mode: Mode) {
    let r = when_as_answers(mode, oauth_error(400, "temporarily_unavailable")).await;
    assert_refusal(
        &r,
        503,
        "authority_unavailable",
        Some("temporarily_unavailable"),
        SUBJECT,
    );
}

/// An authority whose port nothing listens on is 503 `authority_unavailable`.
async fn authority_unavailable_when_the_as_port_is_closed(mode: Mode) {
    let closed = format!("http://127.0.0.1:{}/token", closed_port().await);
    let rig = Rig::with(mode, |yaml| with_token_endpoint(&yaml, &closed)).await;
    let r = rig.call().await;
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
    assert_eq!(rig.as_.count(), 0);
    rig.assert_upstream_untouched();
}

/// An AS slower than the authority's `timeout: 1s` (it answers after 3 s) is 503
/// `authority_unavailable`, and tokex answers at its own timeout, to the millisecond,
/// not at the AS's pace.
async fn authority_unavailable_when_the_as_times_out(mode: Mode) {
    let rig = Rig::start(mode).await;
    rig.as_
        .on(|req, n| issue(req, n).delayed(Duration::from_secs(3)));
    let started = Instant::now();
    let r = rig.call().await;
    let elapsed = started.elapsed();
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
    assert_eq!(elapsed, Duration::from_secs(1));
    rig.assert_upstream_untouched();
}

/// With `retries: 2` a persistent 503 makes exactly three AS calls, then 503
/// `authority_unavailable`.
async fn authority_unavailable_after_retries(mode: Mode) {
    let rig = Rig::with(mode, |yaml| yaml.replace("retries: 0", "retries: 2")).await;
    rig.as_.on(|_, _| raw_reply(503, b"", &[]));
    let r = rig.call().await;
    assert_refusal(&r, 503, "authority_unavailable", None, SUBJECT);
    assert_eq!(rig.as_.count(), 3, "one call and two retries");
    rig.assert_upstream_untouched();
}

// ---------------------------------------------------------------------------------------
// 502 upstream_unavailable

/// An upstream whose port nothing listens on is 502 `upstream_unavailable`, after a
/// successful exchange; neither token is echoed.
async fn upstream_unavailable_when_the_upstream_port_is_closed(mode: Mode) {
    let port = closed_port().await;
    let closed = match mode.tls {
        false => format!("http://127.0.0.1:{port}"),
        true => format!("https://localhost:{port}"),
    };
    let as_ = MockAs::start().await;
    let tokex = Tokex::start(&config(&as_, &closed)).await;
    let r = get_in(mode, &tokex, "echo.internal", "/", Some(SUBJECT)).await;
    assert_refusal(&r, 502, "upstream_unavailable", None, SUBJECT);
    assert!(!r.body.contains("narrowed-1"), "{}", r.body);
    assert_eq!(as_.count(), 1);
}

// ---------------------------------------------------------------------------------------
// 504 upstream_timeout

/// An upstream slower (2 s) than the route's `timeout: 1s` is 504 `upstream_timeout`,
/// answered at the route's timeout exactly.
async fn upstream_timeout_when_the_upstream_is_slow(mode: Mode) {
    let rig = Rig::start(mode).await;
    let started = Instant::now();
    let r = get_in(mode, &rig.tokex, "echo.internal", "/slow", Some(SUBJECT)).await;
    let elapsed = started.elapsed();
    assert_refusal(&r, 504, "upstream_timeout", None, SUBJECT);
    assert!(!r.body.contains("narrowed-1"), "{}", r.body);
    assert_eq!(elapsed, Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------
// 503 overloaded

/// With `max_concurrent_exchanges: 1` and a slow AS (500 ms, inside the authority's 1 s
/// timeout), of two concurrent requests with
/// different subject tokens one is exchanged and one is 503 `overloaded`; the refused
/// one never reaches the AS or the upstream.
async fn overloaded_when_exchanges_are_at_their_limit(mode: Mode) {
    let rig = Rig::with(mode, |yaml| {
        format!("{yaml}limits: {{ max_concurrent_exchanges: 1 }}\n")
    })
    .await;
    rig.as_
        .on(|req, n| issue(req, n).delayed(Duration::from_millis(500)));
    let other = "other-subject-token";
    let (a, b) = tokio::join!(
        get_in(mode, &rig.tokex, "echo.internal", "/", Some(SUBJECT)),
        get_in(mode, &rig.tokex, "echo.internal", "/", Some(other)),
    );
    let (ok, refused, refused_token) = match (a.status, b.status) {
        (200, _) => (a, b, other),
        (_, 200) => (b, a, SUBJECT),
        _ => panic!("neither was exchanged: {a:?} {b:?}"),
    };
    assert_eq!(ok.json()["authorization"], "Bearer narrowed-1");
    assert_refusal(&refused, 503, "overloaded", None, refused_token);
    assert_eq!(rig.as_.count(), 1, "the refused request made no AS call");
    let seen = rig.echo.up.seen();
    assert_eq!(seen.len(), 1, "only the exchanged request went upstream");
    assert_eq!(seen[0].headers["authorization"], "Bearer narrowed-1");
}

/// With `max_connections: 1` and one keep-alive connection held open, a second
/// connection is answered 503 `overloaded` and its request goes nowhere.
#[tokio::test]
async fn overloaded_when_connections_are_at_their_limit() {
    let rig = Rig::with(RAW, |yaml| {
        format!("{yaml}limits: {{ max_connections: 1 }}\n")
    })
    .await;
    let stream = TcpStream::connect(rig.tokex.addr).await.unwrap();
    let (mut held, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let _conn = tokio::spawn(conn);
    let first = http::Request::get("/")
        .header("host", "echo.internal")
        .header("authorization", "Bearer first-token")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = held.send_request(first).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let r = rig.call().await;
    assert_refusal(&r, 503, "overloaded", None, SUBJECT);
    assert!(!held.is_closed(), "the held connection is still open");
    assert_eq!(rig.as_.count(), 1, "only the held connection's exchange");
    assert_eq!(
        rig.echo.up.seen().len(),
        1,
        "only the held connection's request"
    );
}
