//! tokex: a sidecar proxy that performs OAuth 2.0 Token Exchange (RFC 8693) on a
//! service's outbound calls.
//!
//! # Layout
//!
//! The workspace has four crates. This one is the sidecar's library; `src/main.rs` with
//! `src/cli.rs`, `src/cli/` and `src/demo.rs` is the `tokex` binary, which also runs the
//! embedded authorization server (`tokex sts`, `tokex demo`) from the `tokex-sts` crate
//! (`crates/sts`). What both speak comes from `tokex-common` (`crates/common`) and is
//! re-exported here under the names the sidecar's modules use: [`secret`],
//! [`credentials`], [`tls`], [`oauth`], [`jwt`] and [`clock`].
//!
//! - [`config`]: the YAML configuration file, parsed into a validated model.
//! - [`routing`]: which route a request belongs to and the path it is forwarded with.
//! - [`bearer`]: the subject token from `Authorization` (RFC 6750), a header or a cookie.
//! - [`client_auth`]: how tokex authenticates to token endpoints.
//! - [`exchange`]: the RFC 8693 client and wire format.
//! - [`discovery`]: RFC 8414 / OpenID metadata, for authorities configured by issuer alone.
//! - [`cache`]: narrowed tokens under keyed-hash keys with per-entry lifetimes, and the
//!   encrypted level a workload's replicas share on Redis.
//! - [`forward`]: header hygiene, the upstream request, the relayed response, protocol
//!   switches.
//! - [`upstream`]: connections to upstreams: kept, pooled, multiplexed or new; a
//!   redirected connection's original destination.
//! - [`session`]: what one app connection keeps between its requests.
//! - [`idle`]: bodies and writes that stall (`timeouts.body_idle`).
//! - [`error`]: the error table: every failure as a response.
//! - [`resilience`]: the circuit breaker and retry budget per authority.
//! - [`proxy`]: the request path, step by step, over a hot-swappable config snapshot.
//! - [`server`]: the egress and transparent listeners: protocol detection, connection
//!   limits, graceful shutdown.
//! - [`transparent`]: `tokex init`'s interception rules and their check.
//! - [`admin`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`audit`]: one structured event per exchange and refusal.
//! - [`metrics`]: Prometheus series.
//! - [`telemetry`]: the log, the audit file and traces: tokex's spans, W3C trace context
//!   in and out, OTLP export configured by `tracing:` and `OTEL_*`.
#![forbid(unsafe_code)]

// The vocabulary the sidecar shares with the embedded authorization server, under the
// names the sidecar's modules use.
pub use tokex_common::{clock, credentials, jwt, oauth, secret, tls};

pub mod admin;
pub mod audit;
pub mod bearer;
pub mod cache;
pub mod client_auth;
pub mod config;
pub mod discovery;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod idle;
pub mod metrics;
pub mod proxy;
pub mod resilience;
pub mod routing;
pub mod server;
pub mod session;
pub mod telemetry;
pub mod transparent;
pub mod upstream;
