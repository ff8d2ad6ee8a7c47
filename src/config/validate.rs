//! Turns the file model ([`super::file`]) into the validated model ([`super::model`]):
//! every check that needs more than one value, every default, and every file and
//! environment variable the config names (read through `sources`, registered for
//! rotation). Each failure names its place in the file.
//!
//! Layout: `authority` (with `auth` for client authentication), `route` (with `params` for
//! a route's exchange parameters), `cache` (with `shared` for the shared level), `trust`
//! (TLS roots) and `transparent` (interception); `sources` is what they read besides the
//! file.

mod auth;
mod authority;
mod cache;
mod chain;
mod params;
mod route;
mod shared;
mod sources;
mod transparent;
mod trust;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::file::FileConfig;
use super::model::{AuditSettings, CacheConfig, Config, Limits, Route, Timeouts, TracingSettings};
use sources::Sources;

pub(super) use authority::assertion_audience;
pub(crate) use authority::secure_transport;

pub use tokex_common::located::{Invalid, at, nowhere, resolve};

/// Checks a parsed file and builds the model; relative paths resolve against `base`.
pub fn validate(file: &FileConfig, base: &Path) -> Result<Config, Invalid> {
    build(file, Sources::new(base, false))
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
    build(file, Sources::new(base, true))
}

fn build(file: &FileConfig, mut sources: Sources) -> Result<Config, Invalid> {
    let (trust, tls) = trust::trust(&file.tls, &sources)?;
    sources.trust = trust;
    let cache = cache::cache_settings(&file.cache)?;
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
        let authority = authority::authority(name, spanned, &mut sources)?;
        authorities.insert(name.clone(), Arc::new(authority));
    }
    let listen = file
        .listen
        .map_or_else(|| ([127, 0, 0, 1], 15001).into(), |a| a.0);
    // From the file, not the model: offline, actor tokens are not read.
    let delegating: Vec<&str> = file
        .authorities
        .iter()
        .filter(|(_, a)| a.value.actor_token.is_some())
        .map(|(name, _)| name.as_str())
        .collect();
    let mut routes: Vec<Arc<Route>> = Vec::with_capacity(file.routes.len());
    for (i, spanned) in file.routes.iter().enumerate() {
        let route_cache = match &spanned.value.cache {
            Some(o) => cache::override_cache(&cache, o, i, file.cache.early_expiry.is_some())?,
            None => cache,
        };
        let r = route::route(
            i,
            spanned,
            (&authorities, &delegating),
            &route_cache,
            &timeouts,
            &mut sources,
        )?;
        if let (Some(up), Some(written)) = (&r.upstream, &spanned.value.upstream)
            && route::points_at(up, listen)
        {
            return Err(at(
                written,
                format!(
                    "routes[{i}].upstream: {} is tokex's own listener; requests would loop",
                    up.url
                ),
            ));
        }
        if let (Some(d), None) = (&spanned.value.matcher.destination, &file.transparent) {
            return Err(transparent::needs_section(d, &format!("routes[{i}]")));
        }
        if r.upstream.is_none() && file.transparent.is_none() {
            return Err(at(
                spanned,
                format!(
                    "routes[{i}].upstream is required: only redirected connections (the `transparent` section) have an original destination to forward to"
                ),
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
    let transparent = transparent::transparent(file.transparent.as_ref(), listen, admin)?;
    let shared = shared::shared_cache(file.cache.shared.as_ref(), &mut sources)?;
    Ok(Config {
        listen,
        admin,
        authorities,
        routes,
        cache: CacheConfig {
            max_entries: file.cache.max_entries.unwrap_or(100_000),
            defaults: cache,
            shared,
        },
        timeouts,
        limits,
        audit: AuditSettings {
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
fn check_name(name: &str) -> Result<(), String> {
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

fn absolute_uri(v: &str) -> Result<String, String> {
    match url::Url::parse(v) {
        Ok(_) => Ok(v.to_string()),
        Err(_) => Err(format!("`{v}` is not an absolute URI")),
    }
}
