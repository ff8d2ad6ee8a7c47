//! A route's exchange runtime, built with each config: its authorities' clients and the
//! cache keys that tell its tokens from every other route's.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::chain::FirstLeg;
use super::{BuildError, RouteExchange};
use crate::cache::TokenCache;
use crate::cache::shared::SharedCache;
use crate::config::{ExchangeParams, Route};
use crate::exchange::ExchangeClient;

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
        let first = match params.first_leg.as_deref() {
            None => None,
            Some(leg) => {
                let first = client_of(route, leg, clients)?;
                let own = key_fields(&first, leg);
                // The route's token depends on both legs: its key covers the first's too.
                fields.push("chain".into());
                fields.extend(own.iter().cloned());
                let own: Vec<&str> = own.iter().map(String::as_str).collect();
                Some(Arc::new(FirstLeg {
                    keys: cache.key_builder(&own),
                    client: first,
                    cache: cache.clone(),
                }))
            }
        };
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
