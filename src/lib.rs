//! tokex: a sidecar proxy that performs OAuth 2.0 Token Exchange (RFC 8693) on a
//! service's outbound calls.
//!
//! # Layout
//!
//! - [`config`]: the YAML configuration file, parsed into a validated model.
//! - [`routing`]: which route a request belongs to and the path it is forwarded with.
//! - [`bearer`]: the subject token from `Authorization` (RFC 6750), a header or a cookie.
//! - [`jwt`]: what a JWT says of itself, unverified: its claims and `exp`.
//! - [`secret`]: credential types that never print their value.
//! - [`credentials`]: credential files that rotate without a restart, and their parsers.
//! - [`client_auth`]: how tokex authenticates to token endpoints.
//! - [`oauth`]: the OAuth vocabulary: grant and token types, assertion types, scope syntax.
//! - [`exchange`]: the RFC 8693 client and wire format.
//! - [`cache`]: narrowed tokens under keyed-hash keys with per-entry lifetimes.
//! - [`forward`]: header hygiene, the upstream request, the relayed response, protocol
//!   switches.
//! - [`upstream`]: connections to upstreams: kept, pooled, multiplexed or new.
//! - [`session`]: what one app connection keeps between its requests.
//! - [`idle`]: bodies and writes that stall (`timeouts.body_idle`).
//! - [`error`]: the error table: every failure as a response.
//! - [`resilience`]: the circuit breaker and retry budget per authority.
//! - [`clock`]: the one clock: tokio's monotonic time and Unix time that follows it.
//! - [`proxy`]: the request path, step by step, over a hot-swappable config snapshot.
//! - [`server`]: the egress listener: protocol detection, connection limits, graceful
//!   shutdown.
//! - [`admin`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`audit`]: one structured event per exchange and refusal.
//! - [`metrics`]: lock-free Prometheus series.
//! - [`telemetry`]: the log, the audit file and traces: tokex's spans, W3C trace context
//!   in and out, OTLP export configured by `tracing:` and `OTEL_*`.
//! - [`tls`]: rustls client configs (a base set of roots plus `ca_file`s).
//! - [`sts`]: the embedded authorization server (realms, policy, token exchange).
//! - [`cli`]: the `tokex` commands.
//! - [`demo`]: `tokex demo`, the whole flow on one machine.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod bearer;
pub mod cache;
pub mod cli;
pub mod client_auth;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod idle;
pub mod jwt;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod resilience;
pub mod routing;
pub mod secret;
pub mod server;
pub mod session;
pub mod sts;
pub mod telemetry;
pub mod tls;
pub mod transparent;
pub mod upstream;
