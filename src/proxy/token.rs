//! Token lookup for a route: the cache, one exchange per key on a miss, refresh-ahead,
//! tokex's own `client_credentials` token, and the audit and span records of each
//! lookup (steps 3 to 6 of the request flow).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::{Proxy, RouteExchange, RouteRuntime};
use crate::bearer::BearerToken;
use crate::cache::{self, Entry, Key, Lookup, Recent};
use crate::clock::{self, Instant, unix_now};
use crate::config::{CacheSettings, ExchangeParams};
use crate::error::{Code, ProxyError};
use crate::exchange::{self, ExchangeClient};
use crate::jwt;

impl RouteRuntime {
    /// tokex's own token for this route (`client_credentials`), cached and refreshed like
    /// exchanged tokens. Its key can never equal an exchange key: the actor slot holds a
    /// marker no 32-byte digest or empty slot can match.
    pub(super) async fn own_token(
        &self,
        proxy: &Proxy,
        exchange: &RouteExchange,
        headers: &HeaderMap,
    ) -> Result<Arc<Entry>, ProxyError> {
        let key = exchange.keys.key(OWN_TOKEN_MARKER, "");
        let (remembered, now) = (None, clock::now());
        self.lookup(proxy, exchange, key, None, None, headers, remembered, now)
            .await
    }

    /// The narrowed token for `token`: from the cache, or from one exchange shared by
    /// all concurrent requests with the same key. `recent`, the connection's memory of
    /// its last lookup, saves the decoding, hashing and map lookup when the token repeats.
    pub(super) async fn narrowed(
        &self,
        proxy: &Proxy,
        exchange: &RouteExchange,
        token: BearerToken<'_>,
        headers: &HeaderMap,
        recent: Option<&mut Option<Recent>>,
    ) -> Result<(Arc<Entry>, Key), ProxyError> {
        let actor = exchange.actor_digest();
        let memory = recent
            .as_deref()
            .and_then(Option::as_ref)
            .filter(|r| r.is_for(self.id, actor.as_ref(), token.expose()));
        let remembered = memory.is_some();
        let subject_exp = match memory {
            Some(r) => r.subject_exp,
            None => jwt::unverified_exp(token.expose()),
        };
        if subject_exp.is_some_and(|exp| exp <= unix_now()) {
            let e = ProxyError::new(Code::InvalidToken, "the subject token has expired");
            self.audit(proxy, Some(token.expose()), false, Err(&e));
            return Err(e);
        }
        let key = match memory {
            Some(r) => r.key,
            None => exchange
                .keys
                .key(actor.as_ref().map_or(&[][..], |d| &d[..]), token.expose()),
        };
        let now = clock::now();
        let usable = memory.map(|r| &r.entry).filter(|e| e.usable(now)).cloned();
        let entry = self
            .lookup(
                proxy,
                exchange,
                key,
                Some(token.expose()),
                subject_exp,
                headers,
                usable,
                now,
            )
            .await?;
        match recent {
            Some(Some(r)) if remembered => r.entry = entry.clone(),
            Some(slot) => {
                *slot = Some(Recent::new(
                    self.id,
                    actor,
                    token.expose(),
                    subject_exp,
                    key,
                    entry.clone(),
                ));
            }
            None => {}
        }
        Ok((entry, key))
    }

    /// Records the outcome of a token lookup or a refusal on the audit target: every
    /// exchange and every refusal, cache hits only when configured. The subject is
    /// described only when an event is written. `own_token`: the lookup was for tokex's
    /// own `client_credentials` token (a request without a subject can also be refused
    /// for the app's malformed one).
    pub(super) fn audit(
        &self,
        proxy: &Proxy,
        subject: Option<&str>,
        own_token: bool,
        result: Result<&(Arc<Entry>, Lookup), &ProxyError>,
    ) {
        let hit = matches!(result, Ok((_, Lookup::Hit | Lookup::Shared)));
        if !self.audit.enabled || hit && !self.audit.cache_hits {
            return;
        }
        let described =
            subject.map(|t| crate::audit::Subject::of(t, || proxy.cache.fingerprint(t)));
        let (outcome, record, cache) = match result {
            Ok((entry, lookup)) => ("ok", entry.record.as_deref(), Some(lookup.as_str())),
            Err(e) => (e.code.as_str(), None, None),
        };
        crate::audit::Event {
            route: &self.route.name,
            params: self.route.exchange.as_ref(),
            subject: described.as_ref(),
            record,
            outcome,
            cache,
            own_token,
        }
        .emit();
    }

    /// The cache lookup shared by user and own tokens: one exchange for all concurrent
    /// misses, then counting, refresh-ahead, the audit event and the span attributes.
    /// `remembered`: an entry the connection remembered and found still usable at `now`,
    /// a hit without asking the cache; refresh-ahead is judged at `now` too. `headers`:
    /// the request's, whose trace context an exchange carries when tracing is off.
    #[allow(clippy::too_many_arguments)]
    async fn lookup(
        &self,
        proxy: &Proxy,
        exchange: &RouteExchange,
        key: Key,
        subject: Option<&str>,
        subject_exp: Option<u64>,
        headers: &HeaderMap,
        remembered: Option<Arc<Entry>>,
        now: Instant,
    ) -> Result<Arc<Entry>, ProxyError> {
        let result = match remembered {
            Some(entry) => Ok((entry, Lookup::Hit)),
            None => {
                proxy
                    .cache
                    .get_or_exchange(key, || {
                        let audited = self.audit.enabled;
                        let (route, headers) = (&self.route, Some(headers));
                        exchange.fill(route, audited, subject, subject_exp, headers, None)
                    })
                    .await
            }
        };
        let result = self.account(proxy, exchange, key, subject, subject_exp, result, now);
        self.audit(proxy, subject, subject.is_none(), result.as_ref());
        note_lookup(result.as_ref());
        result.map(|(entry, _)| entry)
    }

    /// Counts a cache lookup, starts refresh-ahead on a hit near expiry at `now` (the
    /// subject is copied only then), and maps errors.
    #[allow(clippy::too_many_arguments)]
    fn account(
        &self,
        proxy: &Proxy,
        exchange: &RouteExchange,
        key: Key,
        subject: Option<&str>,
        subject_exp: Option<u64>,
        result: Result<(Arc<Entry>, Lookup), Arc<exchange::Error>>,
        now: Instant,
    ) -> Result<(Arc<Entry>, Lookup), ProxyError> {
        match result {
            Ok((entry, lookup @ (Lookup::Hit | Lookup::Shared))) => {
                self.metrics.hit();
                if entry.claim_refresh(now) {
                    self.refresh(proxy, exchange, key, subject, subject_exp, entry.clone());
                }
                Ok((entry, lookup))
            }
            Ok((entry, Lookup::Miss)) => {
                self.metrics.miss();
                Ok((entry, Lookup::Miss))
            }
            Err(e) => {
                self.metrics.miss();
                Err(ProxyError::from(&*e))
            }
        }
    }

    /// Refresh-ahead: one background exchange replaces the entry before it expires.
    fn refresh(
        &self,
        proxy: &Proxy,
        exchange: &RouteExchange,
        key: Key,
        subject: Option<&str>,
        subject_exp: Option<u64>,
        old: Arc<Entry>,
    ) {
        // The one place a subject token is copied: the refresh outlives the request.
        let subject = subject.map(crate::secret::Secret::new);
        let (cache, exchange, route, audited) = (
            proxy.cache.clone(),
            exchange.clone(),
            self.route.clone(),
            self.audit.enabled,
        );
        tokio::spawn(async move {
            let subject = subject.as_ref().map(|s| s.expose());
            let newer_than = Some(old.expires_at);
            match exchange
                .fill(&route, audited, subject, subject_exp, None, newer_than)
                .await
            {
                Ok(entry) => {
                    cache.insert(key, entry).await;
                    old.retire();
                }
                Err(e) => {
                    tracing::debug!(route = %route.name, error = %e, "background refresh failed");
                    // At most one retry per second per key while the AS is failing.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    old.release_refresh();
                }
            }
        });
    }
}

/// Records the cache outcome and the token's time left on the request span.
fn note_lookup(result: Result<&(Arc<Entry>, Lookup), &ProxyError>) {
    if let Ok((entry, lookup)) = result
        && crate::telemetry::export::on()
    {
        let left = entry.expires_at.saturating_duration_since(clock::now());
        crate::telemetry::context::note_lookup(lookup.as_str(), left.as_secs());
    }
}

/// Fills the actor slot of the cache key for tokex's own token (see `own_token`).
pub(super) const OWN_TOKEN_MARKER: &[u8] = b"client_credentials";

/// One exchange with `params` (a route's, or a chain's leg), turned into a cache entry
/// with its lifetime under `settings` (step 5 of the request flow); with `audited`, the
/// entry keeps what audit events say about it. `app_headers`: the request's, whose trace
/// the exchange joins (none for a background refresh).
pub(super) async fn new_entry(
    client: &ExchangeClient,
    params: &ExchangeParams,
    settings: &CacheSettings,
    subject_token: Option<&str>,
    subject_exp: Option<u64>,
    app_headers: Option<&HeaderMap>,
    audited: bool,
) -> Result<Arc<Entry>, exchange::Error> {
    let started = clock::now();
    let trace = crate::telemetry::context::ExchangeTrace::start(&params.authority, app_headers);
    let call = async {
        match subject_token {
            Some(subject) => client.exchange(subject, params).await,
            None => client.client_credentials(params).await,
        }
    };
    let result = trace.around(call).await;
    trace.finish(result.as_ref().map_or_else(|e| e.code().as_str(), |_| "ok"));
    let issued = result?;
    let latency = started.elapsed();
    let (now, now_unix) = (clock::now(), unix_now());
    let issued_exp = jwt::unverified_exp(issued.access_token.expose());
    if issued_exp.is_some_and(|exp| exp <= now_unix) {
        return Err(exchange::Error::BadResponse(
            "the issued token has already expired".into(),
        ));
    }
    let bounds = cache::Bounds {
        now_unix,
        expires_in: issued.expires_in,
        issued_exp,
        subject_exp,
    };
    let ttl = cache::lifetime(bounds, settings);
    let text = match &params.inject.scheme {
        Some(scheme) => format!("{scheme} {}", issued.access_token.expose()),
        None => issued.access_token.expose().to_string(),
    };
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| exchange::Error::BadResponse("access_token is not header-safe".into()))?;
    value.set_sensitive(true);
    let mut entry = Entry::new(value, now + ttl, cache::refresh_at(now, ttl, settings));
    if !issued.sender_constrained {
        entry = entry.shareable();
    }
    Ok(Arc::new(match audited {
        true => entry.with_record(crate::audit::ExchangeRecord::new(
            issued.access_token.expose(),
            issued.scope.clone(),
            latency,
        )),
        false => entry,
    }))
}
