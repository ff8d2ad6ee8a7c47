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

use serde::Serialize;
use serde_saphyr::{Location, Spanned};

use super::file::{
    FileCache, FileCacheOverride, FileConfig, FileExchange, FileRoute, MissingTokenPolicy,
};
use super::values::{PathText, Text, serialize_duration};
pub use crate::client_auth::ClientAuth;
use crate::credentials::{Poll, Watched};
use crate::secret::Secret;
use crate::tls::CaBundle;

/// RFC 8693 §3 token type identifiers tokex uses as defaults.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A validated configuration.
#[derive(Debug, Serialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub authorities: BTreeMap<String, Arc<Authority>>,
    pub routes: Vec<Arc<Route>>,
    pub cache: CacheConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub audit: crate::audit::AuditSettings,
    pub tracing: Option<crate::otel::OtelSettings>,
    /// Where audit events go as JSON lines; `None`: into the log.
    pub audit_file: Option<PathBuf>,
    /// Every credential file, for the rotation poller.
    #[serde(skip)]
    pub watched: Vec<Arc<dyn Poll>>,
    /// The file this config was loaded from, stamped before it was read: a change
    /// to it, even one made during the load, reloads the config.
    #[serde(skip)]
    pub source: Option<Watched<()>>,
}

/// An authorization server tokex exchanges tokens at.
#[derive(Debug, Serialize)]
pub struct Authority {
    pub name: String,
    pub token_endpoint: String,
    pub issuer: Option<String>,
    pub client_id: String,
    pub auth: ClientAuth,
    pub actor_token: Option<ActorToken>,
    pub ca_file: Option<Watched<CaBundle>>,
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    pub retries: u32,
    pub circuit_breaker: crate::resilience::BreakerSettings,
}

/// tokex's own identity, sent as `actor_token` for delegation (RFC 8693 §1.1).
#[derive(Debug, Serialize)]
pub struct ActorToken {
    #[serde(rename = "file")]
    pub token: Watched<Actor>,
    #[serde(rename = "type")]
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
#[derive(Debug, Serialize)]
pub struct Route {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    pub strip_prefix: bool,
    pub upstream: Upstream,
    pub ca_file: Option<Watched<CaBundle>>,
    pub on_missing_token: MissingTokenPolicy,
    pub exchange: Option<ExchangeParams>,
    pub cache: CacheSettings,
    #[serde(serialize_with = "serialize_duration")]
    pub timeout: Duration,
    /// Bound on the whole request (exchange and upstream response headers).
    #[serde(serialize_with = "super::values::serialize_opt_duration")]
    pub deadline: Option<Duration>,
    /// On an upstream 401 for an idempotent request without a body: drop the cached
    /// token, exchange once more and retry once.
    pub retry_on_401: bool,
}

/// A `match.host`: a lowercase name, and a port only when the config gave one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostMatch {
    pub host: String,
    pub port: Option<u16>,
}

/// Where a route forwards to.
#[derive(Debug, Serialize)]
pub struct Upstream {
    pub url: String,
    #[serde(skip)]
    pub scheme: http::uri::Scheme,
    #[serde(skip)]
    pub authority: http::uri::Authority,
    /// The URL's path without a trailing `/`, prefixed to every forwarded path.
    #[serde(skip)]
    pub base_path: String,
}

/// The RFC 8693 §2.1 parameters of a route's exchange.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectSource {
    /// `Authorization: Bearer` (RFC 6750 §2.1).
    Authorization,
    #[serde(serialize_with = "serialize_header_name")]
    Header(http::HeaderName),
    Cookie(String),
}

/// Where and how the issued token is put on the upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inject {
    #[serde(serialize_with = "serialize_header_name")]
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

fn serialize_header_name<S: serde::Serializer>(
    h: &http::HeaderName,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

/// Global cache settings.
#[derive(Debug, Serialize)]
pub struct CacheConfig {
    pub max_entries: u64,
    #[serde(flatten)]
    pub defaults: CacheSettings,
}

/// The lifetime rules of step 5 of the request flow, per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheSettings {
    #[serde(serialize_with = "serialize_duration")]
    pub max_ttl: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub default_ttl: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub early_expiry: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub refresh_ahead: Duration,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timeouts {
    #[serde(serialize_with = "serialize_duration")]
    pub upstream_connect: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub upstream_response: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub client_header_read: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub idle: Duration,
    /// A body that makes no progress this long, either way, ends both connections.
    #[serde(serialize_with = "serialize_duration")]
    pub body_idle: Duration,
    #[serde(serialize_with = "serialize_duration")]
    pub drain: Duration,
}

#[derive(Debug, Clone, Copy, Serialize)]
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

fn nowhere(message: impl Into<String>) -> Invalid {
    Invalid {
        location: None,
        message: message.into(),
    }
}

/// Checks a parsed file and builds the model; relative paths resolve against `base`.
pub fn validate(file: FileConfig, base: &Path) -> Result<Config, Invalid> {
    let mut watched: Vec<Arc<dyn Poll>> = Vec::new();
    let cache = cache_settings(&file.cache)?;
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
        let authority = super::authority::authority(name, spanned, base, &mut watched)?;
        authorities.insert(name.clone(), Arc::new(authority));
    }
    let listen = file
        .listen
        .map_or_else(|| ([127, 0, 0, 1], 15001).into(), |a| a.0);
    let mut routes: Vec<Arc<Route>> = Vec::with_capacity(file.routes.len());
    for (i, spanned) in file.routes.iter().enumerate() {
        let r = route(
            i,
            spanned,
            &authorities,
            &cache,
            &timeouts,
            base,
            &mut watched,
        )?;
        if points_at(&r.upstream, listen) {
            return Err(at(
                &spanned.value.upstream,
                format!(
                    "routes[{i}].upstream: {} is tokex's own listener; requests would loop",
                    r.upstream.url
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
            let sampling = t.sampling.unwrap_or(0.1);
            if !(0.0..=1.0).contains(&sampling) {
                return Err(nowhere("tracing.sampling must be between 0 and 1"));
            }
            Some(crate::otel::OtelSettings {
                otlp_endpoint: t.otlp_endpoint.0.as_str().trim_end_matches('/').to_string(),
                sampling,
                service_name: t
                    .service_name
                    .as_ref()
                    .map_or_else(|| "tokex".to_string(), |n| n.0.clone()),
            })
        }
    };
    Ok(Config {
        listen,
        admin: file
            .admin
            .map_or_else(|| ([127, 0, 0, 1], 15000).into(), |a| a.0),
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
        audit_file: file.audit.file.as_ref().map(|f| resolve(base, f)),
        tracing,
        watched,
        source: None,
    })
}

fn cache_settings(c: &FileCache) -> Result<CacheSettings, Invalid> {
    let s = CacheSettings {
        max_ttl: c.max_ttl.map_or(Duration::from_secs(600), |d| d.0),
        default_ttl: c.default_ttl.map_or(Duration::from_secs(60), |d| d.0),
        early_expiry: c.early_expiry.map_or(Duration::from_secs(30), |d| d.0),
        refresh_ahead: c.refresh_ahead.map_or(Duration::ZERO, |d| d.0),
    };
    check_cache(&s, "cache")?;
    Ok(s)
}

fn override_cache(
    base: &CacheSettings,
    o: &FileCacheOverride,
    path: &str,
) -> Result<CacheSettings, Invalid> {
    let s = CacheSettings {
        max_ttl: o.max_ttl.map_or(base.max_ttl, |d| d.0),
        default_ttl: o.default_ttl.map_or(base.default_ttl, |d| d.0),
        early_expiry: o.early_expiry.map_or(base.early_expiry, |d| d.0),
        refresh_ahead: o.refresh_ahead.map_or(base.refresh_ahead, |d| d.0),
    };
    check_cache(&s, path)?;
    Ok(s)
}

fn check_cache(s: &CacheSettings, path: &str) -> Result<(), Invalid> {
    if s.early_expiry >= s.max_ttl && !s.max_ttl.is_zero() {
        return Err(nowhere(format!(
            "{path}.early_expiry must be shorter than max_ttl, or no token would ever be cached"
        )));
    }
    Ok(())
}

fn route(
    i: usize,
    spanned: &Spanned<FileRoute>,
    authorities: &BTreeMap<String, Arc<Authority>>,
    cache: &CacheSettings,
    timeouts: &Timeouts,
    base: &Path,
    watched: &mut Vec<Arc<dyn Poll>>,
) -> Result<Route, Invalid> {
    let r = &spanned.value;
    let path = format!("routes[{i}]");
    let name = r.name.value.0.clone();
    check_name(&name).map_err(|m| at(&r.name, format!("{path}.name: {m}")))?;
    let host = match &r.matcher.host {
        None => None,
        Some(h) => Some(
            parse_host_match(&h.value.0).map_err(|m| at(h, format!("{path}.match.host: {m}")))?,
        ),
    };
    let path_prefix = match &r.matcher.path_prefix {
        None => None,
        Some(p) if !p.value.0.starts_with('/') => {
            return Err(at(
                p,
                format!("{path}.match.path_prefix must start with `/`"),
            ));
        }
        Some(p) if p.value.0.split('/').any(is_dot_segment) => {
            return Err(at(
                p,
                format!(
                    "{path}.match.path_prefix must not have dot segments (`.`, `..`, also as %2e): requests are matched after theirs are resolved, so it would never match"
                ),
            ));
        }
        Some(p) => Some(p.value.0.clone()),
    };
    if r.strip_prefix && path_prefix.is_none() {
        return Err(at(
            spanned,
            format!("{path}.strip_prefix needs match.path_prefix"),
        ));
    }
    let upstream =
        upstream(&r.upstream).map_err(|m| at(&r.upstream, format!("{path}.upstream: {m}")))?;
    let ca_file = super::authority::ca_bundle(
        r.ca_file.as_ref(),
        &format!("{path}.ca_file"),
        base,
        watched,
    )?;
    if r.on_missing_token == MissingTokenPolicy::ClientCredentials
        && matches!(r.exchange, FileExchange::None)
    {
        return Err(at(
            spanned,
            format!(
                "{path}.on_missing_token: client_credentials needs an exchange (its authority, audience and scope)"
            ),
        ));
    }
    let exchange = match &r.exchange {
        FileExchange::None => None,
        FileExchange::Spec(spec) => Some(exchange_params(spec, &path, authorities)?),
    };
    let cache = match &r.cache {
        Some(o) => override_cache(cache, o, &format!("{path}.cache")).map_err(|e| Invalid {
            location: Some(spanned.referenced),
            ..e
        })?,
        None => *cache,
    };
    Ok(Route {
        name,
        host,
        path_prefix,
        strip_prefix: r.strip_prefix,
        upstream,
        ca_file,
        on_missing_token: r.on_missing_token,
        exchange,
        cache,
        timeout: r.timeout.map_or(timeouts.upstream_response, |d| d.0),
        deadline: r.deadline.map(|d| d.0),
        retry_on_401: r.retry_on_401,
    })
}

fn exchange_params(
    spec: &super::file::FileExchangeSpec,
    path: &str,
    authorities: &BTreeMap<String, Arc<Authority>>,
) -> Result<ExchangeParams, Invalid> {
    let authority = spec.authority.value.0.clone();
    if !authorities.contains_key(&authority) {
        let known: Vec<&str> = authorities.keys().map(String::as_str).collect();
        return Err(at(
            &spec.authority,
            format!(
                "{path}.exchange.authority: unknown authority `{authority}` (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    if spec.audience.is_none() && spec.resource.is_none() {
        return Err(at(
            &spec.authority,
            format!(
                "{path}.exchange: give audience and/or resource, so the issued token is narrowed to the target"
            ),
        ));
    }
    let opt = |v: &Option<Spanned<Text>>, key: &str, check: fn(&str) -> Result<String, String>| {
        v.as_ref()
            .map(|s| check(&s.value.0).map_err(|m| at(s, format!("{path}.exchange.{key}: {m}"))))
            .transpose()
    };
    let token_type = |v: &Option<Spanned<Text>>, key: &str| {
        opt(v, key, absolute_uri).map(|t| t.unwrap_or_else(|| TOKEN_TYPE_ACCESS_TOKEN.to_string()))
    };
    Ok(ExchangeParams {
        authority,
        audience: opt(&spec.audience, "audience", non_empty)?,
        resource: opt(&spec.resource, "resource", resource_uri)?,
        scope: opt(&spec.scope, "scope", normalize_scope)?,
        subject_token_type: token_type(&spec.subject_token_type, "subject_token_type")?,
        requested_token_type: token_type(&spec.requested_token_type, "requested_token_type")?,
        subject_token_from: subject_source(spec.subject_token_from.as_ref()).map_err(|m| {
            at(
                &spec.authority,
                format!("{path}.exchange.subject_token_from: {m}"),
            )
        })?,
        inject: inject(spec.inject.as_ref())
            .map_err(|m| at(&spec.authority, format!("{path}.exchange.inject: {m}")))?,
    })
}

fn upstream(u: &Spanned<super::values::HttpUrl>) -> Result<Upstream, String> {
    let url = &u.value.0;
    if url.query().is_some() {
        return Err("a query string is not allowed".into());
    }
    let uri: http::Uri = url
        .as_str()
        .parse()
        .map_err(|e| format!("invalid URI: {e}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        return Err("an absolute URL is required".into());
    };
    Ok(Upstream {
        url: url.to_string(),
        scheme,
        authority,
        base_path: url.path().trim_end_matches('/').to_string(),
    })
}

/// Headers that can never carry or receive a token: connection-level or routing fields.
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "cookie",
];

fn header_name(raw: &str) -> Result<http::HeaderName, String> {
    let name = http::HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| format!("`{raw}` is not a header name"))?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!("`{raw}` cannot carry a token"));
    }
    Ok(name)
}

fn subject_source(f: Option<&super::file::FileSource>) -> Result<SubjectSource, String> {
    match f {
        None => Ok(SubjectSource::Authorization),
        Some(f) => match (&f.header, &f.cookie) {
            (Some(h), None) if h.0.eq_ignore_ascii_case("authorization") => {
                Ok(SubjectSource::Authorization)
            }
            (Some(h), None) => header_name(&h.0).map(SubjectSource::Header),
            (None, Some(c))
                if !c.0.is_empty()
                    && c.0
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) =>
            {
                Ok(SubjectSource::Cookie(c.0.clone()))
            }
            (None, Some(c)) => Err(format!("`{}` is not a cookie name", c.0)),
            _ => Err("give exactly one of header, cookie".into()),
        },
    }
}

fn inject(f: Option<&super::file::FileInject>) -> Result<Inject, String> {
    let header = match f.and_then(|f| f.header.as_ref()) {
        None => http::header::AUTHORIZATION,
        Some(h) if h.0.eq_ignore_ascii_case("authorization") => http::header::AUTHORIZATION,
        Some(h) => header_name(&h.0)?,
    };
    let scheme = match f.and_then(|f| f.scheme.as_ref()).map(|s| s.0.as_str()) {
        None => Some("Bearer".to_string()),
        Some("none") => None,
        Some(s)
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b)) =>
        {
            Some(s.to_string())
        }
        Some(s) => return Err(format!("`{s}` is not an authentication scheme")),
    };
    Ok(Inject { header, scheme })
}

/// Whether `upstream` names `listen` (same port, and the same or a loopback address
/// when tokex listens on loopback or on every address).
fn points_at(upstream: &Upstream, listen: SocketAddr) -> bool {
    let port =
        upstream
            .authority
            .port_u16()
            .unwrap_or(if upstream.scheme == http::uri::Scheme::HTTPS {
                443
            } else {
                80
            });
    if port != listen.port() || listen.port() == 0 {
        return false;
    }
    let host = upstream
        .authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip == listen.ip()
                || (ip.is_loopback() && (listen.ip().is_loopback() || listen.ip().is_unspecified()))
        }
        Err(_) => {
            host.eq_ignore_ascii_case("localhost")
                && (listen.ip().is_loopback() || listen.ip().is_unspecified())
        }
    }
}

fn parse_host_match(raw: &str) -> Result<HostMatch, String> {
    let lower = raw.to_ascii_lowercase();
    let (host, port) = match lower.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
            h.to_string(),
            Some(
                p.parse::<u16>()
                    .map_err(|_| format!("invalid port in `{raw}`"))?,
            ),
        ),
        _ => (lower.clone(), None),
    };
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    if !ok {
        return Err(format!("invalid host `{raw}`"));
    }
    Ok(HostMatch { host, port })
}

/// `.` or `..`, with any dot written `%2e` (RFC 3986 §2.3, §5.2.4).
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
    decoded == "." || decoded == ".."
}

pub(super) fn resolve(base: &Path, p: &PathText) -> PathBuf {
    if p.0.is_absolute() {
        p.0.clone()
    } else {
        base.join(&p.0)
    }
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

fn non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_string())
    }
}

pub(super) fn absolute_uri(v: &str) -> Result<String, String> {
    match url::Url::parse(v) {
        Ok(_) => Ok(v.to_string()),
        Err(_) => Err(format!("`{v}` is not an absolute URI")),
    }
}

/// RFC 8707 §2: an absolute URI without a fragment.
fn resource_uri(v: &str) -> Result<String, String> {
    let url = url::Url::parse(v).map_err(|_| format!("`{v}` is not an absolute URI"))?;
    if url.fragment().is_some() {
        return Err(format!("`{v}` must not have a fragment (RFC 8707 §2)"));
    }
    Ok(v.to_string())
}

/// RFC 6749 §3.3: space-separated scope-tokens of `%x21 / %x23-5B / %x5D-7E`.
pub fn normalize_scope(v: &str) -> Result<String, String> {
    let mut out: Vec<&str> = Vec::new();
    for token in v.split(' ').filter(|t| !t.is_empty()) {
        if !token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        {
            return Err(format!("invalid scope token `{token}` (RFC 6749 §3.3)"));
        }
        if !out.contains(&token) {
            out.push(token);
        }
    }
    if out.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Host matches keep a port only when one is given, and lowercase the name.
    #[test]
    fn host_match_parsing() {
        assert_eq!(
            parse_host_match("Payments.Internal").unwrap(),
            HostMatch {
                host: "payments.internal".into(),
                port: None
            }
        );
        assert_eq!(
            parse_host_match("a.b:8080").unwrap(),
            HostMatch {
                host: "a.b".into(),
                port: Some(8080)
            }
        );
        assert!(parse_host_match("a.b:99999").is_err());
        assert!(parse_host_match("bad host").is_err());
    }

    /// A route whose upstream is tokex's own listener is refused: it would loop.
    #[test]
    fn upstream_loop_is_refused() {
        let cfg = |listen: &str, upstream: &str| {
            let text = format!(
                "listen: {listen}\nroutes:\n  - {{name: a, upstream: '{upstream}', exchange: none}}\n"
            );
            crate::config::parse(&text, Path::new("t.yaml"))
        };
        let err = cfg("127.0.0.1:15001", "http://127.0.0.1:15001/x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes[0].upstream") && err.contains("loop"),
            "{err}"
        );
        assert!(cfg("0.0.0.0:15001", "http://localhost:15001").is_err());
        assert!(cfg("127.0.0.1:15001", "http://127.0.0.1:15002").is_ok());
        assert!(
            cfg("127.0.0.1:0", "http://127.0.0.1:0").is_ok(),
            "ephemeral listen cannot be compared"
        );
    }

    /// A path prefix with dot segments is refused: requests are matched once theirs are
    /// resolved, so such a route could never match; dots inside names are fine.
    #[test]
    fn path_prefix_with_dot_segments_is_refused() {
        let cfg = |prefix: &str| {
            let text = format!(
                "routes:\n  - {{name: a, match: {{path_prefix: '{prefix}'}}, upstream: 'http://u', exchange: none}}\n"
            );
            crate::config::parse(&text, Path::new("t.yaml"))
        };
        for dotted in ["/a/..", "/.", "/api/../admin/", "/a/%2E%2e/b", "/a/./b"] {
            let err = cfg(dotted).unwrap_err().to_string();
            assert!(
                err.contains("routes[0].match.path_prefix") && err.contains("dot segment"),
                "{dotted}: {err}"
            );
        }
        for plain in ["/", "/v1.2/", "/a/...", "/.well-known"] {
            assert!(cfg(plain).is_ok(), "{plain}");
        }
    }

    /// Scopes are validated per RFC 6749 §3.3 and normalised to single spaces.
    #[test]
    fn scope_normalisation() {
        assert_eq!(normalize_scope("a  b a").unwrap(), "a b");
        assert!(normalize_scope("a \"b\"").is_err());
        assert!(normalize_scope("   ").is_err());
    }
}
