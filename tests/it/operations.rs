//! Operations: graceful shutdown drains in-flight requests; a reload swaps
//! routes atomically and a broken file keeps the running config. Time is paused: the
//! slow upstream's two seconds and the file checks pass as the tests advance them.

use std::sync::atomic::Ordering;

use crate::support::*;

/// On shutdown a request already in flight completes, readiness drops, and new
/// connections are refused.
#[tokio::test(start_paused = true)]
async fn shutdown_drains_in_flight_requests() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml =
        config(&as_, &up.url()).replace("timeout: 1s\n    exchange", "timeout: 5s\n    exchange");
    let tokex = Tokex::start(&yaml).await;
    let (addr, admin) = (tokex.addr, tokex.admin);
    let url = tokex.url("/slow");
    let in_flight = tokio::spawn(async move {
        let r = client()
            .get(url)
            .header("host", "echo.internal")
            .bearer_auth("t")
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    });
    // The upstream has the connection for it: the request is truly in flight.
    settled("the request reached the upstream", async || {
        up.connections.load(Ordering::SeqCst) == 1
    })
    .await;
    let proxy = tokex.proxy.clone();
    let stopping = tokio::spawn(tokex.stop());
    settled("draining", async || !proxy.is_ready()).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
    assert_eq!(in_flight.await.unwrap(), 200, "in-flight request completed");
    stopping.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "admin closed after drain"
    );
}

/// A reload swaps routes for new requests. A reload of a broken file is refused with
/// the file's line and key, counted and logged once (the file checks that follow do not
/// try it again), and the old routes keep serving; the next good file clears the failure.
#[tokio::test(start_paused = true)]
async fn reload_swaps_routes_and_keeps_old_on_error() {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = config(&as_, &up.url());
    let tokex = Tokex::start(&yaml).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t")).await.status,
        200
    );

    let path = tokex.dir.path().join("tokex.yaml");
    let renamed = yaml.replace("host: echo.internal", "host: renamed.internal");
    std::fs::write(
        &path,
        format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{renamed}"),
    )
    .unwrap();
    tokex
        .proxy
        .reload(tokex::config::load(&path).unwrap())
        .unwrap();
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t"))
            .await
            .tokex_error(),
        Some("no_route")
    );
    assert_eq!(
        get(&tokex, "renamed.internal", "/", Some("t")).await.status,
        200
    );

    std::fs::write(
        &path,
        "routes: [ {name: broken, upstream: 'ftp://x', exchange: none} ]\n",
    )
    .unwrap();
    let err = tokex.proxy.reload_from_source().await.unwrap_err();
    assert!(
        err.contains("tokex.yaml:1:") && err.contains("routes[0].upstream"),
        "{err}"
    );
    assert_eq!(
        get(&tokex, "renamed.internal", "/", Some("t")).await.status,
        200,
        "old config still serves"
    );
    tokio::time::advance(FILE_POLL * 4).await;
    let m = tokex.metrics().await;
    assert!(
        m.contains("tokex_config_reloads_total{result=\"error\"} 1\n"),
        "one reload failed, once: {m}"
    );
    assert!(m.contains("tokex_config_last_reload_successful 0\n"), "{m}");
    assert_eq!(
        get(&tokex, "renamed.internal", "/", Some("t")).await.status,
        200,
        "old config still serves"
    );

    // The next good file clears the failure.
    std::fs::write(
        &path,
        format!("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{renamed}"),
    )
    .unwrap();
    tokex.proxy.reload_from_source().await.unwrap();
    let m = tokex.metrics().await;
    assert!(m.contains("tokex_config_last_reload_successful 1\n"), "{m}");
}
