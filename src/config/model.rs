//! The validated configuration the proxy runs on, built from [`super::file`].
//!
//! Everything the request path needs is resolved here once: URLs split into parts,
//! secrets and CA bundles read from their files, defaults filled in, references between
//! routes and authorities checked. A [`Config`] that exists is a config that can run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::file::{FileConfig, MissingTokenPolicy};
pub use super::params::normalize_scope;
pub use crate::client_auth::ClientAuth;
use crate::credentials::{Poll, Watched};
use crate::secret::Secret;
use crate::tls::CaBundle;

/// RFC 8693 §3 token type identifiers tokex uses as defaults.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub authorities: BTreeMap<String, Arc<Authority>>,
    pub routes: Vec<Arc<Route>>,
    pub cache: CacheConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub audit: crate::audit::AuditSettings,
    pub tracing: Option<TracingSettings>,
    pub tls: TlsSettings,
    /// Transparent interception, when the config has the section.
    pub transparent: Option<super::transparent::Transparent>,
    /// Where audit events go as JSON lines; `None`: into the log.
    pub audit_file: Option<PathBuf>,
    /// Every credential file, for the rotation poller.
    pub watched: Vec<Arc<dyn Poll>>,
    /// The file this config was loaded from, stamped before it was read: a change
    /// to it, even one made during the load, reloads the config.
    pub source: Option<Watched<()>>,
}

/// The `tracing` section as written: each key left out is taken from its `OTEL_*`
/// variable when the exporter starts, or from tokex's default (`crate::telemetry`
/// resolves them), so a reload compares what the file says.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// OTLP/HTTP base URL without a trailing `/`, e.g. `http://127.0.0.1:4318`.
    pub otlp_endpoint: Option<String>,
    /// Ratio of new traces recorded; a trace the app sampled is always followed.
    pub sampling: Option<f64>,
    pub service_name: Option<String>,
}

/// The `tls` section as it applies: which base set of roots, and the files that add to or
/// replace it. Every authority's and route's `ca_file` bundle is built from these.
#[derive(Debug)]
pub struct TlsSettings {
    pub roots: super::file::Roots,
    pub ca_file: Option<PathBuf>,
    /// `SSL_CERT_FILE` when it was set: the root set, replacing `roots`.
    pub ssl_cert_file: Option<PathBuf>,
}

/// An authorization server tokex exchanges tokens at.
#[derive(Debug)]
pub struct Authority {
    pub name: String,
    pub token_endpoint: String,
    /// A plain `http` token endpoint off loopback was explicitly allowed.
    pub allow_insecure_http: bool,
    pub issuer: Option<String>,
    pub client_id: String,
    pub auth: ClientAuth,
    pub actor_token: Option<ActorToken>,
    pub ca_file: Option<Watched<CaBundle>>,
    /// Bounds the whole exchange, retries and their backoff included.
    pub timeout: Duration,
    /// Bounds one attempt (connect plus the whole response); at most `timeout`.
    pub attempt_timeout: Duration,
    pub retries: u32,
    pub circuit_breaker: crate::resilience::BreakerSettings,
}

/// tokex's own identity, sent as `actor_token` for delegation (RFC 8693 §1.1).
#[derive(Debug)]
pub struct ActorToken {
    pub token: Watched<Actor>,
    pub token_type: String,
}

/// The actor token and a digest of it: the cache key includes the digest, so a rotated
/// actor never reuses tokens minted for another.
#[derive(Debug)]
pub struct Actor {
    pub token: Secret,
    pub digest: [u8; 32],
}

/// One entry of the route table.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    /// Only for redirected connections: where the app was connecting.
    pub destination: Option<super::transparent::DestinationMatch>,
    pub strip_prefix: bool,
    pub upstream: Upstream,
    pub ca_file: Option<Watched<CaBundle>>,
    pub on_missing_token: MissingTokenPolicy,
    pub exchange: Option<ExchangeParams>,
    pub cache: CacheSettings,
    pub timeout: Duration,
    /// Bound on the whole request (exchange and upstream response headers).
    pub deadline: Option<Duration>,
    /// On an upstream 401 for an idempotent request without a body: drop the cached
    /// token, exchange once more and retry once.
    pub retry_on_401: bool,
}

/// A `match.host`: a lowercase name, and a port only when the config gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMatch {
    pub host: String,
    pub port: Option<u16>,
}

/// Where a route forwards to.
#[derive(Debug)]
pub struct Upstream {
    pub url: String,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// The URL's path without a trailing `/`, prefixed to every forwarded path.
    pub base_path: String,
}

/// The RFC 8693 §2.1 parameters of a route's exchange.
#[derive(Debug)]
pub struct ExchangeParams {
    pub authority: String,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub subject_token_type: String,
    pub requested_token_type: String,
    pub subject_token_from: SubjectSource,
    pub inject: Inject,
}

/// Where a route reads the subject token; the source is removed before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSource {
    /// `Authorization: Bearer` (RFC 6750 §2.1).
    Authorization,
    Header(http::HeaderName),
    Cookie(String),
}

/// Where and how the issued token is put on the upstream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inject {
    pub header: http::HeaderName,
    /// `None`: the token alone. Only a `Bearer` scheme requires `token_type: Bearer`
    /// (RFC 6749 §7.1); any other use accepts what the AS issued (e.g. `N_A`).
    pub scheme: Option<String>,
}

impl Inject {
    /// Whether the issued token must be a Bearer token.
    pub fn requires_bearer(&self) -> bool {
        self.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
    }
}

/// Global cache settings.
#[derive(Debug)]
pub struct CacheConfig {
    pub max_entries: u64,
    pub defaults: CacheSettings,
}

/// The lifetime rules of step 5 of the request flow, per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub max_ttl: Duration,
    pub default_ttl: Duration,
    pub early_expiry: Duration,
    pub refresh_ahead: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub upstream_connect: Duration,
    pub upstream_response: Duration,
    pub client_header_read: Duration,
    pub idle: Duration,
    /// A body that makes no progress this long, either way, ends both connections.
    pub body_idle: Duration,
    pub drain: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: u32,
    pub max_concurrent_exchanges: u32,
}

/// A validation failure at a place in the file.
#[derive(Debug)]
pub struct Invalid {
    pub location: Option<Location>,
    pub message: String,
}

pub(super) fn at<T>(span: &Spanned<T>, message: impl Into<String>) -> Invalid {
    Invalid {
        location: Some(span.referenced),
        message: message.into(),
    }
}

pub(super) fn nowhere(message: impl Into<String>) -> Invalid {
    Invalid {
        location: None,
        message: message.into(),
    }
}

/// Checks a parsed file and builds the model; relative paths resolve against `base`.
pub fn validate(file: &FileConfig, base: &Path) -> Result<Config, Invalid> {
    build(file, super::sources::Sources::new(base, false))
}

/// Checks a file parsed offline (`tokex check --offline`): everything but what the
/// credential and CA files and the environment hold. The model it builds has stand-ins for
/// those, so it is dropped here rather than run.
pub(super) fn check_offline(file: &FileConfig, base: &Path) -> Result<(), Invalid> {
    offline_model(file, base).map(drop)
}

/// The model [`check_offline`] builds, with stand-ins for what it did not read: only the
/// parts that come from the file alone may be used.
pub(super) fn offline_model(file: &FileConfig, base: &Path) -> Result<Config, Invalid> {
    build(file, super::sources::Sources::new(base, true))
}

fn build(file: &FileConfig, mut sources: super::sources::Sources) -> Result<Config, Invalid> {
    let (trust, tls) = super::trust::trust(&file.tls, &sources)?;
    sources.trust = trust;
    let cache = super::cache::cache_settings(&file.cache)?;
    let t = &file.timeouts;
    let timeouts = Timeouts {
        upstream_connect: t.upstream_connect.map_or(Duration::from_secs(5), |d| d.0),
        upstream_response: t.upstream_response.map_or(Duration::from_secs(30), |d| d.0),
        client_header_read: t
            .client_header_read
            .map_or(Duration::from_secs(10), |d| d.0),
        idle: t.idle.map_or(Duration::from_secs(90), |d| d.0),
        body_idle: t.body_idle.map_or(Duration::from_secs(60), |d| d.0),
        drain: t.drain.map_or(Duration::from_secs(20), |d| d.0),
    };
    let limits = Limits {
        max_connections: file.limits.max_connections.unwrap_or(4096).max(1),
        max_concurrent_exchanges: file.limits.max_concurrent_exchanges.unwrap_or(256).max(1),
    };
    let mut authorities = BTreeMap::new();
    for (name, spanned) in &file.authorities {
        check_name(name).map_err(|m| at(spanned, format!("authorities.{name}: {m}")))?;
        let authority = super::authority::authority(name, spanned, &mut sources)?;
        authorities.insert(name.clone(), Arc::new(authority));
    }
    let listen = file
        .listen
        .map_or_else(|| ([127, 0, 0, 1], 15001).into(), |a| a.0);
    let mut routes: Vec<Arc<Route>> = Vec::with_capacity(file.routes.len());
    for (i, spanned) in file.routes.iter().enumerate() {
        let route_cache = match &spanned.value.cache {
            Some(o) => {
                super::cache::override_cache(&cache, o, i, file.cache.early_expiry.is_some())?
            }
            None => cache,
        };
        let r = super::route::route(
            i,
            spanned,
            &authorities,
            &route_cache,
            &timeouts,
            &mut sources,
        )?;
        if super::route::points_at(&r.upstream, listen) {
            return Err(at(
                &spanned.value.upstream,
                format!(
                    "routes[{i}].upstream: {} is tokex's own listener; requests would loop",
                    r.upstream.url
                ),
            ));
        }
        if let (Some(d), None) = (&spanned.value.matcher.destination, &file.transparent) {
            return Err(super::transparent::needs_section(
                d,
                &format!("routes[{i}]"),
            ));
        }
        if routes.iter().any(|o| o.name == r.name) {
            return Err(at(
                &spanned.value.name,
                format!("routes[{i}].name: duplicate route name `{}`", r.name),
            ));
        }
        routes.push(Arc::new(r));
    }
    let tracing = match &file.tracing {
        None => None,
        Some(t) => {
            if t.sampling.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
                return Err(nowhere("tracing.sampling must be between 0 and 1"));
            }
            Some(TracingSettings {
                otlp_endpoint: t
                    .otlp_endpoint
                    .as_ref()
                    .map(|u| u.0.as_str().trim_end_matches('/').to_string()),
                sampling: t.sampling,
                service_name: t.service_name.as_ref().map(|n| n.0.clone()),
            })
        }
    };
    let admin = file
        .admin
        .map_or_else(|| ([127, 0, 0, 1], 15000).into(), |a| a.0);
    let transparent = super::transparent::transparent(file.transparent.as_ref(), listen, admin)?;
    Ok(Config {
        listen,
        admin,
        authorities,
        routes,
        cache: CacheConfig {
            max_entries: file.cache.max_entries.unwrap_or(100_000),
            defaults: cache,
        },
        timeouts,
        limits,
        audit: crate::audit::AuditSettings {
            enabled: file.audit.enabled,
            cache_hits: file.audit.cache_hits,
        },
        audit_file: file.audit.file.as_ref().map(|f| sources.resolve(f)),
        tracing,
        tls,
        transparent,
        watched: sources.watched,
        source: None,
    })
}

/// Route and authority names become metric labels, so they stay short and plain.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name `{name}`: use 1-64 of A-Z a-z 0-9 - _ ."
        ))
    }
}

pub(super) fn absolute_uri(v: &str) -> Result<String, String> {
    match url::Url::parse(v) {
        Ok(_) => Ok(v.to_string()),
        Err(_) => Err(format!("`{v}` is not an absolute URI")),
    }
}
