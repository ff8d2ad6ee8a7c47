//! The request path, top to bottom (docs/request-flow.md draws it): route, subject
//! token, exchange (cache or AS), rewrite, forward. [`Proxy::handle`] is the outer
//! function that turns errors into error responses, records metrics and logs once;
//! [`RouteRuntime::forward`] is the inner one that reads as the numbered steps and uses
//! `?`. Steps 3 to 6 (cache, exchange, refresh, and their audit and span records) live
//! in [`token`]. A request's server span ([`crate::telemetry::RequestTrace`]) is the one
//! the rest of the request runs in; what runs under it finds it there.
//!
//! Every request from the app comes here, whatever its protocol, its upstream's scheme
//! or its connection's history, so every route feature applies to all of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::bearer;
use crate::cache::{KeyBuilder, Recent, TokenCache};
use crate::clock::{self, Instant};
use crate::config::model::{MissingTokenPolicy, SubjectSource};
use crate::config::{Config, Route};
use crate::error::{Code, ProxyError};
use crate::exchange::{self, ExchangeClient};
use crate::forward::{self, Body, upgrade};
use crate::idle::{Stalled, Watch, within, within_on};
use crate::metrics::{Metrics, RouteMetrics};
use crate::routing;
use crate::session::Session;
use crate::upstream::{Sent, UpstreamBody};

mod build;
mod chain;
mod destination;
mod fleet;
mod passthrough;
mod reload;
mod token;

use destination::{Chosen, RouteUpstream};

/// Why the runtime for a config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Exchange(#[from] exchange::BuildError),
    #[error("building TLS config for route {0}: {1}")]
    UpstreamTls(String, #[source] rustls::Error),
    #[error("creating the token cache: {0}")]
    Cache(String),
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::export::Error),
}

/// The proxy: the current config snapshot plus state that outlives reloads.
pub struct Proxy {
    state: ArcSwap<Runtime>,
    pub cache: TokenCache,
    pub metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    unrouted: RouteMetrics,
    ready: AtomicBool,
}

/// Everything built from one config; requests see exactly one of these.
pub struct Runtime {
    pub config: Arc<Config>,
    routes: Vec<RouteRuntime>,
    /// The trace exporter this config's requests export to, while tracing is on. Kept
    /// here so a replaced one flushes only after this config's last request.
    tracing: Option<Arc<crate::telemetry::Export>>,
    /// `timeouts.body_idle` for request bodies (app to upstream) and responses.
    to_upstream: Watch,
    to_app: Watch,
}

struct RouteRuntime {
    /// Unique per build: what a connection's [`Recent`] memory is scoped to.
    id: u64,
    route: Arc<Route>,
    audit: crate::config::model::AuditSettings,
    upstream: RouteUpstream,
    exchange: Option<RouteExchange>,
    metrics: RouteMetrics,
}

#[derive(Clone)]
struct RouteExchange {
    /// The route's authority; on a chain, the second leg's.
    client: Arc<ExchangeClient>,
    keys: KeyBuilder,
    /// The second cache level, when configured and this authority's tokens may be shared.
    shared: Option<Arc<crate::cache::shared::SharedCache>>,
    /// On a chain, the first leg.
    first: Option<Arc<chain::FirstLeg>>,
}

impl Proxy {
    pub fn new(config: Config) -> Result<Arc<Self>, BuildError> {
        let metrics = Arc::new(Metrics::default());
        let cache = TokenCache::new(config.cache.max_entries)
            .map_err(|e| BuildError::Cache(e.to_string()))?;
        let permits = Arc::new(Semaphore::new(
            config.limits.max_concurrent_exchanges as usize,
        ));
        let runtime = Runtime::build(Arc::new(config), &cache, &metrics, &permits, None)?;
        crate::telemetry::export::activate(runtime.tracing.clone());
        Ok(Arc::new(Self {
            state: ArcSwap::from_pointee(runtime),
            unrouted: RouteMetrics::unrouted(&metrics),
            cache,
            metrics,
            permits,
            ready: AtomicBool::new(false),
        }))
    }

    /// Swaps in a new config atomically; in-flight requests finish on the old one.
    pub fn reload(&self, config: Config) -> Result<(), BuildError> {
        let current = self.state.load();
        let runtime = Runtime::build(
            Arc::new(config),
            &self.cache,
            &self.metrics,
            &self.permits,
            current.tracing.as_ref(),
        )?;
        crate::telemetry::export::activate(runtime.tracing.clone());
        self.state.store(Arc::new(runtime));
        Ok(())
    }

    pub fn config(&self) -> Arc<Config> {
        self.state.load().config.clone()
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The stall watch for what tokex writes to the app, as the config in force sets it.
    pub fn watch_to_app(&self) -> Watch {
        self.state.load().to_app.clone()
    }

    /// Closes pooled upstream connections that idled past `timeouts.idle`.
    pub fn sweep_idle_upstreams(&self) {
        let now = clock::now();
        for route in &self.state.load().routes {
            route.upstream.sweep(now);
        }
    }

    /// Serves one request from the app on the connection `session` belongs to. Errors
    /// become error responses; only a request body that stalled ends the connection
    /// without one.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        session: &Arc<Session>,
    ) -> Result<Response<Body>, Stalled> {
        let started = clock::now();
        let runtime = self.state.load_full();
        let method = req.method().clone();
        let destination = session.destination();
        let routed =
            forward::request_framing(req.headers()).and_then(|()| runtime.route(&req, destination));
        if let (Err(e), Some(destination)) = (&routed, destination)
            && e.code == Code::NoRoute
            && runtime.passes_unmatched()
        {
            return Ok(self.pass_through(&runtime, req, destination, started).await);
        }
        let trace = crate::telemetry::RequestTrace::start(req.headers_mut());
        let (route, result) = match routed {
            Err(e) => (None, Err(e)),
            Ok((index, path)) => {
                let route = &runtime.routes[index];
                let forwarded = std::pin::pin!(route.forward(self, &runtime, req, path, session));
                // By reference: moving the request's whole future into the span's costs a copy.
                let forwarded = std::pin::pin!(trace.around(forwarded));
                let result = match route.route.deadline {
                    None => forwarded.await,
                    Some(deadline) => within(deadline, forwarded).await.unwrap_or_else(|| {
                        Err(ProxyError::new(
                            Code::UpstreamTimeout,
                            "the route's request deadline passed",
                        ))
                    }),
                };
                (Some(route), result)
            }
        };
        let name = route.map_or("none", |r| r.route.name.as_str());
        self.report(
            route,
            &method,
            result.as_ref().map(|r| r.status().as_u16()),
            started,
        );
        let response = match result {
            Ok(response) => response,
            Err(e) if e.abort => return Err(Stalled(runtime.config.timeouts.body_idle)),
            Err(e) => e.to_response().map(Either::Right),
        };
        trace.finish(name, &method, &response);
        Ok(response)
    }

    /// The one record of a finished request: its route's metrics, and a log line when
    /// it failed. `status` is the upstream's, or the error tokex answered with.
    fn report(
        &self,
        route: Option<&RouteRuntime>,
        method: &http::Method,
        status: Result<u16, &ProxyError>,
        started: Instant,
    ) {
        let name = route.map_or("none", |r| r.route.name.as_str());
        let (status, code) = match status {
            Ok(status) => (status, None),
            Err(e) if e.abort => {
                tracing::info!(route = name, %method, "request body stalled; connection closed");
                (StatusCode::REQUEST_TIMEOUT.as_u16(), None)
            }
            Err(e) => {
                let status = e.code.status().as_u16();
                if status >= 500 {
                    tracing::warn!(route = name, %method, status, code = e.code.as_str(), authority_error = e.authority_error.as_deref(), cause = e.cause.as_deref(), "request failed");
                } else {
                    tracing::info!(route = name, %method, status, code = e.code.as_str(), authority_error = e.authority_error.as_deref(), cause = e.cause.as_deref(), "request refused");
                }
                (status, Some(e.code))
            }
        };
        let metrics = route.map_or(&self.unrouted, |r| &r.metrics);
        metrics.record(status, code, started.elapsed());
    }
}

/// What steps 2 to 6 decided.
struct Authorized {
    /// The value to inject; `None` forwards without one.
    value: Option<HeaderValue>,
    /// For purge-and-retry: the cache key and the subject that produced `value`.
    retry: Option<(crate::cache::Key, crate::secret::Secret)>,
}

impl Runtime {
    /// Step 1: the first route that matches and the path to send upstream, or `no_route`.
    /// The route's index, so a request can keep it with the snapshot it came from.
    fn route<B>(
        &self,
        req: &Request<B>,
        destination: Option<std::net::SocketAddr>,
    ) -> Result<(usize, Option<String>), ProxyError> {
        let mut target = routing::target(req)?;
        target.destination = destination;
        let index = routing::find(&self.routes, |r| &*r.route, &target)?.ok_or_else(|| {
            use crate::error::cause::echo;
            let host = target.host.map_or_else(|| "(none)".into(), echo);
            ProxyError::new(
                Code::NoRoute,
                "no route matches this request's host and path",
            )
            .because(format!(
                "no route for host {host} and path {}",
                echo(&target.path)
            ))
        })?;
        let path = routing::upstream_path(&self.routes[index].route, &target);
        Ok((index, path))
    }
}

impl RouteRuntime {
    /// Steps 2 to 8 for a routed request.
    async fn forward(
        &self,
        proxy: &Proxy,
        runtime: &Runtime,
        mut req: Request<Incoming>,
        path: Option<String>,
        session: &Arc<Session>,
    ) -> Result<Response<Body>, ProxyError> {
        // Where it goes, before any token work: a route without upstream first checks
        // that the app's `Host` is where the app connected.
        let upstream = match self.upstream.named() {
            Ok(named) => named,
            Err(ups) => {
                let within = runtime.config.timeouts.upstream_connect;
                // The lookup's future is large: boxed, off the named upstreams' path.
                Box::pin(destination::original(ups, &req, session, within)).await?
            }
        };
        // Steps 2 to 6: the token to inject, with the connection's memory of its last lookup.
        let mut recent = session.take_recent();
        let authorized = self
            .authorize(proxy, req.headers(), Some(&mut recent))
            .await;
        session.keep_recent(recent);
        let authorized = authorized?;
        // Step 7: the upstream's request. A protocol switch keeps the app's side of it.
        let switch = upgrade::requested(&req);
        let app_side = switch.is_some().then(|| hyper::upgrade::on(&mut req));
        let method = req.method().clone();
        let rewrite = forward::Rewrite {
            route: &self.route,
            path,
            host: upstream.host.clone(),
            token: authorized.value,
            upgrade: switch.clone(),
        };
        let upstream_req = forward::upstream_request(req, rewrite, &runtime.to_upstream)?;
        // Step 8: send, and relay the response. Purge-and-retry needs the request again.
        let again = authorized
            .retry
            .and_then(|retry| Some((retry, crate::upstream::replayable(&upstream_req)?)));
        let mut sent = self
            .send(&upstream, upstream_req, session, switch.is_some())
            .await?;
        if let Some(((key, subject), again)) = again
            && sent.response.status() == StatusCode::UNAUTHORIZED
        {
            // Rare, and a future the size of a whole exchange: boxed, off the hot path.
            sent = Box::pin(
                self.retry_with_fresh_token(proxy, &upstream, again, key, &subject, session),
            )
            .await?;
        }
        if let Some(app_side) = app_side
            && sent.response.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            upgrade::tunnel(app_side, hyper::upgrade::on(&mut sent.response));
        }
        forward::response(sent, &method, switch.is_some(), session, &runtime.to_app)
    }

    /// Sends to the upstream; the route's `timeout` bounds the wait for response headers.
    async fn send(
        &self,
        upstream: &Chosen<'_>,
        req: Request<UpstreamBody>,
        session: &Session,
        switch: bool,
    ) -> Result<Sent, ProxyError> {
        let sent = std::pin::pin!(upstream.send(req, session.connections(), switch));
        let mut timer = session.take_timer();
        let sent = within_on(timer.as_mut(), self.route.timeout, sent).await;
        session.keep_timer(timer);
        sent.unwrap_or_else(|| {
            Err(ProxyError::new(
                Code::UpstreamTimeout,
                "the upstream did not answer in time",
            ))
        })
    }

    /// The upstream refused the narrowed token: drop it, exchange once more, send once more.
    async fn retry_with_fresh_token(
        &self,
        proxy: &Proxy,
        upstream: &Chosen<'_>,
        mut again: Request<UpstreamBody>,
        key: crate::cache::Key,
        subject: &crate::secret::Secret,
        session: &Session,
    ) -> Result<Sent, ProxyError> {
        let Some(exchange) = &self.exchange else {
            return Err(ProxyError::new(
                Code::UpstreamUnavailable,
                "no exchange to retry",
            ));
        };
        tracing::debug!(route = %self.route.name, "upstream refused the narrowed token; exchanging once more");
        proxy.cache.invalidate(&key).await;
        let token = bearer::BearerToken::from_secret(subject);
        let (fresh, _) = self
            .narrowed(proxy, exchange, token, again.headers(), None)
            .await?;
        forward::replace_token(
            again.headers_mut(),
            &self.route,
            fresh.authorization.clone(),
        );
        self.send(upstream, again, session, false).await
    }

    /// Steps 2 to 6: where the subject token is, what to do without one, and the
    /// narrowed token from the cache or the authority.
    async fn authorize(
        &self,
        proxy: &Proxy,
        headers: &HeaderMap,
        recent: Option<&mut Option<Recent>>,
    ) -> Result<Authorized, ProxyError> {
        let none = Authorized {
            value: None,
            retry: None,
        };
        // `exchange: none` forwards without any Authorization; nothing else does.
        let Some(exchange) = &self.exchange else {
            return Ok(none);
        };
        // Step 2: the subject token, from where the route says it is.
        let source = self
            .route
            .exchange
            .as_ref()
            .map_or(&SubjectSource::Authorization, |p| &p.subject_token_from);
        let extracted = bearer::extract_from(headers, source)
            .map_err(|e| ProxyError::new(Code::InvalidRequest, e.to_string()));
        if let Err(e) = &extracted {
            self.audit(proxy, None, false, Err(e));
        }
        let token = match extracted? {
            None if self.route.on_missing_token == MissingTokenPolicy::Forward => {
                return Ok(none);
            }
            None if self.route.on_missing_token == MissingTokenPolicy::ClientCredentials => {
                let entry = Box::pin(self.own_token(proxy, exchange, headers)).await?;
                return Ok(Authorized {
                    value: Some(entry.authorization.clone()),
                    retry: None,
                });
            }
            None => {
                let e = ProxyError::new(Code::MissingToken, "this route needs a bearer token");
                self.audit(proxy, None, false, Err(&e));
                return Err(e);
            }
            Some(token) => token,
        };
        // Steps 3 to 6: expiry pre-check, cache or exchange, validation.
        let (entry, key) = self
            .narrowed(proxy, exchange, token, headers, recent)
            .await?;
        Ok(Authorized {
            value: Some(entry.authorization.clone()),
            retry: self
                .route
                .retry_on_401
                .then(|| (key, crate::secret::Secret::new(token.expose()))),
        })
    }
}
