//! The one clock tokex reads.
//!
//! Monotonic time is tokio's [`Instant`]: token lifetimes and refresh-ahead in the cache,
//! the circuit breaker and retry budget, deadlines, idle limits and latencies are all
//! measured on it. Unix time ([`unix_now`], for JWT `exp`, `iat` and `nbf`, and for
//! timestamps) is the system clock shifted by however far tokio's clock stands from the
//! monotonic clock. Outside a paused runtime that shift is zero and both are the system's
//! own clocks; under `tokio::time::pause()` both move together when a test advances time,
//! so a token's `exp` and the cache entry it bounds expire at the same virtual instant.
//!
//! Two clocks tokex reads through other crates, and so not through this module:
//! - moka evicts expired entries on its own clock, which a test cannot pause. The cache
//!   therefore checks each entry's bound on this clock on every read, and that check is
//!   what decides whether a token is served.
//! - jsonwebtoken checks the `exp` and `nbf` of tokens the embedded STS verifies against
//!   the system clock; it takes no time from its caller.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use tokio::time::Instant;

/// Now, on tokio's clock.
pub fn now() -> Instant {
    Instant::now()
}

/// Time since the Unix epoch, on the same timeline as [`now`].
pub fn unix_time() -> Duration {
    // The monotonic clock is read before tokio's, so unpaused the shift is a few
    // nanoseconds forward, never backward across a second.
    let (wall, real) = (SystemTime::now(), std::time::Instant::now());
    let ours = Instant::now().into_std();
    let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    match ours.checked_duration_since(real) {
        Some(ahead) => since_epoch + ahead,
        None => since_epoch.saturating_sub(real - ours),
    }
}

/// Whole seconds since the Unix epoch: the clock JWT `exp`, `iat` and `nbf` are read
/// against.
pub fn unix_now() -> u64 {
    unix_time().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unpaused, Unix time is the system's.
    #[test]
    fn unpaused_unix_time_is_the_system_clock() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let ours = unix_time();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(before <= ours && ours <= after + Duration::from_millis(1));
    }

    /// Advancing paused time moves Unix time and monotonic time by the same amount.
    #[tokio::test(start_paused = true)]
    async fn paused_unix_time_follows_tokio_time() {
        let (start, start_unix) = (now(), unix_time());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(now() - start, Duration::from_secs(3600));
        let moved = unix_time() - start_unix;
        // The system clock and the monotonic one may drift apart by a hair meanwhile.
        assert!(
            moved.abs_diff(Duration::from_secs(3600)) < Duration::from_millis(50),
            "{moved:?}"
        );
    }
}
