//! Operations: graceful shutdown drains in-flight requests; a reload swaps
//! routes atomically and a broken file keeps the running config.

use std::time::Duration;

use crate::support::*;

/// On shutdown a request already in flight completes, readiness drops, and new
/// connections are refused.
#[tokio::test]
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
    // Wait until the upstream has the request, so it is truly in flight.
    for _ in 0..100 {
        if !up.seen().is_empty() || as_.count() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let proxy = tokex.proxy.clone();
    let stopping = tokio::spawn(tokex.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!proxy.is_ready(), "not ready while draining");
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

/// A reload swaps routes for new requests; a broken file is refused and the old
/// routes keep serving.
#[tokio::test]
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
    let err = tokex::config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("tokex.yaml:1:") && err.contains("routes[0].upstream"),
        "{err}"
    );
    assert_eq!(
        get(&tokex, "renamed.internal", "/", Some("t")).await.status,
        200,
        "old config still serves"
    );
}
