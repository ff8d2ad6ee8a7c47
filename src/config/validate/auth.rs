//! How tokex authenticates at a token endpoint (`auth.method`, RFC 6749 §2.3, RFC 7523,
//! RFC 8705): which keys each method takes, and its credential files, each a watched value
//! registered for rotation.

use std::path::PathBuf;

use serde_saphyr::Spanned;

use super::sources::Sources;
use super::{Invalid, absolute_uri, at};
use crate::config::file::{AuthMethod, FileAuth};
use crate::config::model::ClientAuth;
use crate::credentials::assertion::{AssertionKey, parse_alg, parse_assertion};
use crate::credentials::certs::parse_identity;
use crate::credentials::{Watched, parse_secret};
use crate::oauth::CLIENT_ASSERTION_TYPE_JWT_BEARER;
use crate::secret::Secret;
use tokex_common::values::PathText;

pub(super) fn client_auth(
    auth: &FileAuth,
    path: &str,
    audience: &str,
    sources: &mut Sources,
) -> Result<ClientAuth, Invalid> {
    use AuthMethod as M;
    let method = auth.method.value;
    let secret = matches!(method, M::ClientSecretBasic | M::ClientSecretPost);
    let keys = [
        ("client_secret", auth.client_secret.is_some(), secret),
        (
            "client_secret_file",
            auth.client_secret_file.is_some(),
            secret,
        ),
        (
            "private_key_file",
            auth.private_key_file.is_some(),
            method == M::PrivateKeyJwt,
        ),
        ("alg", auth.alg.is_some(), method == M::PrivateKeyJwt),
        ("key_id", auth.key_id.is_some(), method == M::PrivateKeyJwt),
        (
            "audience",
            auth.audience.is_some(),
            method == M::PrivateKeyJwt,
        ),
        (
            "assertion_file",
            auth.assertion_file.is_some(),
            method == M::ClientAssertion,
        ),
        (
            "assertion_type",
            auth.assertion_type.is_some(),
            method == M::ClientAssertion,
        ),
        (
            "cert_file",
            auth.cert_file.is_some(),
            method == M::TlsClientAuth,
        ),
        (
            "key_file",
            auth.key_file.is_some(),
            method == M::TlsClientAuth,
        ),
    ];
    if let Some((key, ..)) = keys.iter().find(|(_, set, applies)| *set && !*applies) {
        return Err(at(
            &auth.method,
            format!(
                "{path}.auth.{key} does not apply to method {}",
                method_name(method)
            ),
        ));
    }
    let required = |v: &Option<Spanned<PathText>>, key: &str| -> Result<PathBuf, Invalid> {
        v.as_ref()
            .map(|f| sources.resolve(&f.value))
            .ok_or_else(|| {
                at(
                    &auth.method,
                    format!("{path}.auth: {} needs {key}", method_name(method)),
                )
            })
    };
    // Errors about a file point at the key that names it.
    let at_key = |v: &Option<Spanned<PathText>>, key: &str, m: String| match v {
        Some(f) => at(f, format!("{path}.auth.{key}: {m}")),
        None => at(&auth.method, format!("{path}.auth.{key}: {m}")),
    };
    match method {
        M::None => Ok(ClientAuth::None),
        M::ClientSecretBasic | M::ClientSecretPost => {
            let client_secret = match (&auth.client_secret, &auth.client_secret_file) {
                (Some(_), Some(f)) => {
                    return Err(at(
                        f,
                        format!("{path}.auth: give client_secret or client_secret_file, not both"),
                    ));
                }
                (Some(s), None) if s.0.is_empty() => {
                    return Err(at(
                        &auth.method,
                        format!("{path}.auth: the client secret is empty"),
                    ));
                }
                (Some(s), None) => Watched::fixed(Secret::new(s.0.as_str())),
                (None, Some(_)) => {
                    let file = required(&auth.client_secret_file, "client_secret_file")?;
                    let secret = sources
                        .watch(vec![file], |p, c| parse_secret(&p[0], &c[0]))
                        .map_err(|m| at_key(&auth.client_secret_file, "client_secret_file", m))?;
                    let Some(secret) = secret else {
                        return Ok(OFFLINE_STAND_IN);
                    };
                    secret
                }
                (None, None) => {
                    return Err(at(
                        &auth.method,
                        format!(
                            "{path}.auth: {} needs client_secret or client_secret_file",
                            method_name(method)
                        ),
                    ));
                }
            };
            Ok(if method == M::ClientSecretBasic {
                ClientAuth::ClientSecretBasic { client_secret }
            } else {
                ClientAuth::ClientSecretPost { client_secret }
            })
        }
        M::PrivateKeyJwt => {
            if audience.is_empty() {
                return Err(at(
                    &auth.method,
                    format!("{path}.auth: the assertion audience (audience, else issuer) is empty"),
                ));
            }
            let file = required(&auth.private_key_file, "private_key_file")?;
            let alg = parse_alg(auth.alg.as_ref().map_or("ES256", |a| a.0.as_str()))
                .map_err(|m| at(&auth.method, format!("{path}.auth.alg: {m}")))?;
            let kid = auth.key_id.as_ref().map(|k| k.0.clone());
            let private_key = sources
                .watch(vec![file], move |p, c| {
                    AssertionKey::parse(&p[0], &c[0], alg, kid.as_deref())
                })
                .map_err(|m| at_key(&auth.private_key_file, "private_key_file", m))?;
            Ok(
                private_key.map_or(OFFLINE_STAND_IN, |private_key| ClientAuth::PrivateKeyJwt {
                    private_key,
                    audience: audience.to_string(),
                }),
            )
        }
        M::ClientAssertion => {
            let file = required(&auth.assertion_file, "assertion_file")?;
            let assertion_type = match &auth.assertion_type {
                None => CLIENT_ASSERTION_TYPE_JWT_BEARER.to_string(),
                Some(t) => absolute_uri(&t.0)
                    .map_err(|m| at(&auth.method, format!("{path}.auth.assertion_type: {m}")))?,
            };
            let assertion = sources
                .watch(vec![file], |p, c| parse_assertion(&p[0], &c[0]))
                .map_err(|m| at_key(&auth.assertion_file, "assertion_file", m))?;
            Ok(
                assertion.map_or(OFFLINE_STAND_IN, |assertion| ClientAuth::ClientAssertion {
                    assertion,
                    assertion_type,
                }),
            )
        }
        M::TlsClientAuth => {
            let paths = vec![
                required(&auth.cert_file, "cert_file")?,
                required(&auth.key_file, "key_file")?,
            ];
            let identity = sources
                .watch(paths, |p, c| parse_identity(&p[0], &c[0], &p[1], &c[1]))
                .map_err(|m| at_key(&auth.cert_file, "cert_file", m))?;
            Ok(
                identity.map_or(OFFLINE_STAND_IN, |identity| ClientAuth::TlsClientAuth {
                    identity,
                }),
            )
        }
    }
}

/// What an offline check builds for a method whose credential file it did not read; the
/// model it is part of is dropped unused.
const OFFLINE_STAND_IN: ClientAuth = ClientAuth::None;

fn method_name(m: AuthMethod) -> &'static str {
    match m {
        AuthMethod::ClientSecretBasic => "client_secret_basic",
        AuthMethod::ClientSecretPost => "client_secret_post",
        AuthMethod::PrivateKeyJwt => "private_key_jwt",
        AuthMethod::ClientAssertion => "client_assertion",
        AuthMethod::TlsClientAuth => "tls_client_auth",
        AuthMethod::None => "none",
    }
}
