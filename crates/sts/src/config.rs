//! The embedded STS's YAML configuration, validated like the sidecar's:
//! unknown keys are errors and every error names file, line, column and key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::policy::{ClaimRule, ClaimTest, ClaimsTransform, Policy};
use tokex_common::located::{ConfigError, located};
use tokex_common::located::{Invalid, at, resolve};
use tokex_common::secret::Secret;
use tokex_common::values::{Addr, Dur, HttpUrl, PathText, Text};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSts {
    listen: Option<Addr>,
    public_url: Option<HttpUrl>,
    realms: BTreeMap<String, Spanned<FileRealm>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRealm {
    issuer: Option<Text>,
    #[serde(default)]
    signing_key: FileSigningKey,
    token_ttl: Option<Dur>,
    #[serde(default)]
    trust: Vec<Spanned<FileTrust>>,
    #[serde(default)]
    clients: BTreeMap<String, Spanned<FileClient>>,
    #[serde(default)]
    scope_mapping: BTreeMap<String, Vec<Text>>,
    #[serde(default)]
    claim_rules: Vec<Spanned<FileClaimRule>>,
    #[serde(default)]
    claims: FileClaims,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSigningKey {
    alg: Option<Spanned<SigningAlg>>,
    key_file: Option<Spanned<PathText>>,
    key_id: Option<Text>,
}

/// Signing algorithms a realm can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    ES256,
    RS256,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTrust {
    realm: Option<Text>,
    issuer: Option<Text>,
    jwks_url: Option<HttpUrl>,
    jwks_file: Option<Spanned<PathText>>,
    /// Omitted: the issuer's tokens count only as authorization grants (jwt-bearer).
    #[serde(default)]
    audiences: Vec<Text>,
}

/// Grants a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    ClientCredentials,
    TokenExchange,
    /// RFC 7523 §2.1: a JWT from a trusted issuer, addressed to this realm, as the grant.
    JwtBearer,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClient {
    client_secret: Option<Text>,
    client_secret_file: Option<Spanned<PathText>>,
    jwks_file: Option<Spanned<PathText>>,
    grants: Vec<Grant>,
    #[serde(default)]
    audiences: Vec<Text>,
    #[serde(default)]
    resources: Vec<Text>,
    scopes: Option<Vec<Text>>,
    subject: Option<Text>,
    #[serde(default)]
    claims: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClaimRule {
    claim: Text,
    contains: Option<Text>,
    equals: Option<serde_json::Value>,
    grant: Vec<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClaims {
    #[serde(default)]
    copy: Vec<Text>,
    #[serde(default)]
    rename: BTreeMap<String, Text>,
}

/// A validated STS config.
#[derive(Debug)]
pub struct StsConfig {
    pub listen: SocketAddr,
    /// Base of derived issuers; defaults to `http://<bound address>`.
    pub public_url: Option<String>,
    pub realms: BTreeMap<String, RealmConfig>,
}

#[derive(Debug)]
pub struct RealmConfig {
    pub name: String,
    pub issuer: Option<String>,
    pub alg: SigningAlg,
    pub key_file: Option<PathBuf>,
    pub key_id: Option<String>,
    pub token_ttl: Duration,
    pub trust: Vec<TrustConfig>,
    pub clients: BTreeMap<String, ClientConfig>,
    pub policy: Policy,
}

/// Whose tokens a realm accepts as subject and actor tokens.
#[derive(Debug)]
pub struct TrustConfig {
    pub source: TrustSource,
    /// Required unless the source is a realm (whose issuer is known).
    pub issuer: Option<String>,
    /// A trusted subject or actor token must be addressed to one of these; none: the
    /// issuer's tokens are accepted only as authorization grants addressed to the realm.
    pub audiences: Vec<String>,
}

#[derive(Debug)]
pub enum TrustSource {
    Realm(String),
    JwksUrl(String),
    Jwks(JwkSet),
}

#[derive(Debug)]
pub struct ClientConfig {
    pub id: String,
    pub secret: Option<Secret>,
    pub jwks: Option<JwkSet>,
    pub grants: Vec<Grant>,
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    pub scopes: Option<Vec<String>>,
    pub subject: Option<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Loads and validates an STS config file.
pub fn load(path: &Path) -> Result<StsConfig, ConfigError> {
    let file: FileSts = tokex_common::located::load_yaml(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(file, base).map_err(|e| located(path, e.location, e.message))
}

/// Parses config text (for the demo and tests, which build configs in memory).
pub fn parse(text: &str, path: &Path) -> Result<StsConfig, ConfigError> {
    let file: FileSts =
        tokex_common::yaml::from_yaml(text).map_err(|(loc, msg)| located(path, loc, msg))?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(file, base).map_err(|e| located(path, e.location, e.message))
}

fn texts(v: &[Text]) -> Vec<String> {
    v.iter().map(|t| t.0.clone()).collect()
}

fn validate(file: FileSts, base: &Path) -> Result<StsConfig, Invalid> {
    let mut realms = BTreeMap::new();
    for (name, spanned) in &file.realms {
        let r = &spanned.value;
        let path = format!("realms.{name}");
        let mut trust = Vec::new();
        for (i, t) in r.trust.iter().enumerate() {
            let tp = format!("{path}.trust[{i}]");
            let v = &t.value;
            let source = match (&v.realm, &v.jwks_url, &v.jwks_file) {
                (Some(realm), None, None) => {
                    if !file.realms.contains_key(&realm.0) {
                        return Err(at(t, format!("{tp}.realm: unknown realm `{}`", realm.0)));
                    }
                    TrustSource::Realm(realm.0.clone())
                }
                (None, Some(url), None) => TrustSource::JwksUrl(url.0.to_string()),
                (None, None, Some(f)) => TrustSource::Jwks(
                    read_jwks(&resolve(base, &f.value))
                        .map_err(|m| at(f, format!("{tp}.jwks_file: {m}")))?,
                ),
                _ => {
                    return Err(at(
                        t,
                        format!("{tp}: give exactly one of realm, jwks_url, jwks_file"),
                    ));
                }
            };
            if !matches!(source, TrustSource::Realm(_)) && v.issuer.is_none() {
                return Err(at(
                    t,
                    format!("{tp}.issuer is required with jwks_url or jwks_file"),
                ));
            }
            if v.audiences.iter().any(|a| a.0.is_empty()) {
                return Err(at(t, format!("{tp}.audiences: an audience is never empty")));
            }
            trust.push(TrustConfig {
                source,
                issuer: v.issuer.as_ref().map(|i| i.0.clone()),
                audiences: texts(&v.audiences),
            });
        }
        let mut clients = BTreeMap::new();
        for (id, c) in &r.clients {
            clients.insert(
                id.clone(),
                client(id, c, &format!("{path}.clients.{id}"), base)?,
            );
        }
        let mut claim_rules = Vec::new();
        for (i, rule) in r.claim_rules.iter().enumerate() {
            let v = &rule.value;
            let test = match (&v.contains, &v.equals) {
                (Some(c), None) => ClaimTest::Contains(c.0.clone()),
                (None, Some(e)) => ClaimTest::Equals(e.clone()),
                _ => {
                    return Err(at(
                        rule,
                        format!("{path}.claim_rules[{i}]: give exactly one of contains, equals"),
                    ));
                }
            };
            claim_rules.push(ClaimRule {
                claim: v.claim.0.clone(),
                test,
                grant: texts(&v.grant),
            });
        }
        let policy = Policy {
            scope_mapping: r
                .scope_mapping
                .iter()
                .map(|(k, v)| (k.clone(), texts(v)))
                .collect(),
            claim_rules,
            claims: ClaimsTransform {
                copy: texts(&r.claims.copy),
                rename: r
                    .claims
                    .rename
                    .iter()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
            },
        };
        let key_file = r
            .signing_key
            .key_file
            .as_ref()
            .map(|f| resolve(base, &f.value));
        realms.insert(
            name.clone(),
            RealmConfig {
                name: name.clone(),
                issuer: r.issuer.as_ref().map(|i| i.0.clone()),
                alg: r
                    .signing_key
                    .alg
                    .as_ref()
                    .map_or(SigningAlg::ES256, |a| a.value),
                key_file,
                key_id: r.signing_key.key_id.as_ref().map(|k| k.0.clone()),
                token_ttl: r.token_ttl.map_or(Duration::from_secs(300), |d| d.0),
                trust,
                clients,
                policy,
            },
        );
    }
    Ok(StsConfig {
        listen: file
            .listen
            .map_or_else(|| ([127, 0, 0, 1], 8400).into(), |a| a.0),
        public_url: file
            .public_url
            .map(|u| u.0.as_str().trim_end_matches('/').to_string()),
        realms,
    })
}

fn client(
    id: &str,
    c: &Spanned<FileClient>,
    path: &str,
    base: &Path,
) -> Result<ClientConfig, Invalid> {
    let v = &c.value;
    let secret = match (&v.client_secret, &v.client_secret_file) {
        (Some(_), Some(f)) => {
            return Err(at(
                f,
                format!("{path}: give client_secret or client_secret_file, not both"),
            ));
        }
        (Some(s), None) => Some(Secret::new(s.0.as_str())),
        (None, Some(f)) => Some(
            read_file_secret(&resolve(base, &f.value))
                .map_err(|m| at(f, format!("{path}.client_secret_file: {m}")))?,
        ),
        (None, None) => None,
    };
    let jwks = match &v.jwks_file {
        None => None,
        Some(f) => Some(
            read_jwks(&resolve(base, &f.value))
                .map_err(|m| at(f, format!("{path}.jwks_file: {m}")))?,
        ),
    };
    if secret.is_none() && jwks.is_none() {
        return Err(at(
            c,
            format!("{path}: give client_secret, client_secret_file or jwks_file"),
        ));
    }
    if v.grants.is_empty() {
        return Err(at(c, format!("{path}.grants must name at least one grant")));
    }
    Ok(ClientConfig {
        id: id.to_string(),
        secret,
        jwks,
        grants: v.grants.clone(),
        audiences: texts(&v.audiences),
        resources: texts(&v.resources),
        scopes: v.scopes.as_ref().map(|s| texts(s)),
        subject: v.subject.as_ref().map(|s| s.0.clone()),
        claims: v
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

fn read_file_secret(path: &Path) -> Result<Secret, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    tokex_common::credentials::parse_secret(path, &bytes)
}

fn read_jwks(path: &Path) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a JWK Set: {e}", path.display()))
}
