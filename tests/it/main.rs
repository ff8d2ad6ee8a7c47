//! Integration tests: tokex over real sockets with a real upstream and token endpoint.

mod cli;
mod config_file;
mod credentials;
mod data_path;
mod desync;
mod diagnostics;
mod effective;
mod errors;
mod exchange_command;
mod interop;
mod keycloak;
mod monitoring;
mod observability;
mod operations;
mod otlp_collector;
mod own_token;
mod recent;
mod relay;
mod resilience;
mod stalls;
mod sts;
mod support;
mod token_sources_and_types;
mod traces;
mod trust;
mod upgrade;
