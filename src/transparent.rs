//! Transparent interception: apps that cannot be pointed at tokex have their outbound
//! TCP redirected to it by kernel rules (`tokex init`), and tokex reads where each
//! connection was going from the socket.
//!
//! - [`rules`]: the rules as nftables and iptables text.
//! - [`backend`]: choosing the kernel interface and applying the rules.
//! - [`check`]: proving the redirect end to end.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

pub mod backend;
pub mod check;
pub mod relay;
pub mod rules;

/// This process's effective uid, as the owner of its `/proc` entry (no unsafe `geteuid`).
pub fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Where a redirected connection was going (`SO_ORIGINAL_DST`); for a connection that
/// was not redirected, its own local address.
pub fn original_destination(stream: &impl AsFd) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = sock.local_addr()?;
    let orig = if local.is_ipv6() {
        sock.original_dst_v6()?
    } else {
        sock.original_dst_v4()?
    };
    orig.as_socket()
        .ok_or_else(|| io::Error::other("the original destination is not an IP address"))
}
