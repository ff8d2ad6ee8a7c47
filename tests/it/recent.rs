//! A connection's memory of its last token lookup (src/cache/recent.rs): requests that
//! repeat a token on one kept-alive connection skip the hash and the map, and must still
//! see every change the cache sees. Each test keeps one raw app connection open, so every
//! request after the first could be answered from memory.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;

/// Sends a GET for `host` with `token` on `app`, and returns the Authorization the echo
/// upstream saw (`None` when the request did not reach it).
async fn seen_by_upstream(app: &mut App, host: &str, token: &str) -> Option<String> {
    app.send(&format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ))
    .await;
    let (head, body) = app.response().await;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    body["authorization"].as_str().map(str::to_string)
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The same token again is a hit, counted as one; another token on the same connection
/// is its own exchange; going back to the first is a hit from the shared cache.
#[tokio::test]
async fn a_repeated_token_is_a_hit_and_another_token_is_not() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let tokex = Tokex::start(&config(&as_, &up.url())).await;
    let mut app = App::connect(&tokex).await;
    for _ in 0..3 {
        let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
        assert_eq!(seen.as_deref(), Some("Bearer narrowed-1"));
    }
    let seen = seen_by_upstream(&mut app, "echo.internal", "bob").await;
    assert_eq!(
        seen.as_deref(),
        Some("Bearer narrowed-2"),
        "bob is not alice"
    );
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(seen.as_deref(), Some("Bearer narrowed-1"));
    assert_eq!(as_.count(), 2);
    let text = tokex.metrics().await;
    assert_eq!(metric(&text, "tokex_cache_hits_total{route=\"echo\"}"), 3);
    assert_eq!(metric(&text, "tokex_cache_misses_total{route=\"echo\"}"), 2);
    assert!(up.seen().iter().all(|s| {
        let a = s.headers["authorization"].to_str().unwrap();
        a != "Bearer alice" && a != "Bearer bob"
    }));
}

/// A remembered entry is served only within its bound (1 s): at its last millisecond
/// from memory, at its bound the next request on the same connection exchanges again.
#[tokio::test(start_paused = true)]
async fn a_remembered_entry_expires_on_time() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, n| issue_with(req, &format!("narrowed-{n}"), Some(31)));
    let yaml = format!(
        "{}cache: {{ early_expiry: 30s }}\n",
        config(&as_, &up.url())
    );
    let tokex = Tokex::start(&yaml).await;
    let mut app = App::connect(&tokex).await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(seen.as_deref(), Some("Bearer narrowed-1"));
    tokio::time::advance(Duration::from_millis(999)).await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(seen.as_deref(), Some("Bearer narrowed-1"));
    tokio::time::advance(Duration::from_millis(1)).await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(
        seen.as_deref(),
        Some("Bearer narrowed-2"),
        "expired, exchanged"
    );
}

/// Refresh-ahead replaces the entry in the cache; a connection that remembered the old
/// one moves to the new one as soon as it is in.
#[tokio::test(start_paused = true)]
async fn a_refreshed_entry_replaces_the_remembered_one() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, n| issue_with(req, &format!("narrowed-{n}"), Some(36)));
    let yaml = format!(
        "{}cache: {{ early_expiry: 30s, refresh_ahead: 2s }}\n",
        config(&as_, &up.url())
    );
    let tokex = Tokex::start(&yaml).await;
    let mut app = App::connect(&tokex).await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(seen.as_deref(), Some("Bearer narrowed-1"));
    // 6 s in the cache, refreshed by the first hit from 4 s on.
    tokio::time::advance(Duration::from_secs(4)).await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(
        seen.as_deref(),
        Some("Bearer narrowed-1"),
        "served while refreshing"
    );
    settled("the refresh is in", async || {
        tokex.exchanges_answered().await == 2
    })
    .await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(
        seen.as_deref(),
        Some("Bearer narrowed-2"),
        "the refresh is used"
    );
    assert_eq!(as_.count(), 2);
}

/// Two routes with the same exchange share cache entries. When one of them purges a
/// token its upstream refused (`retry_on_401`), a connection on the other route that
/// remembered that token stops sending it.
#[tokio::test]
async fn a_purge_on_another_route_reaches_a_kept_connection() {
    let as_ = MockAs::start().await;
    let up = Upstream::start().await;
    let refuse_first = Arc::new(AtomicBool::new(true));
    let refuse = refuse_first.clone();
    let (picky, _task) = serve(move |req: http::Request<hyper::body::Incoming>| {
        let refuse = refuse.clone();
        async move {
            let auth = req.headers()["authorization"].to_str().unwrap().to_string();
            if auth == "Bearer narrowed-1" && refuse.load(Ordering::SeqCst) {
                full(401, "revoked")
            } else {
                full(200, auth)
            }
        }
    })
    .await;
    let yaml = format!(
        "{}  - name: picky
    match: {{ host: picky.internal }}
    upstream: http://{picky}
    timeout: 1s
    retry_on_401: true
    exchange: {{ authority: main, audience: echo-api, scope: read write }}
",
        config(&as_, &up.url())
    );
    let tokex = Tokex::start(&yaml).await;
    let mut app = App::connect(&tokex).await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(seen.as_deref(), Some("Bearer narrowed-1"));
    let r = get(&tokex, "picky.internal", "/", Some("alice")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "Bearer narrowed-2"));
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(
        seen.as_deref(),
        Some("Bearer narrowed-2"),
        "the purged token is gone"
    );
    assert_eq!(as_.count(), 2);
}

/// A rotated actor token changes the key: from the next file check on, the kept
/// connection exchanges again under the new actor instead of reusing what it remembered.
#[tokio::test(start_paused = true)]
async fn a_rotated_actor_is_not_served_from_memory() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("actor");
    std::fs::write(&file, "actor-one").unwrap();
    let yaml = config(&as_, &up.url()).replace(
        "    retries: 0\n",
        &format!(
            "    retries: 0\n    actor_token: {{ file: {}, type: urn:ietf:params:oauth:token-type:jwt }}\n",
            file.display()
        ),
    );
    let tokex = Tokex::start(&yaml).await;
    let mut app = App::connect(&tokex).await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(seen.as_deref(), Some("Bearer narrowed-1"));
    replace(&file, "actor-two");
    tokio::time::advance(FILE_POLL).await;
    let seen = seen_by_upstream(&mut app, "echo.internal", "alice").await;
    assert_eq!(seen.as_deref(), Some("Bearer narrowed-2"));
    assert_eq!(as_.count(), 2);
    assert_eq!(as_.requests()[1].param("actor_token"), Some("actor-two"));
}

/// Writes `text` to `path` atomically, as credential rotation tools do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("rotating");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
