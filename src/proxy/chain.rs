//! Identity chaining across two authorities (draft-ietf-oauth-identity-chaining): a
//! token exchange at the first for a JWT grant addressed to the second, then the
//! jwt-bearer grant at the second. The grant is cached under its own key, with its own
//! lifetime and single flight, so routes and requests that need the same grant share one
//! call to the first authority; the route's entry is the second leg's token.

use std::sync::Arc;

use http::HeaderMap;

use super::RouteExchange;
use super::token::new_entry;
use crate::cache::{Entry, KeyBuilder, Lookup, TokenCache};
use crate::config::{CacheSettings, ExchangeParams};
use crate::exchange::{self, ExchangeClient};

/// The first leg of a chained route: its authority's client, and its cache keys.
pub(super) struct FirstLeg {
    pub client: Arc<ExchangeClient>,
    pub keys: KeyBuilder,
    pub cache: TokenCache,
}

impl RouteExchange {
    /// The digest of the actor token whose delegation the route's tokens carry, which
    /// their cache keys include: the first leg's, on a chain (the jwt-bearer leg has none).
    pub(super) fn actor_digest(&self) -> Option<[u8; 32]> {
        match &self.first {
            Some(first) => first.client.actor_digest(),
            None => self.client.actor_digest(),
        }
    }

    /// The second leg's entry for `subject`. A grant the second authority refuses with
    /// `invalid_grant` is purged; if it came from the cache, one fresh grant is tried.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn chained(
        &self,
        first: &FirstLeg,
        params: &ExchangeParams,
        settings: &CacheSettings,
        audited: bool,
        subject: &str,
        subject_exp: Option<u64>,
        app_headers: Option<&HeaderMap>,
    ) -> Result<Arc<Entry>, exchange::Error> {
        let Some(leg) = params.first_leg.as_deref() else {
            return Err(exchange::Error::BadResponse(
                "route has no first leg".into(),
            ));
        };
        let actor = first.client.actor_digest();
        let key = first
            .keys
            .key(actor.as_ref().map_or(&[][..], |d| &d[..]), subject);
        let fresh_grant = || {
            new_entry(
                &first.client,
                leg,
                settings,
                Some(subject),
                subject_exp,
                app_headers,
                false,
            )
        };
        let (mut grant, mut lookup) = first
            .cache
            .get_or_exchange(key, fresh_grant)
            .await
            .map_err(|e| at_leg("first", leg, (*e).clone()))?;
        loop {
            let Ok(assertion) = grant.authorization.to_str() else {
                first.cache.invalidate(&key).await;
                let why = exchange::Error::BadResponse("the grant is not a token".into());
                return Err(at_leg("first", leg, why));
            };
            let second = new_entry(
                &self.client,
                params,
                settings,
                Some(assertion),
                subject_exp,
                app_headers,
                audited,
            )
            .await;
            let Err(e) = second else {
                return second;
            };
            // A refused grant is spent or no longer trusted: never present it again.
            let refused = matches!(&e, exchange::Error::Refused { oauth_error, .. } if oauth_error == "invalid_grant");
            if refused {
                first.cache.invalidate(&key).await;
            }
            if !(refused && lookup == Lookup::Hit) {
                return Err(at_leg("second", params, e));
            }
            tracing::debug!(authority = %params.authority, "the cached grant was refused; asking for a fresh one");
            // This request's own, outside the single flight: a grant that concurrent
            // requests share can be spent by one of them before another presents it.
            grant = fresh_grant().await.map_err(|e| at_leg("first", leg, e))?;
            first.cache.insert(key, grant.clone()).await;
            lookup = Lookup::Miss;
        }
    }
}

fn at_leg(leg: &'static str, params: &ExchangeParams, error: exchange::Error) -> exchange::Error {
    exchange::Error::Leg {
        leg,
        authority: params.authority.clone(),
        error: Box::new(error),
    }
}
