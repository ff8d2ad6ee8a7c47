//! Routes: matching (`match.host`, `match.path_prefix`), the upstream, per-route trust
//! roots and cache overrides, and what a route does without a token.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::sources::Sources;
use super::{Invalid, at, check_name};
use crate::config::file::{self, FileExchange, FileRoute};
use crate::config::model::{
    Authority, CacheSettings, HostMatch, MissingTokenPolicy, Route, Timeouts, UpstreamUrl,
};

pub(super) fn route(
    i: usize,
    spanned: &Spanned<FileRoute>,
    // The authorities, and the names of those that send an actor token.
    (authorities, delegating): (&BTreeMap<String, Arc<Authority>>, &[&str]),
    // The cache section with this route's overrides applied.
    cache: &CacheSettings,
    timeouts: &Timeouts,
    sources: &mut Sources,
) -> Result<Route, Invalid> {
    let r = &spanned.value;
    let path = format!("routes[{i}]");
    let name = r.name.value.0.clone();
    check_name(&name).map_err(|m| at(&r.name, format!("{path}.name: {m}")))?;
    let host = match &r.matcher.host {
        None => None,
        Some(h) => Some(
            parse_host_match(&h.value.0).map_err(|m| at(h, format!("{path}.match.host: {m}")))?,
        ),
    };
    let path_prefix = match &r.matcher.path_prefix {
        None => None,
        Some(p) if !p.value.0.starts_with('/') => {
            return Err(at(
                p,
                format!("{path}.match.path_prefix must start with `/`"),
            ));
        }
        Some(p) if p.value.0.split('/').any(is_dot_segment) => {
            return Err(at(
                p,
                format!(
                    "{path}.match.path_prefix must not have dot segments (`.`, `..`, also as %2e): \
                     requests are matched after theirs are resolved, so it would never match"
                ),
            ));
        }
        Some(p) => Some(p.value.0.clone()),
    };
    let destination = match &r.matcher.destination {
        None => None,
        Some(d) => Some(
            super::transparent::parse_destination(&d.value.0)
                .map_err(|m| at(d, format!("{path}.match.destination: {m}")))?,
        ),
    };
    if r.strip_prefix && path_prefix.is_none() {
        return Err(at(
            spanned,
            format!("{path}.strip_prefix needs match.path_prefix"),
        ));
    }
    let upstream = match &r.upstream {
        Some(u) => Some(upstream(u).map_err(|m| at(u, format!("{path}.upstream: {m}")))?),
        // The original destination is reached over plain HTTP: tokex never terminates an
        // app's TLS, so there is no certificate to check.
        None if r.ca_file.is_some() => {
            return Err(at(
                spanned,
                format!(
                    "{path}.ca_file needs an https upstream; a route without upstream forwards plain HTTP to the original destination"
                ),
            ));
        }
        None => None,
    };
    let ca_file = super::trust::ca_bundle(r.ca_file.as_ref(), &format!("{path}.ca_file"), sources)?;
    let on_missing_token = missing_token_policy(r.on_missing_token);
    if on_missing_token == MissingTokenPolicy::ClientCredentials
        && matches!(r.exchange, FileExchange::None)
    {
        return Err(at(
            spanned,
            format!(
                "{path}.on_missing_token: client_credentials needs an exchange (its authority, audience and scope)"
            ),
        ));
    }
    let exchange = match &r.exchange {
        FileExchange::None => None,
        FileExchange::Spec(spec) => Some(super::params::exchange_params(
            spec,
            &path,
            spanned,
            authorities,
            delegating,
        )?),
    };
    Ok(Route {
        name,
        host,
        path_prefix,
        destination,
        strip_prefix: r.strip_prefix,
        upstream,
        ca_file,
        on_missing_token,
        exchange,
        cache: *cache,
        timeout: r.timeout.map_or(timeouts.upstream_response, |d| d.0),
        deadline: r.deadline.map(|d| d.0),
        retry_on_401: r.retry_on_401,
    })
}

fn missing_token_policy(p: file::MissingTokenPolicy) -> MissingTokenPolicy {
    match p {
        file::MissingTokenPolicy::Reject => MissingTokenPolicy::Reject,
        file::MissingTokenPolicy::Forward => MissingTokenPolicy::Forward,
        file::MissingTokenPolicy::ClientCredentials => MissingTokenPolicy::ClientCredentials,
    }
}

fn upstream(u: &Spanned<tokex_common::values::HttpUrl>) -> Result<UpstreamUrl, String> {
    let url = &u.value.0;
    if url.query().is_some() {
        return Err("a query string is not allowed".into());
    }
    let uri: http::Uri = url
        .as_str()
        .parse()
        .map_err(|e| format!("invalid URI: {e}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return Err("an absolute URL is required".into());
    };
    Ok(UpstreamUrl {
        url: url.to_string(),
        scheme,
        authority,
        base_path: url.path().trim_end_matches('/').to_string(),
    })
}

/// Whether `upstream` names `listen` (same port, and the same or a loopback address
/// when tokex listens on loopback or on every address).
pub(super) fn points_at(upstream: &UpstreamUrl, listen: SocketAddr) -> bool {
    let port =
        upstream
            .authority
            .port_u16()
            .unwrap_or(if upstream.scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            });
    if port != listen.port() || listen.port() == 0 {
        return false;
    }
    let host = upstream
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip == listen.ip()
                || (ip.is_loopback() && (listen.ip().is_loopback() || listen.ip().is_unspecified()))
        }
        Err(_) => {
            host.eq_ignore_ascii_case("localhost")
                && (listen.ip().is_loopback() || listen.ip().is_unspecified())
        }
    }
}

fn parse_host_match(raw: &str) -> Result<HostMatch, String> {
    if tokex_common::offline::unresolved(raw) {
        return Ok(HostMatch {
            host: raw.to_string(),
            port: None,
        });
    }
    if let Some((scheme, _)) = raw.split_once("://") {
        // A URL pasted where a host belongs: say so and give the host it names.
        let fix = url::Url::parse(raw).ok().and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        });
        return Err(match fix {
            Some(host) => format!(
                "`{raw}` starts with the scheme `{scheme}://`, but a host has no scheme: write `host: {host}` (the scheme belongs in `upstream`)"
            ),
            None => format!("`{raw}` starts with a scheme, but a host has no scheme"),
        });
    }
    let lower = raw.to_ascii_lowercase();
    let (host, port) = match lower.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
            h.to_string(),
            Some(
                p.parse::<u16>()
                    .map_err(|_| format!("invalid port in `{raw}`"))?,
            ),
        ),
        _ => (lower.clone(), None),
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    if !ok {
        return Err(format!("invalid host `{raw}`"));
    }
    // RFC 1035 §2.3.4: no DNS name is longer, so a longer one is a mistake.
    if host.len() > 253 {
        return Err(format!("invalid host `{raw}`: longer than 253 characters"));
    }
    Ok(HostMatch { host, port })
}

/// `.` or `..`, with any dot written `%2e` (RFC 3986 §2.3, §5.2.4).
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Host matches keep a port only when one is given, and lowercase the name.
    #[test]
    fn host_match_parsing() {
        assert_eq!(
            parse_host_match("Payments.Internal").unwrap(),
            HostMatch {
                host: "payments.internal".into(),
                port: None
            }
        );
        assert_eq!(
            parse_host_match("a.b:8080").unwrap(),
            HostMatch {
                host: "a.b".into(),
                port: Some(8080)
            }
        );
        assert!(parse_host_match("a.b:99999").is_err());
        assert!(parse_host_match("bad host").is_err());
    }

    /// A route may leave out `upstream` only where connections are redirected, and then
    /// takes no `ca_file`: the original destination is reached over plain HTTP.
    #[test]
    fn upstream_is_left_out_only_for_redirected_connections() {
        let cfg = |route: &str, transparent: bool| {
            let section = if transparent { "transparent: {}\n" } else { "" };
            let text = format!("routes:\n  - {{name: a, {route}exchange: none}}\n{section}");
            crate::config::parse(&text, Path::new("t.yaml")).map_err(|e| e.to_string())
        };
        let err = cfg("", false).unwrap_err();
        assert!(
            err.contains("t.yaml:2:5") && err.contains("routes[0].upstream is required"),
            "{err}"
        );
        let config = cfg("", true).unwrap();
        assert!(config.routes[0].upstream.is_none());
        let err = cfg("ca_file: ca.pem, ", true).unwrap_err();
        assert!(
            err.contains("routes[0].ca_file needs an https upstream"),
            "{err}"
        );
    }

    /// A route whose upstream is tokex's own listener is refused: it would loop.
    #[test]
    fn upstream_loop_is_refused() {
        let cfg = |listen: &str, upstream: &str| {
            let text = format!(
                "listen: {listen}\nroutes:\n  - {{name: a, upstream: '{upstream}', exchange: none}}\n"
            );
            crate::config::parse(&text, Path::new("t.yaml"))
        };
        let err = cfg("127.0.0.1:15001", "http://127.0.0.1:15001/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes[0].upstream") && err.contains("loop"),
            "{err}"
        );
        assert!(cfg("0.0.0.0:15001", "http://localhost:15001").is_err());
        assert!(cfg("127.0.0.1:15001", "http://127.0.0.1:15002").is_ok());
        assert!(
            cfg("127.0.0.1:0", "http://127.0.0.1:0").is_ok(),
            "ephemeral listen cannot be compared"
        );
    }
    /// A path prefix with dot segments is refused: requests are matched once theirs are
    /// resolved, so such a route could never match; dots inside names are fine.
    #[test]
    fn path_prefix_with_dot_segments_is_refused() {
        let cfg = |prefix: &str| {
            let text = format!(
                "routes:\n  - {{name: a, match: {{path_prefix: '{prefix}'}}, upstream: 'http://u', exchange: none}}\n"
            );
            crate::config::parse(&text, std::path::Path::new("t.yaml"))
        };
        for dotted in ["/a/..", "/.", "/api/../admin/", "/a/%2E%2e/b", "/a/./b"] {
            let err = cfg(dotted).unwrap_err().to_string();
            assert!(
                err.contains("routes[0].match.path_prefix") && err.contains("dot segment"),
                "{dotted}: {err}"
            );
        }
        for plain in ["/", "/v1.2/", "/a/...", "/.well-known"] {
            assert!(cfg(plain).is_ok(), "{plain}");
        }
    }
}
