//! Verifying tokens from trusted issuers: subject and actor tokens, and
//! `private_key_jwt` client assertions.
//!
//! Only configured trust relationships count. The unverified `iss` picks the trust
//! entry; then the signature is checked with that issuer's keys (a realm in this
//! process, a JWKS file, or a JWKS URL fetched and cached), and `iss`, `aud`, `exp` and
//! `nbf` are checked. `none` and HMAC algorithms are never accepted.

use std::sync::Mutex;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use tokex_common::clock::Instant;

/// Where an issuer's verification keys come from.
pub enum Keys {
    /// A realm of this process: its key, known directly.
    Local {
        kid: String,
        alg: Algorithm,
        key: DecodingKey,
    },
    /// A JWKS read from a file at start.
    Static(JwkSet),
    /// A JWKS URL, fetched on first use and refreshed when a `kid` is unknown.
    Remote {
        url: String,
        cached: Mutex<Option<(Instant, JwkSet)>>,
    },
}

/// One issuer whose tokens a realm accepts.
pub struct Trusted {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub keys: Keys,
    /// Tokens of the verifying realm itself (their scopes need no mapping).
    pub same_realm: bool,
}

/// A token that passed verification.
pub struct Verified {
    pub claims: Map<String, Value>,
    pub same_realm: bool,
}

const LEEWAY_SECS: u64 = 5;
const JWKS_TTL: Duration = Duration::from_secs(300);
const JWKS_REFRESH_FLOOR: Duration = Duration::from_secs(30);

/// Verifies `token` against the first trusted issuer matching its `iss`.
pub async fn verify(
    trusted: &[Trusted],
    token: &str,
    http: &reqwest::Client,
) -> Result<Verified, String> {
    verify_for(trusted, token, http, None).await
}

/// Verifies an authorization grant (RFC 7523 §3): a token from a trusted issuer whose
/// `aud` names this realm, one of `realm` (its issuer and token endpoint URL), whatever
/// audiences the trust relationship accepts for subject tokens. A user's token for an
/// API is no grant.
pub async fn verify_grant(
    trusted: &[Trusted],
    token: &str,
    http: &reqwest::Client,
    realm: &[&str],
) -> Result<Verified, String> {
    verify_for(trusted, token, http, Some(realm)).await
}

async fn verify_for(
    trusted: &[Trusted],
    token: &str,
    http: &reqwest::Client,
    audiences: Option<&[&str]>,
) -> Result<Verified, String> {
    let unverified: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|_| "not a JWT".to_string())?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or("no iss claim")?;
    let t = trusted
        .iter()
        .find(|t| t.issuer == iss)
        .ok_or_else(|| format!("issuer {iss:.100} is not trusted"))?;
    // A grant comes from another authority: a realm's own token, addressed to itself,
    // would be taken with its scopes unmapped.
    if audiences.is_some() && t.same_realm {
        return Err("a realm's own tokens are not authorization grants here".into());
    }
    if audiences.is_none() && t.audiences.is_empty() {
        return Err(format!(
            "issuer {iss:.100} is trusted for authorization grants only"
        ));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed JWT header")?;
    let (alg, key) = t
        .keys
        .key_for(header.kid.as_deref(), header.alg, http)
        .await?;
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.set_issuer(&[&t.issuer]);
    match audiences {
        Some(realm) => v.set_audience(realm),
        None => v.set_audience(&t.audiences),
    }
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
        .map_err(|e| format!("verification failed: {e}"))?;
    Ok(Verified {
        claims: data.claims,
        same_realm: t.same_realm,
    })
}

/// Verifies a client assertion (RFC 7523 §3) signed with a key of `jwks`: `iss` and
/// `sub` are the client, `aud` is this realm's issuer, `exp` is required.
pub fn verify_assertion(
    jwks: &JwkSet,
    assertion: &str,
    client_id: &str,
    audience: &str,
) -> Result<Map<String, Value>, String> {
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|_| "malformed client assertion")?;
    let jwk = pick(jwks, header.kid.as_deref())?;
    let alg = allowed_alg(jwk, header.alg)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable client key: {e}"))?;
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.set_issuer(&[client_id]);
    v.sub = Some(client_id.to_string());
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &v)
        .map_err(|e| format!("client assertion rejected: {e}"))?;
    Ok(data.claims)
}

impl Keys {
    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        http: &reqwest::Client,
    ) -> Result<(Algorithm, DecodingKey), String> {
        match self {
            Keys::Local {
                kid: own,
                alg: own_alg,
                key,
            } => {
                if kid.is_some_and(|k| k != own) || alg != *own_alg {
                    return Err("unknown signing key".into());
                }
                Ok((alg, key.clone()))
            }
            Keys::Static(set) => from_set(set, kid, alg),
            Keys::Remote { url, cached } => {
                let fresh = |at: &Instant, floor: Duration| at.elapsed() < floor;
                let current = cached.lock().map_err(|_| "key cache poisoned")?.clone();
                if let Some((at, set)) = &current {
                    match from_set(set, kid, alg) {
                        Ok(found) if fresh(at, JWKS_TTL) => return Ok(found),
                        Err(e) if fresh(at, JWKS_REFRESH_FLOOR) => return Err(e),
                        _ => {}
                    }
                }
                let set = fetch_jwks(http, url).await?;
                let found = from_set(&set, kid, alg);
                *cached.lock().map_err(|_| "key cache poisoned")? =
                    Some((tokex_common::clock::now(), set));
                found
            }
        }
    }
}

fn from_set(
    set: &JwkSet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<(Algorithm, DecodingKey), String> {
    let jwk = pick(set, kid)?;
    let alg = allowed_alg(jwk, alg)?;
    Ok((
        alg,
        DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?,
    ))
}

fn pick<'a>(set: &'a JwkSet, kid: Option<&str>) -> Result<&'a Jwk, String> {
    match kid {
        Some(kid) => set
            .find(kid)
            .ok_or_else(|| format!("no key with kid {kid:.64}")),
        None if set.keys.len() == 1 => Ok(&set.keys[0]),
        None => Err("token has no kid and the key set has several keys".into()),
    }
}

/// The header's algorithm, if the key allows it. A JWK without `alg` (some servers omit
/// it) allows the algorithms of its key type.
fn allowed_alg(jwk: &Jwk, alg: Algorithm) -> Result<Algorithm, String> {
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::OctetKeyPair(_) => &[Algorithm::EdDSA],
        _ => &[],
    };
    let declared_ok = match jwk.common.key_algorithm {
        None => true,
        Some(k) => format!("{k:?}") == format!("{alg:?}"),
    };
    if by_type.contains(&alg) && declared_ok {
        Ok(alg)
    } else {
        Err(format!("algorithm {alg:?} not allowed for this key"))
    }
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> Result<JwkSet, String> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|_| format!("fetching JWKS from {url} failed"))?;
    if !resp.status().is_success() {
        return Err(format!("JWKS at {url} answered {}", resp.status()));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|_| format!("reading JWKS from {url} failed"))?;
    if bytes.len() > 256 * 1024 {
        return Err(format!("JWKS at {url} is too large"));
    }
    serde_json::from_slice(&bytes).map_err(|_| format!("JWKS at {url} is not a JWK Set"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SigningAlg;
    use crate::keys::SigningKey;

    fn realm_key() -> SigningKey {
        SigningKey::load_or_generate(SigningAlg::ES256, None, None).unwrap()
    }

    fn trusted(key: &SigningKey, static_set: bool) -> Trusted {
        let keys = if static_set {
            let mut jwk = key.jwk.clone();
            jwk.common.key_algorithm = None; // as idpyoidc publishes it
            Keys::Static(JwkSet { keys: vec![jwk] })
        } else {
            Keys::Local {
                kid: key.kid.clone(),
                alg: key.alg,
                key: key.decoding.clone(),
            }
        };
        Trusted {
            issuer: "https://idp".into(),
            audiences: vec!["backend".into()],
            keys,
            same_realm: false,
        }
    }

    fn now() -> u64 {
        tokex_common::clock::unix_now()
    }

    /// A token from a trusted issuer verifies; wrong iss, aud, expiry, nbf, key or an
    /// unsigned token do not.
    #[tokio::test]
    async fn trust_checks() {
        let key = realm_key();
        let http = tokex_common::tls::reqwest_builder(None, None)
            .unwrap()
            .build()
            .unwrap();
        let good = serde_json::json!({"iss": "https://idp", "aud": "backend", "sub": "alice", "exp": now() + 60});
        for static_set in [false, true] {
            let t = [trusted(&key, static_set)];
            let token = key.sign(&good, "at+jwt").unwrap();
            assert_eq!(
                verify(&t, &token, &http).await.unwrap().claims["sub"],
                "alice"
            );
            for (what, patch) in [
                ("iss", serde_json::json!({"iss": "https://other"})),
                ("aud", serde_json::json!({"aud": "elsewhere"})),
                ("exp", serde_json::json!({"exp": now() - 60})),
                ("nbf", serde_json::json!({"nbf": now() + 600})),
            ] {
                let mut c = good.clone();
                c.as_object_mut()
                    .unwrap()
                    .extend(patch.as_object().unwrap().clone());
                let bad = key.sign(&c, "at+jwt").unwrap();
                assert!(verify(&t, &bad, &http).await.is_err(), "{what} should fail");
            }
            let other = realm_key().sign(&good, "at+jwt").unwrap();
            assert!(verify(&t, &other, &http).await.is_err(), "foreign key");
            let unsigned = format!("{}.", token.rsplit_once('.').unwrap().0);
            assert!(
                verify(&t, &unsigned, &http).await.is_err(),
                "stripped signature"
            );
        }
    }
}
