//! How tokex authenticates to a token endpoint (`auth.method`):
//! `client_secret_basic` / `client_secret_post` (RFC 6749 §2.3.1), `private_key_jwt`
//! (RFC 7523 §2.2), `client_assertion` (an assertion from a file, e.g. a Kubernetes
//! projected service-account token or a SPIFFE JWT-SVID), `tls_client_auth` (RFC 8705
//! §2) and `none`: from the configured [`ClientAuth`], what one token request carries.
//! Every secret, key and certificate is a [`Watched`] file value, so rotation needs no
//! restart.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::clock::unix_now;
use crate::config::model::ClientAuth;
use crate::credentials::Watched;
use crate::credentials::certs::ClientIdentity;
use crate::oauth::CLIENT_ASSERTION_TYPE_JWT_BEARER;
use crate::secret::Secret;

/// What one token request carries to authenticate the client.
pub enum Authentication {
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

impl Authentication {
    /// What of this authentication an AS could echo back: the secret, the assertion, the
    /// Basic value's base64.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Authentication::Basic(header) => header.expose().strip_prefix("Basic "),
            Authentication::Post(secret) => Some(secret.expose()),
            Authentication::Assertion { assertion, .. } => Some(assertion.expose()),
            Authentication::ClientIdOnly => None,
        }
    }
}

impl fmt::Debug for Authentication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Authentication::Basic(_) => "Basic([redacted])",
            Authentication::Post(_) => "Post([redacted])",
            Authentication::Assertion { .. } => "Assertion([redacted])",
            Authentication::ClientIdOnly => "ClientIdOnly",
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
    /// What one attempt carries to authenticate the client. A `private_key_jwt`
    /// assertion is signed fresh each time, so a retry never reuses a `jti`.
    pub fn authentication(&self, client_id: &str) -> Result<Authentication, String> {
        Ok(match self {
            ClientAuth::ClientSecretBasic { client_secret } => {
                // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
                let secret = client_secret.current();
                let (user, pass) = (basic_part(client_id), basic_part(secret.expose()));
                Authentication::Basic(Secret::new(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{user}:{pass}"))
                )))
            }
            ClientAuth::ClientSecretPost { client_secret } => {
                Authentication::Post((*client_secret.current()).clone())
            }
            ClientAuth::PrivateKeyJwt {
                private_key,
                audience,
            } => Authentication::Assertion {
                assertion: private_key.current().sign_assertion(client_id, audience)?,
                assertion_type: CLIENT_ASSERTION_TYPE_JWT_BEARER.into(),
            },
            ClientAuth::ClientAssertion {
                assertion,
                assertion_type,
            } => {
                let assertion = assertion.current();
                if let Some(exp) =
                    crate::jwt::unverified_exp(assertion.expose()).filter(|exp| *exp <= unix_now())
                {
                    return Err(format!(
                        "the client assertion expired at {exp} and has not been rotated"
                    ));
                }
                Authentication::Assertion {
                    assertion: (*assertion).clone(),
                    assertion_type: assertion_type.clone(),
                }
            }
            ClientAuth::TlsClientAuth { .. } | ClientAuth::None => Authentication::ClientIdOnly,
        })
    }

    /// The method's name in RFC 8414 `token_endpoint_auth_methods_supported` (the IANA
    /// registry): a ready-made assertion is a `private_key_jwt` one to the AS.
    pub fn method_name(&self) -> &'static str {
        match self {
            ClientAuth::ClientSecretBasic { .. } => "client_secret_basic",
            ClientAuth::ClientSecretPost { .. } => "client_secret_post",
            ClientAuth::PrivateKeyJwt { .. } | ClientAuth::ClientAssertion { .. } => {
                "private_key_jwt"
            }
            ClientAuth::TlsClientAuth { .. } => "tls_client_auth",
            ClientAuth::None => "none",
        }
    }

    /// The client certificate to present, for `tls_client_auth`.
    pub fn identity(&self) -> Option<&Watched<ClientIdentity>> {
        match self {
            ClientAuth::TlsClientAuth { identity } => Some(identity),
            _ => None,
        }
    }
}
