//! Routing: which configured route a request belongs to, and the path it is forwarded
//! with (SPEC §1 and §4 step 1).
//!
//! A request names its target by absolute-form URI (`HTTP_PROXY`), HTTP/2 `:authority`,
//! or `Host`; then `path_prefix` narrows. The first matching route wins, and only
//! configured upstreams are ever contacted.

use http::{Method, Request, Uri};

use crate::fields::Fields;

use crate::config::model::{HostMatch, Route};
use crate::error::{Code, ProxyError};

/// What the request asked for, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// Reads the target of a request. `CONNECT` and asterisk-form are refused: tokex must
/// see the request to rewrite it, so it never tunnels (SPEC §1).
pub fn target<B>(req: &Request<B>) -> Result<Target<'_>, ProxyError> {
    target_of(req.method(), req.uri(), req.headers())
}

/// [`target`] from a request's parts, with its fields read through [`Fields`].
pub fn target_of<'a, F: Fields>(
    method: &Method,
    uri: &'a Uri,
    headers: &'a F,
) -> Result<Target<'a>, ProxyError> {
    if method == Method::CONNECT {
        return Err(ProxyError::new(
            Code::Unsupported,
            "CONNECT is not supported: send plain http:// requests to tokex and it speaks https to the upstream itself",
        ));
    }
    if uri.path() == "*" || uri.path_and_query().is_none() && uri.authority().is_some() {
        return Err(ProxyError::new(
            Code::Unsupported,
            "only origin-form and absolute-form requests are supported",
        ));
    }
    // RFC 9112 §3.2.2: an absolute-form authority overrides Host.
    let (host, port) = match uri.authority() {
        Some(a) => (Some(a.host()), a.port_u16()),
        None => match headers.first("host").and_then(visible_ascii) {
            Some(h) => split_host_port(h),
            None => (None, None),
        },
    };
    Ok(Target {
        host,
        port,
        path: uri.path(),
        query: uri.query(),
    })
}

/// The value as text when it is visible ASCII, as `HeaderValue::to_str` requires.
fn visible_ascii(v: &[u8]) -> Option<&str> {
    v.iter()
        .all(|&c| c == b'\t' || (0x20..0x7f).contains(&c))
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
}

fn split_host_port(h: &str) -> (Option<&str>, Option<u16>) {
    match h.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            (Some(host), port.parse().ok())
        }
        _ => (Some(h), None),
    }
}

/// Whether `route` takes `t`. An omitted match key matches anything.
pub fn matches(route: &Route, t: &Target<'_>) -> bool {
    host_matches(route.host.as_ref(), t)
        && route
            .path_prefix
            .as_deref()
            .is_none_or(|p| prefix_matches(p, t.path))
}

fn host_matches(m: Option<&HostMatch>, t: &Target<'_>) -> bool {
    let Some(m) = m else { return true };
    let Some(host) = t.host else { return false };
    // Without a port in the config, any port; with one, the request's (default 80).
    host.eq_ignore_ascii_case(&m.host) && m.port.is_none_or(|p| t.port.unwrap_or(80) == p)
}

/// Segment-aware: `/pay` takes `/pay` and `/pay/x` but not `/payments`. Paths with dot
/// segments never match a prefix, so `/public/../admin` cannot borrow a route.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if has_dot_segment(path) {
        return false;
    }
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// `.` or `..`, each dot possibly written `%2e` (any case), without allocating.
fn has_dot_segment(path: &str) -> bool {
    let dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    path.split('/').any(|s| {
        dot(s)
            || [1, 3]
                .into_iter()
                .any(|at| s.len() > at && s.is_char_boundary(at) && dot(&s[..at]) && dot(&s[at..]))
    })
}

/// The path and query sent upstream: the prefix stripped when configured, the
/// upstream URL's own path in front.
pub fn upstream_path(route: &Route, t: &Target<'_>) -> String {
    let mut path = t.path;
    if route.strip_prefix
        && let Some(prefix) = route.path_prefix.as_deref()
    {
        path = path
            .strip_prefix(prefix.trim_end_matches('/'))
            .unwrap_or(path);
    }
    let mut out = String::with_capacity(
        route.upstream.base_path.len() + path.len() + 1 + t.query.map_or(0, str::len),
    );
    out.push_str(&route.upstream.base_path);
    if !path.starts_with('/') {
        out.push('/');
    }
    out.push_str(path);
    if let Some(q) = t.query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn routes(yaml_routes: &str) -> Vec<std::sync::Arc<Route>> {
        let text = format!("routes:\n{yaml_routes}");
        crate::config::parse(&text, Path::new("t.yaml"))
            .unwrap()
            .routes
    }

    fn t<'a>(host: Option<&'a str>, port: Option<u16>, path: &'a str) -> Target<'a> {
        Target {
            host,
            port,
            path,
            query: None,
        }
    }

    /// Host, port and segment-aware prefix matching, first match wins.
    #[test]
    fn route_matching_table() {
        let r = routes(
            "  - {name: pay, match: {host: payments.internal, path_prefix: /v1}, upstream: 'http://a', exchange: none}\n\
             \x20 - {name: pay8080, match: {host: 'payments.internal:8080'}, upstream: 'http://b', exchange: none}\n\
             \x20 - {name: anyhost, match: {path_prefix: /orders/}, upstream: 'http://c', exchange: none}\n",
        );
        let find = |t: Target| r.iter().find(|r| matches(r, &t)).map(|r| r.name.as_str());
        assert_eq!(find(t(Some("payments.internal"), None, "/v1")), Some("pay"));
        assert_eq!(
            find(t(Some("PAYMENTS.internal"), Some(9), "/v1/x")),
            Some("pay")
        );
        assert_eq!(find(t(Some("payments.internal"), None, "/v10")), None);
        assert_eq!(
            find(t(Some("payments.internal"), Some(8080), "/v10")),
            Some("pay8080")
        );
        assert_eq!(
            find(t(Some("payments.internal"), None, "/v1/../admin")),
            None
        );
        assert_eq!(
            find(t(Some("payments.internal"), None, "/v1/%2E%2E/admin")),
            None
        );
        assert_eq!(find(t(Some("other"), None, "/orders/1")), Some("anyhost"));
        assert_eq!(find(t(None, None, "/orders")), None);
        assert_eq!(find(t(None, None, "/x")), None);
    }

    /// Stripping and the upstream base path compose into one clean path.
    #[test]
    fn upstream_paths() {
        let r = routes(
            "  - {name: a, match: {path_prefix: /payments}, strip_prefix: true, upstream: 'http://u/base/', exchange: none}\n\
             \x20 - {name: b, match: {path_prefix: /p/}, strip_prefix: true, upstream: 'http://u', exchange: none}\n\
             \x20 - {name: c, match: {path_prefix: /keep}, upstream: 'http://u', exchange: none}\n",
        );
        let q = Target {
            host: None,
            port: None,
            path: "/payments/x/y",
            query: Some("a=1"),
        };
        assert_eq!(upstream_path(&r[0], &q), "/base/x/y?a=1");
        assert_eq!(upstream_path(&r[0], &t(None, None, "/payments")), "/base/");
        assert_eq!(upstream_path(&r[1], &t(None, None, "/p/z")), "/z");
        assert_eq!(upstream_path(&r[2], &t(None, None, "/keep/z")), "/keep/z");
    }

    /// Absolute-form beats Host; CONNECT and asterisk-form are refused.
    #[test]
    fn request_targets() {
        let req = Request::get("http://payments.internal:81/a?b")
            .header("host", "evil")
            .body(())
            .unwrap();
        assert_eq!(
            target(&req).unwrap(),
            Target {
                host: Some("payments.internal"),
                port: Some(81),
                path: "/a",
                query: Some("b")
            }
        );
        let req = Request::get("/a")
            .header("host", "svc.internal:8080")
            .body(())
            .unwrap();
        assert_eq!(target(&req).unwrap().host, Some("svc.internal"));
        assert_eq!(target(&req).unwrap().port, Some(8080));
        let req = Request::connect("payments.internal:443").body(()).unwrap();
        assert_eq!(target(&req).unwrap_err().code, Code::Unsupported);
        let req = Request::options("*").body(()).unwrap();
        assert_eq!(target(&req).unwrap_err().code, Code::Unsupported);
    }
}
