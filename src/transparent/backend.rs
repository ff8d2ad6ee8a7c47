//! Which kernel interface holds the rules, and applying them through the system's own
//! tools (`nft`, `iptables-restore`), which check and apply a whole rule set at once.
//!
//! Native nftables first; where it is missing, iptables with the back end the machine
//! already uses: a pod whose other init containers wrote legacy rules gets legacy rules,
//! since mixing the two orders them unpredictably. Whatever is chosen, `tokex init`
//! proves the redirect afterwards rather than trusting that the rules took effect.

use std::io::Write;
use std::process::{Command, Stdio};

use super::rules::{self, Family, IPTABLES_CHAIN, IPTABLES_JUMP};
use crate::config::model::Transparent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// nftables through `nft`: a `table inet tokex` for IPv4 and IPv6 alike.
    Nft,
    /// iptables over nf_tables (`iptables-nft`).
    IptablesNft,
    /// iptables over the legacy x_tables (`iptables-legacy`).
    IptablesLegacy,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::IptablesNft => "iptables-nft",
            Backend::IptablesLegacy => "iptables-legacy",
        })
    }
}

/// A tool that failed, with what it said.
#[derive(Debug, thiserror::Error)]
#[error("{tool}: {message}")]
pub struct ToolError {
    pub tool: String,
    pub message: String,
}

/// The back end to use: `nft` when it runs and the kernel answers it, else the iptables
/// variant that already holds `nat` rules, else the first that works.
pub fn detect() -> Result<Backend, ToolError> {
    if run("nft", &["list", "tables"], None).is_ok() {
        return Ok(Backend::Nft);
    }
    let usable: Vec<(Backend, usize)> = [Backend::IptablesNft, Backend::IptablesLegacy]
        .into_iter()
        .filter_map(|b| {
            let rules = run(&b.iptables(Family::V4), &["-t", "nat", "-S"], None).ok()?;
            // `-S` prints the built-in chains' policies too; other lines are rules.
            Some((b, rules.lines().filter(|l| !l.starts_with("-P ")).count()))
        })
        .collect();
    usable
        .iter()
        .find(|(_, rules)| *rules > 0)
        .or(usable.first())
        .map(|(b, _)| *b)
        .ok_or_else(|| ToolError {
            tool: "tokex init".into(),
            message: "no usable back end: `nft list tables`, `iptables-nft -t nat -S` and \
                      `iptables-legacy -t nat -S` all failed (are nftables or iptables \
                      installed, and does this process have NET_ADMIN?)"
                .into(),
        })
}

impl Backend {
    fn iptables(self, family: Family) -> String {
        let name = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        match self {
            Backend::IptablesLegacy => format!("{name}-legacy"),
            _ => format!("{name}-nft"),
        }
    }

    /// Installs the rules, replacing any tokex rules already there. IPv6 is skipped
    /// (and said so) where the kernel has it disabled.
    pub fn install(self, t: &Transparent) -> Result<Vec<String>, ToolError> {
        if self == Backend::Nft {
            run("nft", &["-f", "-"], Some(&rules::nft_install(t)))?;
            return Ok(vec![format!("nft: table inet {}", rules::NFT_TABLE)]);
        }
        let mut done = Vec::new();
        for family in families() {
            let tool = self.iptables(family);
            run(
                &format!("{tool}-restore"),
                &["--noflush", "-w"],
                Some(&rules::iptables_chain(t, family)),
            )?;
            let jump =
                |op: &'static str| [&["-w", "-t", "nat", op][..], &IPTABLES_JUMP[..]].concat();
            if run(&tool, &jump("-C"), None).is_err() {
                run(&tool, &jump("-I"), None)?;
            }
            done.push(format!("{tool}: nat chain {IPTABLES_CHAIN}"));
        }
        Ok(done)
    }

    /// Removes tokex's rules; removing what is not there succeeds.
    pub fn remove(self) -> Result<(), ToolError> {
        if self == Backend::Nft {
            return run("nft", &["-f", "-"], Some(&rules::nft_remove())).map(drop);
        }
        for family in families() {
            let tool = self.iptables(family);
            let jump = [&["-w", "-t", "nat", "-D"][..], &IPTABLES_JUMP[..]].concat();
            while run(&tool, &jump, None).is_ok() {}
            let exists = run(&tool, &["-w", "-t", "nat", "-S", IPTABLES_CHAIN], None).is_ok();
            if exists {
                run(&tool, &["-w", "-t", "nat", "-F", IPTABLES_CHAIN], None)?;
                run(&tool, &["-w", "-t", "nat", "-X", IPTABLES_CHAIN], None)?;
            }
        }
        Ok(())
    }
}

/// IPv4 always; IPv6 where the kernel has it (no `/proc/net/if_inet6` when disabled).
fn families() -> Vec<Family> {
    let mut f = vec![Family::V4];
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        f.push(Family::V6);
    }
    f
}

/// Runs `tool args`, feeding `input` on stdin; its stdout, or what it said on failure.
fn run(tool: &str, args: &[&str], input: Option<&str>) -> Result<String, ToolError> {
    let fail = |message: String| ToolError {
        tool: format!("{tool} {}", args.join(" ")),
        message,
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(format!("writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let said = String::from_utf8_lossy(&out.stderr);
        Err(fail(format!("{} ({})", said.trim(), out.status)))
    }
}
