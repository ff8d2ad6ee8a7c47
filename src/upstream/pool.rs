//! Upstream connections between requests: an idle HTTP/1.1 connection ([`Idle`]), the
//! ones an app connection keeps ([`Kept`]), the upstream's shared pool of them, and its
//! one multiplexed HTTP/2 connection ([`Shared`]).
//!
//! An idle connection is kept by the app connection that used it and reaches the shared
//! pool only when that app connection ends, so the hot path touches the pool's lock once
//! per app connection, not once per request.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::client::conn::{http1, http2};

use super::UpstreamBody;
use crate::clock::{self, Instant};

/// Idle connections an upstream's shared pool holds at most; more are closed.
const POOL_AT_MOST: usize = 256;

/// Idle upstream connections one app connection keeps at most; HTTP/1.1 apps need one,
/// an h2c app one per concurrent request.
const KEEP_AT_MOST: usize = 8;

/// An HTTP/1.1 connection whose last response is complete.
pub struct Idle {
    owner: Weak<Shared>,
    /// The trust roots it was verified with (a rotated `ca_file` retires it).
    generation: u64,
    pub(super) sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

impl Idle {
    pub(super) fn new(
        owner: &Arc<Shared>,
        generation: u64,
        sender: http1::SendRequest<UpstreamBody>,
    ) -> Self {
        Self {
            owner: Arc::downgrade(owner),
            generation,
            sender,
            since: clock::now(),
        }
    }

    /// Marks the moment its last response ended.
    pub(crate) fn idle_from_now(mut self) -> Self {
        self.since = clock::now();
        self
    }

    pub(crate) fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    fn belongs_to(&self, owner: &Shared) -> bool {
        std::ptr::eq(self.owner.as_ptr(), owner)
    }

    fn usable(&self, generation: u64, idle_limit: Duration, now: Instant) -> bool {
        self.generation == generation
            && !self.sender.is_closed()
            && now.saturating_duration_since(self.since) <= idle_limit
    }

    /// Hands it to its upstream's shared pool; closed when the upstream is gone (a
    /// reload replaced it) or the pool is full.
    fn into_shared_pool(self) {
        if let Some(owner) = self.owner.upgrade() {
            let mut idle = owner.idle();
            if idle.len() < POOL_AT_MOST && !self.sender.is_closed() {
                idle.push(self);
            }
        }
    }
}

/// The idle connections one app connection keeps for its next requests, to any of its
/// upstreams; when it ends they go to their upstreams' shared pools.
#[derive(Default)]
pub struct Kept {
    idle: Mutex<Vec<Idle>>,
}

impl Kept {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding this lock cannot leave the list half-written: every
        // critical section is a single move.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest idle connection to `owner` made with trust `generation` and idle for
    /// at most `idle_limit`; older or foreign ones it passes are closed.
    pub(super) fn checkout(
        &self,
        owner: &Shared,
        generation: u64,
        idle_limit: Duration,
        now: Instant,
    ) -> Option<Idle> {
        let mut idle = self.idle();
        let at = idle.iter().rposition(|i| i.belongs_to(owner))?;
        let conn = idle.swap_remove(at);
        drop(idle);
        conn.usable(generation, idle_limit, now).then_some(conn)
    }

    /// Keeps a connection whose last response is complete, for this app connection's
    /// next request.
    pub(crate) fn keep(&self, conn: Idle) {
        let mut idle = self.idle();
        if idle.len() < KEEP_AT_MOST {
            idle.push(conn);
        } else {
            drop(idle);
            conn.into_shared_pool();
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|p| p.into_inner());
        for conn in idle.drain(..) {
            conn.into_shared_pool();
        }
    }
}

/// What all app connections share for one upstream.
#[derive(Default)]
pub struct Shared {
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<UpstreamBody>>>,
    /// What the upstream chose by ALPN when last asked: [`HTTP1`] or [`HTTP2`], or 0
    /// before the first connection.
    protocol: AtomicU8,
    /// Held while a connection that may turn out HTTP/2 is being made, so concurrent
    /// requests wait for it instead of making one each.
    connecting: tokio::sync::Mutex<()>,
}

const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

impl Shared {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest usable pooled connection; stale ones met on the way are closed.
    pub(super) fn checkout(
        &self,
        generation: u64,
        idle_limit: Duration,
        now: Instant,
    ) -> Option<Idle> {
        let mut idle = self.idle();
        while let Some(conn) = idle.pop() {
            if conn.usable(generation, idle_limit, now) {
                return Some(conn);
            }
        }
        None
    }

    /// Closes pooled connections that idled past `idle_limit` or that the upstream
    /// closed.
    pub(super) fn sweep(&self, generation: u64, idle_limit: Duration, now: Instant) {
        self.idle()
            .retain(|conn| conn.usable(generation, idle_limit, now));
    }

    /// Whether the upstream last chose HTTP/1.1 (so no HTTP/2 connection is tried).
    pub(super) fn speaks_only_http1(&self) -> bool {
        self.protocol.load(Ordering::Relaxed) == HTTP1
    }

    pub(super) async fn connecting(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.connecting.lock().await
    }

    /// The multiplexed connection when it is still open.
    pub(super) fn h2(&self) -> Option<http2::SendRequest<UpstreamBody>> {
        let h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        h2.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// Records what the upstream chose by ALPN on a new connection.
    pub(super) fn negotiated(&self, h2: Option<&http2::SendRequest<UpstreamBody>>) {
        let protocol = if h2.is_some() { HTTP2 } else { HTTP1 };
        self.protocol.store(protocol, Ordering::Relaxed);
        if let Some(h2) = h2 {
            *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(h2.clone());
        }
    }
}
