//! Test helpers: a recording token endpoint that can be told to misbehave, echo
//! upstreams (plain and TLS), and a running tokex, all on ephemeral loopback ports.
//!
//! Everything runs in-process on the test's runtime, which is what lets a test pause
//! time: a loopback write is readable when it returns, so the runtime never idles in
//! the middle of a request and paused time moves only when the test moves it. Servers
//! here set `TCP_NODELAY` for the same reason.
//!
//! # Layout
//!
//! - [`serve`]: a handler on a loopback port; the bodies test servers answer with.
//! - [`mock_as`]: the recording token endpoint ([`MockAs`]) and its replies.
//! - [`upstream`]: echo upstreams, plain and TLS ([`Upstream`]).
//! - [`tls`]: a fresh CA and a `localhost` certificate for test servers.
//! - [`scripted`]: a raw upstream that answers by script ([`Scripted`]).
//! - [`tokex`]: tokex in-process ([`Tokex`]) and the config most tests use.
//! - [`spawn`]: the tokex binary in a subprocess ([`Spawned`]).
//! - [`sts`]: the embedded authorization server in-process ([`StsServer`]).
//! - [`app`]: the app's HTTP client and what it gets back ([`Got`]).
//! - [`raw`]: raw app connections ([`App`]) and a message reader.
//! - [`refusals`]: configs `tokex check` must refuse, at their place.
//! - [`redis_server`]: a real `redis-server` for the shared cache ([`Redis`]).
//! - [`modes`]: HTTP/1.1 or h2c from the app, http or https upstream ([`each_mode!`]).
//! - [`wait`]: waiting on a condition, on the real clock or on paused time.

mod app;
mod mock_as;
mod modes;
mod raw;
mod redis_server;
mod refusals;
mod scripted;
mod serve;
mod spawn;
mod sts;
mod tls;
mod tokex;
mod upstream;
mod wait;

pub use app::*;
pub use mock_as::*;
pub(crate) use modes::each_mode;
pub use modes::*;
pub use raw::*;
pub use redis_server::*;
pub use refusals::*;
pub use scripted::*;
pub use serve::*;
pub use spawn::*;
pub use sts::*;
pub use tls::*;
pub use tokex::*;
pub use upstream::*;
pub use wait::*;
