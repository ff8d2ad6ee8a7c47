//! Realm signing keys and the JWKS they publish (RFC 7517).
//!
//! ES256 keys are generated at start when no key file is given (ring makes the P-256
//! key; nothing to provision for the demo and tests). A key file is a PEM private key:
//! PKCS#8 for ES256, PKCS#1 or PKCS#8 for RS256. The `kid` defaults to the RFC 7638
//! thumbprint.

use std::path::Path;

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Serialize;

use super::config::SigningAlg;

/// Why a signing key could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating an ES256 key failed")]
    Generate,
    #[error("RS256 needs signing_key.key_file (RSA keys are not generated)")]
    NoRsaGeneration,
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} is not a usable {1:?} private key: {2}")]
    Parse(String, Algorithm, jsonwebtoken::errors::Error),
    #[error("signing failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// A realm's private key with its public JWK.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: Jwk,
    pub decoding: DecodingKey,
}

impl SigningKey {
    /// A new key, or the one in `key_file`.
    pub fn load_or_generate(
        alg: SigningAlg,
        key_file: Option<&Path>,
        kid: Option<&str>,
    ) -> Result<Self, KeyError> {
        let (alg, encoding) = match (alg, key_file) {
            (SigningAlg::ES256, None) => {
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
                    &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &rng,
                )
                .map_err(|_| KeyError::Generate)?;
                (Algorithm::ES256, EncodingKey::from_ec_der(pkcs8.as_ref()))
            }
            (SigningAlg::RS256, None) => return Err(KeyError::NoRsaGeneration),
            (alg, Some(path)) => {
                let name = path.display().to_string();
                let pem = std::fs::read(path).map_err(|e| KeyError::Read(name.clone(), e))?;
                let alg = match alg {
                    SigningAlg::ES256 => Algorithm::ES256,
                    SigningAlg::RS256 => Algorithm::RS256,
                };
                let key = match alg {
                    Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                    _ => EncodingKey::from_rsa_pem(&pem),
                }
                .map_err(|e| KeyError::Parse(name, alg, e))?;
                (alg, key)
            }
        };
        let name = || key_file.map_or("generated key".to_string(), |p| p.display().to_string());
        let mut jwk =
            Jwk::from_encoding_key(&encoding, alg).map_err(|e| KeyError::Parse(name(), alg, e))?;
        let kid = match kid {
            Some(k) => k.to_string(),
            None => jwk
                .thumbprint(ThumbprintHash::SHA256)
                .map_err(|e| KeyError::Parse(name(), alg, e))?,
        };
        jwk.common.key_id = Some(kid.clone());
        jwk.common.key_algorithm = Some(match alg {
            Algorithm::ES256 => KeyAlgorithm::ES256,
            _ => KeyAlgorithm::RS256,
        });
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| KeyError::Parse(name(), alg, e))?;
        // Prove the pair works now rather than at the first token request.
        let probe = jsonwebtoken::encode(
            &Header::new(alg),
            &serde_json::json!({"probe": true}),
            &encoding,
        )
        .map_err(|e| KeyError::Parse(name(), alg, e))?;
        let mut v = jsonwebtoken::Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(&probe, &decoding, &v)
            .map_err(|e| KeyError::Parse(name(), alg, e))?;
        Ok(Self {
            alg,
            kid,
            encoding,
            jwk,
            decoding,
        })
    }

    /// Signs `claims` as a compact JWS with `typ` and this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T, typ: &str) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg);
        header.typ = Some(typ.to_string());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(KeyError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated ES256 key signs tokens its own JWK verifies, with a thumbprint kid.
    #[test]
    fn generated_key_round_trips() {
        let key = SigningKey::load_or_generate(SigningAlg::ES256, None, None).unwrap();
        let token = key
            .sign(
                &serde_json::json!({"sub": "a", "exp": 4_000_000_000u64}),
                "at+jwt",
            )
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.typ.as_deref(), header.kid.as_deref()),
            (Some("at+jwt"), Some(key.kid.as_str()))
        );
        let decoding = DecodingKey::from_jwk(&key.jwk).unwrap();
        let v = jsonwebtoken::Validation::new(Algorithm::ES256);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &v).unwrap();
        assert_eq!(data.claims["sub"], "a");
        assert_eq!(key.kid.len(), 43, "base64url SHA-256 thumbprint");
    }

    /// RS256 without a key file is a clear error, not a silent fallback.
    #[test]
    fn rsa_needs_a_key_file() {
        assert!(matches!(
            SigningKey::load_or_generate(SigningAlg::RS256, None, None),
            Err(KeyError::NoRsaGeneration)
        ));
    }
}
