//! How tokex authenticates to a token endpoint (`auth.method`):
//! `client_secret_basic` / `client_secret_post` (RFC 6749 §2.3.1), `private_key_jwt`
//! (RFC 7523 §2.2), `client_assertion` (an assertion from a file, e.g. a Kubernetes
//! projected service-account token or a SPIFFE JWT-SVID), `tls_client_auth` (RFC 8705
//! §2) and `none`. Every credential is a [`Watched`] file value, so rotation needs no
//! restart.

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::clock::unix_now;
use crate::credentials::Watched;
use crate::secret::Secret;
use crate::tls::ClientIdentity;

/// RFC 7523 §2.2 `client_assertion_type` for JWTs.
pub const CLIENT_ASSERTION_TYPE_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of a `private_key_jwt` assertion: short, as RFC 7523 §3 advises.
const ASSERTION_LIFETIME_SECS: u64 = 60;

/// A configured client authentication method.
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

/// What one token request carries to authenticate the client.
pub enum Credential {
    /// `Authorization: Basic ...` (already encoded).
    Basic(Secret),
    /// `client_id` and `client_secret` in the body.
    Post(Secret),
    /// `client_id`, `client_assertion_type` and `client_assertion` in the body.
    Assertion {
        assertion: Secret,
        assertion_type: String,
    },
    /// `client_id` alone (`none`, and `tls_client_auth` whose proof is the TLS handshake).
    ClientIdOnly,
}

impl Credential {
    /// What of this credential an AS could echo back: the secret, the assertion, the
    /// Basic value's base64.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Credential::Basic(header) => header.expose().strip_prefix("Basic "),
            Credential::Post(secret) => Some(secret.expose()),
            Credential::Assertion { assertion, .. } => Some(assertion.expose()),
            Credential::ClientIdOnly => None,
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Basic(_) => "Basic([redacted])",
            Credential::Post(_) => "Post([redacted])",
            Credential::Assertion { .. } => "Assertion([redacted])",
            Credential::ClientIdOnly => "ClientIdOnly",
        })
    }
}

/// One part of `client_secret_basic`, form-urlencoded with a space as `%20`: equally
/// valid, and read right also by servers that decode with plain percent-decoding, which
/// would turn `+` into a literal plus.
fn basic_part(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .map(|chunk| if chunk == "+" { "%20" } else { chunk })
        .collect()
}

impl ClientAuth {
    /// The credential for one attempt. A `private_key_jwt` assertion is signed fresh
    /// each time, so a retry never reuses a `jti`.
    pub fn credential(&self, client_id: &str) -> Result<Credential, String> {
        Ok(match self {
            ClientAuth::ClientSecretBasic { client_secret } => {
                // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
                let secret = client_secret.current();
                let (user, pass) = (basic_part(client_id), basic_part(secret.expose()));
                Credential::Basic(Secret::new(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{user}:{pass}"))
                )))
            }
            ClientAuth::ClientSecretPost { client_secret } => {
                Credential::Post((*client_secret.current()).clone())
            }
            ClientAuth::PrivateKeyJwt {
                private_key,
                audience,
            } => Credential::Assertion {
                assertion: private_key.current().sign_assertion(client_id, audience)?,
                assertion_type: CLIENT_ASSERTION_TYPE_JWT_BEARER.into(),
            },
            ClientAuth::ClientAssertion {
                assertion,
                assertion_type,
            } => {
                let assertion = assertion.current();
                if let Some(exp) =
                    crate::bearer::jwt_exp(assertion.expose()).filter(|exp| *exp <= unix_now())
                {
                    return Err(format!(
                        "the client assertion expired at {exp} and has not been rotated"
                    ));
                }
                Credential::Assertion {
                    assertion: (*assertion).clone(),
                    assertion_type: assertion_type.clone(),
                }
            }
            ClientAuth::TlsClientAuth { .. } | ClientAuth::None => Credential::ClientIdOnly,
        })
    }

    /// The client certificate to present, for `tls_client_auth`.
    pub fn identity(&self) -> Option<&Watched<ClientIdentity>> {
        match self {
            ClientAuth::TlsClientAuth { identity } => Some(identity),
            _ => None,
        }
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

/// Validates a client assertion file: non-empty, one line, and not already expired.
pub fn parse_assertion(path: &Path, bytes: &[u8]) -> Result<Secret, String> {
    let secret = crate::credentials::parse_secret(path, bytes)?;
    if let Some(exp) = crate::bearer::jwt_exp(secret.expose()).filter(|exp| *exp <= unix_now()) {
        return Err(format!(
            "the assertion in {} expired at {exp}",
            path.display()
        ));
    }
    Ok(secret)
}
