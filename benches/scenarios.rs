//! Measurements for the notes, not pass/fail tests of speed: whole scenarios against tokex
//! in-process, on the real clock, each printing a report.
//!
//! - `outage`: an AS outage of 60 s while 1000 cached keys keep being requested, with
//!   tokens that live 300 s and `refresh_ahead: 2m`: AS calls during the outage and failed
//!   requests. `TOKEX_MEASURE_SCALE` (default 10) divides its times; 1 runs it at full size
//!   (about six minutes).
//! - `reload_latency`: p50 and p99 latency through tokex on cached keys, without and with a
//!   config reload every 100 ms.
//! - `fleet`: N = 1, 2 and 5 replicas, each asked for every key, without and with a shared
//!   cache on a real `redis-server`: AS calls and p99 latency; then the latency of a local
//!   hit, a shared hit (local miss, Redis hit) and an exchange (the mock AS answers after
//!   5 ms).
//!
//! `cargo bench --bench scenarios` runs both, optimized as the numbers need;
//! `cargo bench --bench scenarios -- outage` runs the ones whose name contains `outage`.
//! Without cargo bench's `--bench` argument (`cargo test --benches`, which the test command
//! runs) each runs once at a tiny size, so the scenarios cannot rot unseen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The integration tests' helpers, module by module as `tests/it/support.rs` lists them
/// (a file loaded by path would look for them beside it, not in `support/`).
#[allow(dead_code, unused_imports, unused_macros)]
#[path = "../tests/it/support"]
mod support {
    mod app;
    mod mock_as;
    mod modes;
    mod raw;
    mod redis_server;
    mod scripted;
    mod serve;
    mod spawn;
    mod sts;
    mod tls;
    mod tokex;
    mod upstream;
    mod wait;

    pub use app::*;
    pub use mock_as::*;
    pub use modes::*;
    pub use raw::*;
    pub use redis_server::*;
    pub use scripted::*;
    pub use serve::*;
    pub use spawn::*;
    pub use sts::*;
    pub use tls::*;
    pub use tokex::*;
    pub use upstream::*;
    pub use wait::*;
}

use support::*;

/// How large a run is.
struct Size {
    /// Cached keys the outage scenario keeps requesting.
    keys: usize,
    /// What the outage scenario's times are divided by.
    scale: u64,
    /// How long each half of the latency scenario sends requests.
    window: Duration,
}

type Scenario = fn(&Size) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = if args.iter().any(|a| a == "--bench") {
        let scale = std::env::var("TOKEX_MEASURE_SCALE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        Size {
            keys: 1000,
            scale,
            window: Duration::from_secs(5),
        }
    } else {
        Size {
            keys: 20,
            scale: 100,
            window: Duration::from_millis(500),
        }
    };
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let scenarios: [(&str, Scenario); 3] = [
        ("outage", |s| Box::pin(outage_with_cached_keys(s))),
        ("reload_latency", |s| Box::pin(latency_during_reloads(s))),
        ("fleet", |s| {
            Box::pin(fleet_with_and_without_shared_cache(s))
        }),
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (name, run) in scenarios {
        if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
            println!("scenario {name}");
            runtime.block_on(run(&size));
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// An AS outage of 60 s (scaled) while the cached keys keep being requested, with tokens
/// that live 300 s (scaled) and refresh_ahead 2m (scaled): AS calls during the outage
/// and failed requests.
async fn outage_with_cached_keys(size: &Size) {
    let scale = size.scale;
    let secs = |s: u64| Duration::from_millis(s * 1000 / scale);
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let down = Arc::new(AtomicBool::new(false));
    let d = down.clone();
    let lifetime = 300 / scale;
    as_.on(move |req, n| {
        if d.load(Ordering::SeqCst) {
            Reply::json(503, serde_json::json!({"error": "temporarily_unavailable"}))
        } else {
            issue_with(req, &format!("narrowed-{n}"), Some(lifetime + 30))
        }
    });
    let yaml = format!(
        "{}cache: {{ early_expiry: 30s, refresh_ahead: {}ms }}\n",
        config(&as_, &up.url()),
        secs(120).as_millis()
    );
    let tokex = Arc::new(Tokex::start(&yaml).await);
    let keys = size.keys;
    for k in 0..keys {
        let r = get(&tokex, "echo.internal", "/", Some(&format!("key-{k}"))).await;
        assert_eq!(r.status, 200, "warm-up: {}", r.body);
    }
    let warm = as_.count();
    let started = Instant::now();
    let (outage_from, outage_to, end) = (secs(170), secs(230), secs(290));
    let (failed, sent, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut clients = Vec::new();
    for c in 0..8 {
        let (t, failed, sent, stop) = (tokex.clone(), failed.clone(), sent.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut k = c;
            while !stop.load(Ordering::SeqCst) {
                let r = get(&t, "echo.internal", "/", Some(&format!("key-{}", k % keys))).await;
                sent.fetch_add(1, Ordering::SeqCst);
                if r.status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                k += 8;
            }
        }));
    }
    // The scenario's phases are spans of real time: what is measured is how tokex rides
    // them out.
    tokio::time::sleep(outage_from).await;
    let before = as_.count();
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(outage_to - outage_from).await;
    down.store(false, Ordering::SeqCst);
    let during = as_.count() - before;
    tokio::time::sleep(end.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    println!(
        "outage report (scale 1:{scale}): {keys} cached keys, token lifetime {}s (cache {}s), outage {:?}, \
         AS calls during the outage: {during}, requests: {}, failed: {}, AS calls in warm-up: {warm}, total: {}",
        lifetime + 30,
        lifetime,
        outage_to - outage_from,
        sent.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        as_.count()
    );
}

/// p50/p99 latency through tokex on cached keys, without and with a config reload
/// every 100 ms.
async fn latency_during_reloads(size: &Size) {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = config(&as_, &up.url());
    let tokex = Arc::new(Tokex::start(&yaml).await);
    let path = tokex.dir.path().join("tokex.yaml");
    for k in 0..16 {
        get(&tokex, "echo.internal", "/", Some(&format!("k{k}"))).await;
    }
    let window = size.window;
    let run = |reload: bool| {
        let (tokex, yaml, path) = (tokex.clone(), yaml.clone(), path.clone());
        async move {
            let stop = Arc::new(AtomicBool::new(false));
            let reloader = reload.then(|| {
                let (tokex, stop) = (tokex.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let variant = yaml.replace(
                            "timeout: 1s\n    exchange",
                            &format!("timeout: {}ms\n    exchange", 1000 + i % 2),
                        );
                        std::fs::write(
                            &path,
                            format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{variant}"),
                        )
                        .unwrap();
                        tokex.proxy.reload_from_source().await.unwrap();
                        // The reload rate is the scenario's input.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    i
                })
            });
            let mut latencies = Vec::new();
            let c = client();
            let started = Instant::now();
            let mut i = 0;
            while started.elapsed() < window {
                i += 1;
                let t = Instant::now();
                let r = c
                    .get(tokex.url("/"))
                    .header("host", "echo.internal")
                    .bearer_auth(format!("k{}", i % 16))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                latencies.push(t.elapsed());
            }
            stop.store(true, Ordering::SeqCst);
            let reloads = match reloader {
                Some(r) => r.await.unwrap(),
                None => 0,
            };
            latencies.sort();
            (
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                latencies.len(),
                reloads,
            )
        }
    };
    let (p50, p99, n, _) = run(false).await;
    println!("latency without reloads: {n} requests, p50 {p50:?}, p99 {p99:?}");
    let (p50r, p99r, nr, reloads) = run(true).await;
    println!(
        "latency with {reloads} reloads: {nr} requests, p50 {p50r:?}, p99 {p99r:?}; p99 added {:?}",
        p99r.saturating_sub(p99)
    );
}

/// N replicas behind a load balancer that sends every key to every replica: AS calls and
/// p99 latency without and with the shared cache; then what each kind of lookup costs.
async fn fleet_with_and_without_shared_cache(size: &Size) {
    let keys = size.keys;
    for replicas in [1, 2, 5] {
        for shared in [false, true] {
            let (redis, as_, up) = (
                Redis::start().await,
                MockAs::start().await,
                Upstream::start().await,
            );
            as_.on(|req, n| issue(req, n).delayed(Duration::from_millis(5)));
            let dir = tempfile::tempdir().unwrap();
            let yaml = fleet_config(&as_, &up, &redis, dir.path(), shared);
            let mut fleet = Vec::new();
            for _ in 0..replicas {
                fleet.push(Tokex::start(&yaml).await);
            }
            let c = client();
            let mut latencies = Vec::new();
            for k in 0..keys {
                for replica in &fleet {
                    latencies.push(timed(&c, replica, &format!("key-{k}")).await);
                }
            }
            latencies.sort();
            println!(
                "fleet: {replicas} replicas, shared cache {}: {keys} keys, each asked of every replica: \
                 AS calls {}, p50 {:?}, p99 {:?}",
                if shared { "on " } else { "off" },
                as_.count(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            );
        }
    }
    let (redis, as_, up) = (
        Redis::start().await,
        MockAs::start().await,
        Upstream::start().await,
    );
    as_.on(|req, n| issue(req, n).delayed(Duration::from_millis(5)));
    let dir = tempfile::tempdir().unwrap();
    let yaml = fleet_config(&as_, &up, &redis, dir.path(), true);
    let (writer, c) = (Tokex::start(&yaml).await, client());
    let (mut local, mut exchanged) = (Vec::new(), Vec::new());
    for k in 0..keys {
        exchanged.push(timed(&c, &writer, &format!("lookup-{k}")).await);
        local.push(timed(&c, &writer, &format!("lookup-{k}")).await);
    }
    let reader = Tokex::start(&yaml).await;
    let before = as_.count();
    let mut shared = Vec::new();
    for k in 0..keys {
        shared.push(timed(&c, &reader, &format!("lookup-{k}")).await);
    }
    let shared_misses = as_.count() - before;
    for l in [&mut local, &mut shared, &mut exchanged] {
        l.sort();
    }
    println!(
        "lookups, p50 (p99): local hit {:?} ({:?}), shared hit {:?} ({:?}), exchange {:?} ({:?}); \
         {shared_misses} of {keys} shared lookups missed",
        percentile(&local, 0.5),
        percentile(&local, 0.99),
        percentile(&shared, 0.5),
        percentile(&shared, 0.99),
        percentile(&exchanged, 0.5),
        percentile(&exchanged, 0.99)
    );
}

/// The tests' config with, when `shared`, a shared cache at `redis` under a fresh key.
fn fleet_config(
    as_: &MockAs,
    up: &Upstream,
    redis: &Redis,
    dir: &std::path::Path,
    shared: bool,
) -> String {
    let mut yaml = config(as_, &up.url());
    if shared {
        let keys = key_file(dir, &[[42u8; 32]]);
        yaml.push_str(&format!(
            "cache:\n  shared:\n    url: {}\n    key_file: {}\n",
            redis.url(),
            keys.display()
        ));
    }
    yaml
}

/// One request for `token`, which must succeed, and how long it took.
async fn timed(c: &reqwest::Client, tokex: &Tokex, token: &str) -> Duration {
    let t = Instant::now();
    let r = c
        .get(tokex.url("/"))
        .header("host", "echo.internal")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    t.elapsed()
}
