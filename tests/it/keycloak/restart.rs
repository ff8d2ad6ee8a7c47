//! Keycloak restarted in the middle of traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// Keycloak stops (SIGTERM) and starts again on the same ports while requests keep
/// coming: every request with a token tokex has cached is served throughout, with the
/// token Keycloak issued before; a token tokex has not seen gets 503
/// authority_unavailable with Retry-After while Keycloak is down, and is exchanged once
/// it is back (Keycloak keeps user sessions and realm keys in its database, so the
/// user's token is still good and the old tokens still verify).
#[tokio::test]
async fn warm_keys_are_served_through_a_restart() {
    let kc = server::exclusive().await;
    let up = Upstream::start().await;
    let tokex =
        Arc::new(Tokex::start(&config(&kc, &basic("tokex-restart"), &up.url(), NARROW, "")).await);
    let keys = jwks(&kc).await;
    let mut warm = Vec::new();
    for _ in 0..4 {
        let (subject, _) = user_token(&kc, "app").await;
        let narrowed = forwarded(&get(&tokex, "orders.internal", "/", Some(&subject)).await);
        verified(&narrowed, &keys, &kc.issuer());
        warm.push((subject, narrowed));
    }
    let (cold, _) = user_token(&kc, "app").await;
    assert_eq!(exchanges(&tokex).await, 4);

    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = tokio::spawn({
        let (tokex, stop, served, failed) =
            (tokex.clone(), stop.clone(), served.clone(), failed.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                for (subject, narrowed) in &warm {
                    let r = get(&tokex, "orders.internal", "/", Some(subject)).await;
                    if r.status == 200 && forwarded(&r) == *narrowed {
                        served.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    kc.stop().await;
    let before_outage = served.load(Ordering::SeqCst);
    let r = get(&tokex, "orders.internal", "/", Some(&cold)).await;
    assert_eq!(
        (r.status, r.tokex_error()),
        (503, Some("authority_unavailable")),
        "{}",
        r.body
    );
    assert!(r.headers.contains_key("retry-after"));
    kc.restart().await;
    let during_outage = served.load(Ordering::SeqCst) - before_outage;

    let r = get(&tokex, "orders.internal", "/", Some(&cold)).await;
    verified(&forwarded(&r), &keys, &kc.issuer());
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no warm request failed");
    assert!(
        during_outage > 0,
        "traffic was served while Keycloak was down"
    );
    assert_eq!(jwks(&kc).await, keys, "the realm kept its keys");
    assert_eq!(exchanges(&tokex).await, 5);
    eprintln!(
        "restart: {during_outage} warm requests served while Keycloak was down, {} in all",
        served.load(Ordering::SeqCst)
    );
}
