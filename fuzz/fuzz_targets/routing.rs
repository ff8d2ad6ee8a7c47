//! Route matching and the upstream path. Input: a `Host` line (empty: none, over HTTP/2)
//! and a request-target line. Normalized paths have no dot segments, agree with the URL
//! Standard's resolution, and never leave a route's prefix or the upstream's base path;
//! the first matching route wins.
#![no_main]

use std::sync::{Arc, LazyLock};

use http::{Request, Version};
use libfuzzer_sys::fuzz_target;
use tokex::config::Route;
use tokex::routing::{self, Target};

/// Prefixes with and without a trailing slash, stripped and kept, under base paths.
const ROUTES: &str = "routes:
  - {name: api, match: {host: api.internal, path_prefix: /api}, strip_prefix: true, upstream: 'http://u/base', exchange: none}
  - {name: docs, match: {path_prefix: /docs/}, upstream: 'http://u/v1/', exchange: none}
  - {name: pay, match: {host: 'payments.internal:8080', path_prefix: /pay}, upstream: 'https://p', exchange: none}
  - {name: dir, match: {path_prefix: /s/}, strip_prefix: true, upstream: 'http://s/root', exchange: none}
  - {name: rest, match: {host: rest.internal}, upstream: 'http://r', exchange: none}
";

static CONFIG: LazyLock<Vec<Arc<Route>>> = LazyLock::new(|| {
    tokex::config::parse(ROUTES, std::path::Path::new("routing.yaml"))
        .expect("the fixed routes load")
        .routes
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (host, target) = text.split_once('\n').unwrap_or(("", text));
    normalized(target);

    let mut request = Request::get(target);
    request = match host {
        "" => request.version(Version::HTTP_2),
        host => request.header(http::header::HOST, host),
    };
    let Ok(request) = request.body(()) else {
        return;
    };
    let Ok(t) = routing::target(&request) else {
        return;
    };
    assert!(!has_dot_segment(&t.path), "{:?}", t.path);
    assert_eq!(t.raw_path.is_some(), t.path != request.uri().path());
    routed(&CONFIG, &t);
});

/// Normalizing any string: no dot segments left, idempotent, and where the URL Standard
/// can resolve the same path, the same result.
fn normalized(path: &str) {
    let Ok(p) = routing::normalize(path) else {
        return;
    };
    assert!(!has_dot_segment(&p), "{path:?} -> {p:?}");
    assert!(matches!(
        routing::normalize(&p),
        Ok(std::borrow::Cow::Borrowed(_))
    ));
    // rust-url keeps a Windows drive letter segment (`/c:/..`) whatever the scheme, where the
    // URL Standard does so for file: URLs only; normalize removes it, as RFC 3986 does.
    let drive_letter = |s: &str| matches!(s.as_bytes(), [a, b':'] if a.is_ascii_alphabetic());
    if path.starts_with('/')
        && !path.starts_with("//")
        && path.bytes().all(url_keeps)
        && !path.split('/').any(drive_letter)
    {
        let mut url = url::Url::parse("http://h/").expect("a base URL");
        url.set_path(path);
        assert_eq!(p, url.path(), "{path:?}");
    }
}

/// Bytes the URL Standard's path parser keeps as they are (no percent-encoding, no
/// backslash-as-slash, no query or fragment).
fn url_keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

/// `.` or `..`, with any dot written `%2e`.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| {
        let decoded = s.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

fn routed(routes: &[Arc<Route>], t: &Target<'_>) {
    let Ok(found) = routing::find(routes, |r| &**r, t) else {
        return;
    };
    let first = routes.iter().position(|r| routing::matches(r, t));
    assert_eq!(found, first);
    // A path that enters a prefix and climbs out of it with dot segments is refused,
    // not routed elsewhere.
    if let Some(raw) = t.raw_path {
        let as_sent = Target {
            path: raw.into(),
            ..t.clone()
        };
        for r in routes.iter().filter(|r| routing::matches(r, &as_sent)) {
            assert!(
                routing::matches(r, t),
                "{raw:?} entered {} and left it for {:?}",
                r.name,
                t.path
            );
        }
    }
    let Some(i) = found else { return };
    let route = &routes[i];
    let base = route.upstream.as_ref().map_or("", |u| u.base_path.as_str());
    match routing::upstream_path(route, t) {
        None => assert!(base.is_empty() && !route.strip_prefix && t.raw_path.is_none()),
        Some(out) => {
            let path = out.split_once('?').map_or(out.as_str(), |(p, _)| p);
            assert!(
                path.strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with('/')),
                "{out:?} is not under {base:?}"
            );
            assert!(!has_dot_segment(path), "{out:?}");
            assert!(out.parse::<http::uri::PathAndQuery>().is_ok(), "{out:?}");
            if !route.strip_prefix {
                assert_eq!(path, format!("{base}{}", t.path));
            }
        }
    }
}
