//! What the tokex sidecar and its embedded authorization server both speak: secrets that
//! never print, credential files that rotate, rustls client configs, the OAuth vocabulary,
//! unverified JWT peeking, the one clock, and YAML files read into typed values with
//! errors that name the file, line and column.
//!
//! - [`secret`]: credential types that never print their value.
//! - [`credentials`]: credential files that rotate without a restart, and their parsers.
//! - [`tls`]: rustls client configs (a base set of roots plus `ca_file`s).
//! - [`oauth`]: grant and token types, assertion types, scope syntax.
//! - [`jwt`]: what a JWT says of itself, unverified: its claims and `exp`.
//! - [`clock`]: tokio's monotonic time and Unix time that follows it.
//! - [`yaml`], [`values`], [`located`]: parsing, typed scalars (durations, URLs,
//!   `${ENV}`), and located errors; [`offline`] checks a file without its environment.
#![forbid(unsafe_code)]

pub mod clock;
pub mod credentials;
pub mod jwt;
pub mod located;
pub mod oauth;
pub mod offline;
pub mod secret;
pub mod tls;
pub mod values;
pub mod yaml;
