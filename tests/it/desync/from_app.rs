//! What the app sends: malformed and ambiguous framing, bodies that break, pipelined
//! requests, `Host` and dot segments.

use super::*;

/// What one malformed request must come to.
struct Refused {
    name: &'static str,
    raw: String,
    /// hyper's refusal (a bare 400 or 431) or tokex's (with `tokex-error`).
    status: u16,
    by_tokex: bool,
}

/// Malformed and ambiguous request framing is answered 4xx and the connection closed;
/// the upstream parses nothing and no token travels.
#[tokio::test]
async fn ambiguous_requests_are_refused_and_the_connection_closed() {
    let rig = Rig::start(|_, _, _| Act::Reply(vec![OK])).await;
    let big = "x".repeat(70 * 1024);
    let many: String = (0..150).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    let cases = [
        Refused {
            name: "two different Content-Length values",
            raw: request(
                "POST",
                "/",
                "Content-Length: 3\r\nContent-Length: 4\r\n",
                "abcd",
            ),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "a signed Content-Length",
            raw: request("POST", "/", "Content-Length: +3\r\n", "abc"),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "a Content-Length that is not a number",
            raw: request("POST", "/", "Content-Length: 3x\r\n", "abc"),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "chunked not last",
            raw: request(
                "POST",
                "/",
                "Transfer-Encoding: chunked, identity\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "an unknown coding",
            raw: request(
                "POST",
                "/",
                "Transfer-Encoding: xchunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "a coding under chunked",
            raw: request(
                "POST",
                "/",
                "Transfer-Encoding: gzip, chunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            status: 400,
            by_tokex: true,
        },
        Refused {
            name: "chunked twice",
            raw: request(
                "POST",
                "/",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
            status: 400,
            by_tokex: true,
        },
        Refused {
            name: "Transfer-Encoding in HTTP/1.0",
            raw: format!(
                "POST / HTTP/1.0\r\nHost: echo.internal\r\nAuthorization: Bearer {APP_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            ),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "obs-fold",
            raw: request("GET", "/", "X-Folded: a\r\n b\r\n", ""),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "a bare CR",
            raw: request("GET", "/", "X-Cr: a\rb\r\n", ""),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "NUL in a value",
            raw: request("GET", "/", "X-Nul: a\0b\r\n", ""),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "a space before the colon",
            raw: request("GET", "/", "X-Space : a\r\n", ""),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "an invalid field name",
            raw: request("GET", "/", "X(Bad): a\r\n", ""),
            status: 400,
            by_tokex: false,
        },
        Refused {
            name: "a head over 64 KiB",
            raw: request("GET", "/", &format!("X-Big: {big}\r\n"), ""),
            status: 431,
            by_tokex: false,
        },
        Refused {
            name: "more than 100 fields",
            raw: request("GET", "/", &many, ""),
            status: 431,
            by_tokex: false,
        },
    ];
    for case in cases {
        let mut app = App::connect(&rig.tokex).await;
        app.send(&case.raw).await;
        let text = app.read_to_close().await;
        assert_eq!(status(&text), case.status, "{}: {text}", case.name);
        assert_eq!(
            text.contains("tokex-error: invalid_request"),
            case.by_tokex,
            "{}: {text}",
            case.name
        );
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "{}: one answer: {text}",
            case.name
        );
    }
    assert!(rig.up.parsed().is_empty(), "{:?}", rig.up.parsed());
    rig.assert_token_stayed();
}

/// A request body whose chunked coding breaks once it streams is the app's fault: 400
/// `invalid_request` and the connection closed. The upstream may have seen the request
/// start (bodies are streamed, not held back), never a complete request.
#[tokio::test]
async fn a_body_that_breaks_midway_is_refused() {
    let rig = Rig::start(|_, _, _| Act::Reply(vec![OK])).await;
    let mut app = App::connect(&rig.tokex).await;
    app.send(&request(
        "POST",
        "/",
        "Transfer-Encoding: chunked\r\n",
        "3\r\nabc\r\nzz\r\n",
    ))
    .await;
    let text = app.read_to_close().await;
    assert_eq!(status(&text), 400, "{text}");
    assert!(text.contains("tokex-error: invalid_request"), "{text}");
    assert!(rig.up.parsed().is_empty(), "{:?}", rig.up.parsed());
    rig.assert_token_stayed();
}

/// `Content-Length` beside `Transfer-Encoding`: hyper reads the body by the coding alone
/// and closes the connection after the answer (RFC 9112 §6.1), so bytes after the body
/// that look like a request are never read as one; the upstream gets one request with
/// the decoded body and a length of hyper's own.
#[tokio::test]
async fn length_beside_chunked_cannot_smuggle_a_request() {
    let rig = Rig::start(|_, _, _| Act::Reply(vec![OK])).await;
    let mut app = App::connect(&rig.tokex).await;
    let smuggled = format!(
        "GET /smuggled HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer {APP_TOKEN}\r\n\r\n"
    );
    app.send(&request(
        "POST",
        "/a",
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        &format!("5\r\nhello\r\n0\r\n\r\n{smuggled}"),
    ))
    .await;
    let text = app.read_to_close().await;
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    let parsed = rig.up.parsed();
    assert_eq!(parsed.len(), 1, "{parsed:?}");
    assert!(parsed[0].head.starts_with("POST /a "), "{parsed:?}");
    assert_eq!(parsed[0].body, b"hello");
    assert!(
        !parsed[0].head.to_lowercase().contains("content-length: 4"),
        "{parsed:?}"
    );
    rig.assert_token_stayed();
}

/// Lines ending in a bare LF are read as lines (RFC 9112 §2.2 lets a recipient), and the
/// upstream gets a request with CRLF line ends and the narrowed token.
#[tokio::test]
async fn bare_lf_line_ends_are_normalized() {
    let rig = Rig::start(|_, _, _| Act::Reply(vec![OK])).await;
    let mut app = App::connect(&rig.tokex).await;
    app.send(&request("GET", "/lf", "X-A: 1\r\n", "").replace("\r\n", "\n"))
        .await;
    let (head, _) = app.response().await;
    assert_eq!(status(&head), 200, "{head}");
    let raw = rig.up.raw();
    assert!(raw.starts_with("GET /lf HTTP/1.1\r\n"), "{raw:?}");
    assert!(
        raw.contains("\r\nx-a: 1\r\n") && !raw.contains("1\n\n"),
        "{raw:?}"
    );
    rig.assert_token_stayed();
}

/// A length repeated on two lines is one length (RFC 9110 §8.6), and the upstream gets
/// one `Content-Length`; a list in one line is refused.
#[tokio::test]
async fn a_repeated_length_is_one_length() {
    let rig = Rig::start(|_, _, _| Act::Reply(vec![OK])).await;
    let mut app = App::connect(&rig.tokex).await;
    app.send(&request("POST", "/", "Content-Length: 3, 3\r\n", "abc"))
        .await;
    assert_eq!(status(&app.read_to_close().await), 400);
    let mut app = App::connect(&rig.tokex).await;
    app.send(&request(
        "POST",
        "/",
        "Content-Length: 3\r\nContent-Length: 3\r\n",
        "abc",
    ))
    .await;
    let (head, _) = app.response().await;
    assert_eq!(status(&head), 200, "{head}");
    let parsed = rig.up.parsed();
    assert_eq!(parsed[0].body, b"abc");
    assert_eq!(
        parsed[0]
            .head
            .to_lowercase()
            .matches("content-length: 3\r\n")
            .count(),
        1,
        "{parsed:?}"
    );
    rig.assert_token_stayed();
}

/// Two requests in one write, with different tokens and routes, are answered in
/// order; each upstream sees only its own request, with its own narrowed token, and a
/// body that looks like a request is only a body.
#[tokio::test]
async fn pipelined_requests_keep_their_own_token_route_and_body() {
    let rig = Rig::start(|_, _, _| Act::Reply(vec![OK])).await;
    let inner = "GET /admin HTTP/1.1\r\nHost: echo.internal\r\nAuthorization: Bearer inner\r\n\r\n";
    let pipelined = [
        request("POST", "/first", &format!("Content-Length: {}\r\n", inner.len()), inner),
        "GET /second HTTP/1.1\r\nHost: other.internal\r\nAuthorization: Bearer second-token\r\n\r\n".to_string(),
        request("GET", "/third", "", ""),
    ]
    .concat();
    let mut app = App::connect(&rig.tokex).await;
    app.send(&pipelined).await;
    let text = app.read_until("\r\n\r\nok", 3).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    let echo = rig.up.parsed();
    assert_eq!(echo.len(), 2, "{echo:?}");
    assert!(echo[0].head.starts_with("POST /first ") && echo[1].head.starts_with("GET /third "));
    assert_eq!(
        echo[0].body,
        inner.as_bytes(),
        "the inner request is the body"
    );
    assert!(
        !rig.up.heads().iter().any(|h| h.contains("/admin")),
        "never a request"
    );
    let other = rig.other.parsed();
    assert_eq!(other.len(), 1, "{other:?}");
    assert!(other[0].head.starts_with("GET /second "));
    let auth = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        auth(&echo[0].head),
        auth(&echo[1].head),
        "one token, one narrowed token"
    );
    assert_ne!(
        auth(&echo[0].head),
        auth(&other[0].head),
        "the other route's own"
    );
    rig.assert_token_stayed();
}

/// `Host` (RFC 9112 §3.2): two of them, none on HTTP/1.1, or one that is no authority
/// is 400 `invalid_request`; an absolute-form target names the route whatever `Host`
/// says; HTTP/1.0 may omit it.
#[tokio::test]
async fn host_must_be_one_valid_authority() {
    let rig = Rig::start(|_, _, _| Act::Reply(vec![OK])).await;
    let bad = [
        format!(
            "GET / HTTP/1.1\r\nHost: echo.internal\r\nHost: other.internal\r\nAuthorization: Bearer {APP_TOKEN}\r\n\r\n"
        ),
        format!("GET / HTTP/1.1\r\nAuthorization: Bearer {APP_TOKEN}\r\n\r\n"),
        format!(
            "GET / HTTP/1.1\r\nHost: echo.internal/x\r\nAuthorization: Bearer {APP_TOKEN}\r\n\r\n"
        ),
    ];
    for raw in bad {
        let mut app = App::connect(&rig.tokex).await;
        app.send(&raw).await;
        let (head, _) = app.response().await;
        assert_eq!(status(&head), 400, "{raw:?}: {head}");
        assert!(head.contains("tokex-error: invalid_request"), "{head}");
    }
    assert!(rig.up.parsed().is_empty() && rig.other.parsed().is_empty());
    let mut app = App::connect(&rig.tokex).await;
    app.send(&format!(
        "GET http://echo.internal/abs HTTP/1.1\r\nHost: other.internal\r\nAuthorization: Bearer {APP_TOKEN}\r\n\r\n"
    ))
    .await;
    let (head, _) = app.response().await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(rig.up.parsed().len(), 1);
    assert!(rig.other.parsed().is_empty());
    let mut app = App::connect(&rig.tokex).await;
    app.send("GET / HTTP/1.0\r\n\r\n").await;
    let (head, _) = app.response().await;
    assert!(head.contains("tokex-error: no_route"), "{head}");
    rig.assert_token_stayed();
}

/// Dot segments, plain or percent-encoded, are resolved before routing: those that
/// climb above the root or out of a route's prefix are 400 `invalid_request`, and what
/// reaches the upstream has none.
#[tokio::test]
async fn dot_segments_never_reach_the_upstream() {
    let rig = Rig::start(|_, _, _| Act::Reply(vec![OK])).await;
    for path in [
        "/../../admin",
        "/%2e%2e/admin",
        "/a/..%2fadmin",
        "/a/%2E%2e/../x",
    ] {
        let mut app = App::connect(&rig.tokex).await;
        app.send(&request("GET", path, "", "")).await;
        let (head, _) = app.response().await;
        assert_eq!(status(&head), 400, "{path}: {head}");
        assert!(head.contains("tokex-error: invalid_request"), "{head}");
    }
    assert!(rig.up.parsed().is_empty());
    let mut app = App::connect(&rig.tokex).await;
    app.send(&request("GET", "/a/./b/../c?q=1", "", "")).await;
    let (head, _) = app.response().await;
    assert_eq!(status(&head), 200, "{head}");
    assert!(
        rig.up.heads()[0].starts_with("GET /a/c?q=1 "),
        "{:?}",
        rig.up.heads()
    );
    rig.assert_token_stayed();
}
