//! Forwarding to the upstream: header hygiene, the upstream request, and the client
//! (SPEC §4 steps 7 and 8).
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1), including every field the `Connection` header
//! names, are removed before tokex sets its own `Authorization`, so a client cannot
//! smuggle the narrowed token away or keep its own. Bodies stream both ways.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::ResponseFuture;

use crate::config::model::{Route, SubjectSource, Timeouts};
use crate::credentials::Watched;
use crate::error::{Code, ProxyError};
use crate::fields::{Fields, Raw};

mod hop;

use crate::tls::CaBundle;
pub use hop::{HopByHop, list_has};

/// Response bodies: the upstream's, streamed, or one tokex made.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Request bodies to the upstream: the app's, streamed, or none at all for requests
/// that may be retried (purge-and-retry needs to send them twice).
pub type UpstreamBody = Either<Incoming, http_body_util::Empty<Bytes>>;

/// The HTTP(S) client for one route's upstream.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// Fields that describe one connection, never the message (RFC 9110 §7.6.1), plus
/// `Proxy-Authorization`, which is meant for tokex and must not travel on.
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop fields and every field named in `Connection`. `TE: trailers` is
/// the one TE value HTTP/2 permits and gRPC needs, so it alone survives.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these; one pass over the names is cheaper than the
    // removals it saves.
    if !headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(k) || k == header::TE)
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers || named.contains(&header::TE) {
        headers.remove(header::TE);
    }
}

/// Turns the app's request into the upstream's: new URI, clean headers, and exactly the
/// `Authorization` given (none when `authorization` is `None`).
pub fn upstream_request<B>(
    req: Request<B>,
    route: &Route,
    path_and_query: &str,
    token: Option<HeaderValue>,
) -> Result<Request<B>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let uri = Uri::builder()
        .scheme(route.upstream.scheme.clone())
        .authority(route.upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| {
            ProxyError::new(Code::Unsupported, "the request target cannot be forwarded")
        })?;
    upstream_headers(&mut parts.headers, route, token);
    parts.uri = uri;
    // The upstream connection decides the version (ALPN); hyper upgrades 1.1 to h2.
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    Ok(Request::from_parts(parts, body))
}

/// Turns the app's header fields into the upstream's: hop-by-hop fields, `Host` and the
/// caller's credentials out, and exactly the credential given in (none for `None`).
pub fn upstream_headers(headers: &mut HeaderMap, route: &Route, token: Option<HeaderValue>) {
    strip_hop_by_hop(headers);
    // The client sets Host (HTTP/1.1) or :authority (HTTP/2) from the upstream URI.
    headers.remove(header::HOST);
    // The caller's credentials never travel on: Authorization always goes, and so does
    // the route's subject token source when it is another header or a cookie.
    headers.remove(header::AUTHORIZATION);
    let inject = match &route.exchange {
        None => None,
        Some(exchange) => {
            match &exchange.subject_token_from {
                SubjectSource::Authorization => {}
                SubjectSource::Header(name) => {
                    headers.remove(name);
                }
                SubjectSource::Cookie(name) => remove_cookie(headers, name),
            }
            Some(&exchange.inject.header)
        }
    };
    if let (Some(header), Some(value)) = (inject, token) {
        headers.insert(header.clone(), value);
    }
}

/// Removes cookie `name` from the `Cookie` headers, keeping the other cookies.
fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let kept = cookies_without(headers, name);
    headers.remove(header::COOKIE);
    if let Some(v) = kept {
        headers.insert(header::COOKIE, v);
    }
}

/// The app's cookies without `name`, as one `Cookie` value (`None`: nothing is left).
fn cookies_without<F: Fields>(fields: &F, name: &str) -> Option<HeaderValue> {
    let kept: Vec<String> = crate::bearer::cookie_pairs(fields)
        .filter(|(n, _)| *n != name.as_bytes())
        .map(|(n, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// Step 7 for the HTTP/1.1 engine, which writes heads itself: gives `emit` every field
/// of the app's request that travels upstream, then the credential, by the rules of
/// [`upstream_headers`] (a test holds the two to the same result) without building a
/// map. `Content-Length` is left out too: the engine frames the body it sends.
pub fn each_upstream_field(
    fields: &[httparse::Header<'_>],
    route: &Route,
    token: Option<&HeaderValue>,
    mut emit: impl FnMut(&[u8], &[u8]),
) {
    let raw = Raw(fields);
    let hop = HopByHop::of(fields);
    // `TE: trailers` is the one TE that travels (as in `strip_hop_by_hop`).
    let te_kept = raw
        .values("te")
        .all(|v| v.eq_ignore_ascii_case(b"trailers"))
        && !hop.named("te");
    let source = route.exchange.as_ref().map(|e| &e.subject_token_from);
    let (subject_header, subject_cookie) = match source {
        Some(SubjectSource::Header(name)) => (Some(name.as_str()), None),
        Some(SubjectSource::Cookie(name)) => (None, Some(name.as_str())),
        _ => (None, None),
    };
    let mut cookies_done = false;
    for h in fields {
        let name = h.name;
        let is = |other: &str| name.eq_ignore_ascii_case(other);
        let dropped = match name.len() {
            2 if is("te") => !te_kept,
            4 => is("host"),
            13 => is("authorization"),
            14 => is("content-length"),
            _ => false,
        } || hop.contains(name) && !is("te")
            || subject_header.is_some_and(is);
        if dropped {
            continue;
        }
        match subject_cookie {
            Some(cookie) if is("cookie") => {
                if !cookies_done {
                    cookies_done = true;
                    if let Some(v) = cookies_without(&raw, cookie) {
                        emit(b"cookie", v.as_bytes());
                    }
                }
            }
            _ => emit(name.as_bytes(), h.value),
        }
    }
    if let (Some(exchange), Some(value)) = (&route.exchange, token) {
        emit(exchange.inject.header.as_str().as_bytes(), value.as_bytes());
    }
}

async fn send(future: ResponseFuture, timeout: Duration) -> Result<Response<Body>, ProxyError> {
    let response = match tokio::time::timeout(timeout, future).await {
        Err(_) => {
            return Err(ProxyError::new(
                Code::UpstreamTimeout,
                "the upstream did not answer in time",
            ));
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %error_chain(&e), "upstream request failed");
            return Err(ProxyError::new(
                Code::UpstreamUnavailable,
                "the upstream refused, reset or failed TLS",
            ));
        }
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(parts, Either::Left(body)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A route's pooled client, rebuilt when its `ca_file` rotates.
pub struct Upstream {
    current: ArcSwap<(u64, UpstreamClient)>,
    ca: Option<Watched<CaBundle>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstream {
    pub fn new(route: &Route, timeouts: &Timeouts) -> Result<Self, rustls::Error> {
        let ca = route.ca_file.clone();
        let (connect_timeout, idle_timeout) = (timeouts.upstream_connect, timeouts.idle);
        let generation = ca.as_ref().map_or(0, |c| c.generation());
        let client = build_client(
            ca.as_ref().map(|c| c.current()).as_deref(),
            connect_timeout,
            idle_timeout,
        )?;
        Ok(Self {
            current: ArcSwap::from_pointee((generation, client)),
            ca,
            connect_timeout,
            idle_timeout,
        })
    }

    /// Sends `req`; `timeout` bounds the wait for response headers.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<Body>, ProxyError> {
        let future = {
            let current = self.current.load();
            let generation = self.ca.as_ref().map_or(0, |c| c.generation());
            if current.0 == generation {
                current.1.request(req)
            } else {
                let ca = self.ca.as_ref().map(|c| c.current());
                let client = build_client(ca.as_deref(), self.connect_timeout, self.idle_timeout)
                    .map_err(|_| {
                    ProxyError::new(
                        Code::UpstreamUnavailable,
                        "the upstream's trust roots are unusable",
                    )
                })?;
                let future = client.request(req);
                self.current.store(Arc::new((generation, client)));
                future
            }
        };
        send(future, timeout).await
    }
}

/// Pooled HTTP(S) client: trust roots, ALPN h2/http1.1, bounded connect time, no proxy.
fn build_client(
    ca: Option<&CaBundle>,
    connect_timeout: Duration,
    idle: Duration,
) -> Result<UpstreamClient, rustls::Error> {
    let tls = crate::tls::client_config(ca, None, &[])?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        .timer(TokioTimer::new())
        .build(https))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Fixed hop-by-hop fields and fields named in Connection go; end-to-end ones stay.
    #[test]
    fn hop_by_hop_stripping() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret, authorization"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("authorization", "Bearer original"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("te", "gzip"),
            ("content-type", "text/plain"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "x-keep"]);
    }

    /// `TE: trailers` survives for gRPC unless Connection names TE.
    #[test]
    fn te_trailers_survives() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers");
        let mut h = map(&[("te", "trailers"), ("connection", "te")]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    /// The engine's rewrite (`each_upstream_field`, over the raw fields) and hyper's
    /// (`upstream_headers`, over a map) keep the same fields with the same values, for
    /// every subject source and every kind of field step 7 drops or keeps.
    #[test]
    fn raw_and_map_rewrites_agree() {
        let route = |from: &str| {
            let text = format!(
                "authorities:\n  a: {{ token_endpoint: http://as.test/token, client_id: c, auth: {{ method: none }} }}\nroutes:\n  - name: r\n    match: {{ host: x }}\n    upstream: http://u.test\n    exchange: {{ authority: a, audience: api{from} }}\n"
            );
            crate::config::parse(&text, std::path::Path::new("t.yaml"))
                .unwrap()
                .routes[0]
                .clone()
        };
        let routes = [
            route(""),
            route(", subject_token_from: { header: X-Subject }"),
            route(", subject_token_from: { cookie: sid }"),
        ];
        let cases: [&[(&str, &str)]; 6] = [
            &[
                ("Host", "x"),
                ("Authorization", "Bearer t"),
                ("Accept", "a/b"),
            ],
            &[
                ("connection", "keep-alive, X-Secret"),
                ("X-Secret", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Upgrade", "h2c"),
                ("Proxy-Authorization", "Basic x"),
                ("x-keep", "yes"),
                ("x-keep", "twice"),
            ],
            &[("TE", "trailers"), ("content-type", "application/grpc")],
            &[("te", "trailers"), ("Connection", "TE")],
            &[("te", "gzip"), ("X-Subject", "s"), ("Content-Length", "3")],
            &[
                ("Cookie", "sid=s; theme=dark"),
                ("cookie", "lang=en"),
                ("X-Subject", "s"),
                ("authorization", "Bearer t"),
            ],
        ];
        let hops = HOP_BY_HOP;
        let every_hop: Vec<(&str, &str)> = hops.iter().map(|h| (h.as_str(), "1")).collect();
        let token = HeaderValue::from_static("Bearer narrowed");
        for route in &routes {
            for case in cases.into_iter().chain([&every_hop[..]]) {
                let raw: Vec<httparse::Header<'_>> = case
                    .iter()
                    .map(|(n, v)| httparse::Header {
                        name: n,
                        value: v.as_bytes(),
                    })
                    .collect();
                let mut from_raw = Vec::new();
                each_upstream_field(&raw, route, Some(&token), |n, v| {
                    let n = String::from_utf8(n.to_ascii_lowercase()).unwrap();
                    from_raw.push((n, String::from_utf8(v.to_vec()).unwrap()));
                });
                let mut h = map(case);
                upstream_headers(&mut h, route, Some(token.clone()));
                // The engine writes Content-Length itself, from the body it sends.
                h.remove(header::CONTENT_LENGTH);
                let mut from_map: Vec<(String, String)> = h
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                    .collect();
                from_raw.sort();
                from_map.sort();
                assert_eq!(from_raw, from_map, "{case:?} on {:?}", route.exchange);
            }
        }
    }
}
