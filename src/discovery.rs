//! Authorization server metadata (RFC 8414, and OpenID Connect Discovery 1.0 §4): where an
//! authority configured by `issuer` alone has its token endpoint, and which client
//! authentication methods it takes.
//!
//! Read at start and on reload, never on the request path and never by `tokex check
//! --offline`. The well-known URLs are tried in order: RFC 8414 §3.1's (the
//! `/.well-known/oauth-authorization-server` segment inserted before the issuer's path),
//! then OpenID's (`/.well-known/openid-configuration` appended to it). The metadata's
//! `issuer` must equal the configured one exactly (RFC 8414 §3.3), and the token endpoint
//! must be `https` unless the issuer itself is plain `http` on loopback.

use std::sync::Arc;

use serde::Deserialize;

use crate::config::model::{Authority, Config};
use crate::config::validate::secure_transport;

/// Largest metadata document read; real ones are a few KiB.
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

/// Why an authority's metadata could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authorities.{authority}: reading metadata from {url}: {reason}")]
    Fetch {
        authority: String,
        url: String,
        reason: String,
    },
    #[error(
        "authorities.{authority}: metadata at {url} names issuer {found:?}, not the configured {expected:?} (RFC 8414 §3.3)"
    )]
    IssuerMismatch {
        authority: String,
        url: String,
        expected: String,
        found: String,
    },
    #[error("authorities.{authority}: metadata at {url}: {reason}")]
    Unusable {
        authority: String,
        url: String,
        reason: String,
    },
}

/// What tokex takes from an authority's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub token_endpoint: String,
    /// `token_endpoint_auth_methods_supported`; RFC 8414 §2's default when absent.
    pub auth_methods: Vec<String>,
    /// The URL the metadata came from.
    pub from: String,
}

/// The URLs tried for `issuer`, in order: RFC 8414 §3.1, then OpenID Connect Discovery
/// §4 (which appends to the issuer's path).
pub fn well_known_urls(issuer: &url::Url) -> [String; 2] {
    let origin = issuer.origin().ascii_serialization();
    let path = issuer.path().trim_end_matches('/');
    [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}{path}/.well-known/openid-configuration"),
    ]
}

/// Fills in the token endpoint of every authority configured by issuer alone. With a
/// `previous` config (a reload), an authority whose metadata cannot be read keeps the
/// endpoint it had, when it had one for the same issuer; the failure is logged and
/// counted by `on_kept`.
pub async fn resolve(
    mut config: Config,
    previous: Option<&Config>,
    on_kept: impl Fn(&str),
) -> Result<Config, Error> {
    for (name, authority) in config.authorities.iter_mut() {
        let Some(issuer) = authority.discover.clone() else {
            continue;
        };
        let found = match fetch(authority, &issuer).await {
            Ok(found) => found,
            Err(e) => {
                let kept = previous
                    .and_then(|p| p.authorities.get(name))
                    .filter(|old| old.discover.as_ref() == Some(&issuer))
                    .filter(|old| !old.token_endpoint.is_empty());
                let Some(old) = kept else { return Err(e) };
                tracing::warn!(authority = %name, error = %e, token_endpoint = %old.token_endpoint, "authority metadata unreadable; keeping the token endpoint it had");
                on_kept(name);
                Discovered {
                    token_endpoint: old.token_endpoint.clone(),
                    auth_methods: old.discovered_auth_methods.clone(),
                    from: String::new(),
                }
            }
        };
        let method = authority.auth.method_name();
        if !found.auth_methods.iter().any(|m| m == method) {
            return Err(Error::Unusable {
                authority: name.clone(),
                url: found.from,
                reason: format!(
                    "auth.method {method} is not in token_endpoint_auth_methods_supported ({})",
                    found.auth_methods.join(", ")
                ),
            });
        }
        // Validation made each authority once, and nothing holds it yet.
        let Some(a) = Arc::get_mut(authority) else {
            return Err(Error::Unusable {
                authority: name.clone(),
                url: found.from,
                reason: "the authority is already in use".into(),
            });
        };
        a.token_endpoint = found.token_endpoint;
        a.discovered_auth_methods = found.auth_methods;
    }
    Ok(config)
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// The first well-known URL that answers 200 with metadata; a 404 moves on to the next,
/// anything else is the error.
async fn fetch(a: &Authority, issuer: &url::Url) -> Result<Discovered, Error> {
    let client = client(a).map_err(|reason| Error::Fetch {
        authority: a.name.clone(),
        url: issuer.to_string(),
        reason,
    })?;
    let urls = well_known_urls(issuer);
    let mut last = None;
    for url in urls {
        let fail = |reason: String| Error::Fetch {
            authority: a.name.clone(),
            url: url.clone(),
            reason,
        };
        let got = tokio::time::timeout(a.timeout, get(&client, &url)).await;
        let (status, body) = match got {
            Err(_) => return Err(fail("timed out".into())),
            Ok(Err(reason)) => return Err(fail(reason)),
            Ok(Ok(got)) => got,
        };
        if status == 404 {
            last = Some(fail("HTTP 404".into()));
            continue;
        }
        if status != 200 {
            return Err(fail(format!("HTTP {status}")));
        }
        return judge(a, issuer, &url, &body);
    }
    Err(last.unwrap_or_else(|| Error::Fetch {
        authority: a.name.clone(),
        url: issuer.to_string(),
        reason: "no metadata".into(),
    }))
}

/// RFC 8414 §3.2 and §3.3: the issuer as configured, a usable token endpoint.
fn judge(a: &Authority, issuer: &url::Url, url: &str, body: &[u8]) -> Result<Discovered, Error> {
    let unusable = |reason: &str| Error::Unusable {
        authority: a.name.clone(),
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let raw: RawMetadata =
        serde_json::from_slice(body).map_err(|_| unusable("not a JSON metadata document"))?;
    let expected = a.issuer.clone().unwrap_or_else(|| issuer.to_string());
    let found = raw.issuer.unwrap_or_default();
    if found != expected {
        return Err(Error::IssuerMismatch {
            authority: a.name.clone(),
            url: url.to_string(),
            expected,
            found: found.chars().take(256).collect(),
        });
    }
    let endpoint = raw
        .token_endpoint
        .ok_or_else(|| unusable("no token_endpoint"))?;
    let parsed = url::Url::parse(&endpoint)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.fragment().is_none())
        .filter(|u| u.username().is_empty() && u.password().is_none())
        .ok_or_else(|| unusable("token_endpoint is not an http(s) URL"))?;
    // Plain http only where the issuer itself is plain http on loopback (or allowed).
    let issuer_loopback_http = issuer.scheme() == "http" && secure_transport(issuer);
    let secure = parsed.scheme() == "https"
        || (secure_transport(&parsed) && issuer_loopback_http)
        || a.allow_insecure_http;
    if !secure {
        return Err(unusable(
            "token_endpoint is plain http: client secrets and subject tokens would cross the network in clear",
        ));
    }
    let auth_methods = raw
        .token_endpoint_auth_methods_supported
        .unwrap_or_else(|| vec!["client_secret_basic".into()]);
    Ok(Discovered {
        token_endpoint: parsed.to_string(),
        auth_methods,
        from: url.to_string(),
    })
}

/// A client for the metadata: the authority's trust roots and client certificate, no
/// redirects, no proxy variables.
fn client(a: &Authority) -> Result<reqwest::Client, String> {
    let ca = a.ca_file.as_ref().map(|c| c.current());
    let identity = a.auth.identity().map(|i| i.current());
    crate::tls::reqwest_builder(ca.as_deref(), identity.as_deref())
        .map_err(|e| format!("TLS config: {e}"))?
        .connect_timeout(a.attempt_timeout)
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, Vec<u8>), String> {
    let describe = |e: reqwest::Error| crate::exchange::describe(&e);
    let mut response = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(describe)?;
    let status = response.status().as_u16();
    if response
        .content_length()
        .is_some_and(|l| l > MAX_METADATA_BYTES as u64)
    {
        return Err("metadata too large".into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_METADATA_BYTES {
            return Err("metadata too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8414 §3.1 inserts the well-known segment before the issuer's path; OpenID
    /// appends to it; a trailing `/` is not doubled.
    #[test]
    fn well_known_url_forms() {
        let u = |s: &str| well_known_urls(&url::Url::parse(s).unwrap());
        assert_eq!(
            u("https://as.example/tenant/v2.0"),
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant/v2.0",
                "https://as.example/tenant/v2.0/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            u("https://as.example"),
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            u("http://127.0.0.1:8080/realms/x/"),
            [
                "http://127.0.0.1:8080/.well-known/oauth-authorization-server/realms/x",
                "http://127.0.0.1:8080/realms/x/.well-known/openid-configuration",
            ]
        );
    }
}
