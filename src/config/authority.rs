//! Authorities: the token endpoint, how tokex authenticates there (`auth.method`), the
//! actor token, trust roots and the circuit breaker. Every credential file becomes a
//! [`Watched`] value registered for rotation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::file::{AuthMethod, FileAuth, FileAuthority};
use super::model::{
    Actor, ActorToken, Authority, Invalid, TOKEN_TYPE_JWT, absolute_uri, at, resolve,
};
use super::values::PathText;
use crate::client_auth::{AssertionKey, CLIENT_ASSERTION_TYPE_JWT_BEARER, ClientAuth};
use crate::credentials::{Poll, Watched, parse_secret};
use crate::secret::Secret;
use crate::tls::{self, CaBundle};

pub(super) fn authority(
    name: &str,
    spanned: &Spanned<FileAuthority>,
    base: &Path,
    watched: &mut Vec<Arc<dyn Poll>>,
) -> Result<Authority, Invalid> {
    let a = &spanned.value;
    let path = format!("authorities.{name}");
    if a.client_id.0.is_empty() {
        return Err(at(spanned, format!("{path}.client_id must not be empty")));
    }
    let issuer = a.issuer.as_ref().map(|t| t.0.clone());
    // RFC 7523 as updated: the assertion audience is the issuer identifier; without one
    // configured, the token endpoint's origin is the best available stand-in.
    let audience = issuer
        .clone()
        .unwrap_or_else(|| a.token_endpoint.0.origin().ascii_serialization());
    let auth = client_auth(&a.auth, &path, base, &audience, watched)?;
    let actor_token = match &a.actor_token {
        None => None,
        Some(actor) => {
            let token = watch(watched, vec![resolve(base, &actor.file.value)], |p, c| {
                let token = parse_secret(&p[0], &c[0])?;
                let digest = ring::digest::digest(&ring::digest::SHA256, token.expose().as_bytes());
                let mut d = [0u8; 32];
                d.copy_from_slice(digest.as_ref());
                Ok(Actor { token, digest: d })
            })
            .map_err(|m| at(&actor.file, format!("{path}.actor_token.file: {m}")))?;
            let token_type = match &actor.token_type {
                None => TOKEN_TYPE_JWT.to_string(),
                Some(t) => absolute_uri(&t.value.0)
                    .map_err(|m| at(t, format!("{path}.actor_token.type: {m}")))?,
            };
            Some(ActorToken { token, token_type })
        }
    };
    let ca_file = ca_bundle(
        a.ca_file.as_ref(),
        &format!("{path}.ca_file"),
        base,
        watched,
    )?;
    let retries = a.retries.unwrap_or(2);
    if retries > 10 {
        return Err(at(spanned, format!("{path}.retries must be at most 10")));
    }
    let timeout = a.timeout.map_or(Duration::from_secs(2), |d| d.0);
    if timeout.is_zero() {
        return Err(at(
            spanned,
            format!("{path}.timeout must be greater than zero"),
        ));
    }
    Ok(Authority {
        name: name.to_string(),
        token_endpoint: a.token_endpoint.0.to_string(),
        issuer,
        client_id: a.client_id.0.clone(),
        auth,
        actor_token,
        ca_file,
        timeout,
        retries,
        circuit_breaker: breaker(a.circuit_breaker.as_ref(), &path).map_err(|m| at(spanned, m))?,
    })
}

fn breaker(
    b: Option<&super::file::FileBreaker>,
    path: &str,
) -> Result<crate::resilience::BreakerSettings, String> {
    let default = crate::resilience::BreakerSettings::default();
    let Some(b) = b else { return Ok(default) };
    let settings = crate::resilience::BreakerSettings {
        failures: b.failures.unwrap_or(default.failures),
        open_for: b.open_for.map_or(default.open_for, |d| d.0),
    };
    if settings.failures > 0 && settings.open_for.is_zero() {
        return Err(format!(
            "{path}.circuit_breaker.open_for must be greater than zero"
        ));
    }
    Ok(settings)
}

/// Reads `paths` with `parse` (which also gets the paths, for its messages) and
/// registers the value with the rotation poller.
pub(super) fn watch<T: Send + Sync + std::fmt::Debug + 'static>(
    watched: &mut Vec<Arc<dyn Poll>>,
    paths: Vec<PathBuf>,
    parse: impl Fn(&[PathBuf], &[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
) -> Result<Watched<T>, String> {
    let value = match super::sources::fixed_files(&paths) {
        Some(contents) => Watched::pinned(paths.clone(), parse(&paths, &contents?)?),
        None => {
            let names = paths.clone();
            Watched::load(paths, move |contents| parse(&names, contents))?
        }
    };
    watched.push(Arc::new(value.clone()));
    Ok(value)
}

fn client_auth(
    auth: &FileAuth,
    path: &str,
    base: &Path,
    audience: &str,
    watched: &mut Vec<Arc<dyn Poll>>,
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
        v.as_ref().map(|f| resolve(base, &f.value)).ok_or_else(|| {
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
                    watch(watched, vec![file], |p, c| parse_secret(&p[0], &c[0]))
                        .map_err(|m| at_key(&auth.client_secret_file, "client_secret_file", m))?
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
            let file = required(&auth.private_key_file, "private_key_file")?;
            let alg =
                crate::client_auth::parse_alg(auth.alg.as_ref().map_or("ES256", |a| a.0.as_str()))
                    .map_err(|m| at(&auth.method, format!("{path}.auth.alg: {m}")))?;
            let kid = auth.key_id.as_ref().map(|k| k.0.clone());
            let private_key = watch(watched, vec![file], move |p, c| {
                AssertionKey::parse(&p[0], &c[0], alg, kid.as_deref())
            })
            .map_err(|m| at_key(&auth.private_key_file, "private_key_file", m))?;
            Ok(ClientAuth::PrivateKeyJwt {
                private_key,
                audience: audience.to_string(),
            })
        }
        M::ClientAssertion => {
            let file = required(&auth.assertion_file, "assertion_file")?;
            let assertion = watch(watched, vec![file], |p, c| {
                crate::client_auth::parse_assertion(&p[0], &c[0])
            })
            .map_err(|m| at_key(&auth.assertion_file, "assertion_file", m))?;
            let assertion_type = match &auth.assertion_type {
                None => CLIENT_ASSERTION_TYPE_JWT_BEARER.to_string(),
                Some(t) => absolute_uri(&t.0)
                    .map_err(|m| at(&auth.method, format!("{path}.auth.assertion_type: {m}")))?,
            };
            Ok(ClientAuth::ClientAssertion {
                assertion,
                assertion_type,
            })
        }
        M::TlsClientAuth => {
            let paths = vec![
                required(&auth.cert_file, "cert_file")?,
                required(&auth.key_file, "key_file")?,
            ];
            let identity = watch(watched, paths, |p, c| {
                tls::parse_identity(&p[0], &c[0], &p[1], &c[1])
            })
            .map_err(|m| at_key(&auth.cert_file, "cert_file", m))?;
            Ok(ClientAuth::TlsClientAuth { identity })
        }
    }
}

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

pub(super) fn ca_bundle(
    f: Option<&Spanned<PathText>>,
    path: &str,
    base: &Path,
    watched: &mut Vec<Arc<dyn Poll>>,
) -> Result<Option<Watched<CaBundle>>, Invalid> {
    f.map(|f| {
        watch(watched, vec![resolve(base, &f.value)], |p, c| {
            tls::parse_ca(&p[0], &c[0])
        })
        .map_err(|m| at(f, format!("{path}: {m}")))
    })
    .transpose()
}
