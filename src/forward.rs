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
use crate::tls::CaBundle;

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
    let kept: Vec<String> = crate::bearer::cookie_pairs(headers)
        .filter(|(n, _)| *n != name.as_bytes())
        .map(|(n, v)| {
            format!(
                "{}={}",
                String::from_utf8_lossy(n),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
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
}
