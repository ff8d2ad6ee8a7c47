//! Routing: which configured route a request belongs to, and the path it is forwarded
//! with (step 1 of the request flow).
//!
//! A request names its target by absolute-form URI (`HTTP_PROXY`), HTTP/2 `:authority`,
//! or `Host`; then `path_prefix` narrows. The first matching route wins, and only
//! configured upstreams are ever contacted.

use std::borrow::Cow;

use http::{HeaderMap, Method, Request, Uri, Version};

use crate::config::model::{HostMatch, Route};
use crate::error::{Code, ProxyError};

mod path;

pub use path::{Unsafe, normalize};

/// What the request asked for, borrowed from it; `path` has no dot segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub path: Cow<'a, str>,
    /// The path as the app sent it, when it had dot segments.
    pub raw_path: Option<&'a str>,
    pub query: Option<&'a str>,
    /// Where the app was connecting, for a connection the transparent redirect brought.
    pub destination: Option<std::net::SocketAddr>,
}

/// Reads the target of a request. `CONNECT` and asterisk-form are refused: tokex must
/// see the request to rewrite it, so it never tunnels.
pub fn target<B>(req: &Request<B>) -> Result<Target<'_>, ProxyError> {
    let host = host_field(req.version(), req.uri(), req.headers())?;
    target_of(req.method(), req.uri(), host)
}

/// The `Host` field. RFC 9112 §3.2: an HTTP/1.1 request has exactly one, and it is a
/// valid authority; RFC 9113 §8.3.1: beside `:authority`, it names the same one.
fn host_field<'a>(
    version: Version,
    uri: &Uri,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, ProxyError> {
    let refuse = |why: &'static str| Err(ProxyError::new(Code::InvalidRequest, why));
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let Some(host) = hosts.next() else {
        return match version {
            Version::HTTP_11 => refuse("an HTTP/1.1 request needs a Host header"),
            _ => Ok(None),
        };
    };
    if hosts.next().is_some() {
        return refuse("more than one Host header");
    }
    let Some(text) = host.to_str().ok().filter(|h| is_host(h.as_bytes())) else {
        return refuse("the Host header is not a valid authority");
    };
    if version == Version::HTTP_2 && uri.authority().is_some_and(|a| *a != *text) {
        return refuse("Host and :authority name different authorities");
    }
    Ok(Some(text))
}

/// RFC 9110 §7.2 `uri-host [ ":" port ]`: a registered name (RFC 3986 unreserved,
/// sub-delims and percent-encodings) or a bracketed IP literal, then digits.
fn is_host(h: &[u8]) -> bool {
    let (host, port) = match h.first() {
        Some(b'[') => match h.iter().position(|&b| b == b']') {
            Some(end) => (&h[..=end], &h[end + 1..]),
            None => return false,
        },
        _ => match h.iter().rposition(|&b| b == b':') {
            Some(colon) => (&h[..colon], &h[colon..]),
            None => (h, &h[h.len()..]),
        },
    };
    let name_ok = match host.first() {
        Some(b'[') => host[1..host.len() - 1]
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'%' | b'v' | b'V')),
        _ => {
            !host.is_empty()
                && host
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
        }
    };
    let port_ok = port.is_empty() || port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit);
    name_ok && port_ok
}

/// [`target`] from a request's method, URI and checked `Host`.
fn target_of<'a>(
    method: &Method,
    uri: &'a Uri,
    host_field: Option<&'a str>,
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
        None => host_field.map_or((None, None), split_host_port),
    };
    let raw = uri.path();
    let path =
        path::normalize(raw).map_err(|e| ProxyError::new(Code::InvalidRequest, e.to_string()))?;
    let raw_path = matches!(path, Cow::Owned(_)).then_some(raw);
    Ok(Target {
        host,
        port,
        path,
        raw_path,
        query: uri.query(),
        destination: None,
    })
}

fn split_host_port(h: &str) -> (Option<&str>, Option<u16>) {
    match h.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => {
            (Some(host), port.parse().ok())
        }
        _ => (Some(h), None),
    }
}

/// The index of the first route that takes `t`. A path whose dot segments climb out of
/// a route's prefix is refused instead of routed elsewhere: `/api/x/../../admin` is
/// an attempt to leave `/api`, not a request for `/admin`.
pub fn find<R>(
    routes: &[R],
    route: impl Fn(&R) -> &Route,
    t: &Target<'_>,
) -> Result<Option<usize>, ProxyError> {
    if let Some(raw) = t.raw_path {
        let literal = dot_free_start(raw);
        let climbs = routes.iter().map(&route).any(|r| {
            host_matches(r.host.as_ref(), t)
                && r.path_prefix
                    .as_deref()
                    .is_some_and(|p| prefix_matches(p, literal) && !prefix_matches(p, &t.path))
        });
        if climbs {
            return Err(ProxyError::new(
                Code::InvalidRequest,
                "the path climbs out of its route's prefix with dot segments",
            ));
        }
    }
    Ok(routes.iter().position(|r| matches(route(r), t)))
}

/// The segments of `raw` before its first dot segment, with the slash in front of it:
/// `/docs/..` has entered the directory `/docs/` before it climbs.
fn dot_free_start(raw: &str) -> &str {
    let mut end = 0;
    for segment in raw.split('/').skip(1) {
        if path::needs_care(segment) {
            return raw.get(..=end).unwrap_or(raw);
        }
        end += 1 + segment.len();
    }
    raw
}

/// Whether `route` takes `t`. An omitted match key matches anything.
pub fn matches(route: &Route, t: &Target<'_>) -> bool {
    // A route that names a destination takes only redirected connections bound there; one
    // without an upstream forwards to the destination, so it needs one too.
    let destination = match (&route.destination, &route.upstream) {
        (None, Some(_)) => true,
        (None, None) => t.destination.is_some(),
        (Some(d), _) => t.destination.is_some_and(|a| d.contains(a)),
    };
    destination
        && host_matches(route.host.as_ref(), t)
        && route
            .path_prefix
            .as_deref()
            .is_none_or(|p| prefix_matches(p, &t.path))
}

fn host_matches(m: Option<&HostMatch>, t: &Target<'_>) -> bool {
    let Some(m) = m else { return true };
    let Some(host) = t.host else { return false };
    // Without a port in the config, any port; with one, the request's (default 80).
    host.eq_ignore_ascii_case(&m.host) && m.port.is_none_or(|p| t.port.unwrap_or(80) == p)
}

/// Segment-aware: `/pay` takes `/pay` and `/pay/x` but not `/payments`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// The path and query sent upstream: the prefix stripped when configured, the
/// upstream URL's own path in front. `None` when that is the app's own, unchanged.
pub fn upstream_path(route: &Route, t: &Target<'_>) -> Option<String> {
    let stripped = route.strip_prefix && route.path_prefix.is_some();
    let base_path = route.upstream.as_ref().map_or("", |u| u.base_path.as_str());
    if base_path.is_empty() && !stripped && t.raw_path.is_none() {
        return None;
    }
    let mut path: &str = &t.path;
    if route.strip_prefix
        && let Some(prefix) = route.path_prefix.as_deref()
    {
        path = path
            .strip_prefix(prefix.trim_end_matches('/'))
            .unwrap_or(path);
    }
    let mut out =
        String::with_capacity(base_path.len() + path.len() + 1 + t.query.map_or(0, str::len));
    out.push_str(base_path);
    if !path.starts_with('/') {
        out.push('/');
    }
    out.push_str(path);
    if let Some(q) = t.query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
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
        let normalized = path::normalize(path).unwrap();
        Target {
            host,
            port,
            raw_path: matches!(normalized, Cow::Owned(_)).then_some(path),
            path: normalized,
            query: None,
            destination: None,
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
            find(t(Some("payments.internal"), None, "/v2/../v1/x")),
            Some("pay")
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
            query: Some("a=1"),
            ..t(None, None, "/payments/x/y")
        };
        let path = |r: &Route, t: &Target<'_>| upstream_path(r, t);
        assert_eq!(path(&r[0], &q).as_deref(), Some("/base/x/y?a=1"));
        assert_eq!(
            path(&r[0], &t(None, None, "/payments")).as_deref(),
            Some("/base/")
        );
        assert_eq!(path(&r[1], &t(None, None, "/p/z")).as_deref(), Some("/z"));
        // Nothing to change: the app's own target travels.
        assert_eq!(path(&r[2], &t(None, None, "/keep/z")), None);
        assert_eq!(
            path(&r[2], &t(None, None, "/keep/./z")).as_deref(),
            Some("/keep/z")
        );
        // Dot segments are gone before the join, so nothing leaves the base path.
        assert_eq!(
            path(&r[0], &t(None, None, "/payments/a/../b")).as_deref(),
            Some("/base/b")
        );
    }

    /// Dot segments that leave a route's prefix, or the root, are refused; those that
    /// stay inside it are resolved.
    #[test]
    fn dot_segments_cannot_leave_a_prefix() {
        let r = routes(
            "  - {name: api, match: {path_prefix: /api}, strip_prefix: true, upstream: 'http://u/ex', exchange: none}\n\
             \x20 - {name: rest, upstream: 'http://v', exchange: none}\n",
        );
        let find = |path: &str| find(&r, |r| &**r, &t(Some("h"), None, path));
        assert_eq!(find("/api/x/../y").unwrap(), Some(0));
        assert_eq!(find("/other/../api/y").unwrap(), Some(0));
        assert_eq!(
            find("/api/x/%2e%2e/../admin").unwrap_err().code,
            Code::InvalidRequest
        );
        assert_eq!(
            find("/api/../admin").unwrap_err().code,
            Code::InvalidRequest
        );
        assert_eq!(find("/a/../b").unwrap(), Some(1));
        let req = Request::get("/../../admin")
            .header("host", "h")
            .body(())
            .unwrap();
        assert_eq!(target(&req).unwrap_err().code, Code::InvalidRequest);
    }

    /// A prefix written as a directory (`/docs/`) is left by `/docs/..` as surely as
    /// `/api` is by `/api/..`: such paths are refused, not routed to the next route.
    #[test]
    fn dot_segments_cannot_leave_a_directory_prefix() {
        let r = routes(
            "  - {name: docs, match: {path_prefix: /docs/}, upstream: 'http://u', exchange: none}\n\
             \x20 - {name: rest, upstream: 'http://v', exchange: none}\n",
        );
        let find = |path: &str| find(&r, |r| &**r, &t(Some("h"), None, path));
        assert_eq!(find("/docs/a/../b").unwrap(), Some(0));
        assert_eq!(find("/docs/./b").unwrap(), Some(0));
        for climbing in [
            "/docs/..",
            "/docs/../admin",
            "/docs/%2E%2e/admin",
            "/docs/./../admin",
        ] {
            assert_eq!(
                find(climbing).unwrap_err().code,
                Code::InvalidRequest,
                "{climbing}"
            );
        }
    }

    /// Absolute-form beats Host; CONNECT and asterisk-form are refused.
    /// A route naming a destination takes only redirected connections bound there; the
    /// others match redirected and explicit requests alike.
    #[test]
    fn destination_routes_take_only_their_redirected_connections() {
        let text = "routes:
  - {name: orders, match: {destination: '10.0.0.5:80'}, upstream: 'http://10.0.0.5', exchange: none}
  - {name: net, match: {destination: '10.1.0.0/16', host: api.internal}, upstream: 'http://b', exchange: none}
  - {name: any, match: {host: api.internal}, upstream: 'http://c', exchange: none}
transparent: {}
";
        let r = crate::config::parse(text, Path::new("t.yaml"))
            .unwrap()
            .routes;
        let at = |host, dst: Option<&str>| {
            let mut t = t(host, None, "/");
            t.destination = dst.map(|d| d.parse().unwrap());
            find(&r, |r| &**r, &t).unwrap().map(|i| r[i].name.as_str())
        };
        assert_eq!(at(Some("x"), Some("10.0.0.5:80")), Some("orders"));
        assert_eq!(at(Some("x"), Some("10.0.0.5:81")), None);
        assert_eq!(
            at(Some("x"), None),
            None,
            "an explicit request has no destination"
        );
        assert_eq!(at(Some("api.internal"), Some("10.1.2.3:443")), Some("net"));
        assert_eq!(at(Some("api.internal"), Some("10.2.0.1:80")), Some("any"));
        assert_eq!(at(Some("api.internal"), None), Some("any"));
        let err = crate::config::parse(
            "routes:\n  - {name: o, match: {destination: '10.0.0.5:80'}, upstream: 'http://a', exchange: none}\n",
            Path::new("t.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs the transparent section"), "{err}");
    }

    /// A route without upstream forwards to the destination, so it takes only redirected
    /// connections; an explicit request goes on to the next route.
    #[test]
    fn routes_without_upstream_take_only_redirected_connections() {
        let text = "routes:
  - {name: original, match: {host: api.internal}, exchange: none}
  - {name: named, match: {host: api.internal}, upstream: 'http://c', exchange: none}
transparent: {}
";
        let r = crate::config::parse(text, Path::new("t.yaml"))
            .unwrap()
            .routes;
        let at = |dst: Option<&str>| {
            let mut t = t(Some("api.internal"), None, "/");
            t.destination = dst.map(|d| d.parse().unwrap());
            find(&r, |r| &**r, &t).unwrap().map(|i| r[i].name.as_str())
        };
        assert_eq!(at(Some("10.0.0.5:80")), Some("original"));
        assert_eq!(at(None), Some("named"));
    }

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
                path: Cow::Borrowed("/a"),
                raw_path: None,
                query: Some("b"),
                destination: None,
            }
        );
        let req = Request::get("/a")
            .header("host", "svc.internal:8080")
            .body(())
            .unwrap();
        assert_eq!(target(&req).unwrap().host, Some("svc.internal"));
        assert_eq!(target(&req).unwrap().port, Some(8080));
        let req = Request::connect("payments.internal:443")
            .header("host", "payments.internal:443")
            .body(())
            .unwrap();
        assert_eq!(target(&req).unwrap_err().code, Code::Unsupported);
        let req = Request::options("*").header("host", "a").body(()).unwrap();
        assert_eq!(target(&req).unwrap_err().code, Code::Unsupported);
    }

    /// HTTP/1.1 needs exactly one valid Host; HTTP/1.0 may have none; HTTP/2's Host
    /// must agree with `:authority`.
    #[test]
    fn host_fields() {
        let with = |version: Version, uri: &str, hosts: &[&str]| {
            let mut b = Request::get(uri).version(version);
            for h in hosts {
                b = b.header("host", *h);
            }
            target(&b.body(()).unwrap()).map(|t| t.host.map(str::to_string))
        };
        use Version as V;
        assert_eq!(
            with(V::HTTP_11, "/", &["a.internal"]).unwrap().as_deref(),
            Some("a.internal")
        );
        assert!(with(V::HTTP_11, "/", &["[::1]:8080"]).is_ok());
        assert!(with(V::HTTP_11, "/", &["a.internal:"]).is_ok());
        for bad in [
            &[][..],
            &["a", "a"],
            &["a b"],
            &["a/b"],
            &["user@a"],
            &[""],
            &["a:8x"],
            &["[::1"],
            &["a\\b"],
        ] {
            let e = with(V::HTTP_11, "/", bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidRequest, "{bad:?}");
        }
        assert_eq!(with(V::HTTP_10, "/", &[]).unwrap(), None);
        assert!(with(V::HTTP_11, "http://a/", &[]).is_err());
        assert!(with(V::HTTP_2, "http://a/", &[]).is_ok());
        assert!(with(V::HTTP_2, "http://a/", &["a"]).is_ok());
        assert!(with(V::HTTP_2, "http://a/", &["b"]).is_err());
    }
}
