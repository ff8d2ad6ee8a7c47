//! The validated configuration the proxy runs on: types only, built from the file model by
//! [`super::validate`].
//!
//! Everything the request path needs is resolved once: URLs split into parts, secrets and
//! CA bundles read from their files, defaults filled in, references between routes and
//! authorities checked. A [`Config`] that exists is a config that can run. The runtime
//! modules read these types; nothing here depends on them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::credentials::assertion::AssertionKey;
use crate::credentials::certs::{CaBundle, ClientIdentity};
use crate::credentials::fleet_keys::FleetKeys;
use crate::credentials::{Poll, Watched};
use crate::secret::Secret;

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
    pub audit: AuditSettings,
    pub tracing: Option<TracingSettings>,
    pub tls: TlsSettings,
    /// Transparent interception, when the config has the section.
    pub transparent: Option<Transparent>,
    /// Where audit events go as JSON lines; `None`: into the log.
    pub audit_file: Option<PathBuf>,
    /// Every credential file, for the rotation poller.
    pub watched: Vec<Arc<dyn Poll>>,
    /// The file this config was loaded from, stamped before it was read: a change
    /// to it, even one made during the load, reloads the config.
    pub source: Option<Watched<()>>,
}

/// Audit settings (`audit:` in the config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditSettings {
    pub enabled: bool,
    /// Also audit requests served from the cache (one event per request: high volume).
    pub cache_hits: bool,
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
    pub roots: Roots,
    pub ca_file: Option<PathBuf>,
    /// `SSL_CERT_FILE` when it was set: the root set, replacing `roots`.
    pub ssl_cert_file: Option<PathBuf>,
}

/// The base set of trust roots (`tls.roots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// The Mozilla roots compiled into tokex.
    Webpki,
    /// The operating system's store.
    System,
    /// Both.
    WebpkiAndSystem,
}

/// Transparent interception as it applies (`transparent`): what `tokex init` redirects,
/// where it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transparent {
    pub listen: SocketAddr,
    /// Destination ports to intercept; empty: all but `exclude_ports`.
    pub ports: Vec<u16>,
    pub exclude_ports: Vec<u16>,
    pub exclude_cidrs: Vec<IpNet>,
    pub proxy_uid: u32,
    pub unmatched: Unmatched,
}

/// What happens to intercepted traffic no route takes, and to TLS and other protocols
/// tokex cannot rewrite (`transparent.unmatched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Relayed to where the app sent it, unchanged: no token work at all.
    Passthrough,
    /// Refused: 403 `no_route` for HTTP, a closed connection for anything else.
    Reject,
}

/// A `match.destination`: a network, and a port when the config gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestinationMatch {
    pub net: IpNet,
    pub port: Option<u16>,
}

/// As the file writes it, so `tokex check` prints what loads back.
impl std::fmt::Display for DestinationMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let single = self.net.prefix_len() == self.net.max_prefix_len();
        let net = if single {
            self.net.addr().to_string()
        } else {
            self.net.to_string()
        };
        match (self.port, self.net) {
            (None, _) => f.write_str(&net),
            (Some(p), IpNet::V6(_)) => write!(f, "[{net}]:{p}"),
            (Some(p), IpNet::V4(_)) => write!(f, "{net}:{p}"),
        }
    }
}

impl DestinationMatch {
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.net.contains(&canonical(addr.ip())) && self.port.is_none_or(|p| p == addr.port())
    }
}

/// An IPv4 peer seen on an IPv6 socket (`::ffff:10.0.0.1`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An authorization server tokex exchanges tokens at.
#[derive(Debug)]
pub struct Authority {
    pub name: String,
    pub token_endpoint: String,
    /// Configured by issuer alone: the URL whose metadata names the token endpoint
    /// (empty until [`crate::discovery`] fills it in).
    pub discover: Option<url::Url>,
    /// `token_endpoint_auth_methods_supported` of discovered metadata.
    pub discovered_auth_methods: Vec<String>,
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
    pub circuit_breaker: BreakerSettings,
}

/// How tokex authenticates at a token endpoint (`auth.method`); [`crate::client_auth`]
/// makes what one request carries from it.
#[derive(Debug)]
pub enum ClientAuth {
    ClientSecretBasic {
        client_secret: Watched<Secret>,
    },
    ClientSecretPost {
        client_secret: Watched<Secret>,
    },
    PrivateKeyJwt {
        private_key: Watched<AssertionKey>,
        audience: String,
    },
    ClientAssertion {
        assertion: Watched<Secret>,
        assertion_type: String,
    },
    TlsClientAuth {
        identity: Watched<ClientIdentity>,
    },
    None,
}

/// Circuit breaker settings (`authorities.*.circuit_breaker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive transient failures that open the circuit; 0 disables the breaker.
    pub failures: u32,
    /// How long the circuit stays open before one probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(5),
        }
    }
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
    pub destination: Option<DestinationMatch>,
    pub strip_prefix: bool,
    /// `None`: the original destination of a redirected connection, for a request whose
    /// `Host` resolves to it (the route then takes only redirected connections).
    pub upstream: Option<UpstreamUrl>,
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

/// What a route does when the request carries no subject token (`on_missing_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingTokenPolicy {
    /// Answer 401 `missing_token`.
    Reject,
    /// Forward without any `Authorization` header.
    Forward,
    /// Send tokex's own token from a `client_credentials` grant at the route's
    /// authority (audience, resource and scope from the route).
    ClientCredentials,
}

/// A `match.host`: a lowercase name, and a port only when the config gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMatch {
    pub host: String,
    pub port: Option<u16>,
}

/// Where a route forwards to: its URL, split into what requests need.
#[derive(Debug)]
pub struct UpstreamUrl {
    pub url: String,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// The URL's path without a trailing `/`, prefixed to every forwarded path.
    pub base_path: String,
}

/// The parameters of a route's exchange: RFC 8693 §2.1, or RFC 7523 §2.1 for `jwt-bearer`.
#[derive(Debug)]
pub struct ExchangeParams {
    pub authority: String,
    pub grant: Grant,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub subject_token_type: String,
    pub requested_token_type: String,
    /// Form parameters sent after tokex's own (`extra_params`), sorted by name; none of
    /// them is one tokex sets.
    pub extra_params: Vec<(String, String)>,
    pub subject_token_from: SubjectSource,
    pub inject: Inject,
    /// With `exchange.chain`, these are the second leg's parameters (a jwt-bearer grant)
    /// and this the first's: the token exchange whose JWT grant is the assertion.
    pub first_leg: Option<Box<ExchangeParams>>,
}

/// The grant a route's exchange uses (`exchange.grant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// RFC 8693 token exchange.
    TokenExchange,
    /// RFC 7523 §2.1: the subject token is the `assertion`; the response is an RFC 6749
    /// §5.1 access token response. Microsoft Entra's on-behalf-of flow is this grant
    /// with `requested_token_use=on_behalf_of`.
    JwtBearer,
}

impl Grant {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::TokenExchange => "token-exchange",
            Grant::JwtBearer => "jwt-bearer",
        }
    }
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
    /// The second level shared by a workload's replicas (`cache.shared`).
    pub shared: Option<SharedCacheSettings>,
}

/// A Redis or Valkey server that a workload's replicas share exchanged tokens through.
#[derive(Debug)]
pub struct SharedCacheSettings {
    /// The URL as written (it holds no password).
    pub url: String,
    pub host: String,
    pub port: u16,
    /// `rediss://`: TLS, verified against `ca_file` and the `tls` section's roots.
    pub tls: bool,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<Watched<Secret>>,
    /// `None`: the webpki roots alone.
    pub ca_file: Option<Watched<CaBundle>>,
    pub keys: Watched<FleetKeys>,
    /// Bounds each lookup, lock and write, connecting included.
    pub timeout: Duration,
    pub lock: Option<FleetLock>,
    pub circuit_breaker: BreakerSettings,
}

/// The fleet-wide single flight (`cache.shared.lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetLock {
    pub poll_interval: Duration,
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
