//! Client assertions (RFC 7523): a file that holds one (`client_assertion`, e.g. a
//! projected service-account token), and a `private_key_jwt` key that signs them.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::clock::unix_now;
use crate::secret::Secret;

/// Lifetime of a `private_key_jwt` assertion: short, as RFC 7523 §3 advises.
const ASSERTION_LIFETIME_SECS: u64 = 60;

/// Validates a client assertion file: non-empty, one line, and not already expired.
pub fn parse_assertion(path: &Path, bytes: &[u8]) -> Result<Secret, String> {
    let secret = super::parse_secret(path, bytes)?;
    if let Some(exp) = crate::jwt::unverified_exp(secret.expose()).filter(|exp| *exp <= unix_now())
    {
        return Err(format!(
            "the assertion in {} expired at {exp}",
            path.display()
        ));
    }
    Ok(secret)
}

/// Algorithms accepted for `private_key_jwt`.
pub fn parse_alg(alg: &str) -> Result<Algorithm, String> {
    match alg {
        "ES256" => Ok(Algorithm::ES256),
        "RS256" => Ok(Algorithm::RS256),
        "PS256" => Ok(Algorithm::PS256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(format!(
            "unsupported alg `{other}` (use ES256, RS256, PS256 or EdDSA)"
        )),
    }
}

/// A `private_key_jwt` signing key.
pub struct AssertionKey {
    alg: Algorithm,
    kid: String,
    key: EncodingKey,
}

impl fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AssertionKey({:?}, kid {}, [redacted])",
            self.alg, self.kid
        )
    }
}

impl AssertionKey {
    /// Parses a PEM private key for `alg` and proves it signs; the `kid` defaults to the
    /// RFC 7638 thumbprint of its public key.
    pub fn parse(
        path: &Path,
        pem: &[u8],
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Self, String> {
        let bad = |e: jsonwebtoken::errors::Error| {
            format!("{} is not a {alg:?} private key: {e}", path.display())
        };
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
            other => return Err(format!("unsupported alg {other:?}")),
        }
        .map_err(bad)?;
        let kid = match kid {
            Some(k) => k.to_string(),
            None => Jwk::from_encoding_key(&key, alg)
                .and_then(|j| j.thumbprint(ThumbprintHash::SHA256))
                .map_err(bad)?,
        };
        let this = Self { alg, kid, key };
        this.sign_assertion("probe", "probe")
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(this)
    }

    /// RFC 7523 §3: `iss` = `sub` = client id, `aud` = the authority's issuer as one
    /// string, a fresh random `jti`, `iat`, and a short `exp`.
    pub fn sign_assertion(&self, client_id: &str, audience: &str) -> Result<Secret, String> {
        let now = unix_now();
        let mut jti = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti)
            .map_err(|_| "no randomness")?;
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map(Secret::new)
            .map_err(|e| format!("signing the client assertion failed: {e}"))
    }
}
