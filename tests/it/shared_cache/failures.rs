//! Redis failing: killed under traffic, paused past `timeout`, or something that is not
//! Redis at all. Every request the AS can serve succeeds, none waits much longer than
//! `timeout` for Redis, the breaker opens, and all of it is counted.
//!
//! What bounds a request's wait is tokex's own: the route's `deadline` (tokex's whole part
//! of a request) would answer 504 to a request left waiting on a Redis that never answers,
//! and the timeouts are counted, so the tests measure no time themselves.

use super::*;

/// Sends `n` requests with fresh subjects; each must succeed.
async fn fresh_requests(tokex: &Tokex, up: &Upstream, tag: &str, n: usize) {
    for i in 0..n {
        narrowed(tokex, up, &format!("{tag}-{i}")).await;
    }
}

/// [`shared_config`] with [`BREAKER`] and a route `deadline` far above `timeout` plus a
/// loopback exchange, and far below a pause or a dead server's wait.
fn failing_config(as_: &MockAs, up: &Upstream, url: &str, keys: &std::path::Path) -> String {
    with_route_lines(
        &shared_config(as_, up, url, keys, BREAKER),
        "    deadline: 1s\n",
    )
}

const BREAKER: &str = "timeout: 100ms\ncircuit_breaker: { failures: 3, open_for: 1s }";

/// Redis killed between requests: nothing fails, failures are counted, the breaker opens
/// and keeps further requests from asking.
#[tokio::test]
async fn redis_killed_under_traffic() {
    let (mut redis, as_, up) = (
        Redis::start().await,
        MockAs::start().await,
        Upstream::start().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &random_keys::<1>());
    let tokex = Tokex::start(&failing_config(&as_, &up, &redis.url(), &keys)).await;
    fresh_requests(&tokex, &up, "before", 3).await;
    written(&tokex, 3.0).await;
    redis.kill();
    fresh_requests(&tokex, &up, "after", 10).await;
    narrowed(&tokex, &up, "before-0").await;
    assert_eq!(
        as_.count(),
        13,
        "each fresh subject exchanged once; the local cache holds"
    );
    let metrics = tokex.metrics().await;
    let failed: f64 = ["io", "connect", "timeout"]
        .iter()
        .map(|k| {
            metric(
                &metrics,
                &format!("tokex_shared_cache_errors_total{{kind=\"{k}\"}}"),
            )
        })
        .sum();
    assert!(failed >= 3.0, "the failures are counted:\n{metrics}");
    assert_eq!(metric(&metrics, "tokex_shared_cache_breaker_open"), 1.0);
    let skipped = metric(
        &metrics,
        "tokex_shared_cache_errors_total{kind=\"breaker_open\"}",
    );
    assert!(skipped >= 1.0, "an open breaker stops asking:\n{metrics}");
}

/// Redis paused (SIGSTOP) past `timeout`: every request succeeds through the AS and waits
/// for Redis at most about `timeout`; timeouts are counted and the breaker opens. Once
/// Redis resumes, a probe closes the breaker and tokens are shared again.
#[tokio::test]
async fn redis_paused_past_the_timeout() {
    let (redis, as_, up) = (
        Redis::start().await,
        MockAs::start().await,
        Upstream::start().await,
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &random_keys::<1>());
    let tokex = Tokex::start(&failing_config(&as_, &up, &redis.url(), &keys)).await;
    fresh_requests(&tokex, &up, "warm", 1).await;
    written(&tokex, 1.0).await;
    redis.signal("STOP");
    // Redis itself would keep them waiting for good; `timeout` ends each lookup.
    fresh_requests(&tokex, &up, "paused", 8).await;
    let metrics = tokex.metrics().await;
    let timeouts = metric(
        &metrics,
        "tokex_shared_cache_errors_total{kind=\"timeout\"}",
    );
    assert!(timeouts >= 3.0, "timeouts counted:\n{metrics}");
    assert_eq!(metric(&metrics, "tokex_shared_cache_breaker_open"), 1.0);
    assert_eq!(as_.count(), 9);
    redis.signal("CONT");
    let mut n = 0;
    eventually("the breaker closes once Redis answers again", async || {
        n += 1;
        narrowed(&tokex, &up, &format!("resumed-{n}")).await;
        read_metric(&tokex, "tokex_shared_cache_breaker_open").await == 0.0
    })
    .await;
    let other = Tokex::start(&failing_config(&as_, &up, &redis.url(), &keys)).await;
    written(&tokex, 2.0).await;
    let before = as_.count();
    narrowed(&other, &up, &format!("resumed-{n}")).await;
    assert_eq!(as_.count(), before, "shared again after the pause");
}

/// Something that is not Redis at the URL (it answers every read with bytes that are no
/// Redis reply): requests succeed through the AS, and the failures are counted.
#[tokio::test]
async fn a_server_answering_garbage() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let garbage = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {
                    if conn
                        .write_all(b"\x00\x17 this is not a Redis reply \xff\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let keys = key_file(dir.path(), &random_keys::<1>());
    let url = format!("redis://127.0.0.1:{port}/0");
    let tokex = Tokex::start(&failing_config(&as_, &up, &url, &keys)).await;
    fresh_requests(&tokex, &up, "garbage", 6).await;
    assert_eq!(as_.count(), 6);
    let metrics = tokex.metrics().await;
    let failed: f64 = ["io", "connect", "reply", "timeout", "breaker_open"]
        .iter()
        .map(|k| {
            metric(
                &metrics,
                &format!("tokex_shared_cache_errors_total{{kind=\"{k}\"}}"),
            )
        })
        .sum();
    assert!(
        failed >= 6.0,
        "every lookup failed and was counted:\n{metrics}"
    );
    assert_eq!(metric(&metrics, "tokex_shared_cache_hits_total"), 0.0);
    garbage.abort();
}
