//! tokex
#![forbid(unsafe_code)]
pub mod bearer;
pub mod cache;
pub mod config;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod metrics;
pub mod routing;
pub mod secret;
pub mod tls;
