//! What one app connection keeps between its requests: the HTTP/1.1 upstream
//! connections it opened and has finished with, and its last token lookup.
//!
//! An app connection nearly always sends the same token to the same upstream, request
//! after request. Keeping its own upstream connections means the next request takes
//! one without touching anything another app connection uses, and the remembered
//! lookup ([`Recent`]) skips the token's decoding and hashing. When the app connection
//! ends, its idle upstream connections go to their upstream's shared pool, so an app
//! that opens a connection per request still reuses upstream connections.

use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Sleep;

use crate::cache::Recent;
use crate::clock::Instant;
use crate::upstream::{Idle, Shared};

/// Idle upstream connections one app connection keeps at most; HTTP/1.1 apps need one,
/// an h2c app one per concurrent request.
const KEEP_AT_MOST: usize = 8;

/// The state of one app connection, shared by its requests.
#[derive(Default)]
pub struct Session {
    state: Mutex<State>,
    /// Where the app was connecting, for a connection the transparent redirect brought.
    destination: Option<std::net::SocketAddr>,
}

#[derive(Default)]
struct State {
    recent: Option<Recent>,
    idle: Vec<Idle>,
    /// The timer for the upstream's response headers, reused request after request.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Session {
    /// A redirected connection's session: its requests may match `match.destination`.
    pub fn redirected(destination: std::net::SocketAddr) -> Self {
        Self {
            state: Mutex::default(),
            destination: Some(destination),
        }
    }

    pub fn destination(&self) -> Option<std::net::SocketAddr> {
        self.destination
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written: every
        // critical section is a single move.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last token lookup, taken while the request uses it.
    pub fn take_recent(&self) -> Option<Recent> {
        self.state().recent.take()
    }

    pub fn keep_recent(&self, recent: Option<Recent>) {
        if recent.is_some() {
            self.state().recent = recent;
        }
    }

    /// The response timer, taken while a request waits on it (concurrent requests of an
    /// h2c connection get their own).
    pub fn take_timer(&self) -> Pin<Box<Sleep>> {
        self.state()
            .timer
            .take()
            .unwrap_or_else(|| Box::pin(tokio::time::sleep(Duration::ZERO)))
    }

    pub fn keep_timer(&self, timer: Pin<Box<Sleep>>) {
        self.state().timer = Some(timer);
    }

    /// The newest idle connection to `owner` made with trust `generation` and idle for
    /// at most `idle_limit`; older or foreign ones it passes are closed.
    pub(crate) fn checkout(
        &self,
        owner: &Shared,
        generation: u64,
        idle_limit: Duration,
        now: Instant,
    ) -> Option<Idle> {
        let mut state = self.state();
        let at = state.idle.iter().rposition(|i| i.belongs_to(owner))?;
        let idle = state.idle.swap_remove(at);
        drop(state);
        idle.usable(generation, idle_limit, now).then_some(idle)
    }

    /// Keeps a connection whose last response is complete, for this connection's next
    /// request.
    pub(crate) fn keep(&self, idle: Idle) {
        let mut state = self.state();
        if state.idle.len() < KEEP_AT_MOST {
            state.idle.push(idle);
        } else {
            drop(state);
            idle.into_shared_pool();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for idle in state.idle.drain(..) {
            idle.into_shared_pool();
        }
    }
}
