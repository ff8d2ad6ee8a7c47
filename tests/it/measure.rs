//! Measurements for the notes, not pass/fail tests of speed: run with
//! `cargo test --release --test it -- --ignored measure --nocapture`.
//! `TOKEX_MEASURE_SCALE` (default 10) divides the outage scenario's times; 1 runs it at
//! full size (300 s tokens, 60 s outage: about six minutes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// An AS outage of 60 s (scaled) while 1000 cached keys keep being requested, with
/// tokens that live 300 s (scaled) and refresh_ahead 2m (scaled): AS calls during the
/// outage and failed requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: minutes long, prints a report"]
async fn measure_outage_with_1000_cached_keys() {
    let scale: u64 = std::env::var("TOKEX_MEASURE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
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
    let keys = 1000;
    for k in 0..keys {
        assert_eq!(
            get(&tokex, "echo.internal", "/", Some(&format!("key-{k}")))
                .await
                .status,
            200
        );
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: prints a report"]
async fn measure_latency_during_reloads() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = config(&as_, &up.url());
    let tokex = Arc::new(Tokex::start(&yaml).await);
    let path = tokex.dir.path().join("tokex.yaml");
    for k in 0..16 {
        get(&tokex, "echo.internal", "/", Some(&format!("k{k}"))).await;
    }
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
                        tokex.proxy.reload_from_source().unwrap();
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    i
                })
            });
            let mut latencies = Vec::new();
            let c = client();
            let started = Instant::now();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(5) {
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
