//! An authority as written: its token endpoint, client authentication (RFC 6749 §2.3,
//! RFC 7523, RFC 8705), actor token, timeouts and circuit breaker.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use tokex_common::values::{Dur, HttpUrl, PathText, Text};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAuthority {
    /// Left out: read from the `issuer`'s RFC 8414 / OpenID metadata at start and reload.
    #[schemars(with = "Option<HttpUrl>")]
    pub token_endpoint: Option<Spanned<HttpUrl>>,
    /// Allow a plain `http` token endpoint on a non-loopback host.
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[schemars(with = "Option<Text>")]
    pub issuer: Option<Spanned<Text>>,
    pub client_id: Text,
    pub auth: FileAuth,
    pub actor_token: Option<FileActorToken>,
    #[schemars(with = "Option<PathText>")]
    pub ca_file: Option<Spanned<PathText>>,
    /// The whole exchange, retries included.
    pub timeout: Option<Dur>,
    /// One attempt; default and at most `timeout`.
    #[schemars(with = "Option<Dur>")]
    pub attempt_timeout: Option<Spanned<Dur>>,
    pub retries: Option<u32>,
    pub circuit_breaker: Option<FileBreaker>,
}

/// Optional: when to stop calling a failing authority for a while.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBreaker {
    pub failures: Option<u32>,
    pub open_for: Option<Dur>,
}

/// Client authentication methods (RFC 6749 §2.3, RFC 7523, RFC 8705).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    ClientAssertion,
    TlsClientAuth,
    None,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileAuth {
    #[schemars(with = "AuthMethod")]
    pub method: Spanned<AuthMethod>,
    pub client_secret: Option<Text>,
    #[schemars(with = "Option<PathText>")]
    pub client_secret_file: Option<Spanned<PathText>>,
    #[schemars(with = "Option<PathText>")]
    pub private_key_file: Option<Spanned<PathText>>,
    pub alg: Option<Text>,
    pub key_id: Option<Text>,
    /// `private_key_jwt`: the assertion's `aud`; default the issuer, else the token endpoint URL.
    pub audience: Option<Text>,
    #[schemars(with = "Option<PathText>")]
    pub assertion_file: Option<Spanned<PathText>>,
    pub assertion_type: Option<Text>,
    #[schemars(with = "Option<PathText>")]
    pub cert_file: Option<Spanned<PathText>>,
    #[schemars(with = "Option<PathText>")]
    pub key_file: Option<Spanned<PathText>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileActorToken {
    #[schemars(with = "PathText")]
    pub file: Spanned<PathText>,
    #[serde(rename = "type")]
    #[schemars(with = "Option<Text>")]
    pub token_type: Option<Spanned<Text>>,
}
