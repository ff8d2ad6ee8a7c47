//! What each config builds: the runtime its requests see, each route's upstream and
//! metrics, and each route's exchange with its authorities' clients and the cache keys
//! that tell its tokens from every other route's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;

use super::chain::FirstLeg;
use super::destination::RouteUpstream;
use super::{BuildError, RouteExchange, RouteRuntime, Runtime};
use crate::cache::TokenCache;
use crate::cache::shared::SharedCache;
use crate::config::{CacheSettings, Config, ExchangeParams, Route};
use crate::exchange::ExchangeClient;
use crate::idle::Watch;
use crate::metrics::{Metrics, RouteMetrics};

type Clients = BTreeMap<String, Arc<ExchangeClient>>;

impl RouteExchange {
    pub(super) fn build(
        route: &Route,
        params: &ExchangeParams,
        clients: &Clients,
        cache: &TokenCache,
        shared: &Option<Arc<SharedCache>>,
    ) -> Result<Self, BuildError> {
        let client = client_of(route, params, clients)?;
        let mut fields = key_fields(&client, params);
        // An entry's lifetime is set by the route that filled it: routes share entries
        // only where they would have given them the same one.
        let lifetime = lifetime_fields(&route.cache);
        let first = match params.first_leg.as_deref() {
            None => None,
            Some(leg) => {
                let first = client_of(route, leg, clients)?;
                let own = key_fields(&first, leg);
                // The route's token depends on both legs: its key covers the first's too.
                fields.push("chain".into());
                fields.extend(own.iter().cloned());
                // A grant is never the token of a route that asks for the same exchange.
                let mut own: Vec<&str> = own.iter().map(String::as_str).collect();
                own.insert(0, "grant");
                own.extend(lifetime.iter().map(String::as_str));
                Some(Arc::new(FirstLeg {
                    keys: cache.key_builder(&own),
                    client: first,
                    cache: cache.clone(),
                }))
            }
        };
        fields.extend(lifetime);
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let shared = shared
            .clone()
            .filter(|_| crate::cache::shared::may_share(client.authority()));
        Ok(RouteExchange {
            keys: cache.key_builder(&fields),
            client,
            shared,
            first,
        })
    }
}

/// Validation guarantees the authority exists; a miss here is a bug we still refuse to
/// turn into a panic.
fn client_of(
    route: &Route,
    params: &ExchangeParams,
    clients: &Clients,
) -> Result<Arc<ExchangeClient>, BuildError> {
    clients.get(&params.authority).cloned().ok_or_else(|| {
        BuildError::Cache(format!(
            "route {} names unknown authority {}",
            route.name, params.authority
        ))
    })
}

/// Everything of one request that changes the token it gets, besides the subject and
/// actor: the authority and the parameters sent.
fn key_fields(client: &ExchangeClient, p: &ExchangeParams) -> Vec<String> {
    let a = client.authority();
    let mut fields = vec![
        a.name.clone(),
        a.token_endpoint.clone(),
        a.client_id.clone(),
        p.grant.as_str().into(),
        p.subject_token_type.clone(),
        p.audience.clone().unwrap_or_default(),
        p.resource.clone().unwrap_or_default(),
        p.scope.clone().unwrap_or_default(),
        p.requested_token_type.clone(),
        p.inject.scheme.clone().unwrap_or_default(),
        p.extra_params.len().to_string(),
    ];
    for (name, value) in &p.extra_params {
        fields.extend([name.clone(), value.clone()]);
    }
    fields
}

/// The cache settings that bound an entry's lifetime and its refresh.
fn lifetime_fields(s: &CacheSettings) -> [String; 4] {
    [s.max_ttl, s.default_ttl, s.early_expiry, s.refresh_ahead].map(|d| d.as_millis().to_string())
}

static NEXT_ROUTE_ID: AtomicU64 = AtomicU64::new(0);

impl Runtime {
    pub(super) fn build(
        config: Arc<Config>,
        cache: &TokenCache,
        metrics: &Arc<Metrics>,
        permits: &Arc<Semaphore>,
        tracing: Option<&Arc<crate::telemetry::Export>>,
    ) -> Result<Self, BuildError> {
        let env = crate::telemetry::export::Environment::process();
        let tracing = crate::telemetry::Export::for_config(config.tracing.as_ref(), env, tracing)?;
        let mut clients = std::collections::BTreeMap::new();
        for (name, authority) in &config.authorities {
            // At 0 from the first scrape, like the authority's exchange series.
            metrics.discovery_failures.series(&[name]);
            let client = ExchangeClient::new(authority.clone(), permits.clone(), metrics.clone())?;
            clients.insert(name.clone(), Arc::new(client));
        }
        let watch = |direction: &str| Watch {
            limit: config.timeouts.body_idle,
            stalls: metrics.body_stalls.series(&[direction]),
        };
        let (to_upstream, to_app) = (watch("to_upstream"), watch("to_app"));
        let shared = config
            .cache
            .shared
            .as_ref()
            .map(|s| crate::cache::shared::SharedCache::new(s, metrics));
        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let upstream = RouteUpstream::new(route, &config.timeouts, to_upstream.clone())
                .map_err(|e| BuildError::UpstreamTls(route.name.clone(), e))?;
            let exchange = match &route.exchange {
                None => None,
                Some(p) => Some(RouteExchange::build(route, p, &clients, cache, &shared)?),
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
        Ok(Self {
            config,
            routes,
            tracing,
            to_upstream,
            to_app,
        })
    }
}
