//! The token endpoint of a realm: client authentication (RFC 6749 §2.3, RFC 7523) and
//! the grants: `client_credentials`, token exchange (RFC 8693 §2) and the jwt-bearer
//! authorization grant (RFC 7523 §2.1, in [`jwt_bearer`]).
//!
//! Errors follow RFC 6749 §5.2 and RFC 8693 §2.2.2: `invalid_request` for malformed,
//! bad or untrusted subject/actor tokens, `invalid_target` for audiences or resources
//! the client may not ask for, `invalid_scope`, `invalid_client` (401),
//! `unauthorized_client`, `unsupported_grant_type`.

mod jwt_bearer;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::config::{ClientConfig, Grant};
use super::policy::{self, RESERVED};
use super::{Realm, Sts, verify};
use tokex_common::jwt::numeric_date;
use tokex_common::oauth::{
    CLIENT_ASSERTION_TYPE_JWT_BEARER, GRANT_TYPE_CLIENT_CREDENTIALS, GRANT_TYPE_JWT_BEARER,
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT,
};

/// An OAuth error response.
#[derive(Debug)]
pub struct OAuthError {
    pub status: u16,
    pub code: &'static str,
    pub description: String,
    /// Ask for HTTP Basic (RFC 6749 §5.2: invalid_client after Basic auth).
    pub basic_challenge: bool,
}

fn err(code: &'static str, description: impl Into<String>) -> OAuthError {
    let status = match code {
        "invalid_client" => 401,
        "server_error" => 500,
        _ => 400,
    };
    OAuthError {
        status,
        code,
        description: description.into(),
        basic_challenge: false,
    }
}

/// The form of a token request; parameters may not repeat except `audience` and
/// `resource` (RFC 8693 §2.1).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if !matches!(k.as_str(), "audience" | "resource")
                && pairs[..i].iter().any(|(p, _)| p == k)
            {
                return Err(err(
                    "invalid_request",
                    format!("parameter {k:.40} repeated"),
                ));
            }
        }
        Ok(Self(pairs))
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Handles one token request.
pub async fn token(
    sts: &Sts,
    realm: &Realm,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    let form = Form::parse(body)?;
    let client = authenticate(realm, headers, &form)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| err("invalid_request", "grant_type is missing"))?;
    let grant = match grant_type {
        GRANT_TYPE_CLIENT_CREDENTIALS => Grant::ClientCredentials,
        GRANT_TYPE_TOKEN_EXCHANGE => Grant::TokenExchange,
        GRANT_TYPE_JWT_BEARER => Grant::JwtBearer,
        _ => {
            return Err(err(
                "unsupported_grant_type",
                "supported: client_credentials, token exchange, jwt-bearer",
            ));
        }
    };
    if !client.grants.contains(&grant) {
        return Err(err(
            "unauthorized_client",
            "this client may not use this grant",
        ));
    }
    match grant {
        Grant::ClientCredentials => client_credentials(realm, client, &form),
        Grant::TokenExchange => exchange(sts, realm, client, &form).await,
        Grant::JwtBearer => jwt_bearer::grant(sts, realm, client, &form).await,
    }
}

/// RFC 6749 §2.3: exactly one way of authenticating.
fn authenticate<'r>(
    realm: &'r Realm,
    headers: &HeaderMap,
    form: &Form,
) -> Result<&'r ClientConfig, OAuthError> {
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        });
    let methods = [
        basic.is_some(),
        form.get("client_secret").is_some(),
        form.get("client_assertion").is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(err(
            "invalid_request",
            "use exactly one client authentication method",
        ));
    }
    let invalid = |basic: bool| OAuthError {
        basic_challenge: basic,
        ..err("invalid_client", "client authentication failed")
    };
    if let Some(b64) = basic {
        let decoded = STANDARD.decode(b64.trim()).map_err(|_| invalid(true))?;
        let text = String::from_utf8(decoded).map_err(|_| invalid(true))?;
        let (id, secret) = text.split_once(':').ok_or_else(|| invalid(true))?;
        let decode = |s: &str| {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        let (id, secret) = (
            decode(id).ok_or_else(|| invalid(true))?,
            decode(secret).ok_or_else(|| invalid(true))?,
        );
        return check_secret(realm, &id, &secret).ok_or_else(|| invalid(true));
    }
    if let Some(secret) = form.get("client_secret") {
        let id = form.get("client_id").ok_or_else(|| invalid(false))?;
        return check_secret(realm, id, secret).ok_or_else(|| invalid(false));
    }
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type") != Some(CLIENT_ASSERTION_TYPE_JWT_BEARER) {
            return Err(err(
                "invalid_request",
                "client_assertion_type must be jwt-bearer",
            ));
        }
        let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(assertion)
            .map_err(|_| invalid(false))?;
        let id = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(false))?;
        if form.get("client_id").is_some_and(|c| c != id) {
            return Err(invalid(false));
        }
        let client = realm.config.clients.get(id).ok_or_else(|| invalid(false))?;
        let jwks = client.jwks.as_ref().ok_or_else(|| invalid(false))?;
        let verified = verify::verify_assertion(jwks, assertion, id, &realm.issuer).map_err(|e| {
            tracing::debug!(realm = %realm.config.name, client = id, error = %e, "client assertion rejected");
            invalid(false)
        })?;
        let jti = verified
            .get("jti")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(false))?;
        let exp = verified.get("exp").and_then(numeric_date).unwrap_or(0);
        if !realm.remember_jti(id, jti, exp) {
            tracing::debug!(realm = %realm.config.name, client = id, "client assertion replayed");
            return Err(invalid(false));
        }
        return Ok(client);
    }
    Err(invalid(false))
}

fn check_secret<'r>(realm: &'r Realm, id: &str, secret: &str) -> Option<&'r ClientConfig> {
    let client = realm.config.clients.get(id)?;
    let expected = client.secret.as_ref()?;
    // Constant time, so the response time says nothing of how much of a guess matched.
    bool::from(expected.expose().as_bytes().ct_eq(secret.as_bytes())).then_some(client)
}

fn client_credentials(
    realm: &Realm,
    client: &ClientConfig,
    form: &Form,
) -> Result<Value, OAuthError> {
    let audiences = audiences_or_default(client, form)?;
    let allowed = client.scopes.clone().unwrap_or_default();
    let available = allowed.into_iter().collect();
    let scope = policy::narrow(form.get("scope"), &available)
        .ok_or_else(|| err("invalid_scope", "no requested scope is allowed"))?;
    let mut extra: Map<String, Value> = client
        .claims
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    extra.retain(|_, v| !v.is_null());
    let subject = client.subject.clone().unwrap_or_else(|| client.id.clone());
    issue(
        realm,
        Issue {
            subject,
            audiences,
            client_id: &client.id,
            scope,
            extra,
            act: None,
            exp_cap: None,
            token_type: TOKEN_TYPE_ACCESS_TOKEN,
        },
    )
}

async fn exchange(
    sts: &Sts,
    realm: &Realm,
    client: &ClientConfig,
    form: &Form,
) -> Result<Value, OAuthError> {
    let subject_token = form
        .get("subject_token")
        .ok_or_else(|| err("invalid_request", "subject_token is missing"))?;
    let subject_type = form
        .get("subject_token_type")
        .ok_or_else(|| err("invalid_request", "subject_token_type is missing"))?;
    if ![TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN].contains(&subject_type) {
        return Err(err("invalid_request", "unsupported subject_token_type"));
    }
    let token_type = match form.get("requested_token_type") {
        None | Some(TOKEN_TYPE_ACCESS_TOKEN) => TOKEN_TYPE_ACCESS_TOKEN,
        Some(TOKEN_TYPE_JWT) => TOKEN_TYPE_JWT,
        Some(_) => return Err(err("invalid_request", "unsupported requested_token_type")),
    };
    let audiences = targets(client, form)?;
    if audiences.is_empty() {
        return Err(err("invalid_request", "give audience or resource"));
    }
    let subject = verify::verify(&realm.trusted, subject_token, &sts.http)
        .await
        .map_err(|e| {
            tracing::debug!(realm = %realm.config.name, error = %e, "subject token rejected");
            err(
                "invalid_request",
                "the subject token is invalid or not trusted",
            )
        })?;
    let act = match (form.get("actor_token"), form.get("actor_token_type")) {
        (None, None) => None, // impersonation
        (Some(_), None) | (None, Some(_)) => {
            return Err(err(
                "invalid_request",
                "actor_token and actor_token_type go together",
            ));
        }
        (Some(actor_token), Some(_)) => {
            let actor = verify::verify(&realm.trusted, actor_token, &sts.http)
                .await
                .map_err(|e| {
                    tracing::debug!(realm = %realm.config.name, error = %e, "actor token rejected");
                    err(
                        "invalid_request",
                        "the actor token is invalid or not trusted",
                    )
                })?;
            if !policy::may_act_allows(subject.claims.get("may_act"), &actor.claims) {
                return Err(err(
                    "invalid_request",
                    "the subject token's may_act does not allow this actor",
                ));
            }
            Some(policy::act_claim(&actor.claims, subject.claims.get("act")))
        }
    };
    let scope = subject_scope(realm, client, form, &subject)?;
    let sub = subject
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let extra = realm.config.policy.transform(&subject.claims);
    // Without a new actor, an existing delegation chain is kept, never dropped.
    let act = act.or_else(|| subject.claims.get("act").cloned());
    // RFC 8693 §2.2.2: an invalid subject token is `invalid_request`.
    let exp_cap = ExpCap::of(&subject.claims, "invalid_request");
    issue(
        realm,
        Issue {
            subject: sub,
            audiences,
            client_id: &client.id,
            scope,
            extra,
            act,
            exp_cap,
            token_type,
        },
    )
}

/// The requested audiences and resources, else the client's own; never none.
fn audiences_or_default(client: &ClientConfig, form: &Form) -> Result<Vec<String>, OAuthError> {
    let requested = targets(client, form)?;
    let audiences = match requested.is_empty() {
        true => client.audiences.clone(),
        false => requested,
    };
    if audiences.is_empty() {
        // RFC 9068 §2.2: an access token always names its audience.
        return Err(err(
            "invalid_target",
            "no audience requested and none configured for this client",
        ));
    }
    Ok(audiences)
}

/// The scope for a verified subject: the request narrowed to what the realm's policy
/// and the client's cap allow.
fn subject_scope(
    realm: &Realm,
    client: &ClientConfig,
    form: &Form,
    subject: &verify::Verified,
) -> Result<Vec<String>, OAuthError> {
    let available = realm.config.policy.available(
        &subject.claims,
        subject.same_realm,
        client.scopes.as_deref(),
    );
    policy::narrow(form.get("scope"), &available).ok_or_else(|| {
        err(
            "invalid_scope",
            "no requested scope is allowed for this subject",
        )
    })
}

/// The requested audiences and resources, each of which the client must be allowed.
fn targets(client: &ClientConfig, form: &Form) -> Result<Vec<String>, OAuthError> {
    let mut out = Vec::new();
    for a in form.all("audience") {
        if !client.audiences.iter().any(|x| x == a) {
            return Err(err(
                "invalid_target",
                format!("audience {a:.100} is not allowed for this client"),
            ));
        }
        out.push(a.to_string());
    }
    for r in form.all("resource") {
        if !client.resources.iter().any(|x| x == r) {
            return Err(err(
                "invalid_target",
                format!("resource {r:.100} is not allowed for this client"),
            ));
        }
        out.push(r.to_string());
    }
    Ok(out)
}

struct Issue<'a> {
    subject: String,
    audiences: Vec<String>,
    client_id: &'a str,
    scope: Vec<String>,
    extra: Map<String, Value>,
    act: Option<Value>,
    /// The expiry of the token it is issued from, which it never outlives.
    exp_cap: Option<ExpCap>,
    token_type: &'static str,
}

/// A presented token's `exp`, and the error that refuses it once passed: a token that
/// verified within the clock-skew leeway but has expired would give one born expired.
struct ExpCap {
    exp: u64,
    refused_as: &'static str,
}

impl ExpCap {
    /// The cap of a token with these verified claims (a float `exp` too, as RFC 7519's
    /// NumericDate allows).
    fn of(claims: &Map<String, Value>, refused_as: &'static str) -> Option<Self> {
        let exp = claims.get("exp").and_then(numeric_date)?;
        Some(Self { exp, refused_as })
    }
}

/// Signs an RFC 9068 access token and builds the RFC 8693 §2.2.1 response.
fn issue(realm: &Realm, i: Issue<'_>) -> Result<Value, OAuthError> {
    let now = tokex_common::clock::unix_now();
    let cap = match i.exp_cap {
        Some(cap) if cap.exp <= now => return Err(err(cap.refused_as, "the token has expired")),
        Some(cap) => cap.exp,
        None => u64::MAX,
    };
    let exp = (now + realm.config.token_ttl.as_secs()).min(cap);
    let mut jti = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti)
        .map_err(|_| err("server_error", "no randomness"))?;
    let mut claims = i.extra;
    let aud = match i.audiences.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let scope = i.scope.join(" ");
    for (k, v) in [
        ("iss", json!(realm.issuer)),
        ("sub", json!(i.subject)),
        ("aud", aud),
        ("client_id", json!(i.client_id)),
        ("iat", json!(now)),
        ("exp", json!(exp)),
        ("jti", json!(URL_SAFE_NO_PAD.encode(jti))),
    ] {
        claims.insert(k.into(), v);
    }
    if !scope.is_empty() {
        claims.insert("scope".into(), json!(scope));
    }
    if let Some(act) = i.act {
        claims.insert("act".into(), act);
    }
    let token = realm.key.sign(&claims, "at+jwt").map_err(|e| {
        tracing::error!(realm = %realm.config.name, error = %e, "signing failed");
        err("server_error", "signing failed")
    })?;
    let mut response = json!({
        "access_token": token,
        "issued_token_type": i.token_type,
        "token_type": "Bearer",
        "expires_in": exp.saturating_sub(now),
    });
    if !scope.is_empty() {
        response["scope"] = json!(scope);
    }
    Ok(response)
}
