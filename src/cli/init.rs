//! `tokex init`: installs, proves or removes the transparent-mode redirect in the
//! current network namespace (a pod's init container runs it as root).

use std::process::ExitCode;

use clap::Args;

use super::{ConfigArg, EXIT_CONFIG, EXIT_RUNTIME};
use tokex::config;
use tokex::transparent::backend::{self, Backend};
use tokex::transparent::check;

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only prove that the rules in place redirect (exit 2 if not); change nothing.
    #[arg(long, conflicts_with = "remove")]
    pub check: bool,
    /// Remove tokex's rules (from every back end, unless --backend names one).
    #[arg(long)]
    pub remove: bool,
    /// The kernel interface to use; by default nftables where it works, else the iptables
    /// back end the machine already uses.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
}

/// Installs the rules and proves them; `--check` only proves, `--remove` removes.
pub fn init(args: &InitArgs) -> ExitCode {
    let path = args.config.config.as_path();
    let section = match config::transparent_section(path) {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!(
                "{}: no transparent section, so nothing to redirect",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = |message: String| {
        eprintln!("tokex init: {message}");
        ExitCode::from(EXIT_RUNTIME)
    };
    if args.remove {
        let backends = match args.backend {
            Some(b) => vec![b],
            None => vec![Backend::Nft, Backend::IptablesNft, Backend::IptablesLegacy],
        };
        let mut removed = Vec::new();
        for b in backends {
            match b.remove() {
                Ok(()) => removed.push(b.to_string()),
                Err(e) if args.backend.is_some() => return runtime(e.to_string()),
                // A back end this machine lacks has no rules of ours either.
                Err(_) => {}
            }
        }
        if removed.is_empty() {
            return runtime("no back end could be asked to remove the rules".into());
        }
        println!("tokex init: removed tokex's rules ({})", removed.join(", "));
        return ExitCode::SUCCESS;
    }
    if !args.check {
        let chosen = match args.backend.map_or_else(backend::detect, Ok) {
            Ok(b) => b,
            Err(e) => return runtime(e.to_string()),
        };
        match chosen.install(&section) {
            Ok(done) => {
                for line in done {
                    println!("tokex init: installed {line}");
                }
            }
            Err(e) => return runtime(e.to_string()),
        }
    }
    match check::verify(&section) {
        Ok(facts) => {
            for fact in facts {
                println!("tokex init: {fact}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => runtime(format!("check failed: {e}")),
    }
}
