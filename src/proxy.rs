//! The request path, SPEC §4 top to bottom: route, subject token, exchange (cache or
//! AS), rewrite, forward. [`Proxy::handle`] is the outer function that turns errors into
//! SPEC §5 responses, records metrics and logs once; [`RouteRuntime::forward`] is the
//! inner one that reads as the numbered steps and uses `?`. Steps 3 to 6 (cache,
//! exchange, refresh, and their audit and span records) live in [`token`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::bearer;
use crate::cache::{KeyBuilder, Recent, TokenCache};
use crate::config::file::MissingTokenPolicy;
use crate::config::model::SubjectSource;
use crate::config::{Config, Route};
use crate::error::{Code, ProxyError};
use crate::exchange::{self, ExchangeClient};
use crate::fields::Fields;
use crate::forward::{self, Body, Upstream};
use crate::metrics::{Metrics, RouteMetrics};
use crate::routing;

mod token;

static NEXT_ROUTE_ID: AtomicU64 = AtomicU64::new(0);

/// Why the runtime for a config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Exchange(#[from] exchange::BuildError),
    #[error("building TLS config for route {0}: {1}")]
    UpstreamTls(String, #[source] rustls::Error),
    #[error("creating the token cache: {0}")]
    Cache(String),
    #[error("starting the trace exporter: {0}")]
    Tracing(String),
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
    /// The span exporter, when `tracing` is configured.
    otel: Option<Arc<crate::otel::Otel>>,
}

/// A request's tracing: the exporter and the request's server span (SPEC-free: issue 8).
struct Traced {
    otel: Arc<crate::otel::Otel>,
    span: crate::otel::Span,
}

struct RouteRuntime {
    /// Unique per build: what a connection's [`Recent`] memory is scoped to.
    id: u64,
    route: Arc<Route>,
    audit: crate::audit::AuditSettings,
    upstream: Upstream,
    exchange: Option<RouteExchange>,
    metrics: RouteMetrics,
}

struct RouteExchange {
    client: Arc<ExchangeClient>,
    keys: KeyBuilder,
}

impl Proxy {
    pub fn new(config: Config) -> Result<Arc<Self>, BuildError> {
        let metrics = Arc::new(Metrics::default());
        let cache = TokenCache::new(config.cache.max_entries)
            .map_err(|e| BuildError::Cache(e.to_string()))?;
        let permits = Arc::new(Semaphore::new(
            config.limits.max_concurrent_exchanges as usize,
        ));
        let runtime = Runtime::build(Arc::new(config), &cache, &metrics, &permits)?;
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
        let runtime = Runtime::build(Arc::new(config), &self.cache, &self.metrics, &self.permits)?;
        self.state.store(Arc::new(runtime));
        Ok(())
    }

    /// Re-reads the config file this proxy was loaded from (SIGHUP or a change to the
    /// file). The new file is validated whole; on any error the running config stays in
    /// force. Counted in `tokex_config_reloads_total`.
    pub fn reload_from_source(&self) -> Result<(), String> {
        let current = self.config();
        let result = match current.source.as_ref().and_then(|s| s.paths().first()) {
            None => Err("this config was not loaded from a file".to_string()),
            Some(path) => crate::config::load(path)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    if c.listen != current.listen || c.admin != current.admin {
                        tracing::warn!("listen and admin addresses change only on restart");
                    }
                    self.reload(c).map_err(|e| e.to_string())
                }),
        };
        match &result {
            Ok(()) => {
                self.metrics.config_reloads.series(&["ok"]).inc();
                tracing::info!("config reloaded");
            }
            Err(e) => {
                self.metrics.config_reloads.series(&["error"]).inc();
                tracing::error!(error = %e, "config reload failed; keeping the running config");
            }
        }
        result
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

    /// Serves one request from the app. Never fails: errors become SPEC §5 responses.
    pub async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let runtime = self.state.load_full();
        let method = req.method().clone();
        // With tracing on, the request gets a server span, and everything downstream
        // (upstream, exchange) sees it as the parent.
        let traced = runtime.otel.as_ref().map(|otel| {
            let span = otel.request_span(req.headers());
            req.headers_mut()
                .insert("traceparent", span.context.traceparent());
            Traced {
                otel: otel.clone(),
                span,
            }
        });
        let (route, result) = match runtime.route(&req) {
            Err(e) => (None, Err(e)),
            Ok((index, path)) => {
                let route = &runtime.routes[index];
                let forwarded = route.forward(&self, req, &path, traced.as_ref());
                let result = match route.route.deadline {
                    None => forwarded.await,
                    Some(deadline) => tokio::time::timeout(deadline, forwarded)
                        .await
                        .unwrap_or_else(|_| {
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
        let status = match &result {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(e),
        };
        self.report(route, &method, status, started);
        let response = result.unwrap_or_else(|e| e.to_response());
        let status = response.status().as_u16();
        if let Some(Traced { otel, span }) = traced {
            span.set("tokex.route", name);
            span.set("http.request.method", method.as_str());
            span.set("http.response.status_code", status);
            let outcome = response
                .headers()
                .get(crate::error::TOKEX_ERROR)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("ok");
            span.set("tokex.outcome", outcome);
            otel.finish(span, status >= 500);
        }
        Ok(response)
    }
}

impl Proxy {
    /// The one record of a finished request, on either engine: its route's metrics, and
    /// a log line when it failed. `status` is the upstream's, or the error tokex answered.
    fn report(
        &self,
        route: Option<&RouteRuntime>,
        method: &http::Method,
        status: Result<u16, &ProxyError>,
        started: Instant,
    ) {
        let name = route.map_or("none", |r| r.route.name.as_str());
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                let status = e.code.status().as_u16();
                if status >= 500 {
                    tracing::warn!(route = name, %method, status, code = e.code.as_str(), authority_error = e.authority_error.as_deref(), "request failed");
                } else {
                    tracing::info!(route = name, %method, status, code = e.code.as_str(), authority_error = e.authority_error.as_deref(), "request refused");
                }
                status
            }
        };
        let metrics = route.map_or(&self.unrouted, |r| &r.metrics);
        metrics.record(status, started.elapsed());
    }

    /// Routes a request for the HTTP/1.1 engine ([`crate::h1`]), which serves it itself
    /// when nothing about its route needs the general path: a plain `http` upstream, no
    /// purge-and-retry, no route deadline, no tracing. `None` sends it to [`Proxy::handle`],
    /// which also answers every request that does not route. Routing has no side effects,
    /// so asking twice is harmless.
    pub(crate) fn plan<F: Fields>(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &F,
    ) -> Option<Planned> {
        let runtime = self.state.load_full();
        if runtime.otel.is_some() {
            return None;
        }
        let target = routing::target_of(method, uri, headers).ok()?;
        let (index, path) = runtime.route_of(&target).ok()?;
        let route = &runtime.routes[index].route;
        let simple = route.upstream.scheme == http::uri::Scheme::HTTP
            && !route.retry_on_401
            && route.deadline.is_none();
        simple.then_some(Planned {
            runtime,
            index,
            path,
        })
    }
}

/// A request the HTTP/1.1 engine serves itself: its route, in the config snapshot it was
/// routed with, and the path to send upstream.
pub(crate) struct Planned {
    runtime: Arc<Runtime>,
    index: usize,
    pub path: String,
}

impl Planned {
    fn runtime(&self) -> &RouteRuntime {
        &self.runtime.routes[self.index]
    }

    pub fn route(&self) -> &Route {
        &self.runtime().route
    }

    pub fn timeouts(&self) -> &crate::config::model::Timeouts {
        &self.runtime.config.timeouts
    }

    /// Steps 2 to 6: the credential to send upstream, exactly as [`Proxy::handle`] decides it.
    /// `recent` is the connection's memory of its last lookup, used and updated.
    pub async fn authorize<F: Fields + Sync>(
        &self,
        proxy: &Proxy,
        headers: &F,
        recent: &mut Option<Recent>,
    ) -> Result<Option<HeaderValue>, ProxyError> {
        let runtime = self.runtime();
        Ok(runtime
            .authorize(proxy, headers, None, Some(recent))
            .await?
            .value)
    }

    pub fn report(
        &self,
        proxy: &Proxy,
        method: &http::Method,
        status: Result<u16, &ProxyError>,
        started: Instant,
    ) {
        proxy.report(Some(self.runtime()), method, status, started);
    }
}

/// What steps 2 to 6 decided.
struct Credential {
    /// The value to inject; `None` forwards without one.
    value: Option<HeaderValue>,
    /// For purge-and-retry: the cache key and the subject that produced `value`.
    retry: Option<(crate::cache::Key, crate::secret::Secret)>,
}

impl Runtime {
    fn build(
        config: Arc<Config>,
        cache: &TokenCache,
        metrics: &Arc<Metrics>,
        permits: &Arc<Semaphore>,
    ) -> Result<Self, BuildError> {
        let mut clients = std::collections::BTreeMap::new();
        for (name, authority) in &config.authorities {
            let client = ExchangeClient::new(authority.clone(), permits.clone(), metrics.clone())?;
            clients.insert(name.clone(), Arc::new(client));
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let upstream = Upstream::new(route, &config.timeouts)
                .map_err(|e| BuildError::UpstreamTls(route.name.clone(), e))?;
            let exchange = match &route.exchange {
                None => None,
                Some(p) => {
                    // Validation guarantees the authority exists; a miss here is a bug we
                    // still refuse to turn into a panic.
                    let client = clients.get(&p.authority).cloned().ok_or_else(|| {
                        BuildError::Cache(format!(
                            "route {} names unknown authority {}",
                            route.name, p.authority
                        ))
                    })?;
                    let a = client.authority();
                    let keys = cache.key_builder(&[
                        &a.name,
                        &a.token_endpoint,
                        &a.client_id,
                        &p.subject_token_type,
                        p.audience.as_deref().unwrap_or(""),
                        p.resource.as_deref().unwrap_or(""),
                        p.scope.as_deref().unwrap_or(""),
                        &p.requested_token_type,
                        p.inject.scheme.as_deref().unwrap_or(""),
                    ]);
                    Some(RouteExchange { client, keys })
                }
            };
            let metrics = RouteMetrics::new(metrics, &route.name);
            routes.push(RouteRuntime {
                id: NEXT_ROUTE_ID.fetch_add(1, Ordering::Relaxed),
                route: route.clone(),
                audit: config.audit,
                upstream,
                exchange,
                metrics,
            });
        }
        let otel = match &config.tracing {
            None => None,
            Some(settings) => Some(Arc::new(
                crate::otel::Otel::start(settings.clone()).map_err(BuildError::Tracing)?,
            )),
        };
        Ok(Self {
            config,
            routes,
            otel,
        })
    }

    /// Step 1: the first route that matches and the path to send upstream, or `no_route`.
    /// The route's index, so a request can keep it with the snapshot it came from.
    fn route<B>(&self, req: &Request<B>) -> Result<(usize, String), ProxyError> {
        self.route_of(&routing::target(req)?)
    }

    fn route_of(&self, target: &routing::Target<'_>) -> Result<(usize, String), ProxyError> {
        let index = self
            .routes
            .iter()
            .position(|r| routing::matches(&r.route, target))
            .ok_or_else(|| {
                ProxyError::new(
                    Code::NoRoute,
                    "no route matches this request's host and path",
                )
            })?;
        let path = routing::upstream_path(&self.routes[index].route, target);
        Ok((index, path))
    }
}

impl RouteRuntime {
    /// Steps 7 and 8: rewrite the request (hop-by-hop fields out, the token in), then
    /// forward it with its body streamed.
    async fn send(
        &self,
        req: Request<Incoming>,
        path: &str,
        token: Option<HeaderValue>,
    ) -> Result<Response<Body>, ProxyError> {
        let upstream_req =
            forward::upstream_request(req.map(Either::Left), &self.route, path, token)?;
        self.upstream.send(upstream_req, self.route.timeout).await
    }

    /// Steps 2 to 6: where the subject token is, what to do without one, and the
    /// narrowed token from the cache or the authority.
    async fn authorize<F: Fields + Sync>(
        &self,
        proxy: &Proxy,
        headers: &F,
        traced: Option<&Traced>,
        recent: Option<&mut Option<Recent>>,
    ) -> Result<Credential, ProxyError> {
        let none = Credential {
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
                let entry = self.own_token(proxy, exchange, headers, traced).await?;
                return Ok(Credential {
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
            .narrowed(proxy, exchange, token, headers, traced, recent)
            .await?;
        Ok(Credential {
            value: Some(entry.authorization.clone()),
            retry: self
                .route
                .retry_on_401
                .then(|| (key, crate::secret::Secret::new(token.expose()))),
        })
    }

    async fn forward(
        &self,
        proxy: &Proxy,
        req: Request<Incoming>,
        path: &str,
        traced: Option<&Traced>,
    ) -> Result<Response<Body>, ProxyError> {
        let credential = self.authorize(proxy, req.headers(), traced, None).await?;
        let (Some((key, subject)), Some(exchange), Some(value)) =
            (credential.retry, &self.exchange, &credential.value)
        else {
            return self.send(req, path, credential.value).await;
        };
        if !retryable(&req) {
            return self.send(req, path, credential.value).await;
        }
        let value = value.clone();
        // Purge-and-retry: the request has no body, so it can be sent twice.
        let (parts, _) = req.into_parts();
        let build = |authorization: HeaderValue| {
            let req =
                Request::from_parts(parts.clone(), Either::Right(http_body_util::Empty::new()));
            forward::upstream_request(req, &self.route, path, Some(authorization))
        };
        let response = self
            .upstream
            .send(build(value)?, self.route.timeout)
            .await?;
        if response.status() != http::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        tracing::debug!(route = %self.route.name, "upstream refused the narrowed token; exchanging once more");
        proxy.cache.invalidate(&key).await;
        let token = bearer::BearerToken::from_secret(&subject);
        let (fresh, _) = self
            .narrowed(proxy, exchange, token, &parts.headers, traced, None)
            .await?;
        self.upstream
            .send(build(fresh.authorization.clone())?, self.route.timeout)
            .await
    }
}

/// Purge-and-retry applies to idempotent methods (RFC 9110 §9.2.2) without a body.
fn retryable(req: &Request<Incoming>) -> bool {
    use http::Method;
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    ) && http_body::Body::is_end_stream(req.body())
}
