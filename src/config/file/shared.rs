//! The `cache.shared` section as written: the Redis or Valkey server a workload's replicas
//! share exchanged tokens through, the fleet's keys, and how long tokex waits for it.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::FileBreaker;
use tokex_common::values::{Dur, PathText, RedisUrl};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSharedCache {
    /// `rediss://host:port/db`; `redis://` only to a loopback address.
    #[schemars(with = "RedisUrl")]
    pub url: Spanned<RedisUrl>,
    /// The fleet's keys: one base64 line of 32 or more random bytes each, newest first.
    #[schemars(with = "PathText")]
    pub key_file: Spanned<PathText>,
    /// The password for Redis `AUTH` (with the URL's user name, if any).
    #[schemars(with = "Option<PathText>")]
    pub password_file: Option<Spanned<PathText>>,
    /// PEM trust roots for the server, on top of the `tls` section's.
    #[schemars(with = "Option<PathText>")]
    pub ca_file: Option<Spanned<PathText>>,
    /// How long one lookup or write may take before it is given up (default 50ms).
    #[schemars(with = "Option<Dur>")]
    pub timeout: Option<Spanned<Dur>>,
    /// Optional: one exchange per key across the fleet.
    pub lock: Option<FileFleetLock>,
    pub circuit_breaker: Option<FileBreaker>,
}

/// The fleet-wide single flight: a replica that misses takes a short lock on the key, and
/// the others wait for its token.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileFleetLock {
    /// How often a waiting replica looks for the token (default 20ms).
    #[schemars(with = "Option<Dur>")]
    pub poll_interval: Option<Spanned<Dur>>,
}
