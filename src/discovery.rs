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
                    listed(&found.auth_methods)
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

/// The server's list, for a message that is logged: each name quoted and bounded, at
/// most a few of them, so a hostile document cannot forge or flood log lines.
fn listed(methods: &[String]) -> String {
    let mut shown: Vec<String> = methods
        .iter()
        .take(8)
        .map(|m| format!("{:?}", m.chars().take(64).collect::<String>()))
        .collect();
    if methods.len() > shown.len() {
        shown.push(format!("and {} more", methods.len() - shown.len()));
    }
    shown.join(", ")
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    mtls_endpoint_aliases: Option<MtlsAliases>,
}

/// RFC 8705 §5: the endpoints a client authenticating by certificate must use instead.
#[derive(Deserialize)]
struct MtlsAliases {
    token_endpoint: Option<String>,
}

/// The first well-known URL that answers with usable metadata. Any other answer (a 404, a
/// firewall's 403, an HTML page, another issuer's document) moves on to the next; a
/// transport failure ends the search, both URLs being at the issuer's origin. When none
/// serves, the error is the first that is not a 404: the one that says most.
async fn fetch(a: &Authority, issuer: &url::Url) -> Result<Discovered, Error> {
    let client = client(a).map_err(|reason| Error::Fetch {
        authority: a.name.clone(),
        url: issuer.to_string(),
        reason,
    })?;
    let urls = well_known_urls(issuer);
    let mut failed = Vec::with_capacity(urls.len());
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
        let judged = match status {
            200 => judge(a, issuer, &url, &body),
            _ => Err(fail(format!("HTTP {status}"))),
        };
        match judged {
            Ok(found) => return Ok(found),
            Err(e) => failed.push((status, e)),
        }
    }
    let telling = failed.iter().position(|(status, _)| *status != 404);
    match telling.or(failed.len().checked_sub(1)) {
        Some(i) => Err(failed.swap_remove(i).1),
        None => Err(Error::Fetch {
            authority: a.name.clone(),
            url: issuer.to_string(),
            reason: "no metadata".into(),
        }),
    }
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
    // RFC 8705 §5: a client authenticating by certificate MUST use the alias, when there
    // is one (the authority may terminate mutual TLS on another host).
    let alias = raw.mtls_endpoint_aliases.and_then(|m| m.token_endpoint);
    let endpoint = match alias {
        Some(alias) if a.auth.identity().is_some() => alias,
        _ => raw
            .token_endpoint
            .ok_or_else(|| unusable("no token_endpoint"))?,
    };
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

    /// A hostile list of methods reaches the log quoted, escaped and bounded.
    #[test]
    fn listed_methods_are_quoted_and_bounded() {
        let many = vec!["x\nforged line".to_string(); 10];
        let shown = listed(&many);
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.starts_with(r#""x\nforged line", "#), "{shown}");
        assert!(shown.ends_with("and 2 more"), "{shown}");
        assert!(listed(&["a".repeat(1000)]).len() < 80);
    }
}
