//! Resilience: the circuit breaker, the retry budget, refresh-ahead through an
//! outage, deadlines, and config reloads under load.
//!
//! Tests of time run on paused tokio time against in-process servers: tokex's clock
//! (token lifetimes, the breaker, the budget, JWT `exp`) moves only when a test advances
//! it, so each checks what happens at an exact virtual instant.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::{Instant, advance};

use crate::support::*;

fn unavailable(_: &AsRequest, _: usize) -> Reply {
    Reply::json(503, serde_json::json!({"error": "temporarily_unavailable"}))
}

/// After `failures` consecutive failures the breaker answers 503 with Retry-After at
/// once, without calling the AS, until exactly `open_for` has passed; then one probe
/// goes through and, the AS being back, closes it.
#[tokio::test(start_paused = true)]
async fn circuit_breaker_fails_fast_then_recovers() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(unavailable);
    let yaml = config(&as_, &up.url()).replace(
        "retries: 0",
        "retries: 0\n    circuit_breaker: { failures: 3, open_for: 1s }",
    );
    let tokex = Tokex::start(&yaml).await;
    for i in 0..3 {
        let r = get(&tokex, "echo.internal", "/", Some(&format!("t{i}"))).await;
        assert_eq!(r.tokex_error(), Some("authority_unavailable"));
    }
    assert_eq!(as_.count(), 3);
    let opened = Instant::now();
    for i in 3..20 {
        let r = get(&tokex, "echo.internal", "/", Some(&format!("t{i}"))).await;
        assert_eq!(
            (r.status, r.tokex_error()),
            (503, Some("authority_unavailable"))
        );
        assert_eq!(r.headers["retry-after"], "1");
    }
    assert_eq!(
        opened.elapsed(),
        Duration::ZERO,
        "open circuit answers at once"
    );
    assert_eq!(as_.count(), 3, "no AS call while open");
    let open = "tokex_circuit_breaker_open{authority=\"main\"}";
    assert_eq!(counter(&tokex.metrics().await, open), 1.0);
    as_.on(issue);
    advance(Duration::from_millis(999)).await;
    let r = get(&tokex, "echo.internal", "/", Some("early")).await;
    assert_eq!(r.tokex_error(), Some("authority_unavailable"), "still open");
    assert_eq!(r.headers["retry-after"], "1", "1 ms left, rounded up");
    assert_eq!(as_.count(), 3);
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("probe"))
            .await
            .status,
        200,
        "probe closes it"
    );
    for i in 0..5 {
        assert_eq!(
            get(&tokex, "echo.internal", "/", Some(&format!("after-{i}")))
                .await
                .status,
            200
        );
    }
    assert_eq!(as_.count(), 3 + 1 + 5);
    assert_eq!(counter(&tokex.metrics().await, open), 0.0, "closed again");
}

/// With retries: 5 against an AS that always answers 503, retries add at most 20 % of
/// the first attempts plus the floor (2 at start, 2 per second of the clock the backoff
/// sleeps on).
#[tokio::test(start_paused = true)]
async fn retry_budget_bounds_extra_calls() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(unavailable);
    let yaml = config(&as_, &up.url()).replace(
        "retries: 0",
        "retries: 5\n    circuit_breaker: { failures: 0 }",
    );
    let tokex = Arc::new(Tokex::start(&yaml).await);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let t = tokex.clone();
        tasks.push(tokio::spawn(async move {
            get(&t, "echo.internal", "/", Some(&format!("t{i}")))
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    let elapsed = started.elapsed().as_secs_f64().ceil();
    let bound = 50.0 + 50.0 * 0.2 + 2.0 + 2.0 * elapsed;
    let calls = as_.count() as f64;
    assert!(
        calls <= bound,
        "{calls} AS calls for 50 requests (bound {bound})"
    );
    assert!(calls > 50.0, "some retries happened");
    let m = tokex.metrics().await;
    let retries = counter(&m, "tokex_exchange_retries_total{authority=\"main\"}");
    let exhausted = counter(&m, "tokex_retry_budget_exhausted_total{authority=\"main\"}");
    assert_eq!(retries, calls - 50.0, "each retry is counted:\n{m}");
    assert!(
        exhausted > 0.0,
        "the budget ran out and that was counted:\n{m}"
    );
}

/// The value of one series in a metrics text.
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

/// Refresh-ahead carries cached keys through an AS outage. Tokens live 6 s in the cache
/// (expires_in 36, early_expiry 30) and refresh from 3 s on; the AS is down from 2.5 s
/// to 4 s. At 3 s each key's refresh fails (the fifth failure opens the breaker for
/// 500 ms) and backs off for a second; at 4 s, the AS back, a probe closes the breaker
/// and every key is refreshed. No request fails, and the tokens outlive their first
/// bound.
#[tokio::test(start_paused = true)]
async fn refresh_ahead_rides_out_an_outage() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let down = Arc::new(AtomicBool::new(false));
    let d = down.clone();
    as_.on(move |req, n| {
        if d.load(Ordering::SeqCst) {
            unavailable(req, n)
        } else {
            issue_with(req, &format!("narrowed-{n}"), Some(36))
        }
    });
    let yaml = format!(
        "{}cache: {{ early_expiry: 30s, refresh_ahead: 3s }}\n",
        config(&as_, &up.url()).replace(
            "retries: 0",
            "retries: 0\n    circuit_breaker: { failures: 5, open_for: 500ms }"
        )
    );
    let tokex = Tokex::start(&yaml).await;
    let started = Instant::now();
    // Each key in turn, waiting for the refresh it may start, so refreshes meet the
    // breaker in a known order. Returns the tokens the upstream saw.
    let round = async |answered: [usize; 5]| {
        let mut seen = Vec::new();
        for (i, want) in answered.into_iter().enumerate() {
            let r = get(&tokex, "echo.internal", "/", Some(&format!("key-{i}"))).await;
            assert_eq!(r.status, 200, "at {:?}: {}", started.elapsed(), r.body);
            seen.push(r.json()["authorization"].as_str().unwrap().to_string());
            settled("the refresh answered", async || {
                tokex.exchanges_answered().await == want
            })
            .await;
        }
        seen
    };
    let tokens = |from: usize| (from..from + 5).map(|n| format!("Bearer narrowed-{n}"));
    let first: Vec<String> = tokens(1).collect();
    assert_eq!(round([1, 2, 3, 4, 5]).await, first);
    advance(Duration::from_millis(2500)).await;
    down.store(true, Ordering::SeqCst);
    assert_eq!(round([5; 5]).await, first, "no refresh before 3 s");
    advance(Duration::from_millis(500)).await;
    assert_eq!(
        round([6, 7, 8, 9, 10]).await,
        first,
        "served while refreshing"
    );
    let open = "tokex_circuit_breaker_open{authority=\"main\"}";
    assert_eq!(counter(&tokex.metrics().await, open), 1.0);
    advance(Duration::from_millis(900)).await;
    assert_eq!(round([10; 5]).await, first, "backing off until 4 s");
    assert_eq!(as_.count(), 10, "one call per key while the AS was down");
    advance(Duration::from_millis(100)).await;
    down.store(false, Ordering::SeqCst);
    assert_eq!(round([11, 12, 13, 14, 15]).await, first, "refreshing");
    assert_eq!(counter(&tokex.metrics().await, open), 0.0);
    let refreshed: Vec<String> = tokens(11).collect();
    assert_eq!(round([15; 5]).await, refreshed);
    advance(Duration::from_secs(2)).await;
    assert_eq!(
        round([15; 5]).await,
        refreshed,
        "past the first tokens' bound"
    );
}

/// No token is served past its bound, also not while the AS is down: the entry (1 s in
/// the cache) is served until its last millisecond, its refresh failing; at its bound
/// the request fails closed with authority_unavailable.
#[tokio::test(start_paused = true)]
async fn no_token_is_served_past_its_bound_during_an_outage() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, n| issue_with(req, &format!("narrowed-{n}"), Some(31)));
    let yaml = format!(
        "{}cache: {{ early_expiry: 30s, refresh_ahead: 1s }}\n",
        config(&as_, &up.url())
    );
    let tokex = Tokex::start(&yaml).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("k")).await.status,
        200
    );
    as_.on(unavailable);
    advance(Duration::from_millis(999)).await;
    let r = get(&tokex, "echo.internal", "/", Some("k")).await;
    assert_eq!(r.json()["authorization"], "Bearer narrowed-1", "{}", r.body);
    settled("the refresh failed", async || {
        tokex.exchanges_answered().await == 2
    })
    .await;
    advance(Duration::from_millis(1)).await;
    let r = get(&tokex, "echo.internal", "/", Some("k")).await;
    assert_eq!(
        r.tokex_error(),
        Some("authority_unavailable"),
        "expired entry not served"
    );
    assert_eq!(up.seen().len(), 2);
    assert_eq!(
        as_.count(),
        3,
        "the refresh, then the exchange at the bound"
    );
}

/// 50 reloads of the config file while four clients send requests: every reload lands
/// between requests of every client, no request fails, and each reload is counted.
#[tokio::test]
async fn reloads_under_load_fail_no_request() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = config(&as_, &up.url());
    let tokex = Arc::new(Tokex::start(&yaml).await);
    let path = tokex.dir.path().join("tokex.yaml");
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let done: Arc<[AtomicUsize; 4]> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (t, stop, failed, done) = (tokex.clone(), stop.clone(), failed.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let r = get(&t, "echo.internal", "/", Some(&format!("c{c}-{}", i % 7))).await;
                if r.status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                done[c].fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let progress = || done.each_ref().map(|d| d.load(Ordering::SeqCst));
    for i in 0..50 {
        let variant = yaml.replace(
            "timeout: 1s\n    exchange",
            &format!("timeout: {}ms\n    exchange", 1000 + i),
        );
        std::fs::write(
            &path,
            format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{variant}"),
        )
        .unwrap();
        tokex.proxy.reload_from_source().await.unwrap();
        // Two more requests per client: at least one of them began after the reload.
        let at_reload = progress();
        eventually("every client served after the reload", async || {
            progress()
                .iter()
                .zip(at_reload)
                .all(|(now, then)| *now >= then + 2)
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_config_reloads_total{result=\"ok\"} 50\n"),
        "{m}"
    );
}

/// Changing the config file reloads it at the next check, 250 ms at most, with no
/// signal; a broken write is refused and counted once, and the running routes keep
/// serving.
#[tokio::test(start_paused = true)]
async fn config_file_change_reloads() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = config(&as_, &up.url());
    let tokex = Tokex::start(&yaml).await;
    let path = tokex.dir.path().join("tokex.yaml");
    let renamed = yaml.replace("host: echo.internal", "host: moved.internal");
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{renamed}"),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    advance(FILE_POLL).await;
    let r = get(&tokex, "moved.internal", "/", Some("t")).await;
    assert_eq!(r.status, 200, "reloaded at the next check: {}", r.body);
    std::fs::write(&path, "routes: [ oops").unwrap();
    advance(FILE_POLL * 4).await;
    assert_eq!(
        get(&tokex, "moved.internal", "/", Some("t")).await.status,
        200,
        "old config kept"
    );
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_config_reloads_total{result=\"ok\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("tokex_config_reloads_total{result=\"error\"} 1\n"),
        "one broken write, one failure: {m}"
    );
    assert_eq!(counter(&m, "tokex_config_last_reload_successful"), 0.0);
}

/// An upstream that refuses the first narrowed token (`narrowed-1`) with 401 and accepts
/// any other.
async fn picky_upstream() -> (std::net::SocketAddr, Task) {
    serve(|req: http::Request<hyper::body::Incoming>| async move {
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string());
        if auth.as_deref() == Some("Bearer narrowed-1") {
            full(401, "stale")
        } else {
            full(200, auth.unwrap_or_default())
        }
    })
    .await
}

/// retry_on_401: a bodiless GET refused with 401 drops the cached token, exchanges once
/// more and retries once; a POST with a body is never retried; off by default.
#[tokio::test]
async fn purge_and_retry_on_401() {
    let as_ = MockAs::start().await;
    let (addr, _task) = picky_upstream().await;
    let url = format!("http://{addr}");
    let on = config(&as_, &url).replace(
        "    timeout: 1s\n    exchange",
        "    timeout: 1s\n    retry_on_401: true\n    exchange",
    );
    let tokex = Tokex::start(&on).await;
    let r = get(&tokex, "echo.internal", "/", Some("t")).await;
    assert_eq!((r.status, r.body.as_str()), (200, "Bearer narrowed-2"));
    assert_eq!(as_.count(), 2, "one extra exchange");
    let r = get(&tokex, "echo.internal", "/", Some("t")).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "Bearer narrowed-2"),
        "the fresh token was cached"
    );
    assert_eq!(as_.count(), 2);

    let as2 = MockAs::start().await;
    let tokex2 = Tokex::start(&config(&as2, &url).replace(
        "    timeout: 1s\n    exchange",
        "    timeout: 1s\n    retry_on_401: true\n    exchange",
    ))
    .await;
    let r = got(client()
        .post(tokex2.url("/"))
        .header("host", "echo.internal")
        .bearer_auth("t")
        .body("payload")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 401, "a request with a body is not retried");
    assert_eq!(as2.count(), 1);

    let as3 = MockAs::start().await;
    let off = Tokex::start(&config(&as3, &url)).await;
    assert_eq!(
        get(&off, "echo.internal", "/", Some("t")).await.status,
        401,
        "off by default"
    );
    assert_eq!(as3.count(), 1);
}

/// A route deadline bounds the whole request, exchange included: 504 upstream_timeout
/// when the deadline passes, while the AS is still thinking.
#[tokio::test(start_paused = true)]
async fn route_deadline_bounds_the_whole_request() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, n| issue(req, n).delayed(Duration::from_secs(2)));
    let yaml = config(&as_, &up.url())
        .replace(
            "    timeout: 1s\n    retries",
            "    timeout: 5s\n    retries",
        )
        .replace(
            "    timeout: 1s\n    exchange",
            "    timeout: 1s\n    deadline: 500ms\n    exchange",
        );
    let tokex = Tokex::start(&yaml).await;
    let started = Instant::now();
    let r = get(&tokex, "echo.internal", "/", Some("t")).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (504, Some("upstream_timeout")),
        "{}",
        r.body
    );
    assert_eq!(started.elapsed(), Duration::from_millis(500));
}

/// client_header_read closes a connection that trickles its headers (slowloris) and an
/// idle keep-alive connection, each within the limit.
#[tokio::test(start_paused = true)]
async fn slow_and_idle_clients_are_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = format!(
        "{}timeouts: {{ client_header_read: 500ms }}\n",
        config(&as_, &up.url())
    );
    let tokex = Tokex::start(&yaml).await;
    let mut slow = tokio::net::TcpStream::connect(tokex.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: echo")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert!(
        n == 0 || buf.starts_with(b"HTTP/1.1 408"),
        "slowloris connection closed"
    );
    assert!(started.elapsed() <= Duration::from_millis(500));

    let mut idle = tokio::net::TcpStream::connect(tokex.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: nowhere.internal\r\n\r\n")
        .await
        .unwrap();
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("idle connection closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() <= Duration::from_millis(500));
}

/// An upstream that resets mid-body: the app sees the truncated body fail, and tokex
/// keeps serving.
#[tokio::test]
async fn upstream_reset_mid_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let as_ = MockAs::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _task = Task(tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial")
                .await;
            drop(s);
        }
    }));
    let tokex = Tokex::start(&config(&as_, &format!("http://{addr}"))).await;
    let resp = client()
        .get(tokex.url("/"))
        .header("host", "echo.internal")
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "the truncated body is an error, not silently short"
    );
    let resp = client()
        .get(tokex.url("/"))
        .header("host", "echo.internal")
        .bearer_auth("t")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "tokex keeps serving");
}

/// An authority's `timeout` bounds the whole exchange, retries included: against an AS
/// that never answers, the app waits `timeout`, not `timeout` per attempt.
#[tokio::test(start_paused = true)]
async fn timeout_bounds_the_exchange_with_its_retries() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, n| issue(req, n).delayed(Duration::from_secs(600)));
    let yaml = config(&as_, &up.url()).replace("retries: 0", "retries: 2");
    let tokex = Tokex::start(&yaml).await;
    let started = tokio::time::Instant::now();
    let r = get(&tokex, "echo.internal", "/", Some("t")).await;
    let waited = started.elapsed();
    assert_eq!(
        (r.status, r.tokex_error()),
        (503, Some("authority_unavailable")),
        "{}",
        r.body
    );
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_millis(1100),
        "{waited:?}"
    );
}

/// `attempt_timeout` bounds one attempt inside the whole exchange's `timeout`: against
/// an AS that never answers, several attempts fit in the second the app waits.
#[tokio::test(start_paused = true)]
async fn attempt_timeout_bounds_each_attempt() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    as_.on(|req, n| issue(req, n).delayed(Duration::from_secs(600)));
    let yaml = config(&as_, &up.url()).replace(
        "retries: 0",
        "retries: 5\n    attempt_timeout: 200ms\n    circuit_breaker: { failures: 0 }",
    );
    let tokex = Tokex::start(&yaml).await;
    let started = tokio::time::Instant::now();
    let r = get(&tokex, "echo.internal", "/", Some("t")).await;
    let waited = started.elapsed();
    assert_eq!(r.tokex_error(), Some("authority_unavailable"), "{}", r.body);
    assert!(waited < Duration::from_millis(1100), "{waited:?}");
    // 200 ms each plus backoff from 50 ms: at least three attempts before the deadline.
    assert!(as_.count() >= 3, "{} attempts", as_.count());
}
