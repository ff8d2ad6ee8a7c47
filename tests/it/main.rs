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
mod measure;
mod operations;
mod otlp_collector;
mod recent;
mod relay;
mod resilience;
mod seeds;
mod stalls;
mod sts;
mod support;
mod traces;
mod trust;
mod upgrade;
