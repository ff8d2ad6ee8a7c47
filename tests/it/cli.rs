//! The tokex binary: check, exchange, and no secrets in trace-level logs.
