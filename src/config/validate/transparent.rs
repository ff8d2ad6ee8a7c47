//! The `transparent` section and `match.destination`, validated: what `tokex init`
//! redirects, where it arrives, and how a route names an original destination.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::{Invalid, at};
use crate::config::file::{self, FileTransparent};
use crate::config::model::{DestinationMatch, Transparent, Unmatched};

/// Where the transparent listener is unless the config says otherwise.
const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 15006);
/// distroless' `nonroot`, the uid the shipped image runs as.
const DEFAULT_PROXY_UID: u32 = 65532;

/// `10.0.0.5:80`, `10.0.0.5`, `10.0.0.0/8`, `10.0.0.0/8:443`, `2001:db8::1`,
/// `[2001:db8::1]:80`, `[2001:db8::/32]:443`.
pub(super) fn parse_destination(text: &str) -> Result<DestinationMatch, String> {
    let bad = || {
        format!(
            "`{text}` is not IP[:PORT] or CIDR[:PORT] (IPv6 in brackets when a port follows, \
             e.g. [2001:db8::/32]:443)"
        )
    };
    let (net, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (inside, port)
    } else if text.matches(':').count() > 1 {
        (text, None)
    } else {
        match text.rsplit_once(':') {
            Some((net, port)) => (net, Some(port)),
            None => (text, None),
        }
    };
    let net = match net.parse::<IpNet>() {
        Ok(n) if n.trunc() != n => {
            return Err(format!(
                "`{text}` has host bits set; the network is {}",
                n.trunc()
            ));
        }
        Ok(n) => n,
        Err(_) => net.parse::<IpAddr>().map(IpNet::from).map_err(|_| bad())?,
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{text}`: the port must be 1 to 65535"))?,
        ),
    };
    Ok(DestinationMatch { net, port })
}

/// Validates the section; `listen` and `admin` are the other listeners, which the
/// transparent one must not share a port with.
pub(super) fn transparent(
    file: Option<&FileTransparent>,
    listen: SocketAddr,
    admin: SocketAddr,
) -> Result<Option<Transparent>, Invalid> {
    let Some(f) = file else { return Ok(None) };
    let own = f
        .listen
        .as_ref()
        .map_or_else(|| DEFAULT_LISTEN.into(), |a| a.value.0);
    if let Some(a) = &f.listen {
        if !own.ip().is_loopback() {
            return Err(at(
                a,
                format!(
                    "transparent.listen: {own} is not a loopback address; the kernel redirects \
                     to loopback, and nothing else should reach this listener"
                ),
            ));
        }
        if own.port() == 0 || [listen.port(), admin.port()].contains(&own.port()) {
            return Err(at(
                a,
                format!(
                    "transparent.listen: port {} is 0 or taken by listen or admin",
                    own.port()
                ),
            ));
        }
    }
    let ports = checked_ports(&f.ports, "ports")?;
    let exclude_ports = checked_ports(&f.exclude_ports, "exclude_ports")?;
    if let Some(p) = f.ports.iter().find(|p| exclude_ports.contains(&p.value)) {
        return Err(at(
            p,
            format!("transparent.ports: {} is also in exclude_ports", p.value),
        ));
    }
    let mut exclude_cidrs = Vec::with_capacity(f.exclude_cidrs.len());
    for (i, c) in f.exclude_cidrs.iter().enumerate() {
        let key = format!("transparent.exclude_cidrs[{i}]");
        let d = parse_destination(&c.value.0).map_err(|m| at(c, format!("{key}: {m}")))?;
        if d.port.is_some() {
            return Err(at(c, format!("{key}: a network, without a port")));
        }
        exclude_cidrs.push(d.net);
    }
    let proxy_uid = match &f.proxy_uid {
        None => DEFAULT_PROXY_UID,
        Some(u) if u.value == 0 => {
            return Err(at(
                u,
                "transparent.proxy_uid: 0 would exempt every root process from the redirect; \
                 run tokex as a uid of its own",
            ));
        }
        Some(u) => u.value,
    };
    Ok(Some(Transparent {
        listen: own,
        ports,
        exclude_ports,
        exclude_cidrs,
        proxy_uid,
        unmatched: match f.unmatched {
            file::Unmatched::Reject => Unmatched::Reject,
            file::Unmatched::Passthrough => Unmatched::Passthrough,
        },
    }))
}

fn checked_ports(ports: &[serde_saphyr::Spanned<u16>], key: &str) -> Result<Vec<u16>, Invalid> {
    let mut out: Vec<u16> = Vec::with_capacity(ports.len());
    for p in ports {
        if p.value == 0 {
            return Err(at(p, format!("transparent.{key}: 0 is not a port")));
        }
        if !out.contains(&p.value) {
            out.push(p.value);
        }
    }
    Ok(out)
}

/// A route that names a destination can only match redirected connections.
pub(super) fn needs_section<T>(destination: &serde_saphyr::Spanned<T>, route: &str) -> Invalid {
    at(
        destination,
        format!(
            "{route}.match.destination needs the transparent section: only redirected \
         connections have an original destination"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_forms() {
        let ok = |t: &str| parse_destination(t).unwrap();
        let v4: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert!(ok("10.1.2.3:80").contains(v4));
        assert!(!ok("10.1.2.3:81").contains(v4));
        assert!(ok("10.1.2.3").contains(v4));
        assert!(ok("10.0.0.0/8").contains(v4));
        assert!(ok("10.0.0.0/8:80").contains(v4));
        assert!(!ok("10.0.0.0/8:443").contains(v4));
        assert!(!ok("192.168.0.0/16").contains(v4));
        assert!(ok("10.0.0.0/8").contains("[::ffff:10.9.9.9]:1".parse().unwrap()));
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert!(ok("2001:db8::1").contains(v6));
        assert!(ok("[2001:db8::1]:443").contains(v6));
        assert!(ok("[2001:db8::/32]:443").contains(v6));
        assert!(ok("2001:db8::/32").contains(v6));
        assert!(!ok("[2001:db8::/32]:80").contains(v6));
        for bad in [
            "",
            "10.0.0.0/33",
            "10.1.2.3:0",
            "10.1.2.3:x",
            "[::1",
            "[::1]x",
            "host:80",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
        for written in [
            "10.1.2.3:80",
            "10.0.0.0/8",
            "[2001:db8::/32]:443",
            "2001:db8::1",
        ] {
            assert_eq!(ok(written).to_string(), written, "printed as written");
        }
        let err = parse_destination("10.1.2.3/8").unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
    }
}
