//! The interception rules as text for the two kernel interfaces: an nftables table, and
//! an `iptables-restore` chain for kernels or images without nftables.
//!
//! Both say the same thing in the same order: TCP only; return for tokex's own uid (its
//! upstream and authorization-server connections must leave), for loopback, and for the
//! excluded ports and networks; redirect the intercepted ports (or every other port) to
//! the transparent listener. A redirect lands on the loopback address of the packet's
//! family, so IPv6 connections arrive on `[::1]` at the same port.

use std::fmt::Write;

use ipnet::IpNet;

use crate::config::model::Transparent;

/// The nftables table tokex owns; nothing else is touched.
pub const NFT_TABLE: &str = "tokex";
/// The iptables chain tokex owns in the `nat` table, jumped to from `OUTPUT`.
pub const IPTABLES_CHAIN: &str = "TOKEX_OUTPUT";

/// An nft script that replaces the table in one transaction: declaring it first makes
/// the delete succeed when it is absent, so running it twice leaves one set of rules.
pub fn nft_install(t: &Transparent) -> String {
    let mut s = nft_remove();
    let _ = writeln!(s, "table inet {NFT_TABLE} {{");
    s.push_str("  chain output {\n");
    s.push_str("    type nat hook output priority -100; policy accept;\n");
    s.push_str("    meta l4proto != tcp return\n");
    let _ = writeln!(s, "    meta skuid {} return", t.proxy_uid);
    s.push_str("    oifname \"lo\" return\n");
    s.push_str("    ip daddr 127.0.0.0/8 return\n");
    s.push_str("    ip6 daddr ::1 return\n");
    if !t.exclude_ports.is_empty() {
        let _ = writeln!(s, "    tcp dport {{ {} }} return", list(&t.exclude_ports));
    }
    let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) = t
        .exclude_cidrs
        .iter()
        .partition(|n| matches!(n, IpNet::V4(_)));
    if !v4.is_empty() {
        let _ = writeln!(s, "    ip daddr {{ {} }} return", list(&v4));
    }
    if !v6.is_empty() {
        let _ = writeln!(s, "    ip6 daddr {{ {} }} return", list(&v6));
    }
    let port = t.listen.port();
    match t.ports.as_slice() {
        [] => {
            let _ = writeln!(s, "    redirect to :{port}");
        }
        ports => {
            let _ = writeln!(s, "    tcp dport {{ {} }} redirect to :{port}", list(ports));
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// An nft script that removes the table, whether or not it exists.
pub fn nft_remove() -> String {
    format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")
}

/// The address family an iptables command works on (`iptables` or `ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// `iptables-restore --noflush` input that (re)writes tokex's chain: declaring an
/// existing chain flushes it, so a second run replaces rather than adds. The jump from
/// `OUTPUT` is added separately, once (see the back end).
pub fn iptables_chain(t: &Transparent, family: Family) -> String {
    let mut s = format!("*nat\n:{IPTABLES_CHAIN} - [0:0]\n");
    let rule = |s: &mut String, spec: &str| {
        let _ = writeln!(s, "-A {IPTABLES_CHAIN} {spec}");
    };
    rule(
        &mut s,
        &format!("-m owner --uid-owner {} -j RETURN", t.proxy_uid),
    );
    rule(&mut s, "-o lo -j RETURN");
    let loopback = match family {
        Family::V4 => "127.0.0.0/8",
        Family::V6 => "::1/128",
    };
    rule(&mut s, &format!("-d {loopback} -j RETURN"));
    for ports in t.exclude_ports.chunks(MULTIPORT_MAX) {
        rule(&mut s, &format!("-p tcp {} -j RETURN", dports(ports)));
    }
    let ours = |n: &&IpNet| {
        matches!(
            (family, n),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    };
    for net in t.exclude_cidrs.iter().filter(ours) {
        rule(&mut s, &format!("-d {net} -j RETURN"));
    }
    let to = t.listen.port();
    if t.ports.is_empty() {
        rule(&mut s, &format!("-p tcp -j REDIRECT --to-ports {to}"));
    }
    for ports in t.ports.chunks(MULTIPORT_MAX) {
        rule(
            &mut s,
            &format!("-p tcp {} -j REDIRECT --to-ports {to}", dports(ports)),
        );
    }
    s.push_str("COMMIT\n");
    s
}

/// The jump from `nat OUTPUT` into tokex's chain, as `iptables` arguments after the
/// operation (`-C`, `-I`, `-D`).
pub const IPTABLES_JUMP: [&str; 5] = ["OUTPUT", "-p", "tcp", "-j", IPTABLES_CHAIN];

/// iptables' `multiport` match takes at most 15 ports.
const MULTIPORT_MAX: usize = 15;

fn dports(ports: &[u16]) -> String {
    match ports {
        [one] => format!("--dport {one}"),
        many => format!("-m multiport --dports {}", joined(many, ",")),
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    joined(items, ", ")
}

fn joined<T: std::fmt::Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Unmatched;

    fn section(ports: &[u16]) -> Transparent {
        Transparent {
            listen: "127.0.0.1:15006".parse().unwrap(),
            ports: ports.to_vec(),
            exclude_ports: vec![15000, 15001],
            exclude_cidrs: vec![
                "169.254.169.254/32".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ],
            proxy_uid: 65532,
            unmatched: Unmatched::Passthrough,
        }
    }

    #[test]
    fn nft_table_returns_before_it_redirects() {
        let text = nft_install(&section(&[80, 8080]));
        let expected = "table inet tokex\ndelete table inet tokex\ntable inet tokex {
  chain output {
    type nat hook output priority -100; policy accept;
    meta l4proto != tcp return
    meta skuid 65532 return
    oifname \"lo\" return
    ip daddr 127.0.0.0/8 return
    ip6 daddr ::1 return
    tcp dport { 15000, 15001 } return
    ip daddr { 169.254.169.254/32 } return
    ip6 daddr { fd00::/8 } return
    tcp dport { 80, 8080 } redirect to :15006
  }
}
";
        assert_eq!(text, expected);
        assert!(nft_install(&section(&[])).contains("    redirect to :15006\n"));
    }

    #[test]
    fn iptables_chain_per_family() {
        let v4 = iptables_chain(&section(&[80, 8080]), Family::V4);
        let expected = "*nat\n:TOKEX_OUTPUT - [0:0]
-A TOKEX_OUTPUT -m owner --uid-owner 65532 -j RETURN
-A TOKEX_OUTPUT -o lo -j RETURN
-A TOKEX_OUTPUT -d 127.0.0.0/8 -j RETURN
-A TOKEX_OUTPUT -p tcp -m multiport --dports 15000,15001 -j RETURN
-A TOKEX_OUTPUT -d 169.254.169.254/32 -j RETURN
-A TOKEX_OUTPUT -p tcp -m multiport --dports 80,8080 -j REDIRECT --to-ports 15006
COMMIT
";
        assert_eq!(v4, expected);
        let v6 = iptables_chain(&section(&[80]), Family::V6);
        assert!(v6.contains("-d ::1/128 -j RETURN\n-A TOKEX_OUTPUT -p tcp -m multiport"));
        assert!(v6.contains("-d fd00::/8 -j RETURN") && !v6.contains("169.254"));
        assert!(v6.contains("-p tcp --dport 80 -j REDIRECT --to-ports 15006"));
        let all = iptables_chain(&section(&[]), Family::V4);
        assert!(all.contains("-A TOKEX_OUTPUT -p tcp -j REDIRECT --to-ports 15006\nCOMMIT"));
        let many: Vec<u16> = (1..=16).collect();
        let chunked = iptables_chain(&section(&many), Family::V4);
        assert_eq!(
            chunked.matches("REDIRECT").count(),
            2,
            "multiport takes 15 ports"
        );
    }
}
