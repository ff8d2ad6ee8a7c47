//! The embedded authorization server over real sockets.
//!
//! Most tests share one STS built from [`support::seed_yaml`]: a "client" realm that mints
//! user and workload tokens with `client_credentials`, and a "backend" realm that trusts
//! it (and itself, and a test IdP whose JWKS is a file), holding scope mappings and claim
//! rules. Tokens are checked by decoding them; the JWKS test verifies the signature.

mod chaining;
mod client_auth;
mod exchange;
mod federation;
mod metadata;
mod refusals;
mod support;
