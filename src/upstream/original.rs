//! A route without `upstream`: its requests go back to the address the app was
//! connecting to when the transparent redirect brought the connection, and only when the
//! request's `Host` resolves to that address. The token is chosen by `Host`; without the
//! check, an app (or an attacker steering it) could send a `Host` naming a protected
//! service to any address and have tokex hand that service's token there.
//!
//! Each address gets its own [`Upstream`], so its connections are pooled and kept by app
//! connections like a named upstream's.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Upstream;
use super::connect::Tls;
use crate::clock::Instant;
use crate::config::model::Timeouts;
use crate::idle::Watch;

/// Addresses with an upstream of their own at most; past this, those no request is
/// using are dropped, and if all are in use a request gets a one-off upstream.
const ADDRESSES_AT_MOST: usize = 1024;

/// The upstreams of one route without `upstream`, by original destination.
pub struct OriginalDestinations {
    tls: Arc<Tls>,
    timeouts: Timeouts,
    watch: Watch,
    by_address: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
}

impl OriginalDestinations {
    pub fn new(timeouts: &Timeouts, watch: Watch) -> Result<Self, rustls::Error> {
        Ok(Self {
            tls: Arc::new(Tls::new(0, None)?),
            timeouts: *timeouts,
            watch,
            by_address: Mutex::default(),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Upstream>>> {
        // Every critical section is a lookup or a single insert or retain.
        self.by_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upstream for `addr`.
    pub fn at(&self, addr: SocketAddr) -> Result<Arc<Upstream>, rustls::Error> {
        let mut map = self.map();
        if let Some(up) = map.get(&addr) {
            return Ok(up.clone());
        }
        if map.len() >= ADDRESSES_AT_MOST {
            map.retain(|_, up| Arc::strong_count(up) > 1);
        }
        let up = Arc::new(Upstream::at_address(
            addr,
            self.tls.clone(),
            &self.timeouts,
            self.watch.clone(),
        )?);
        if map.len() < ADDRESSES_AT_MOST {
            map.insert(addr, up.clone());
        }
        Ok(up)
    }

    /// Closes pooled connections that idled too long.
    pub fn sweep(&self, now: Instant) {
        for up in self.map().values() {
            up.sweep(now);
        }
    }
}

/// Whether `host` (a request's `Host`: a name or an address, with or without a port)
/// resolves to `ip`. A name is looked up as the platform resolver does (`/etc/hosts`,
/// then DNS); a lookup that fails or takes longer than `within` is a no.
pub async fn host_resolves_to(host: &str, ip: IpAddr, within: Duration) -> bool {
    let name = without_port(host);
    let ip = ip.to_canonical();
    if let Ok(literal) = name.parse::<IpAddr>() {
        return literal.to_canonical() == ip;
    }
    if name.is_empty() {
        return false;
    }
    match tokio::time::timeout(within, tokio::net::lookup_host((name, 0))).await {
        Ok(Ok(mut addrs)) => addrs.any(|a| a.ip().to_canonical() == ip),
        _ => false,
    }
}

/// The host of a `Host` value: brackets off an IPv6 literal, the port off anything.
fn without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or("", |(addr, _)| addr);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITHIN: Duration = Duration::from_secs(5);

    #[test]
    fn ports_and_brackets_come_off() {
        for (host, name) in [
            ("api.internal", "api.internal"),
            ("api.internal:8080", "api.internal"),
            ("10.0.0.5:80", "10.0.0.5"),
            ("[fd00::5]:8080", "fd00::5"),
            ("[fd00::5]", "fd00::5"),
            ("[fd00::5", ""),
        ] {
            assert_eq!(without_port(host), name, "{host}");
        }
    }

    #[tokio::test]
    async fn addresses_compare_as_written_or_mapped() {
        let v4: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(host_resolves_to("10.0.0.5:8080", v4, WITHIN).await);
        assert!(!host_resolves_to("10.0.0.6", v4, WITHIN).await);
        // An IPv4 destination as a dual-stack socket reports it.
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert!(host_resolves_to("10.0.0.5", mapped, WITHIN).await);
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert!(host_resolves_to("[fd00::5]:80", v6, WITHIN).await);
        assert!(!host_resolves_to("", v4, WITHIN).await);
    }

    /// `localhost` is in every `/etc/hosts`: a name goes through the resolver.
    #[tokio::test]
    async fn names_resolve_through_the_platform() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(host_resolves_to("localhost:9", loopback, WITHIN).await);
        let other: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(!host_resolves_to("localhost", other, WITHIN).await);
    }
}
