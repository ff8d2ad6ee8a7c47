//! HTTP/1.1 between the app, tokex and an upstream: the upstream connection an app
//! connection keeps, what happens when the upstream drops it, response framings,
//! pipelining, and the app's HTTP/1.1 features (chunked uploads, `100-continue`,
//! HTTP/1.0) on the same connections.
//!
//! The upstream here is scripted over raw TCP: the faults under test (a connection
//! closed between requests, odd framings) are exactly what a well-behaved server never
//! does. Time is paused: a pause in a test or between the pieces the upstream writes
//! passes only once tokex has read everything sent so far, so each piece arrives on its
//! own.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

async fn with_route(upstream: &str) -> (MockAs, Tokex) {
    let as_ = MockAs::start().await;
    let tokex = Tokex::start(&config(&as_, upstream)).await;
    (as_, tokex)
}

fn get_req(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\n\r\n")
}

/// Requests on one app connection share one upstream connection, and each carries the
/// narrowed token and the upstream's Host.
#[tokio::test(start_paused = true)]
async fn upstream_connection_is_kept_per_app_connection() {
    let up = Scripted::start(|_, _, _| Act::Reply(vec![OK])).await;
    let (as_, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    for n in 1..=5 {
        app.send(&get_req(&format!("/r{n}"))).await;
        app.read_until("\r\n\r\nok", n).await;
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
    assert_eq!(as_.count(), 1);
    let heads = up.heads();
    assert_eq!(heads.len(), 5);
    for head in heads {
        assert!(
            head.contains("authorization: Bearer narrowed-1\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("host: {}\r\n", up.addr)), "{head}");
        assert!(!head.contains("app-token"), "{head}");
    }
}

/// An upstream that closes its side after every response: tokex notices before
/// reusing the connection, for any method.
#[tokio::test(start_paused = true)]
async fn closed_kept_connection_is_not_reused() {
    let up = Scripted::start(|_, _, _| Act::ReplyClose(OK)).await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    app.send(&get_req("/a")).await;
    app.read_until("\r\n\r\nok", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.send("POST /b HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nContent-Length: 3\r\n\r\nabc").await;
    let text = app.read_until("\r\n\r\nok", 2).await;
    assert_eq!(text.matches("200 OK").count(), 2, "{text}");
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
}

/// Each request on a kept connection carries exactly its own fields: nothing of the
/// previous request, read from the same buffer, may remain.
#[tokio::test(start_paused = true)]
async fn fields_of_one_request_never_reach_the_next() {
    let up = Scripted::start(|_, _, _| Act::Reply(vec![OK])).await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    app.send("GET /first HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nX-First: 1\r\nAccept: a/b\r\n\r\n").await;
    app.read_until("\r\n\r\nok", 1).await;
    app.send("GET /second HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nX-Second: 2\r\n\r\n").await;
    app.read_until("\r\n\r\nok", 2).await;
    // Field names keep the app's case; compare without it.
    let heads: Vec<String> = up.heads().iter().map(|h| h.to_lowercase()).collect();
    assert!(
        heads[0].contains("x-first: 1") && heads[0].contains("accept: a/b"),
        "{}",
        heads[0]
    );
    assert!(heads[1].contains("x-second: 2"), "{}", heads[1]);
    assert!(
        !heads[1].contains("x-first") && !heads[1].contains("accept"),
        "{}",
        heads[1]
    );
}

/// Empty lines before a request line are skipped (RFC 9112 §2.2), also between requests
/// on a kept connection, and the request after them is served.
#[tokio::test(start_paused = true)]
async fn empty_lines_before_a_request_are_skipped() {
    let up = Scripted::start(|_, _, _| Act::Reply(vec![OK])).await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    // Alone first: the empty lines arrive before anything that could end a head.
    app.send("\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.send(&get_req("/a").replace("\r\n\r\n", "\r\nX-Case: 1\r\n\r\n"))
        .await;
    app.read_until("\r\n\r\nok", 1).await;
    app.send(&format!("\r\n{}", get_req("/b"))).await;
    let text = app.read_until("\r\n\r\nok", 2).await;
    assert_eq!(text.matches("200 OK").count(), 2, "{text}");
    let heads = up.heads();
    assert!(
        heads[0].starts_with("GET /a ") && heads[1].starts_with("GET /b "),
        "{heads:?}"
    );
    assert!(heads[0].to_lowercase().contains("x-case: 1"), "{heads:?}");
}

/// A kept connection that idled and dies only once the request is on it (the upstream's
/// idle timer fired as the request left): a GET is sent once more on a new connection;
/// a POST is not (it may have been processed) and gets 502. Time is paused, so the idle
/// second passes at once.
#[tokio::test(start_paused = true)]
async fn dropped_request_is_retried_only_when_idempotent() {
    // Connection 1 answers its first request and drops the second; later ones answer.
    let up = Scripted::start(|_, conn, nth| match (conn, nth) {
        (1, 1) | (3, 1) => Act::Reply(vec![OK]),
        (1, 2) | (3, 2) => Act::Drop,
        _ => Act::Reply(vec![OK]),
    })
    .await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    app.send(&get_req("/a")).await;
    app.read_until("\r\n\r\nok", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.send(&get_req("/b")).await;
    let text = app.read_until("\r\n\r\nok", 2).await;
    assert_eq!(text.matches("200 OK").count(), 2, "{text}");
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);

    let mut app = App::connect(&tokex).await;
    app.send(&get_req("/c")).await;
    app.read_until("\r\n\r\nok", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.send("POST /d HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nContent-Length: 1\r\n\r\nx").await;
    let text = app.read_until("tokex-error: upstream_unavailable", 1).await;
    assert!(text.contains("HTTP/1.1 502 Bad Gateway"), "{text}");
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        3,
        "the POST was not resent"
    );
}

fn framings(path: &str, _: usize, _: usize) -> Act {
    match path {
        "/chunked" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n5\r\nhello\r\n",
            b"6;x=y\r\n world\r\n",
            b"0\r\nx-checksum: 1\r\n\r\n",
        ]),
        "/close" => Act::ReplyClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close"),
        "/head" => Act::Reply(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"]),
        "/no-content" => Act::Reply(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]),
        "/hints" => Act::Reply(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ]),
        "/named" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nConnection: x-internal\r\nX-Internal: secret\r\nKeep-Alive: timeout=5\r\nX-Public: yes\r\nContent-Length: 2\r\n\r\nok",
        ]),
        "/bad-length" => Act::Reply(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nok"]),
        "/bad-chunk" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]),
        _ => Act::Reply(vec![OK]),
    }
}

/// Chunked (with extensions and trailers, across writes), 1xx, HEAD, 204 and
/// hop-by-hop response fields, all on one app connection.
#[tokio::test(start_paused = true)]
async fn response_framings_are_relayed() {
    let up = Scripted::start(framings).await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    // The app asks for trailers, so the upstream's reach it after the body.
    app.send(&get_req("/chunked").replace("\r\n\r\n", "\r\nTE: trailers\r\n\r\n"))
        .await;
    let text = app.read_until("x-checksum: 1\r\n\r\n", 1).await;
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(dechunk(body), "hello world", "{text}");

    app.send(&get_req("/hints")).await;
    let text = app.read_until("final", 1).await;
    assert!(
        !text.contains("103"),
        "interim responses are not relayed: {text}"
    );

    app.send(&get_req("/head").replacen("GET", "HEAD", 1)).await;
    app.send(&get_req("/no-content")).await;
    app.send(&get_req("/named")).await;
    let text = app.read_until("\r\n\r\nok", 1).await;
    let named = &text[text.find("204 No Content").expect("204 relayed")..];
    assert!(
        named.contains("x-public: yes") || named.contains("X-Public: yes"),
        "{named}"
    );
    assert!(!named.to_lowercase().contains("x-internal"), "{named}");
    assert!(!named.to_lowercase().contains("keep-alive"), "{named}");
    let head = &text[text
        .find("content-length: 10")
        .or(text.find("Content-Length: 10"))
        .expect("HEAD's length kept")..];
    assert!(
        head.contains("\r\n\r\nHTTP/1.1 204"),
        "HEAD has no body: {text}"
    );
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

/// A body delimited by the upstream's close is relayed whole, chunked, so the app's
/// connection stays usable: the next request goes on a new upstream connection.
#[tokio::test(start_paused = true)]
async fn close_delimited_response_is_relayed_whole() {
    let up = Scripted::start(framings).await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    app.send(&get_req("/close")).await;
    let text = app.read_until("0\r\n\r\n", 1).await;
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(dechunk(body), "until close", "{text}");
    app.send(&get_req("/after")).await;
    app.read_until("\r\n\r\nok", 1).await;
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
}

/// The data of a complete chunked body (no extensions, as hyper writes it).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A malformed response head is never relayed: 502 `upstream_unavailable`. Malformed
/// chunked coding cuts the app's connection.
#[tokio::test(start_paused = true)]
async fn malformed_responses_are_refused() {
    let up = Scripted::start(framings).await;
    let (_as, tokex) = with_route(&up.url()).await;
    let r = get(&tokex, "echo.internal", "/bad-length", Some("app-token")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.tokex_error(), Some("upstream_unavailable"));
    let mut app = App::connect(&tokex).await;
    app.send(&get_req("/bad-chunk")).await;
    // The head goes out with the first body bytes, so the app sees the connection
    // close with no complete response at all.
    let text = app.read_to_close().await;
    assert!(!text.contains("\r\n\r\n"), "{text}");
}

/// Two requests in one write are answered in order.
#[tokio::test(start_paused = true)]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start().await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    app.send(&format!("{}{}", get_req("/first"), get_req("/second")))
        .await;
    let text = app.read_until("\"path\":", 2).await;
    let (first, second) = (text.find("/first").unwrap(), text.find("/second").unwrap());
    assert!(first < second, "{text}");
}

/// A chunked upload between plain requests on one kept connection: the upstream sees
/// the whole body, and the requests after it are served.
#[tokio::test(start_paused = true)]
async fn chunked_upload_between_requests() {
    let up = Upstream::start().await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    app.send(&get_req("/before")).await;
    app.read_until("\"path\":", 1).await;
    app.send("POST /upload HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n").await;
    app.read_until("\"body_len\":7", 1).await;
    app.send(&get_req("/after")).await;
    let text = app.read_until("\"path\":", 3).await;
    assert!(text.contains("/after"), "{text}");
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == "Bearer narrowed-1")
    );
}

/// `Expect: 100-continue` and HTTP/1.0 requests are served.
#[tokio::test(start_paused = true)]
async fn expect_continue_and_http10_are_served() {
    let up = Upstream::start().await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    app.send("POST /e HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").await;
    app.read_until("100 Continue", 1).await;
    app.send("body").await;
    let text = app.read_until("\"body_len\":4", 1).await;
    assert!(text.contains("200 OK"), "{text}");

    let mut app = App::connect(&tokex).await;
    app.send("GET /old HTTP/1.0\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\n\r\n")
        .await;
    let text = app.read_to_close().await;
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    assert!(text.contains("narrowed-1"), "{text}");
}

/// A refusal to a HEAD request is a head alone (the connection stays in sync for the
/// next request), and every response, made or relayed, carries a `Date`.
#[tokio::test(start_paused = true)]
async fn head_refusal_has_no_body_and_responses_are_dated() {
    let up = Scripted::start(|_, _, _| Act::Reply(vec![OK])).await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    app.send("HEAD /x HTTP/1.1\r\nHost: echo.internal\r\n\r\n")
        .await;
    app.send(&get_req("/y")).await;
    let text = app.read_until("\r\n\r\nok", 1).await;
    let (refusal, relayed) = text.split_at(text.find("HTTP/1.1 200").expect("second response"));
    assert!(
        refusal.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{text}"
    );
    assert!(
        refusal.contains("tokex-error: missing_token\r\n"),
        "{refusal}"
    );
    assert!(
        refusal.ends_with("\r\n\r\n"),
        "no body after the head: {refusal:?}"
    );
    for response in [refusal, relayed] {
        assert!(response.contains("\r\ndate: "), "{response}");
    }
}

/// A `Connection` field naming Content-Length cannot unframe a message: the upstream
/// gets the body as the POST's body (not as a request of its own carrying the app's
/// token), and the app gets a response it can delimit on a connection that stays usable.
#[tokio::test(start_paused = true)]
async fn connection_naming_content_length_keeps_messages_framed() {
    let up = Scripted::start(|path, _, _| match path {
        "/named-length" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
        ]),
        _ => Act::Reply(vec![OK]),
    })
    .await;
    let (_as, tokex) = with_route(&up.url()).await;
    let mut app = App::connect(&tokex).await;
    let inner = "GET /admin HTTP/1.1\r\nHost: up\r\nAuthorization: Bearer RAW-APP-TOKEN\r\n\r\n";
    app.send(&format!(
        "POST /x HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer app-token\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    ))
    .await;
    app.read_until("\r\n\r\nok", 1).await;
    app.send(&get_req("/named-length")).await;
    app.read_until("hello", 1).await;
    app.send(&get_req("/after")).await;
    let text = app.read_until("\r\n\r\nok", 2).await;
    assert!(text.contains("content-length: 5\r\n"), "{text}");
    let heads = up.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(heads[0].starts_with("POST /x "), "{}", heads[0]);
    assert!(
        heads[0].contains(&format!("content-length: {}\r\n", inner.len())),
        "{}",
        heads[0]
    );
    assert!(
        heads.iter().all(|h| !h.contains("RAW-APP-TOKEN")),
        "{heads:?}"
    );
}

/// An https route to a TLS upstream at `up`, trusting its CA.
async fn tls_route(up: &Upstream, ca_pem: &str) -> (MockAs, Tokex) {
    let as_ = MockAs::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let url = format!("https://localhost:{}", up.addr.port());
    let yaml = with_route_lines(&config(&as_, &url), "    ca_file: ca.pem\n");
    let tokex = Tokex::start_in(dir, &yaml).await;
    (as_, tokex)
}

/// TLS upstreams that speak HTTP/1.1 keep their connections as plain ones do: one
/// app connection's requests share one TLS connection (one handshake).
#[tokio::test(start_paused = true)]
async fn tls_upstream_connections_are_kept() {
    let (up, ca) = Upstream::start_tls_offering(&[b"http/1.1"]).await;
    let (_as, tokex) = tls_route(&up, &ca).await;
    let mut app = App::connect(&tokex).await;
    for n in 0..5 {
        app.send(&get_req(&format!("/r{n}"))).await;
        app.read_until("\"path\":", n + 1).await;
    }
    assert_eq!(up.seen().len(), 5);
    assert!(
        up.seen()
            .iter()
            .all(|s| s.version == http::Version::HTTP_11)
    );
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

/// An app that opens a connection per request still reuses upstream connections: an
/// app connection's idle upstream connections go to the shared pool when it ends.
#[tokio::test(start_paused = true)]
async fn upstream_connections_outlive_app_connections() {
    let up = Upstream::start().await;
    let (_as, tokex) = with_route(&up.url()).await;
    for n in 0..5 {
        let mut app = App::connect(&tokex).await;
        app.send(&get_req(&format!("/r{n}")).replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"))
            .await;
        app.read_to_close().await;
    }
    assert_eq!(up.seen().len(), 5);
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

/// An upstream that picks HTTP/2 by ALPN gets one multiplexed connection, shared by
/// every app connection and by concurrent requests.
#[tokio::test(start_paused = true)]
async fn an_h2_upstream_connection_is_shared() {
    let (up, ca) = Upstream::start_tls().await;
    let (_as, tokex) = tls_route(&up, &ca).await;
    let tokex = std::sync::Arc::new(tokex);
    let mut tasks = Vec::new();
    for n in 0..20 {
        let t = tokex.clone();
        tasks.push(tokio::spawn(async move {
            let mut app = App::connect(&t).await;
            app.send(&get_req(&format!("/r{n}"))).await;
            app.read_until("\"path\":", 1).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.seen().len(), 20);
    assert!(up.seen().iter().all(|s| s.version == http::Version::HTTP_2));
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}
