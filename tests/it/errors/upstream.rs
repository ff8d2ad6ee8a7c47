//! Rows past the exchange: the upstream down or slow, and tokex at its exchange and
//! connection limits.

use super::*;

each_mode!(
    paused:
    upstream_unavailable_when_the_upstream_port_is_closed,
    upstream_timeout_when_the_upstream_is_slow,
    overloaded_when_exchanges_are_at_their_limit,
);

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
