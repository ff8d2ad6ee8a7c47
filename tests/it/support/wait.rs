//! Waiting for a condition instead of sleeping: on the real clock with a deadline, or on
//! paused time without moving it.

use std::time::Duration;

/// How often tokex checks its config and credential files (documented: every 250 ms).
pub const FILE_POLL: Duration = Duration::from_millis(250);

/// Polls `done` every 5 ms until it holds, and fails the test with `what` after 5 s of
/// real time. For waits on something that takes its own time: a file poller on the real
/// clock, a child process writing its log.
pub async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    // Real time, so the bound holds on paused time too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lets every other task run, without moving the clock, until `done` holds; fails the
/// test with `what` after 10 000 rounds. For paused-time tests that wait for work already
/// under way (a background refresh, bytes on loopback), so that what they check next
/// still happens at the virtual instant they chose.
pub async fn settled(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..10_000 {
        if done().await {
            return;
        }
        // Yielding lets the runtime poll its sockets without moving paused time.
        tokio::task::yield_now().await;
    }
    panic!("not settled after 10 000 rounds: {what}");
}
