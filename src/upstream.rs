//! A route's upstream (step 8 of the request flow): which connection a request goes on, and
//! sending it there.
//!
//! HTTP/1.1 upstreams, plain and TLS alike, get one request at a time per connection: the
//! app connection's own idle connection first ([`Kept`]), then one from the shared
//! pool, then a new one. An upstream that picks HTTP/2 by ALPN gets one multiplexed
//! connection that every app connection shares. A request that a kept connection never
//! sent, or an idempotent request without a body that it lost before any response
//! (the upstream closed an idle connection as the request left, RFC 9112 §9.3.1.1), is
//! sent once more on a new connection.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};

use crate::config::model::{Timeouts, UpstreamUrl};
use crate::credentials::Watched;
use crate::credentials::certs::CaBundle;
use crate::error::{Code, ProxyError};
use crate::idle::{IdleBody, Stall, Watch};

mod connect;
mod original;
mod pool;

use connect::{Connected, Tls};
pub use original::{OriginalDestinations, host_resolves_to};
pub use pool::{Idle, Kept, Shared};

/// Request bodies to the upstream: the app's, streamed, or none at all (a request
/// without a body can be sent twice: purge-and-retry, a kept connection's loss).
pub type UpstreamBody = Either<IdleBody<Incoming>, Empty<Bytes>>;

/// How long a kept connection idles before a request on it is copied first, to send
/// again should the upstream have closed it meanwhile.
const REPLAY_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A sent request's response, and the HTTP/1.1 connection it came on, to be kept once
/// the response body is complete.
pub struct Sent {
    pub response: Response<Incoming>,
    pub keep: Option<Idle>,
}

/// One route's upstream: where it is, its trust roots, and its shared connections.
pub struct Upstream {
    target: connect::Target,
    /// `Host` as HTTP/1.1 requests carry it.
    host: http::HeaderValue,
    scheme: Scheme,
    authority: Authority,
    tls: ArcSwap<Tls>,
    ca: Option<Watched<CaBundle>>,
    shared: Arc<Shared>,
    idle_limit: Duration,
}

/// A request handed back by [`Upstream::multiplexed`], with the HTTP/1.1 connection it
/// opened, if it did.
type Returned = (
    Box<Request<UpstreamBody>>,
    Option<http1::SendRequest<UpstreamBody>>,
);

/// How an attempt on one connection failed.
enum Failed {
    /// The request never left; here it is back.
    NotSent(Box<Request<UpstreamBody>>),
    /// It left (in part or whole) and no response came.
    Lost(hyper::Error),
}

impl Upstream {
    /// A route's named upstream `up`, trusting the platform's roots and the route's
    /// `ca_file`.
    pub fn new(
        up: &UpstreamUrl,
        ca: Option<Watched<CaBundle>>,
        timeouts: &Timeouts,
        watch: Watch,
    ) -> Result<Self, rustls::Error> {
        let generation = ca.as_ref().map_or(0, |c| c.generation());
        let tls = Tls::new(generation, ca.as_ref().map(|c| c.current()).as_deref())?;
        Self::with_tls(
            &up.scheme,
            &up.authority,
            ca,
            Arc::new(tls),
            timeouts,
            watch,
        )
    }

    /// A plain HTTP upstream at an address (a redirected connection's destination);
    /// `tls` is never used, and shared so that each address does not build its own.
    pub(crate) fn at_address(
        addr: std::net::SocketAddr,
        tls: Arc<Tls>,
        timeouts: &Timeouts,
        watch: Watch,
    ) -> Result<Self, rustls::Error> {
        let authority = Authority::try_from(addr.to_string())
            .map_err(|_| rustls::Error::General(format!("invalid address {addr}")))?;
        Self::with_tls(&Scheme::HTTP, &authority, None, tls, timeouts, watch)
    }

    fn with_tls(
        scheme: &Scheme,
        authority: &Authority,
        ca: Option<Watched<CaBundle>>,
        tls: Arc<Tls>,
        timeouts: &Timeouts,
        watch: Watch,
    ) -> Result<Self, rustls::Error> {
        let https = *scheme == Scheme::HTTPS;
        // `Authority::host` keeps an IPv6 literal's brackets; the socket wants none.
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let server_name = if https {
            Some(
                rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| rustls::Error::General(format!("invalid host name {host}")))?,
            )
        } else {
            None
        };
        let host_field = http::HeaderValue::from_str(host_of(authority, scheme))
            .map_err(|_| rustls::Error::General("invalid upstream authority".into()))?;
        Ok(Self {
            host: host_field,
            target: connect::Target {
                port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
                host,
                server_name,
                timeout: timeouts.upstream_connect,
                watch,
            },
            scheme: scheme.clone(),
            authority: authority.clone(),
            tls: ArcSwap::new(tls),
            ca,
            shared: Arc::default(),
            idle_limit: timeouts.idle,
        })
    }

    /// Sends `req` (origin-form, with `Host`) and waits for the response head.
    /// `upgrade`: the request asks to switch protocols, which needs HTTP/1.1.
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
        kept: &Kept,
        upgrade: bool,
    ) -> Result<Sent, ProxyError> {
        let generation = self.generation();
        if !upgrade && self.target.server_name.is_some() && !self.shared.speaks_only_http1() {
            // Boxed: multiplexing's futures are large, and keeping them out of this one
            // keeps every HTTP/1.1 request's future small.
            match Box::pin(self.multiplexed(req)).await? {
                Ok(sent) => return Ok(sent),
                Err((back, Some(sender))) => return self.on_new(sender, *back, generation).await,
                Err((back, None)) => req = *back,
            }
        }
        let now = crate::clock::now();
        let kept = kept
            .checkout(&self.shared, generation, self.idle_limit, now)
            .or_else(|| self.shared.checkout(generation, self.idle_limit, now));
        if let Some(idle) = kept {
            // An upstream closes an idle connection by its own timer, possibly as this
            // request leaves; one reused at once is safe, and copying the request for
            // it would cost every request.
            let copy = (idle.idle_for(now) >= REPLAY_AFTER_IDLE)
                .then(|| replayable(&req))
                .flatten();
            match over_h1(idle.sender, req).await {
                Ok((response, sender)) => return Ok(self.sent(response, generation, sender)),
                Err(Failed::NotSent(back)) => req = *back,
                Err(Failed::Lost(e)) => match copy {
                    Some(copy) => {
                        tracing::debug!(error = %e, "kept upstream connection lost the request; sending it once more");
                        req = copy;
                    }
                    None => return Err(lost(&e)),
                },
            }
        }
        // A new connection (TCP, TLS, handshake) is a large future: boxed, so the
        // reuse path stays small.
        match Box::pin(self.connect(upgrade)).await? {
            Connected::Http1(sender) => self.on_new(sender, req, generation).await,
            Connected::Http2(sender) => Box::pin(self.over_h2(sender, req)).await,
        }
    }

    /// Sends on an HTTP/1.1 connection just made: nothing to fall back to.
    async fn on_new(
        &self,
        sender: http1::SendRequest<UpstreamBody>,
        req: Request<UpstreamBody>,
        generation: u64,
    ) -> Result<Sent, ProxyError> {
        match over_h1(sender, req).await {
            Ok((response, sender)) => Ok(self.sent(response, generation, sender)),
            Err(Failed::NotSent(_)) => Err(unavailable()),
            Err(Failed::Lost(e)) => Err(lost(&e)),
        }
    }

    pub fn host(&self) -> &http::HeaderValue {
        &self.host
    }

    /// An https upstream that speaks HTTP/2, or has not said yet: the shared connection,
    /// or a new one that the first request makes while concurrent ones wait for it.
    /// When the upstream chose HTTP/1.1, the request comes back, with the new
    /// connection when this request made it.
    async fn multiplexed(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Result<Sent, Returned>, ProxyError> {
        if let Some(h2) = self.shared.h2() {
            return self.over_h2(h2, req).await.map(Ok);
        }
        let gate = self.shared.connecting().await;
        if let Some(h2) = self.shared.h2() {
            drop(gate);
            return self.over_h2(h2, req).await.map(Ok);
        }
        if self.shared.speaks_only_http1() {
            return Ok(Err((Box::new(req), None)));
        }
        let connected = self.connect(false).await?;
        drop(gate);
        match connected {
            Connected::Http2(h2) => self.over_h2(h2, req).await.map(Ok),
            Connected::Http1(h1) => Ok(Err((Box::new(req), Some(h1)))),
        }
    }

    /// Closes pooled connections that idled too long.
    pub fn sweep(&self, now: crate::clock::Instant) {
        self.shared.sweep(self.generation(), self.idle_limit, now);
    }

    fn generation(&self) -> u64 {
        self.ca.as_ref().map_or(0, |c| c.generation())
    }

    fn sent(
        &self,
        response: Response<Incoming>,
        generation: u64,
        sender: http1::SendRequest<UpstreamBody>,
    ) -> Sent {
        Sent {
            response,
            keep: Some(Idle::new(&self.shared, generation, sender)),
        }
    }

    /// A new connection with the trust roots in force (rebuilt when `ca_file` rotated).
    async fn connect(&self, upgrade: bool) -> Result<Connected, ProxyError> {
        let generation = self.generation();
        let mut tls = self.tls.load_full();
        if tls.generation != generation {
            let ca = self.ca.as_ref().map(|c| c.current());
            let fresh = Tls::new(generation, ca.as_deref()).map_err(|e| {
                tracing::warn!(error = %e, "the upstream's rotated trust roots are unusable");
                ProxyError::new(
                    Code::UpstreamUnavailable,
                    "the upstream's trust roots are unusable",
                )
            })?;
            tls = Arc::new(fresh);
            self.tls.store(tls.clone());
        }
        let connected = self.target.connect(&tls, upgrade).await?;
        if !upgrade && self.target.server_name.is_some() {
            let h2 = match &connected {
                Connected::Http2(s) => Some(s),
                Connected::Http1(_) => None,
            };
            self.shared.negotiated(h2);
        }
        Ok(connected)
    }

    /// Sends on the multiplexed connection; one new connection when it went away first.
    async fn over_h2(
        &self,
        mut sender: http2::SendRequest<UpstreamBody>,
        req: Request<UpstreamBody>,
    ) -> Result<Sent, ProxyError> {
        let mut req = self.absolute(req)?;
        for attempt in 0..2 {
            if attempt > 0 {
                sender = match Box::pin(self.connect(false)).await? {
                    Connected::Http2(s) => s,
                    Connected::Http1(s) => {
                        let req = self.origin_form(req)?;
                        return self.on_new(s, req, self.generation()).await;
                    }
                };
            }
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    return Ok(Sent {
                        response,
                        keep: None,
                    });
                }
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(lost(e.error())),
                },
            }
        }
        Err(unavailable())
    }

    /// The form HTTP/2 needs: scheme and authority in the URI, no `Host`.
    fn absolute(&self, req: Request<UpstreamBody>) -> Result<Request<UpstreamBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        parts.uri = Uri::from_parts(uri).map_err(|_| unforwardable())?;
        parts.headers.remove(http::header::HOST);
        parts.version = Version::HTTP_2;
        Ok(Request::from_parts(parts, body))
    }

    /// Back to HTTP/1.1's form, for an upstream that stopped offering HTTP/2.
    fn origin_form(&self, req: Request<UpstreamBody>) -> Result<Request<UpstreamBody>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let mut uri = parts.uri.into_parts();
        uri.scheme = None;
        uri.authority = None;
        parts.uri = Uri::from_parts(uri).map_err(|_| unforwardable())?;
        parts.version = Version::HTTP_11;
        parts.headers.insert(http::header::HOST, self.host.clone());
        Ok(Request::from_parts(parts, body))
    }
}

/// A copy of a request that is safe to send again (RFC 9110 §9.2.2) because it has
/// no body: for a kept connection that lost it, and for purge-and-retry.
pub fn replayable(req: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    if !matches!(req.body(), Either::Right(_)) || !req.method().is_idempotent() {
        return None;
    }
    let mut copy = Request::new(Either::Right(Empty::new()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// An authority as `Host` carries it: without the scheme's default port.
fn host_of<'a>(authority: &'a Authority, scheme: &Scheme) -> &'a str {
    let default = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    match authority.port_u16() {
        Some(port) if port == default => authority.host(),
        _ => authority.as_str(),
    }
}

/// Sends on an HTTP/1.1 connection, handing the connection back with the response.
async fn over_h1(
    mut sender: http1::SendRequest<UpstreamBody>,
    req: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, http1::SendRequest<UpstreamBody>), Failed> {
    if sender.ready().await.is_err() {
        return Err(Failed::NotSent(Box::new(req)));
    }
    match sender.try_send_request(req).await {
        Ok(response) => Ok((response, sender)),
        Err(mut e) => match e.take_message() {
            Some(back) => Err(Failed::NotSent(Box::new(back))),
            None => Err(Failed::Lost(e.into_error())),
        },
    }
}

fn unavailable() -> ProxyError {
    ProxyError::new(
        Code::UpstreamUnavailable,
        "the upstream refused, reset or failed TLS",
    )
}

fn lost(e: &hyper::Error) -> ProxyError {
    match crate::idle::stall_of(e) {
        Some(Stall::AppSending) => {
            return ProxyError::aborted("the request body stalled");
        }
        Some(Stall::UpstreamReading) => {
            return ProxyError::new(
                Code::UpstreamTimeout,
                "the upstream stopped reading the request body",
            );
        }
        None => {}
    }
    // The only body tokex sends is the app's: when hyper reports it broken, the app's
    // framing was (a chunked coding that failed midway).
    if e.is_user() && std::error::Error::source(e).is_some_and(|c| c.is::<hyper::Error>()) {
        return ProxyError::new(Code::InvalidRequest, "the request body is malformed").closing();
    }
    let cause = crate::error::cause::describe(e);
    if e.is_parse() {
        return ProxyError::new(
            Code::UpstreamUnavailable,
            "the upstream sent a malformed response",
        )
        .because(cause);
    }
    unavailable().because(cause)
}

fn unforwardable() -> ProxyError {
    ProxyError::new(Code::Unsupported, "the request target cannot be forwarded")
}
