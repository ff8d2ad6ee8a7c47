//! The configuration file as written: serde structs that mirror the YAML configuration.
//!
//! Nothing here is used by the proxy directly; [`super::validate`] turns it into the
//! validated model, [`super::model`]. Every struct denies unknown keys, and values that
//! can be checked on their own are checked while parsing (see [`tokex_common::values`]) so
//! errors carry a location.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

mod authority;
mod chain;
mod shared;
mod transparent;

pub use authority::{AuthMethod, FileActorToken, FileAuth, FileAuthority, FileBreaker};
pub use chain::FileLeg;
pub use shared::{FileFleetLock, FileSharedCache};
pub use transparent::{FileTransparent, Unmatched};

use tokex_common::values::{Addr, Dur, HttpUrl, PathText, Text};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<Addr>,
    pub admin: Option<Addr>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, FileAuthority>")]
    pub authorities: BTreeMap<String, Spanned<FileAuthority>>,
    #[schemars(with = "Vec<FileRoute>")]
    pub routes: Vec<Spanned<FileRoute>>,
    #[serde(default)]
    pub cache: FileCache,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub audit: FileAudit,
    pub tracing: Option<FileTracing>,
    #[serde(default)]
    pub tls: FileTls,
    pub transparent: Option<FileTransparent>,
}

/// Optional: trust roots for every token endpoint and upstream.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// PEM trust roots added for every authority and upstream.
    #[schemars(with = "Option<PathText>")]
    pub ca_file: Option<Spanned<PathText>>,
    /// The base set of roots; `SSL_CERT_FILE`, when set, replaces it.
    #[schemars(with = "Option<Roots>")]
    pub roots: Option<Spanned<Roots>>,
}

/// The base set of trust roots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
pub enum Roots {
    /// The Mozilla roots compiled into tokex.
    #[default]
    #[serde(rename = "webpki")]
    Webpki,
    /// The operating system's store.
    #[serde(rename = "system")]
    System,
    /// Both.
    #[serde(rename = "webpki+system")]
    WebpkiAndSystem,
}

/// Optional: OpenTelemetry traces over OTLP/HTTP, on with this section or an
/// `OTEL_EXPORTER_OTLP_ENDPOINT`. A key written here wins over its `OTEL_*` variable.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTracing {
    /// OTLP/HTTP base URL; spans are POSTed to `{otlp_endpoint}/v1/traces`. Default: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, then `http://localhost:4318`.
    pub otlp_endpoint: Option<HttpUrl>,
    /// Ratio (0 to 1) of new traces to record; traces the app sampled are always followed. Default: `OTEL_TRACES_SAMPLER`, then 0.1.
    pub sampling: Option<f64>,
    /// The `service.name` resource attribute. Default: `OTEL_SERVICE_NAME`, then `tokex`.
    pub service_name: Option<Text>,
}

/// Optional: the audit trail (docs/audit.md).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub cache_hits: bool,
    /// Write audit events to this file (JSON lines) instead of the log.
    pub file: Option<PathText>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    #[schemars(with = "Text")]
    pub name: Spanned<Text>,
    #[serde(default, rename = "match")]
    pub matcher: FileMatch,
    #[serde(default)]
    pub strip_prefix: bool,
    /// Left out on a route for redirected connections: the request goes to the address
    /// the app was connecting to, and only when its `Host` resolves there.
    #[schemars(with = "Option<HttpUrl>")]
    pub upstream: Option<Spanned<HttpUrl>>,
    #[schemars(with = "Option<PathText>")]
    pub ca_file: Option<Spanned<PathText>>,
    #[serde(default)]
    pub on_missing_token: MissingTokenPolicy,
    pub exchange: FileExchange,
    pub cache: Option<FileCacheOverride>,
    pub timeout: Option<Dur>,
    pub deadline: Option<Dur>,
    #[serde(default)]
    pub retry_on_401: bool,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    #[schemars(with = "Option<Text>")]
    pub host: Option<Spanned<Text>>,
    #[schemars(with = "Option<Text>")]
    pub path_prefix: Option<Spanned<Text>>,
    /// Where a transparently redirected connection was going: `IP:PORT`, `CIDR`,
    /// `CIDR:PORT` (IPv6 in brackets when a port follows).
    #[schemars(with = "Option<Text>")]
    pub destination: Option<Spanned<Text>>,
}

/// What a route does when the request carries no bearer token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingTokenPolicy {
    /// Answer 401 `missing_token`.
    #[default]
    Reject,
    /// Forward without any `Authorization` header.
    Forward,
    /// Send tokex's own token from a `client_credentials` grant at the route's
    /// authority (audience, resource and scope from the route).
    ClientCredentials,
}

/// The grant of a route's exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FileGrant {
    /// RFC 8693 token exchange.
    TokenExchange,
    /// RFC 7523 §2.1, the subject token as the assertion.
    JwtBearer,
}

/// `exchange: none`, or the exchange parameters of a route.
#[derive(Debug)]
pub enum FileExchange {
    None,
    Spec(Box<FileExchangeSpec>),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileExchangeSpec {
    /// The authority of a one-step exchange; with `chain`, each leg names its own.
    #[schemars(with = "Option<Text>")]
    pub authority: Option<Spanned<Text>>,
    /// Identity chaining across two authorities, instead of `authority` and the
    /// parameters beside it: exactly two legs.
    #[schemars(with = "Option<Vec<FileLeg>>")]
    pub chain: Option<Spanned<Vec<FileLeg>>>,
    #[schemars(with = "Option<Text>")]
    pub audience: Option<Spanned<Text>>,
    #[schemars(with = "Option<Text>")]
    pub resource: Option<Spanned<Text>>,
    #[schemars(with = "Option<Text>")]
    pub scope: Option<Spanned<Text>>,
    #[schemars(with = "Option<Text>")]
    pub subject_token_type: Option<Spanned<Text>>,
    #[schemars(with = "Option<Text>")]
    pub requested_token_type: Option<Spanned<Text>>,
    /// `token-exchange` (RFC 8693, the default) or `jwt-bearer` (RFC 7523 §2.1: the
    /// subject token is sent as the `assertion`).
    #[schemars(with = "Option<FileGrant>")]
    pub grant: Option<Spanned<FileGrant>>,
    /// Form parameters added to the token request as written, e.g.
    /// `requested_token_use: on_behalf_of`; never one that tokex sets itself.
    #[schemars(with = "Option<BTreeMap<String, Text>>")]
    pub extra_params: Option<BTreeMap<String, Spanned<Text>>>,
    pub subject_token_from: Option<FileSource>,
    pub inject: Option<FileInject>,
}

impl JsonSchema for FileExchange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Exchange".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let spec = generator.subschema_for::<FileExchangeSpec>();
        schemars::json_schema!({
            "description": "`none` (forward without any Authorization), or the exchange parameters",
            "oneOf": [{ "const": "none" }, spec]
        })
    }
}

impl<'de> Deserialize<'de> for FileExchange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written rather than `untagged` so that a typo inside the map still gets
        // serde's precise "unknown field" error instead of "no variant matched".
        struct ExchangeVisitor;
        impl<'de> Visitor<'de> for ExchangeVisitor {
            type Value = FileExchange;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`none` or a map with `authority` and the exchange parameters")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "none" => Ok(FileExchange::None),
                    other => Err(E::custom(format!(
                        "invalid exchange `{other}`: expected `none` or a map"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let spec =
                    FileExchangeSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FileExchange::Spec(Box::new(spec)))
            }
        }
        d.deserialize_any(ExchangeVisitor)
    }
}

/// Where the subject token comes from, when not `Authorization: Bearer`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// A request header holding the token itself (e.g. `X-Forwarded-Access-Token`).
    pub header: Option<Text>,
    /// A cookie holding the token.
    pub cookie: Option<Text>,
}

/// Where and how the issued token goes on the upstream request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileInject {
    /// Default `Authorization`.
    pub header: Option<Text>,
    /// Default `Bearer`; `none` puts the token alone in the header.
    pub scheme: Option<Text>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    pub max_entries: Option<u64>,
    #[schemars(with = "Option<Dur>")]
    pub max_ttl: Option<Spanned<Dur>>,
    pub default_ttl: Option<Dur>,
    #[schemars(with = "Option<Dur>")]
    pub early_expiry: Option<Spanned<Dur>>,
    pub refresh_ahead: Option<Dur>,
    /// Optional: a second level on Redis or Valkey, shared by a workload's replicas.
    #[schemars(with = "Option<FileSharedCache>")]
    pub shared: Option<Spanned<FileSharedCache>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileCacheOverride {
    #[schemars(with = "Option<Dur>")]
    pub max_ttl: Option<Spanned<Dur>>,
    pub default_ttl: Option<Dur>,
    #[schemars(with = "Option<Dur>")]
    pub early_expiry: Option<Spanned<Dur>>,
    pub refresh_ahead: Option<Dur>,
}

/// Optional: timeouts for the listener and upstream side (the AS side is per authority).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub upstream_connect: Option<Dur>,
    pub upstream_response: Option<Dur>,
    pub client_header_read: Option<Dur>,
    pub idle: Option<Dur>,
    pub body_idle: Option<Dur>,
    pub drain: Option<Dur>,
}

/// Optional: bounds past which tokex answers 503 `overloaded` instead of queueing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_connections: Option<u32>,
    pub max_concurrent_exchanges: Option<u32>,
}
