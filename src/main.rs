//! The `tokex` binary: parse the command line, set up logging, run the command.

use std::process::ExitCode;

use clap::Parser;
use tokex::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every TLS config tokex builds names its provider; this default only guards
    // libraries that would otherwise look for one and panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokex::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(cli::EXIT_RUNTIME);
        }
    };
    runtime.block_on(async {
        match &cli.command {
            Command::Run(c) => cli::run(&c.config).await,
            Command::Check(c) => cli::check(&c.config),
            Command::Exchange { config, route } => cli::exchange(&config.config, route).await,
            Command::Demo { listen } => tokex::demo::run(*listen).await,
            Command::Sts(c) => cli::sts(&c.config).await,
            Command::Schema => {
                print!("{}", tokex::config::schema());
                std::process::ExitCode::SUCCESS
            }
        }
    })
}
