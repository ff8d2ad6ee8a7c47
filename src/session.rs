//! What one app connection keeps between its requests: the HTTP/1.1 upstream
//! connections it opened and has finished with, and its last token lookup.
//!
//! An app connection nearly always sends the same token to the same upstream, request
//! after request. Keeping its own upstream connections means the next request takes
//! one without touching anything another app connection uses, and the remembered
//! lookup ([`Recent`]) skips the token's decoding and hashing. When the app connection
//! ends, its idle upstream connections ([`Kept`]) go to their upstream's shared pool, so
//! an app that opens a connection per request still reuses upstream connections.

use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Sleep;

use crate::cache::Recent;
use crate::upstream::Kept;

/// The state of one app connection, shared by its requests.
#[derive(Default)]
pub struct Session {
    state: Mutex<State>,
    connections: Kept,
    /// Where the app was connecting, for a connection the transparent redirect brought.
    destination: Option<std::net::SocketAddr>,
}

#[derive(Default)]
struct State {
    recent: Option<Recent>,
    /// The timer for the upstream's response headers, reused request after request.
    timer: Option<Pin<Box<Sleep>>>,
    /// A `Host` found to resolve to this redirected connection's destination.
    host_checked: Option<Box<str>>,
}

impl Session {
    /// A redirected connection's session: its requests may match `match.destination`.
    pub fn redirected(destination: std::net::SocketAddr) -> Self {
        Self {
            destination: Some(destination),
            ..Self::default()
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

    /// Whether `host` was found to resolve to this connection's destination: an app
    /// connection nearly always sends one `Host`, which is then looked up once.
    pub fn host_checked(&self, host: &str) -> bool {
        self.state().host_checked.as_deref() == Some(host)
    }

    pub fn note_host_checked(&self, host: &str) {
        self.state().host_checked = Some(host.into());
    }

    /// The upstream connections this app connection has finished with, for its next
    /// requests.
    pub fn connections(&self) -> &Kept {
        &self.connections
    }
}
