//! The second cache level: exchanged tokens shared by a workload's replicas through Redis
//! or Valkey, so the authority sees one exchange per key across the fleet.
//!
//! A local miss reads the shared cache; a shared miss exchanges and writes the token
//! back for the others. With the fleet lock, a replica that misses takes a short
//! `SET NX PX` lock on the key first; the others poll for its token for at most the
//! exchange's timeout, then exchange themselves. What is stored and how is in [`seal`];
//! the connection and its breaker in [`link`].
//!
//! The shared cache never fails a request: a server that is down, slow past `timeout`
//! or answering nonsense costs at most `timeout` per command until the breaker opens, and
//! the request goes on as without a shared cache. A value that does not open, or is past
//! the bound it carries, is ignored. Tokens bound to a sender are never written.

mod counters;
mod link;
mod lock;
mod seal;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use redis::Value;

use super::{Entry, KeyBuilder};
use crate::clock::{self, Instant};
use crate::config::CacheSettings;
use crate::config::model::{Authority, ClientAuth, FleetLock, SharedCacheSettings};
use crate::credentials::Watched;
use crate::credentials::fleet_keys::FleetKeys;
use crate::metrics::Metrics;
use counters::Counters;
pub use link::Failure;
use link::Link;
use seal::Keyring;

/// The shared cache as one config sets it up: the connection, the keys, the lock.
pub struct SharedCache {
    link: Arc<Link>,
    keys: Watched<FleetKeys>,
    /// The keys derived from the key file, and the file's generation they were derived at.
    keyring: ArcSwap<(u64, Arc<Keyring>)>,
    lock: Option<FleetLock>,
    counters: Counters,
}

/// What names one entry: the route's key material, and the request's actor and subject.
pub struct Name<'a> {
    pub keys: &'a KeyBuilder,
    pub actor: &'a [u8],
    pub subject: &'a str,
}

/// What a read of the shared cache found.
enum Read {
    Found(Arc<Entry>),
    Missing,
    /// No answer worth acting on: go on as without a shared cache.
    Unavailable,
}

impl SharedCache {
    /// Connects in the background at once.
    pub fn new(settings: &SharedCacheSettings, metrics: &Metrics) -> Arc<Self> {
        let m = &metrics.shared_cache;
        let link = Link::new(settings, m.breaker_open.clone());
        link.warm();
        let keys = settings.keys.clone();
        let keyring = (
            keys.generation(),
            Arc::new(Keyring::derive(&keys.current())),
        );
        Arc::new(Self {
            link,
            keys,
            keyring: ArcSwap::from_pointee(keyring),
            lock: settings.lock,
            counters: Counters::new(metrics),
        })
    }

    /// The entry for a local miss: the fleet's, when one is usable and, for a refresh,
    /// bounded later than `newer_than`; else `exchange`'s, written back for the fleet.
    /// `wait` is the exchange's timeout: how long the fleet lock may make this replica
    /// wait for another's exchange.
    pub async fn fill<E, Fut>(
        self: &Arc<Self>,
        name: Name<'_>,
        lifetimes: &CacheSettings,
        wait: Duration,
        newer_than: Option<Instant>,
        exchange: impl FnOnce() -> Fut,
    ) -> Result<Arc<Entry>, E>
    where
        Fut: Future<Output = Result<Arc<Entry>, E>>,
    {
        let keyring = self.keyring();
        let names = keyring.names(|k| name.keys.key_under(k, name.actor, name.subject));
        let wanted = Wanted {
            keyring: &keyring,
            names: &names,
            lifetimes,
            newer_than,
        };
        match self.read(&wanted).await {
            Read::Found(entry) => {
                self.counters.hits.inc();
                return Ok(entry);
            }
            Read::Unavailable => return exchange().await,
            Read::Missing => {
                self.counters.misses.inc();
            }
        }
        let mut held = None;
        if let Some(lock) = self.lock {
            let lock_name = format!("{}:lock", names[0]);
            match self.acquire(&lock_name, wait).await {
                Some(Some(token)) => held = Some((lock_name, token)),
                Some(None) => {
                    if let Some(entry) = self.await_other(&wanted, wait, lock.poll_interval).await {
                        return Ok(entry);
                    }
                }
                None => {}
            }
        }
        let result = exchange().await;
        self.write_back(&keyring, &names[0], result.as_ref().ok(), held);
        result
    }

    /// The keys derived from the key file in force, derived again after it changed.
    fn keyring(&self) -> Arc<Keyring> {
        let generation = self.keys.generation();
        let cached = self.keyring.load();
        if cached.0 == generation {
            return cached.1.clone();
        }
        let derived = Arc::new(Keyring::derive(&self.keys.current()));
        self.keyring.store(Arc::new((generation, derived.clone())));
        derived
    }

    /// One `MGET` of the entry's name under every key; the first value that opens, is
    /// within its bound and is what `wanted` asks for wins.
    async fn read(&self, wanted: &Wanted<'_>) -> Read {
        let mut cmd = redis::cmd("MGET");
        for name in wanted.names {
            cmd.arg(name);
        }
        let Some(value) = self.command(&cmd, Op::Read).await else {
            return Read::Unavailable;
        };
        let Value::Array(values) = value else {
            self.counters.error(Failure::Reply).inc();
            return Read::Unavailable;
        };
        for (index, value) in values.into_iter().enumerate().take(wanted.names.len()) {
            let sealed = match value {
                Value::Nil => continue,
                Value::BulkString(bytes) => bytes,
                _ => {
                    self.counters.error(Failure::Reply).inc();
                    continue;
                }
            };
            match wanted.open(index, &sealed) {
                Ok(entry) if wanted.newer_than.is_none_or(|t| entry.expires_at > t) => {
                    return Read::Found(Arc::new(entry));
                }
                Ok(_) => {}
                Err(reason) => {
                    self.counters.ignored(reason).inc();
                }
            }
        }
        Read::Missing
    }

    /// Writes `entry` under `name` for the fleet, unless it is bound to a sender or has
    /// no life left, then releases the lock if this replica held it; in the background,
    /// so the request does not wait for the server.
    fn write_back(
        self: &Arc<Self>,
        keyring: &Keyring,
        name: &str,
        entry: Option<&Arc<Entry>>,
        held: Option<(String, String)>,
    ) {
        let sealed = entry.filter(|e| e.shareable).and_then(|e| {
            let left = e.expires_at.saturating_duration_since(clock::now());
            let bound = millis(clock::unix_time() + left);
            (millis(left) > 0)
                .then(|| keyring.seal(name, bound, e.authorization.as_bytes()))
                .flatten()
                .map(|sealed| (sealed, e.expires_at))
        });
        if sealed.is_none() && held.is_none() {
            return;
        }
        let (this, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            if let Some((sealed, expires_at)) = sealed {
                this.write(&name, &sealed, expires_at).await;
            }
            if let Some((lock_name, token)) = held {
                this.release(&lock_name, &token).await;
            }
        });
    }

    /// `SET name value PX left`: Redis drops the value when the bound it carries passes.
    async fn write(&self, name: &str, sealed: &[u8], expires_at: Instant) {
        let left = millis(expires_at.saturating_duration_since(clock::now()));
        if left == 0 {
            return;
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(name).arg(sealed).arg("PX").arg(left);
        match self.command(&cmd, Op::Write).await {
            Some(Value::Okay) => {
                self.counters.writes.inc();
            }
            Some(_) => {
                self.counters.error(Failure::Reply).inc();
            }
            None => {}
        }
    }

    /// Sends `cmd`, timing the answer or counting the failure.
    async fn command(&self, cmd: &redis::Cmd, op: Op) -> Option<Value> {
        let started = clock::now();
        match self.link.query(cmd).await {
            Ok(value) => {
                self.counters.duration[op as usize]
                    .observe(crate::metrics::seconds(started.elapsed()));
                Some(value)
            }
            Err(failure) => {
                self.counters.error(failure).inc();
                None
            }
        }
    }
}

/// Whether tokens issued at `authority` may be shared: not where tokex authenticates with
/// a client certificate, since the authority may bind its tokens to that certificate
/// (RFC 8705 §3) whether or not the token shows it, and another replica's may differ.
pub fn may_share(authority: &Authority) -> bool {
    !matches!(authority.auth, ClientAuth::TlsClientAuth { .. })
}

/// What one fill looks for.
struct Wanted<'a> {
    keyring: &'a Keyring,
    names: &'a [String],
    lifetimes: &'a CacheSettings,
    newer_than: Option<Instant>,
}

impl Wanted<'_> {
    /// The entry a value read under name `index` holds, or why it is not used. Its life
    /// is what its bound leaves, and never more than this route's `max_ttl`.
    fn open(&self, index: usize, sealed: &[u8]) -> Result<Entry, Ignored> {
        if sealed.len() > seal::MAX_SEALED {
            return Err(Ignored::Unusable);
        }
        let opened = self
            .keyring
            .open(index, &self.names[index], sealed)
            .ok_or(Ignored::Undecryptable)?;
        let left = Duration::from_millis(opened.bound_ms)
            .saturating_sub(clock::unix_time())
            .min(self.lifetimes.max_ttl);
        if left.is_zero() {
            return Err(Ignored::Expired);
        }
        let mut value = HeaderValue::from_bytes(&opened.value).map_err(|_| Ignored::Unusable)?;
        value.set_sensitive(true);
        let now = clock::now();
        let refresh_at = super::refresh_at(now, left, self.lifetimes);
        let mut entry = Entry::new(value, now + left, refresh_at).shareable();
        entry.from_shared = true;
        Ok(entry)
    }
}

/// Why a value read was not used: the `reason` label, in [`crate::metrics::shared::IGNORED`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ignored {
    Undecryptable,
    Expired,
    Unusable,
}

/// What a command was for: the `operation` label, in [`crate::metrics::shared::OPERATIONS`]'s order.
#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    Lock,
    Unlock,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
