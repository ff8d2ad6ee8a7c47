//! The fleet lock: a replica that misses takes a short `SET NX PX` lock on the entry's
//! name, so replicas missing together make one exchange; the others read the entry every
//! `poll_interval` until it is there or the exchange's timeout has passed, then exchange
//! themselves. A lock expires on its own, should its holder die, and only its holder
//! releases it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::{Entry, Failure, Op, Read, SharedCache, Wanted, millis};
use crate::clock;

impl SharedCache {
    /// Tries the fleet lock: `Some(Some(token))` taken, `Some(None)` another replica holds
    /// it, `None` no answer. It expires after `wait`, should its holder die.
    pub(super) async fn acquire(&self, lock_name: &str, wait: Duration) -> Option<Option<String>> {
        let token = lock_token()?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(lock_name)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(millis(wait).max(1));
        match self.command(&cmd, Op::Lock).await? {
            Value::Okay => Some(Some(token)),
            Value::Nil => Some(None),
            _ => {
                self.counters.error(Failure::Reply).inc();
                None
            }
        }
    }

    /// Waits for the token another replica is exchanging, reading it every `poll` until
    /// `wait` has passed.
    pub(super) async fn await_other(
        &self,
        wanted: &Wanted<'_>,
        wait: Duration,
        poll: Duration,
    ) -> Option<Arc<Entry>> {
        match poll_until(wait, poll, || self.read(wanted)).await {
            Some(entry) => {
                self.counters.filled.inc();
                self.counters.hits.inc();
                Some(entry)
            }
            None => {
                self.counters.gave_up.inc();
                None
            }
        }
    }

    /// Deletes the lock if it is still this replica's.
    pub(super) async fn release(&self, lock_name: &str, token: &str) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE).arg(1).arg(lock_name).arg(token);
        let _ = self.command(&cmd, Op::Unlock).await;
    }
}

/// Calls `read` every `poll` until it finds the entry, and gives up when the next call
/// would come at or after `wait`, or when the server stops answering.
async fn poll_until<Fut>(
    wait: Duration,
    poll: Duration,
    mut read: impl FnMut() -> Fut,
) -> Option<Arc<Entry>>
where
    Fut: Future<Output = Read>,
{
    let deadline = clock::now() + wait;
    loop {
        let next = clock::now() + poll;
        if next >= deadline {
            return None;
        }
        tokio::time::sleep_until(next).await;
        match read().await {
            Read::Found(entry) => return Some(entry),
            Read::Missing => {}
            Read::Unavailable => return None,
        }
    }
}

/// Deletes KEYS[1] only if it holds ARGV[1]: a lock that expired and was taken by another
/// replica is not this one's to release.
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0";

/// A random lock value, so only its holder releases a lock.
fn lock_token() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use http::HeaderValue;

    use super::*;

    /// A `read` that finds the entry from `ready_after` on (never, for `None`), answers
    /// `Unavailable` from `down_after` on, and records when it was called.
    fn reader(
        calls: &RefCell<Vec<Duration>>,
        ready_after: Option<Duration>,
        down_after: Option<Duration>,
    ) -> impl FnMut() -> std::future::Ready<Read> {
        let start = clock::now();
        move || {
            let at = clock::now() - start;
            calls.borrow_mut().push(at);
            let read = if down_after.is_some_and(|d| at >= d) {
                Read::Unavailable
            } else if ready_after.is_some_and(|r| at >= r) {
                let value = HeaderValue::from_static("Bearer narrowed");
                let expires = clock::now() + Duration::from_secs(60);
                Read::Found(Arc::new(Entry::new(value, expires, None)))
            } else {
                Read::Missing
            };
            std::future::ready(read)
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A waiter reads every poll interval and takes the entry at the first read after
    /// the holder wrote it, not before and not later.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_the_entry_at_the_first_poll_after_it_is_written() {
        let calls = RefCell::new(Vec::new());
        let found = poll_until(ms(1000), ms(100), reader(&calls, Some(ms(250)), None)).await;
        assert!(found.is_some());
        assert_eq!(*calls.borrow(), [ms(100), ms(200), ms(300)]);
    }

    /// A waiter whose holder never writes gives up before the wait has passed, having
    /// read once per interval, so it exchanges itself within the exchange's timeout.
    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_when_the_wait_has_passed() {
        let calls = RefCell::new(Vec::new());
        let started = clock::now();
        let found = poll_until(ms(1000), ms(300), reader(&calls, None, None)).await;
        assert!(found.is_none());
        assert_eq!(*calls.borrow(), [ms(300), ms(600), ms(900)]);
        assert_eq!(
            clock::now() - started,
            ms(900),
            "no sleep past the last read"
        );
    }

    /// A server that stops answering ends the wait at once: the replica exchanges itself
    /// instead of polling a dead server until the wait has passed.
    #[tokio::test(start_paused = true)]
    async fn a_server_that_stops_answering_ends_the_wait() {
        let calls = RefCell::new(Vec::new());
        let found = poll_until(ms(1000), ms(100), reader(&calls, None, Some(ms(200)))).await;
        assert!(found.is_none());
        assert_eq!(*calls.borrow(), [ms(100), ms(200)]);
    }

    /// A poll interval as long as the wait reads nothing: waiting is pointless when the
    /// only read would come after the exchange's timeout.
    #[tokio::test(start_paused = true)]
    async fn no_read_when_the_interval_reaches_past_the_wait() {
        let calls = RefCell::new(Vec::new());
        let found = poll_until(ms(100), ms(100), reader(&calls, Some(ms(0)), None)).await;
        assert!(found.is_none());
        assert!(calls.borrow().is_empty());
    }
}
