//! Forwarding to the upstream: header hygiene, the upstream request, and the response
//! relayed back (steps 7 and 8 of the request flow).
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1), including every field the `Connection` header
//! names, are removed before tokex sets its own `Authorization`, so a client cannot
//! smuggle the narrowed token away or keep its own. Message framing is hyper's on both
//! sides: the app's `Content-Length` and `Transfer-Encoding` never travel, and a
//! response whose framing is ambiguous is refused rather than relayed. Bodies stream
//! both ways, each watched for stalls.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

use crate::config::model::{Route, SubjectSource};
use crate::error::{Code, ProxyError};
use crate::idle::{IdleBody, Watch};
use crate::session::Session;
use crate::upstream::{Idle, Sent, UpstreamBody};

pub mod upgrade;

/// Response bodies: the upstream's, streamed, or one tokex made.
pub type Body = Either<Relayed, Full<Bytes>>;

/// Fields that describe one connection, never the message (RFC 9110 §7.6.1), plus
/// `Proxy-Authorization`, which is meant for tokex and must not travel on. (`Trailer`
/// is end-to-end: it declares the trailer fields, which hyper sends only when
/// declared.)
pub static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop fields and every field named in `Connection`. `TE: trailers` is
/// the one TE value HTTP/2 permits and gRPC needs, so it alone survives.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds what is there; most messages carry at most
    // `Connection: keep-alive`, so at most one removal follows.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut te = false;
    for name in headers.keys() {
        // The lengths of the hop-by-hop names rule out most fields at once.
        if !matches!(name.as_str().len(), 2 | 7 | 10 | 16..=19) {
            continue;
        }
        match HOP_BY_HOP.iter().position(|h| h == name) {
            Some(i) => present[i] = true,
            None => te |= name == header::TE,
        }
    }
    let mut te_named = false;
    if present[0] && names_other_fields(headers) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
            .collect();
        for name in &named {
            te_named |= name == header::TE;
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
    if te
        && (te_named
            || !headers
                .get_all(header::TE)
                .iter()
                .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers")))
    {
        headers.remove(header::TE);
    }
}

/// Whether `Connection` names a field beyond those always removed (and `close`).
fn names_other_fields(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|t| {
            !t.eq_ignore_ascii_case(b"close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_str().as_bytes()))
        })
}

/// Turns the app's header fields into the upstream's: hop-by-hop fields, `Host` and the
/// caller's own token out, and exactly the token given in (none for `None`).
pub fn upstream_headers(
    headers: &mut HeaderMap,
    route: &Route,
    host: HeaderValue,
    token: Option<HeaderValue>,
) {
    strip_hop_by_hop(headers);
    headers.insert(header::HOST, host);
    // The caller's own token never travels on: Authorization always goes, and so does
    // the route's subject token source when it is another header or a cookie.
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
    match (inject, token) {
        // Inserting replaces every value the app sent under the same name.
        (Some(header), Some(value)) => {
            if header != header::AUTHORIZATION {
                headers.remove(header::AUTHORIZATION);
            }
            headers.insert(header.clone(), value);
        }
        _ => {
            headers.remove(header::AUTHORIZATION);
        }
    }
}

/// Replaces the token step 7 injected (purge-and-retry's second attempt).
pub fn replace_token(headers: &mut HeaderMap, route: &Route, token: HeaderValue) {
    if let Some(exchange) = &route.exchange {
        headers.insert(exchange.inject.header.clone(), token);
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
fn cookies_without(fields: &HeaderMap, name: &str) -> Option<HeaderValue> {
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

/// What step 7 puts into the upstream's request.
pub struct Rewrite<'a> {
    pub route: &'a Route,
    /// The path and query routing built; `None`: the app's, unchanged.
    pub path: Option<String>,
    pub host: HeaderValue,
    pub token: Option<HeaderValue>,
    /// The protocol the request switches to, if it does.
    pub upgrade: Option<HeaderValue>,
}

/// Turns the app's request into the upstream's (origin-form, for HTTP/1.1; the
/// upstream makes it absolute for HTTP/2): the path routing built, clean headers, the
/// upstream's `Host`, exactly the token given, and the protocol switch asked for.
pub fn upstream_request(
    req: Request<Incoming>,
    rewrite: Rewrite<'_>,
    watch: &Watch,
) -> Result<Request<UpstreamBody>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    parts.uri = match rewrite.path {
        Some(path) => Uri::from_maybe_shared(Bytes::from(path)).map_err(|_| {
            ProxyError::new(Code::Unsupported, "the request target cannot be forwarded")
        })?,
        None => parts
            .uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone())),
    };
    upstream_headers(
        &mut parts.headers,
        rewrite.route,
        rewrite.host,
        rewrite.token,
    );
    // hyper frames the body it sends; tokex answered `Expect` itself.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::EXPECT);
    if let Some(protocol) = rewrite.upgrade {
        parts.headers.insert(header::UPGRADE, protocol);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
    let body = if body.is_end_stream() {
        Either::Right(Empty::new())
    } else {
        Either::Left(IdleBody::new(body, watch.clone()))
    };
    Ok(Request::from_parts(parts, body))
}

/// The upstream's response as the app gets it. Refused (502, and the upstream
/// connection is not kept): a switch of protocols nobody asked for, and framing hyper
/// read one way that a recipient could read another (a `Transfer-Encoding` other than
/// `chunked` alone, or one beside `Content-Length`). `Content-Length` travels only on
/// bodiless answers; otherwise hyper frames the body it relays.
pub fn response(
    sent: Sent,
    method: &Method,
    asked_upgrade: bool,
    session: &Arc<Session>,
    watch: &Watch,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = sent.response.into_parts();
    let switched = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    if switched && !asked_upgrade {
        return Err(malformed("switched protocols without being asked"));
    }
    let protocol = switched
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    framing(&parts.headers).map_err(malformed)?;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = protocol {
        parts.headers.insert(header::UPGRADE, protocol);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let bodiless = *method == Method::HEAD || parts.status == StatusCode::NOT_MODIFIED;
    if bodiless {
        if let Some(len) = single_length(&parts.headers)? {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    } else {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    parts.version = Version::HTTP_11;
    // A switched connection belongs to the tunnel now.
    let keep = sent
        .keep
        .filter(|_| !switched)
        .map(|idle| (session.clone(), idle));
    let body = Relayed {
        body: IdleBody::new(body, watch.clone()),
        keep,
    };
    Ok(Response::from_parts(parts, Either::Left(body)))
}

fn malformed(why: &'static str) -> ProxyError {
    tracing::debug!(why, "upstream response refused");
    ProxyError::new(
        Code::UpstreamUnavailable,
        "the upstream sent a malformed response",
    )
}

/// The app's request framing beyond what hyper refuses: a transfer coding other than
/// `chunked` alone would reach the upstream decoded by one layer and unlabelled (RFC
/// 9112 §6.1 lets a server refuse what it cannot decode).
pub fn request_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    framing(headers).map_err(|why| ProxyError::new(Code::InvalidRequest, why).closing())
}

/// `Transfer-Encoding` may only be `chunked`, alone: hyper decoded it so, and a
/// `Content-Length` beside it would be a second answer to where the body ends.
fn framing(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok(());
    };
    if codings.next().is_some()
        || !first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
    {
        return Err("a transfer coding other than chunked alone");
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Err("both Transfer-Encoding and Content-Length");
    }
    Ok(())
}

/// The one length every `Content-Length` value names, if any (RFC 9110 §8.6).
fn single_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            let n = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| malformed("an invalid Content-Length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(malformed("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// The upstream's response body on its way to the app. Once it is complete, the
/// HTTP/1.1 connection it came on goes back to the app connection for its next request;
/// a body that ends any other way takes its connection with it.
pub struct Relayed {
    body: IdleBody<Incoming>,
    keep: Option<(Arc<Session>, Idle)>,
}

/// A response body relayed as it is, with no connection to hand back (the unmatched
/// passthrough of redirected connections).
pub fn passed_on(body: Incoming, watch: crate::idle::Watch) -> Relayed {
    Relayed {
        body: IdleBody::new(body, watch),
        keep: None,
    }
}

impl Relayed {
    fn done(&mut self) {
        if let Some((session, idle)) = self.keep.take() {
            session.connections().keep(idle.idle_from_now());
        }
    }
}

impl http_body::Body for Relayed {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.done(),
            // Trailers end a body; hyper asks for nothing after them.
            Some(Ok(f)) if f.is_trailers() || self.body.is_end_stream() => self.done(),
            Some(Ok(_)) => {}
            Some(Err(_)) => self.keep = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // A body that was complete before anyone read it (HEAD, 204, 304).
        if self.body.is_end_stream() {
            self.done();
        }
    }
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
