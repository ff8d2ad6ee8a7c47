//! `tokex inject`: the mutating admission webhook that adds the tokex sidecar to pods
//! (docs/injection.md); `--check` only validates its config.

use std::process::ExitCode;

use clap::Args;

use super::{ConfigArg, EXIT_CONFIG, EXIT_RUNTIME, shutdown_signal};
use tokex_inject::server::{self, Webhook};

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Validate the config and exit; the certificate files are not read.
    #[arg(long)]
    pub check: bool,
}

/// Serves reviews until SIGTERM or Ctrl-C.
pub async fn inject(args: &InjectArgs) -> ExitCode {
    let path = args.config.config.as_path();
    let config = match tokex_inject::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        println!("{}: ok (certificate files not read)", path.display());
        return ExitCode::SUCCESS;
    }
    let listen = config.listen;
    let webhook = match Webhook::new(config) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{}: inject.cert_file/key_file: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot bind inject.listen address {listen}: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let shutdown = shutdown_signal();
    tracing::info!(listen = %listen, image = %webhook.config.image, "injection webhook listening");
    match server::serve(webhook, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the TLS config: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
