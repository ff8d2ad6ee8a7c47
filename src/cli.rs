//! The `tokex` commands. `main.rs` only parses arguments and calls these.
//!
//! Exit codes: 0 success, 1 bad config or usage, 2 runtime failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use tokex::config;
use tokex::proxy::Proxy;
use tokex::server::{self, Listeners};
use tokex::telemetry::LogFormat;

mod exchange;
mod init;
mod inject;
pub use exchange::exchange;
pub use init::{InitArgs, init};
pub use inject::{InjectArgs, inject};

/// Exit code for a bad config or bad usage.
pub const EXIT_CONFIG: u8 = 1;
/// Exit code for a failure at run time (port in use, AS refused, ...).
pub const EXIT_RUNTIME: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "tokex",
    version,
    about = "Sidecar proxy that performs OAuth 2.0 Token Exchange (RFC 8693) on outbound calls"
)]
pub struct Cli {
    /// Log output format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Run(ConfigArg),
    /// Validate the config and print it with secrets redacted.
    Check(CheckArgs),
    /// Read a subject token on stdin, exchange it as ROUTE would, print the result's claims.
    Exchange {
        #[command(flatten)]
        config: ConfigArg,
        /// The route whose exchange parameters to use.
        #[arg(long)]
        route: String,
    },
    /// The whole flow on one machine: embedded authorities, an echo upstream, the sidecar.
    Demo {
        /// Where the demo sidecar listens.
        #[arg(long, default_value = "127.0.0.1:15001")]
        listen: std::net::SocketAddr,
    },
    /// Redirect this network namespace's outbound TCP to the transparent listener, and
    /// prove it works.
    Init(InitArgs),
    /// Connect to ADDR and exit: `tokex init` runs it as proxy_uid to prove that uid's
    /// connections are not redirected.
    #[command(hide = true)]
    ProbeConnect { addr: std::net::SocketAddr },
    /// Run the embedded authorization server.
    Sts(ConfigArg),
    /// Run the Kubernetes admission webhook that injects the tokex sidecar into pods.
    Inject(InjectArgs),
    /// Print the JSON Schema of the config file, for editors.
    Schema,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Check structure, types and references only: read no secret or CA file and no
    /// environment variable; `${NAME}` and `*_file` are accepted unresolved (for CI).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The YAML config file.
    #[arg(short = 'c', long = "config", env = "TOKEX_CONFIG")]
    pub config: PathBuf,
}

/// `tokex check`: prints the effective config, or `FILE:LINE:COL: message`.
pub fn check(args: &CheckArgs) -> ExitCode {
    let path = args.config.config.as_path();
    if args.offline {
        return match config::check_offline(path) {
            Ok(()) => {
                println!(
                    "{}: ok offline (secret and CA files and environment variables not read)",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    match config::effective(path) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// `tokex run`: serves until SIGTERM or Ctrl-C, reloading on SIGHUP.
pub async fn run(path: &Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match tokex::discovery::resolve(config, None, |_| {}).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (listen, admin) = (config.listen, config.admin);
    let transparent = config.transparent.as_ref().map(|t| (t.listen, t.proxy_uid));
    if let Err(e) = tokex::telemetry::set_audit_file(config.audit_file.as_deref()) {
        eprintln!("{}: cannot open audit.file: {e}", path.display());
        return ExitCode::from(EXIT_CONFIG);
    }
    let proxy = match Proxy::new(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut listeners = match Listeners::bind(listen, admin).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(key = e.key, addr = %e.addr, error = %e.source, "{e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    if let Some((addr, proxy_uid)) = transparent {
        if let Err(e) = listeners.bind_transparent(addr).await {
            tracing::error!(key = e.key, addr = %e.addr, error = %e.source, "{e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
        warn_unless_running_as(proxy_uid);
    }
    // Handlers first: once "listening" is out, a SIGTERM or SIGHUP must not meet the
    // default action, which kills the process.
    let shutdown = shutdown_signal();
    tokio::spawn(reload_on_sighup(proxy.clone()));
    tracing::info!(
        listen = %listeners.proxy_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        admin = %listeners.admin_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        "listening"
    );
    server::run(proxy, listeners, shutdown).await;
    tokex::telemetry::export::shutdown().await;
    ExitCode::SUCCESS
}

/// The redirect exempts only `proxy_uid`: running as another uid, tokex's own upstream
/// connections would come back to it.
fn warn_unless_running_as(proxy_uid: u32) {
    let uid = tokex::transparent::effective_uid();
    if let Some(uid) = uid.filter(|uid| *uid != proxy_uid) {
        tracing::warn!(
            uid,
            proxy_uid,
            "tokex runs as uid {uid}, not transparent.proxy_uid {proxy_uid}: where the redirect \
             rules are installed, its own upstream connections are redirected back to it"
        );
    }
}

/// Resolves on SIGTERM or SIGINT. Both are taken over when this is called, not when the
/// future is first polled, so a signal in between is not lost.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, int) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Ok(mut one), Err(_)) | (Err(_), Ok(mut one)) => {
                one.recv().await;
            }
            (Err(_), Err(_)) => std::future::pending().await,
        }
    }
}

/// SIGHUP re-reads the config; a bad file keeps the running config. The handler is
/// installed before this returns.
fn reload_on_sighup(proxy: Arc<Proxy>) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup());
    async move {
        let Ok(mut hup) = hup else {
            return;
        };
        while hup.recv().await.is_some() {
            let _ = proxy.reload_from_source().await;
        }
    }
}

/// `tokex sts`: the embedded authorization server until SIGTERM or Ctrl-C.
pub async fn sts(path: &Path) -> ExitCode {
    let config = match tokex_sts::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot bind");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let base = match listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the bound address");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let sts = match tokex_sts::Sts::new(config, &base) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shutdown = shutdown_signal();
    tracing::info!(listen = %base, "sts listening");
    sts.serve(listener, shutdown).await;
    ExitCode::SUCCESS
}
