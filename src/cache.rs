//! The narrowed-token cache (steps 4 and 5 of the request flow).
//!
//! Keys are HMAC-SHA256 over every input that shapes the issued token, under a random
//! per-process key: the cache never holds a raw subject token, and a key leaked from
//! memory cannot be tested against a guessed token. Each entry expires at its own
//! lifetime ([`lifetime`]); moka coalesces concurrent misses for one key into one call.
//!
//! Behind it, optionally, a second level shared by a workload's replicas ([`shared`]):
//! a local miss asks it before the authority.
//!
//! An entry's bound is an instant on tokex's clock ([`crate::clock`]), checked on every
//! read. moka also evicts the entry at that bound, but on its own clock, which a test
//! cannot pause: the check on read is what keeps a token from being served late, and
//! what paused-time tests of lifetimes exercise.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::HeaderValue;
use moka::Expiry;
use ring::hmac;

use crate::clock::{self, Instant};
use crate::config::CacheSettings;

mod recent;
pub mod shared;

pub use recent::Recent;

/// A cache key: the HMAC of the exchange inputs.
pub type Key = [u8; 32];

/// A narrowed token ready to put on a request.
#[derive(Debug)]
pub struct Entry {
    /// `Bearer <token>`, marked sensitive so HPACK never indexes it and Debug hides it.
    pub authorization: HeaderValue,
    /// Never served at or after this instant.
    pub expires_at: Instant,
    /// A hit at or after this instant starts one background refresh.
    pub refresh_at: Option<Instant>,
    /// What the exchange produced, for audit events; kept only while auditing (a cache
    /// holds many entries, and most deployments audit nothing).
    pub record: Option<Box<crate::audit::ExchangeRecord>>,
    /// May be written to the shared cache: set only for tokens that any replica may
    /// send, never for tokens bound to a sender (DPoP, a client certificate).
    pub shareable: bool,
    /// Read from the shared cache rather than exchanged here.
    pub from_shared: bool,
    refreshing: AtomicBool,
    /// Set once the cache has let go of this entry (invalidated, or replaced by a
    /// refresh): a connection that remembers it ([`Recent`]) must look again.
    retired: AtomicBool,
}

impl Entry {
    pub fn new(
        authorization: HeaderValue,
        expires_at: Instant,
        refresh_at: Option<Instant>,
    ) -> Self {
        Self {
            authorization,
            expires_at,
            refresh_at,
            record: None,
            shareable: false,
            from_shared: false,
            refreshing: AtomicBool::new(false),
            retired: AtomicBool::new(false),
        }
    }

    /// Attaches what the exchange produced.
    pub fn with_record(mut self, record: crate::audit::ExchangeRecord) -> Self {
        self.record = Some(Box::new(record));
        self
    }

    /// Marks a token any replica may send, so the shared cache may hold it.
    pub fn shareable(mut self) -> Self {
        self.shareable = true;
        self
    }

    /// True for exactly one caller once the refresh window is reached.
    pub fn claim_refresh(&self, now: Instant) -> bool {
        self.refresh_at.is_some_and(|at| now >= at) && !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Lets a later hit try again after a failed refresh.
    pub fn release_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    /// Marks the entry as no longer the cache's answer for its key.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether a remembered entry may still be served at `now`: the cache still holds
    /// it and its bound has not passed. Entries the cache dropped for room stay usable
    /// until their bound: their token is as valid as it was.
    pub fn usable(&self, now: Instant) -> bool {
        self.expires_at > now && !self.retired.load(Ordering::Acquire)
    }
}

/// The lifetimes that bound one cache entry, in seconds since the Unix epoch where absolute.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    pub now_unix: u64,
    pub expires_in: Option<u64>,
    pub issued_exp: Option<u64>,
    pub subject_exp: Option<u64>,
}

/// Step 5 of the request flow: min(`expires_in` or `default_ttl`, issued `exp`, subject `exp`,
/// `max_ttl`) minus `early_expiry`. Zero means "use for this request, do not cache".
pub fn lifetime(b: Bounds, s: &CacheSettings) -> Duration {
    let until = |exp: u64| Duration::from_secs(exp.saturating_sub(b.now_unix));
    let mut ttl = b.expires_in.map_or(s.default_ttl, Duration::from_secs);
    for exp in [b.issued_exp, b.subject_exp].into_iter().flatten() {
        ttl = ttl.min(until(exp));
    }
    ttl.min(s.max_ttl).saturating_sub(s.early_expiry)
}

/// When a hit should refresh: `refresh_ahead` before expiry, but never in the first half
/// of the lifetime, so short-lived tokens do not double the AS load.
pub fn refresh_at(now: Instant, ttl: Duration, s: &CacheSettings) -> Option<Instant> {
    if s.refresh_ahead.is_zero() || ttl.is_zero() {
        return None;
    }
    Some(now + ttl - s.refresh_ahead.min(ttl / 2))
}

/// Builds keys for one route: the route's fields are hashed once, each request adds
/// only the subject token. The encoded fields are kept too, so the shared cache can name
/// an entry by the same material under its own key.
#[derive(Clone)]
pub struct KeyBuilder {
    ctx: hmac::Context,
    fields: Arc<[u8]>,
}

impl KeyBuilder {
    /// Starts from `fields`, each length-prefixed so no two field lists collide.
    pub fn new(secret: &hmac::Key, fields: &[&str]) -> Self {
        let mut encoded = Vec::new();
        for f in fields {
            encoded.extend_from_slice(&(f.len() as u64).to_be_bytes());
            encoded.extend_from_slice(f.as_bytes());
        }
        let mut ctx = hmac::Context::with_key(secret);
        ctx.update(&encoded);
        Self {
            ctx,
            fields: encoded.into(),
        }
    }

    /// The key for `subject_token` under the actor identified by `actor` (its digest,
    /// or empty), so a rotated actor never reuses another's tokens.
    pub fn key(&self, actor: &[u8], subject_token: &str) -> Key {
        finish(self.ctx.clone(), actor, subject_token)
    }

    /// [`KeyBuilder::key`]'s material keyed with `secret` instead of this process's key.
    pub fn key_under(&self, secret: &hmac::Key, actor: &[u8], subject_token: &str) -> Key {
        let mut ctx = hmac::Context::with_key(secret);
        ctx.update(&self.fields);
        finish(ctx, actor, subject_token)
    }
}

/// Adds the request's part of a key's material and signs it.
fn finish(mut ctx: hmac::Context, actor: &[u8], subject_token: &str) -> Key {
    ctx.update(&(actor.len() as u64).to_be_bytes());
    ctx.update(actor);
    ctx.update(&(subject_token.len() as u64).to_be_bytes());
    ctx.update(subject_token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.sign().as_ref());
    key
}

/// Hashing for cache keys: they are already HMAC outputs, uniform and unpredictable
/// without the process's secret, so their first eight bytes are as good a hash as any
/// and flooding the table is not possible.
#[derive(Clone, Default)]
pub struct KeyHash;

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    /// `[u8; 32]` hashes as one write of its bytes; anything else still mixes in.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

/// The cache shared by all routes.
#[derive(Clone)]
pub struct TokenCache {
    inner: moka::future::Cache<Key, Arc<Entry>, KeyHash>,
    secret: Arc<hmac::Key>,
}

/// moka's per-entry expiry: the time an entry has left on tokex's clock. moka passes
/// instants of its own clock, which are not comparable with tokex's.
struct PerEntry;

impl Expiry<Key, Arc<Entry>> for PerEntry {
    fn expire_after_create(
        &self,
        _: &Key,
        v: &Arc<Entry>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.expires_at.saturating_duration_since(clock::now()))
    }
    fn expire_after_update(
        &self,
        _: &Key,
        v: &Arc<Entry>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.expires_at.saturating_duration_since(clock::now()))
    }
}

/// Whether a lookup was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// A local miss that another replica's exchange answered, through the shared cache.
    Shared,
    Miss,
}

impl Lookup {
    /// What a lookup that had to fill the entry found.
    fn of_new(entry: &Entry) -> Self {
        match entry.from_shared {
            true => Lookup::Shared,
            false => Lookup::Miss,
        }
    }

    /// The label audit events and spans use.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Shared => "shared",
            Lookup::Miss => "miss",
        }
    }
}

impl TokenCache {
    /// A cache of at most `max_entries` tokens with a fresh random key.
    pub fn new(max_entries: u64) -> Result<Self, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let secret = hmac::Key::generate(hmac::HMAC_SHA256, &rng)?;
        let inner = moka::future::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(PerEntry)
            .build_with_hasher(KeyHash);
        Ok(Self {
            inner,
            secret: Arc::new(secret),
        })
    }

    /// A short keyed hash of a token for audit records: correlates requests of one
    /// subject without revealing or replaying anything.
    pub fn fingerprint(&self, token: &str) -> String {
        let key = self.key_builder(&["audit-fingerprint"]).key(b"", token);
        key[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn key_builder(&self, fields: &[&str]) -> KeyBuilder {
        KeyBuilder::new(&self.secret, fields)
    }

    /// The entry for `key`, running `exchange` once for all concurrent misses.
    ///
    /// The entry's own `expires_at` is checked on every hit: moka expires entries on its
    /// own clock, and no token is served past its bound on tokex's (step 5).
    pub async fn get_or_exchange<E, F, Fut>(
        &self,
        key: Key,
        exchange: F,
    ) -> Result<(Arc<Entry>, Lookup), Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Arc<Entry>, E>>,
    {
        if let Some(v) = self.inner.get(&key).await {
            if v.expires_at > clock::now() {
                return Ok((v, Lookup::Hit));
            }
            self.inner.invalidate(&key).await;
        }
        // The miss path holds the whole exchange: boxed, so the hit path's future (and
        // every future awaiting it, up to the connection's) stays small.
        Box::pin(self.miss(key, exchange)).await
    }

    async fn miss<E, F, Fut>(&self, key: Key, exchange: F) -> Result<(Arc<Entry>, Lookup), Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Arc<Entry>, E>>,
    {
        for _ in 0..2 {
            let entry = self.inner.entry(key).or_try_insert_with(exchange()).await?;
            let fresh = entry.is_fresh();
            let value = entry.into_value();
            let lookup = match fresh {
                true => Lookup::of_new(&value),
                false => Lookup::Hit,
            };
            if fresh || value.expires_at > clock::now() {
                return Ok((value, lookup));
            }
            self.inner.invalidate(&key).await;
        }
        // Two stale entries in a row: exchange without the cache rather than serve one.
        exchange()
            .await
            .map(|v| {
                let lookup = Lookup::of_new(&v);
                (v, lookup)
            })
            .map_err(Arc::new)
    }

    pub async fn insert(&self, key: Key, entry: Arc<Entry>) {
        self.inner.insert(key, entry).await;
    }

    /// Drops the entry for `key` and retires it, so no connection serves it again.
    pub async fn invalidate(&self, key: &Key) {
        if let Some(entry) = self.inner.remove(key).await {
            entry.retire();
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }
}

#[cfg(test)]
mod tests;
