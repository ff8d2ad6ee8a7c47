//! Integration tests: tokex over real sockets with a real upstream and token endpoint.

mod cli;
mod config_file;
mod data_path;
mod desync;
mod diagnostics;
mod effective;
mod errors;
mod exchange_command;
mod identity;
mod interop;
mod keycloak;
mod measure;
mod operations;
mod recent;
mod relay;
mod resilience;
mod seeds;
mod stalls;
mod sts;
mod support;
mod trust;
mod upgrade;
