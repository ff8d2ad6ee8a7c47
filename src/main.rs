//! The `tokex` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;
mod cli;
mod demo;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Usage errors exit 1 like any bad input (clap's own default is 2, which here
    // means a failure at run time); help and version go to stdout and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.use_stderr() {
                true => ExitCode::from(cli::EXIT_CONFIG),
                false => ExitCode::SUCCESS,
            };
        }
    };
    // Every TLS config tokex builds names its provider; this default only guards
    // libraries that would otherwise look for one and panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokex::telemetry::init(cli.log_format);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_RUNTIME);
        }
    };
    runtime.block_on(async {
        match &cli.command {
            Command::Run(c) => cli::run(&c.config).await,
            Command::Check(c) => cli::check(c),
            Command::Exchange { config, route } => cli::exchange(&config.config, route).await,
            Command::Demo { listen } => demo::run(*listen).await,
            Command::Sts(c) => cli::sts(&c.config).await,
            Command::Init(args) => cli::init(args),
            Command::Inject(args) => cli::inject(args).await,
            Command::ProbeConnect { addr } => {
                tokex::transparent::check::probe_connect(*addr);
                ExitCode::SUCCESS
            }
            Command::Schema => {
                print!("{}", tokex::config::schema());
                std::process::ExitCode::SUCCESS
            }
        }
    })
}

/// tokio's own `TOKIO_WORKER_THREADS` sizes the runtime. At 1, tokex runs on the
/// current-thread scheduler: the same single thread of work without the multi-thread
/// scheduler's cross-thread bookkeeping (less CPU per request in `scripts/bench.sh`).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let one = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if one {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}
