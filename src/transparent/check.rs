//! `tokex init --check`: proves the redirect end to end instead of trusting the rules.
//!
//! A probe listens where redirected connections arrive, and this process connects to an
//! address that can only be reached through the redirect (documentation ranges, RFC 5737
//! and RFC 3849). The connection must arrive with that address as its original
//! destination. Then the same connection is made as `proxy_uid`, which must not arrive:
//! otherwise tokex's own upstream connections would loop back into it. Rules in the wrong
//! back end, or shadowed by another chain, fail here rather than silently in production.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::config::model::Transparent;

/// How long a probe connection may take; a redirect to loopback answers at once.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);
/// For the connection that must not be redirected: it goes nowhere, so it times out.
const EXEMPT_WITHIN: Duration = Duration::from_millis(500);

const V4_PROBES: [[u8; 4]; 3] = [[192, 0, 2, 1], [198, 51, 100, 1], [203, 0, 113, 1]];
const V6_PROBE: [u16; 8] = [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1];

/// The check failed; the message says what to look at.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// Runs the check; on success, one line per fact established.
pub fn verify(t: &Transparent) -> Result<Vec<String>, CheckFailed> {
    let fail = |m: String| Err(CheckFailed(m));
    if super::effective_uid() == Some(t.proxy_uid) {
        return fail(format!(
            "this process runs as proxy_uid {}, whose connections are never redirected; run \
             the check as another user (the init container runs as root)",
            t.proxy_uid
        ));
    }
    let port = probe_port(t);
    let Some(v4) = V4_PROBES
        .iter()
        .map(|a| IpAddr::from(*a))
        .find(|ip| !t.exclude_cidrs.iter().any(|n| n.contains(ip)))
    else {
        return fail("every probe address is in exclude_cidrs; nothing to check with".into());
    };
    let mut facts = Vec::new();
    let probe = bind(t.listen)?;
    let dst = SocketAddr::new(v4, port);
    match redirected(&probe, dst, CONNECT_WITHIN)? {
        Reached::Probe => facts.push(format!(
            "redirect ok: a connection to {dst} arrived at {} with {dst} as its original destination",
            t.listen
        )),
        other => return fail(not_redirected(dst, t, other)),
    }
    facts.push(exempt(t, &probe, dst)?);
    facts.push(ipv6(t, port)?);
    Ok(facts)
}

/// The first intercepted port, or 80 (else the first port not excluded) when all are.
fn probe_port(t: &Transparent) -> u16 {
    t.ports.first().copied().unwrap_or_else(|| {
        (80..=u16::MAX)
            .chain(1..80)
            .find(|p| !t.exclude_ports.contains(p) && *p != t.listen.port())
            .unwrap_or(80)
    })
}

fn bind(addr: SocketAddr) -> Result<TcpListener, CheckFailed> {
    let probe = TcpListener::bind(addr).map_err(|e| {
        CheckFailed(if e.kind() == io::ErrorKind::AddrInUse {
            format!(
                "transparent.listen {addr} is in use: the check needs it free, so run it before \
                 tokex starts (as the pod's init container does)"
            )
        } else {
            format!("cannot listen on transparent.listen {addr}: {e}")
        })
    })?;
    probe
        .set_nonblocking(true)
        .map_err(|e| CheckFailed(format!("probe listener: {e}")))?;
    Ok(probe)
}

/// Where a probe connection went.
#[derive(Debug)]
enum Reached {
    Probe,
    /// It was accepted, but not by the probe (something else answered).
    Elsewhere,
    /// It arrived at the probe with another original destination.
    WrongDestination(SocketAddr),
    Unreachable(io::Error),
}

fn redirected(
    probe: &TcpListener,
    dst: SocketAddr,
    within: Duration,
) -> Result<Reached, CheckFailed> {
    match TcpStream::connect_timeout(&dst, within) {
        Err(e) => Ok(Reached::Unreachable(e)),
        // An accepted connection is in the probe's queue as soon as connect returns.
        Ok(_client) => match probe.accept() {
            Ok((conn, _)) => match super::original_destination(&conn) {
                Ok(orig) if orig == dst => Ok(Reached::Probe),
                Ok(orig) => Ok(Reached::WrongDestination(orig)),
                Err(e) => Err(CheckFailed(format!(
                    "the probe cannot read the original destination: {e}"
                ))),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Reached::Elsewhere),
            Err(e) => Err(CheckFailed(format!("probe accept: {e}"))),
        },
    }
}

fn not_redirected(dst: SocketAddr, t: &Transparent, reached: Reached) -> String {
    let listen = t.listen;
    match reached {
        Reached::Unreachable(e) if e.kind() == io::ErrorKind::NetworkUnreachable => format!(
            "no route to {dst} in this network namespace ({e}); the check needs a route out, \
             as every pod has"
        ),
        Reached::Unreachable(e) => format!(
            "not redirected: connecting to {dst} failed ({e}) instead of reaching {listen}. The \
             rules are missing, or the kernel evaluates another back end first: list them with \
             `nft list ruleset` and `iptables-save`, or pick one with --backend"
        ),
        Reached::Elsewhere => {
            format!("not redirected: something other than the probe on {listen} accepted {dst}")
        }
        Reached::WrongDestination(orig) => {
            format!("redirected, but the original destination read back is {orig}, not {dst}")
        }
        Reached::Probe => unreachable!("a success is not a failure"),
    }
}

/// The same connection as `proxy_uid`, from a child process of this binary (the only
/// way to change uid without unsafe code): it must not reach the probe.
fn exempt(t: &Transparent, probe: &TcpListener, dst: SocketAddr) -> Result<String, CheckFailed> {
    let exe = std::env::current_exe().map_err(|e| CheckFailed(format!("own binary: {e}")))?;
    let status = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .args(["probe-connect", &dst.to_string()])
            .uid(t.proxy_uid)
            .gid(t.proxy_uid)
            .status()
    };
    match status {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Ok(format!(
                "uid exemption not checked: switching to uid {} needs root ({e})",
                t.proxy_uid
            ));
        }
        Err(e) => return Err(CheckFailed(format!("probe as uid {}: {e}", t.proxy_uid))),
        Ok(_) => {}
    }
    match probe.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(format!(
            "uid {} is exempt: its connection to {dst} was not redirected",
            t.proxy_uid
        )),
        Ok(_) => Err(CheckFailed(format!(
            "uid {} is redirected too: tokex's own upstream connections would loop back into it \
             (is the uid rule missing, or does tokex run as another uid?)",
            t.proxy_uid
        ))),
        Err(e) => Err(CheckFailed(format!("probe accept: {e}"))),
    }
}

/// The child side of [`exempt`]: connect and exit; whether it was redirected is for the
/// parent's probe to see.
pub fn probe_connect(dst: SocketAddr) {
    let _ = TcpStream::connect_timeout(&dst, EXEMPT_WITHIN);
}

/// IPv6 where this namespace can route it; a redirected IPv6 connection arrives on
/// `[::1]` at the listener's port.
fn ipv6(t: &Transparent, port: u16) -> Result<String, CheckFailed> {
    let dst = SocketAddr::new(IpAddr::from(V6_PROBE), port);
    if t.exclude_cidrs.iter().any(|n| n.contains(&dst.ip())) {
        return Ok(format!("IPv6: {dst} is excluded; not checked"));
    }
    let Ok(probe) = bind(SocketAddr::new(
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        t.listen.port(),
    )) else {
        return Ok("IPv6: no [::1] to listen on here; not checked".into());
    };
    match redirected(&probe, dst, CONNECT_WITHIN)? {
        Reached::Probe => Ok(format!(
            "IPv6 redirect ok: {dst} arrived at [::1]:{}",
            t.listen.port()
        )),
        Reached::Unreachable(e) if e.kind() == io::ErrorKind::NetworkUnreachable => {
            Ok(format!("IPv6: no route to {dst} here; not checked"))
        }
        other => Err(CheckFailed(format!(
            "IPv6 {}",
            not_redirected(dst, t, other)
        ))),
    }
}
