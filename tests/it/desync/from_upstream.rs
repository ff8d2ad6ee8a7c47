//! What the upstream answers: ambiguous framing, bytes past a response's end, responses
//! reframed rather than copied, and bodies that break.

use super::*;

fn answers(path: &str, _: usize, _: usize) -> Act {
    match path {
        "/http10-chunked" => Act::Reply(vec![
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbleed",
        ]),
        "/te-comma" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ]),
        "/te-twice" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ]),
        "/te-and-cl" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ]),
        "/cl-list" => Act::Reply(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"]),
        "/cl-conflict" => Act::Reply(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"]),
        "/longer" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbleed",
        ]),
        "/bad-chunk" => Act::Reply(vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]),
        "/interim" => Act::Reply(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
        ]),
        "/unasked-101" => Act::Reply(vec![
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: upgrade\r\n\r\nRAW-BYTES",
        ]),
        "/no-content" => Act::Reply(vec![b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nbleed"]),
        "/not-modified" => Act::Reply(vec![b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nbleed"]),
        "/head" => Act::Reply(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbleed"]),
        "/folded" => Act::Reply(vec![b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok"]),
        "/nul-extension" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=\0\r\nhello\r\n0\r\n\r\n",
        ]),
        "/bad-trailer" => Act::Reply(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n5\r\nhello\r\n0\r\nx-t: a\0b\r\n\r\n",
        ]),
        _ => Act::Reply(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"]),
    }
}

/// After `first` on an app connection, a plain request on the same connection gets
/// its own answer, `next`, and never bytes of the first exchange.
async fn then_next_is_clean(app: &mut App) {
    app.send(&request("GET", "/next", "", "")).await;
    let (head, body) = app.response().await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, b"next", "{head}");
}

/// Framing an upstream gets wrong, or that a recipient could read two ways, is never
/// relayed: the app gets 502 `upstream_unavailable`, that upstream connection is not
/// used again, and the next request on the app's connection is clean.
#[tokio::test]
async fn ambiguous_responses_are_refused_and_their_connection_dropped() {
    let rig = Rig::start(answers).await;
    for path in [
        "/http10-chunked",
        "/te-comma",
        "/te-twice",
        "/te-and-cl",
        "/cl-conflict",
        "/unasked-101",
        "/folded",
    ] {
        let mut app = App::connect(&rig.tokex).await;
        app.send(&request("GET", path, "", "")).await;
        let (head, body) = app.response().await;
        assert_eq!(status(&head), 502, "{path}: {head}");
        assert!(
            head.contains("tokex-error: upstream_unavailable"),
            "{path}: {head}"
        );
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("bleed") && !body.contains("RAW-BYTES"),
            "{path}: {body}"
        );
        then_next_is_clean(&mut app).await;
        let parsed = rig.up.parsed();
        let (refused, next) = (&parsed[parsed.len() - 2], &parsed[parsed.len() - 1]);
        assert!(refused.head.contains(path) && next.head.contains("/next"));
        assert_ne!(
            refused.connection, next.connection,
            "{path}: the refused connection was used again"
        );
    }
    rig.assert_token_stayed();
}

/// Bytes past a response's end (a body longer than its length, a body on 204, 304 or
/// HEAD) are never relayed, neither in that response nor as the next one.
#[tokio::test]
async fn bytes_past_a_responses_end_never_reach_the_app() {
    let rig = Rig::start(answers).await;
    let cases = [
        ("GET", "/longer", 200, &b"ok"[..]),
        ("GET", "/no-content", 204, b""),
        ("GET", "/not-modified", 304, b""),
        ("HEAD", "/head", 200, b""),
    ];
    for (method, path, want, body) in cases {
        let mut app = App::connect(&rig.tokex).await;
        app.send(&request(method, path, "", "")).await;
        let text = if method == "HEAD" || want != 200 {
            app.read_until("\r\n\r\n", 1).await
        } else {
            app.read_until("\r\n\r\nok", 1).await
        };
        assert_eq!(status(&text), want, "{path}: {text}");
        let got = &text[text.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(got.as_bytes(), body, "{path}: {text}");
        if method == "HEAD" {
            assert!(
                text.to_lowercase().contains("content-length: 5\r\n"),
                "{text}"
            );
        }
        app.clear();
        then_next_is_clean(&mut app).await;
    }
    rig.assert_token_stayed();
}

/// What hyper re-frames is relayed by meaning, not by bytes: a list of equal lengths is
/// one length, interim responses are dropped, and a NUL in a chunk extension (which
/// hyper does not relay) never reaches the app.
#[tokio::test]
async fn responses_are_reframed_not_copied() {
    let rig = Rig::start(answers).await;
    let mut app = App::connect(&rig.tokex).await;
    app.send(&request("GET", "/cl-list", "", "")).await;
    let (head, body) = app.response().await;
    assert_eq!(
        (status(&head), body.as_slice()),
        (200, &b"ok"[..]),
        "{head}"
    );
    assert_eq!(
        head.to_lowercase().matches("content-length").count(),
        1,
        "{head}"
    );
    app.send(&request("GET", "/interim", "", "")).await;
    let (head, body) = app.response().await;
    assert_eq!(
        (status(&head), body.as_slice()),
        (200, &b"final"[..]),
        "{head}"
    );
    app.send(&request("GET", "/nul-extension", "", "")).await;
    let text = app.read_until("0\r\n\r\n", 1).await;
    assert!(!text.contains('\0'), "{text:?}");
    assert!(text.contains("hello"), "{text:?}");
    app.clear();
    then_next_is_clean(&mut app).await;
    rig.assert_token_stayed();
}

/// A broken chunked body or trailer after the head was relayed cuts the app's
/// connection: the app never sees a complete response, so it cannot take the broken
/// one for a whole one.
#[tokio::test]
async fn broken_bodies_cut_the_app_connection() {
    let rig = Rig::start(answers).await;
    for path in ["/bad-chunk", "/bad-trailer"] {
        let mut app = App::connect(&rig.tokex).await;
        app.send(&request("GET", path, "TE: trailers\r\n", ""))
            .await;
        let text = app.read_to_close().await;
        assert!(
            !text.contains("0\r\n\r\n"),
            "{path}: no complete body: {text:?}"
        );
        assert!(!text.contains('\0'), "{path}: {text:?}");
    }
    rig.assert_token_stayed();
}
