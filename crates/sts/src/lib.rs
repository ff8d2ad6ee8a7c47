//! The authorization server embedded in tokex (`tokex sts`, `tokex demo`, and the
//! tests' authorization server): several realms in one process, each with its issuer,
//! signing key, JWKS, RFC 8414 metadata and token endpoint. A crate of its own, so the
//! sidecar's library holds no signing keys and no token endpoint.
//!
//! Layout: [`config`] is the YAML model, [`keys`] the signing keys, [`verify`] the trust
//! relationships, [`policy`] scope mapping, claim rules and delegation, [`grant`] the
//! token endpoint. Routes, per realm `{name}`:
//!
//! - `GET  /realms/{name}/.well-known/oauth-authorization-server` (and the RFC 8414 §3.1
//!   form `/.well-known/oauth-authorization-server/realms/{name}`)
//! - `GET  /realms/{name}/jwks`
//! - `POST /realms/{name}/token`
#![forbid(unsafe_code)]

pub mod config;
pub mod grant;
pub mod keys;
pub mod policy;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use self::config::{RealmConfig, StsConfig, TrustSource};
use self::keys::{KeyError, SigningKey};
use self::verify::{Keys, Trusted};
use tokex_common::oauth::{
    GRANT_TYPE_CLIENT_CREDENTIALS, GRANT_TYPE_JWT_BEARER, GRANT_TYPE_TOKEN_EXCHANGE,
};

/// Largest token request body accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Why the STS could not start.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    #[error("realm {0}: {1}")]
    Key(String, #[source] KeyError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("realm {0} trusts unknown realm {1}")]
    UnknownRealm(String, String),
    #[error("building the TLS config: {0}")]
    Tls(#[from] rustls::Error),
}

/// One realm, ready to serve.
pub struct Realm {
    pub config: RealmConfig,
    pub issuer: String,
    /// Where this realm is served (`{base}/realms/{name}`); differs from `issuer` when a
    /// custom issuer is configured, and the published endpoints must be real URLs.
    pub url: String,
    pub key: SigningKey,
    trusted: Vec<Trusted>,
    /// `jti`s of client assertions seen, until they expire (RFC 7523 §3 replay check).
    jtis: Mutex<HashMap<String, u64>>,
}

impl Realm {
    /// Records an assertion `jti`; false if it was already used.
    fn remember_jti(&self, client: &str, jti: &str, exp: u64) -> bool {
        let now = tokex_common::clock::unix_now();
        let Ok(mut seen) = self.jtis.lock() else {
            return false;
        };
        seen.retain(|_, e| *e + 60 >= now);
        seen.insert(format!("{client}\u{0}{jti}"), exp).is_none()
    }
}

/// The authorization server: its realms and a client for fetching remote JWKS.
pub struct Sts {
    pub realms: BTreeMap<String, Arc<Realm>>,
    http: reqwest::Client,
}

impl Sts {
    /// Builds every realm; `base_url` (e.g. `http://127.0.0.1:8400`) anchors derived issuers.
    pub fn new(config: StsConfig, base_url: &str) -> Result<Arc<Self>, StsError> {
        let base = config
            .public_url
            .clone()
            .unwrap_or_else(|| base_url.trim_end_matches('/').to_string());
        let http = tokex_common::tls::reqwest_builder(None, None)?
            .timeout(Duration::from_secs(5))
            .build()?;
        let mut keys = BTreeMap::new();
        let mut issuers = BTreeMap::new();
        for (name, r) in &config.realms {
            let key =
                SigningKey::load_or_generate(r.alg, r.key_file.as_deref(), r.key_id.as_deref())
                    .map_err(|e| StsError::Key(name.clone(), e))?;
            keys.insert(name.clone(), key);
            issuers.insert(
                name.clone(),
                r.issuer
                    .clone()
                    .unwrap_or_else(|| format!("{base}/realms/{name}")),
            );
        }
        // Every trust list is built before any key moves into its realm: a realm may
        // trust any other, in any order.
        let mut lists = BTreeMap::new();
        for (name, r) in &config.realms {
            lists.insert(name.clone(), trust_list(name, r, &keys, &issuers)?);
        }
        let mut realms = BTreeMap::new();
        for (name, r) in config.realms {
            let trusted = lists.remove(&name).unwrap_or_default();
            let key = keys
                .remove(&name)
                .ok_or_else(|| StsError::Key(name.clone(), KeyError::Generate))?;
            let issuer = issuers[&name].clone();
            tracing::info!(realm = %name, %issuer, kid = %key.kid, "realm ready");
            realms.insert(
                name.clone(),
                Arc::new(Realm {
                    config: r,
                    issuer,
                    url: format!("{base}/realms/{name}"),
                    key,
                    trusted,
                    jtis: Mutex::new(HashMap::new()),
                }),
            );
        }
        Ok(Arc::new(Self { realms, http }))
    }

    /// The token endpoint URL of `realm`.
    pub fn token_endpoint(&self, realm: &str) -> Option<String> {
        self.realms.get(realm).map(|r| format!("{}/token", r.url))
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let sts = self.clone();
                    let svc = service_fn(move |req| {
                        let sts = sts.clone();
                        async move { Ok::<_, Infallible>(sts.handle(req).await) }
                    });
                    tokio::spawn(async move {
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                () = &mut shutdown => return,
            }
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (realm, rest): (&str, Vec<&str>) = match segments.as_slice() {
            ["realms", name, rest @ ..] => (name, rest.to_vec()),
            [".well-known", "oauth-authorization-server", "realms", name] => {
                (name, vec![".well-known", "oauth-authorization-server"])
            }
            _ => return json_response(404, &json!({"error": "not_found"})),
        };
        let Some(realm) = self.realms.get(realm) else {
            return json_response(
                404,
                &json!({"error": "not_found", "error_description": "no such realm"}),
            );
        };
        match (req.method(), rest.as_slice()) {
            (&Method::GET, ["jwks"]) => json_response(200, &json!({"keys": [realm.key.jwk]})),
            (&Method::GET, [".well-known", "oauth-authorization-server"]) => {
                json_response(200, &metadata(realm))
            }
            (&Method::POST, ["token"]) => self.token(realm, req).await,
            (_, ["token"]) => {
                let mut r = json_response(
                    405,
                    &json!({"error": "invalid_request", "error_description": "use POST"}),
                );
                // RFC 9110 §15.5.6: a 405 names the methods that are allowed.
                r.headers_mut()
                    .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
                r
            }
            _ => json_response(404, &json!({"error": "not_found"})),
        }
    }

    async fn token(&self, realm: &Realm, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let form_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return oauth_error(&grant::OAuthError {
                    status: 400,
                    code: "invalid_request",
                    description: "request body too large or broken".into(),
                    basic_challenge: false,
                });
            }
        };
        if !form_type {
            return oauth_error(&grant::OAuthError {
                status: 400,
                code: "invalid_request",
                description: "use application/x-www-form-urlencoded".into(),
                basic_challenge: false,
            });
        }
        match grant::token(self, realm, &parts.headers, &body).await {
            Ok(v) => json_response(200, &v),
            Err(e) => {
                tracing::info!(realm = %realm.config.name, error = e.code, description = %e.description, "token request refused");
                oauth_error(&e)
            }
        }
    }
}

/// The issuers `realm` trusts, with their keys.
fn trust_list(
    name: &str,
    realm: &RealmConfig,
    keys: &BTreeMap<String, SigningKey>,
    issuers: &BTreeMap<String, String>,
) -> Result<Vec<Trusted>, StsError> {
    let mut out = Vec::new();
    for t in &realm.trust {
        let (issuer, trusted_keys, same_realm) = match &t.source {
            TrustSource::Realm(other) => {
                // Validation checked the realm exists; a miss is still an error, not a panic.
                let (Some(k), Some(issuer)) = (keys.get(other), issuers.get(other)) else {
                    return Err(StsError::UnknownRealm(name.to_string(), other.clone()));
                };
                let local = Keys::Local {
                    kid: k.kid.clone(),
                    alg: k.alg,
                    key: k.decoding.clone(),
                };
                (issuer.clone(), local, other == name)
            }
            TrustSource::Jwks(set) => (
                t.issuer.clone().unwrap_or_default(),
                Keys::Static(set.clone()),
                false,
            ),
            TrustSource::JwksUrl(url) => {
                let remote = Keys::Remote {
                    url: url.clone(),
                    cached: Mutex::new(None),
                };
                (t.issuer.clone().unwrap_or_default(), remote, false)
            }
        };
        out.push(Trusted {
            issuer,
            audiences: t.audiences.clone(),
            keys: trusted_keys,
            same_realm,
        });
    }
    Ok(out)
}

/// RFC 8414 §2 metadata.
fn metadata(realm: &Realm) -> Value {
    json!({
        "issuer": realm.issuer,
        "token_endpoint": format!("{}/token", realm.url),
        "jwks_uri": format!("{}/jwks", realm.url),
        "grant_types_supported": [GRANT_TYPE_CLIENT_CREDENTIALS, GRANT_TYPE_TOKEN_EXCHANGE, GRANT_TYPE_JWT_BEARER],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256", "PS256", "EdDSA"],
        "response_types_supported": [],
    })
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // RFC 6749 §5.1: token responses must not be cached.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn oauth_error(e: &grant::OAuthError) -> Response<Full<Bytes>> {
    let mut r = json_response(
        e.status,
        &json!({"error": e.code, "error_description": e.description}),
    );
    if e.basic_challenge {
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tokex-sts\""),
        );
    }
    r
}
