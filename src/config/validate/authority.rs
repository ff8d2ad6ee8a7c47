//! Authorities: the token endpoint and its transport, the actor token, timeouts, retries
//! and the circuit breaker; how tokex authenticates there is in `auth`.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::sources::Sources;
use super::{Invalid, absolute_uri, at};
use crate::config::file::FileAuthority;
use crate::config::model::{Actor, ActorToken, Authority, BreakerSettings};
use crate::credentials::parse_secret;
use crate::oauth::TOKEN_TYPE_JWT;
use tokex_common::offline;
use tokex_common::values::{Text, format_duration};

pub(super) fn authority(
    name: &str,
    spanned: &Spanned<FileAuthority>,
    sources: &mut Sources,
) -> Result<Authority, Invalid> {
    let a = &spanned.value;
    let path = format!("authorities.{name}");
    if a.client_id.0.is_empty() {
        return Err(at(spanned, format!("{path}.client_id must not be empty")));
    }
    let discover = match (&a.token_endpoint, &a.issuer) {
        (Some(endpoint), _) => {
            let url = &endpoint.value.0;
            if !a.allow_insecure_http && !secure_transport(url) {
                return Err(at(
                    endpoint,
                    format!(
                        "{path}.token_endpoint: `{url}` is plain http to a host that is not loopback: \
                         client secrets and subject tokens would cross the network in clear; use https \
                         (or set allow_insecure_http: true on this authority)"
                    ),
                ));
            }
            None
        }
        (None, Some(issuer)) => Some(issuer_url(issuer, a.allow_insecure_http, &path)?),
        (None, None) => {
            return Err(at(
                spanned,
                format!(
                    "{path}: give token_endpoint, or issuer to read it from the authority's metadata"
                ),
            ));
        }
    };
    let issuer = a.issuer.as_ref().map(|t| t.value.0.clone());
    let audience = assertion_audience(a);
    if audience.is_empty() {
        return Err(at(
            spanned,
            format!("{path}.auth.audience must not be empty"),
        ));
    }
    let auth = super::auth::client_auth(&a.auth, &path, &audience, sources)?;
    let actor_token = match &a.actor_token {
        None => None,
        Some(actor) => {
            let token_type = match &actor.token_type {
                None => TOKEN_TYPE_JWT.to_string(),
                Some(t) => absolute_uri(&t.value.0)
                    .map_err(|m| at(t, format!("{path}.actor_token.type: {m}")))?,
            };
            let file = sources.resolve(&actor.file.value);
            sources
                .watch(vec![file], |p, c| {
                    let token = parse_secret(&p[0], &c[0])?;
                    let digest =
                        ring::digest::digest(&ring::digest::SHA256, token.expose().as_bytes());
                    let mut d = [0u8; 32];
                    d.copy_from_slice(digest.as_ref());
                    Ok(Actor { token, digest: d })
                })
                .map_err(|m| at(&actor.file, format!("{path}.actor_token.file: {m}")))?
                .map(|token| ActorToken { token, token_type })
        }
    };
    let ca_file = super::trust::ca_bundle(a.ca_file.as_ref(), &format!("{path}.ca_file"), sources)?;
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
    let attempt_timeout = match &a.attempt_timeout {
        None => timeout,
        Some(t) if t.value.0.is_zero() => {
            return Err(at(
                t,
                format!("{path}.attempt_timeout must be greater than zero"),
            ));
        }
        Some(t) if t.value.0 > timeout && offline::comparable(&[t.value.0, timeout]) => {
            return Err(at(
                t,
                format!(
                    "{path}.attempt_timeout: {} is longer than timeout ({}), which bounds the \
                     whole exchange, retries included",
                    format_duration(t.value.0),
                    format_duration(timeout)
                ),
            ));
        }
        Some(t) => t.value.0,
    };
    Ok(Authority {
        name: name.to_string(),
        // Filled in from the metadata (crate::discovery) before the config runs.
        token_endpoint: a
            .token_endpoint
            .as_ref()
            .map_or_else(String::new, |e| e.value.0.to_string()),
        discover,
        discovered_auth_methods: Vec::new(),
        allow_insecure_http: a.allow_insecure_http,
        issuer,
        client_id: a.client_id.0.clone(),
        auth,
        actor_token,
        ca_file,
        timeout,
        attempt_timeout,
        retries,
        circuit_breaker: breaker(a.circuit_breaker.as_ref(), &path).map_err(|m| at(spanned, m))?,
    })
}

/// RFC 7523 §3: the `aud` of a `private_key_jwt` assertion identifies the authorization
/// server: its issuer identifier where one is configured (what current guidance asks for),
/// else the token endpoint URL, which RFC 7523 §3 names. `auth.audience` covers an AS that
/// expects something else.
pub(in crate::config) fn assertion_audience(a: &FileAuthority) -> String {
    let explicit = a
        .auth
        .audience
        .as_ref()
        .or(a.issuer.as_ref().map(|i| &i.value));
    let endpoint = a.token_endpoint.as_ref().map(|e| e.value.0.to_string());
    // Validation requires an issuer where there is no endpoint.
    explicit.map_or_else(|| endpoint.unwrap_or_default(), |t| t.0.clone())
}

/// RFC 8414 §2: an issuer to discover from is an `https` URL (or `http` on loopback, as
/// token endpoints) with no query or fragment.
fn issuer_url(issuer: &Spanned<Text>, insecure: bool, path: &str) -> Result<url::Url, Invalid> {
    let raw = &issuer.value.0;
    let bad = |m: String| at(issuer, format!("{path}.issuer: {m}"));
    if offline::unresolved(raw) {
        return url::Url::parse("https://unresolved.invalid/").map_err(|e| bad(e.to_string()));
    }
    let url = url::Url::parse(raw).map_err(|_| bad(format!("`{raw}` is not a URL")))?;
    if !matches!(url.scheme(), "https" | "http")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad(format!(
            "`{raw}` must be an https URL without query or fragment (RFC 8414 §2)"
        )));
    }
    if !insecure && !secure_transport(&url) {
        return Err(bad(format!(
            "`{raw}` is plain http to a host that is not loopback; use https (or set allow_insecure_http: true)"
        )));
    }
    Ok(url)
}

/// `https`, or `http` that never leaves the machine: 127.0.0.0/8, `::1` or `localhost`.
pub(crate) fn secure_transport(url: &url::Url) -> bool {
    match url.host() {
        _ if url.scheme() == "https" => true,
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(super) fn breaker(
    b: Option<&crate::config::file::FileBreaker>,
    path: &str,
) -> Result<BreakerSettings, String> {
    let default = BreakerSettings::default();
    let Some(b) = b else { return Ok(default) };
    let settings = BreakerSettings {
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::model::ClientAuth;
    use crate::config::{Config, ConfigError, parse};

    /// One authority `a` with `lines` (each indented four spaces) and no routes.
    fn with(lines: &str) -> Result<Config, ConfigError> {
        let mut text = "authorities:\n  a:\n".to_string();
        for line in lines.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        text.push_str("routes: []\n");
        parse(&text, Path::new("t.yaml"))
    }

    const NONE: &str = "client_id: c\nauth: { method: none }\n";

    /// Plain http to anything but loopback is refused at the key, naming what would leak;
    /// loopback, https and an explicit `allow_insecure_http` pass.
    #[test]
    fn plain_http_token_endpoint_only_on_loopback() {
        for bad in [
            "http://sts.example/token",
            "http://10.0.0.1:8080/token",
            "http://localhost.evil.example/token",
            "http://127.0.0.1.nip.io/token",
            "http://[::2]/token",
        ] {
            let err = with(&format!("token_endpoint: {bad}\n{NONE}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("t.yaml:3:21: authorities.a.token_endpoint:")
                    && err.contains("in clear")
                    && err.contains("client secrets and subject tokens")
                    && err.contains("allow_insecure_http"),
                "{bad}: {err}"
            );
        }
        for good in [
            "https://sts.example/token",
            "http://127.0.0.1:8080/token",
            "http://127.1.2.3/token",
            "http://[::1]:9/token",
            "http://localhost:9/token",
            "http://LocalHost/token",
        ] {
            assert!(
                with(&format!("token_endpoint: {good}\n{NONE}")).is_ok(),
                "{good}"
            );
        }
        let allowed = "token_endpoint: http://sts.example/token\nallow_insecure_http: true\n";
        assert!(with(&format!("{allowed}{NONE}")).is_ok());
    }

    /// The assertion audience of a `private_key_jwt` authority with `lines` and `auth`
    /// keys `extra`.
    fn audience_of(lines: &str, extra: &str) -> String {
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/ed25519.pem");
        let auth = format!(
            "auth: {{ method: private_key_jwt, private_key_file: {key}, alg: EdDSA{extra} }}"
        );
        let config = with(&format!("client_id: c\n{lines}{auth}\n")).unwrap();
        match &config.authorities["a"].auth {
            ClientAuth::PrivateKeyJwt { audience, .. } => audience.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// RFC 7523 §3: `auth.audience`, else the issuer, else the token endpoint URL in full.
    #[test]
    fn private_key_jwt_audience() {
        let endpoint = "token_endpoint: https://sts.example:8443/oauth2/token\n";
        assert_eq!(
            audience_of(endpoint, ""),
            "https://sts.example:8443/oauth2/token"
        );
        let issuer = format!("{endpoint}issuer: https://sts.example\n");
        assert_eq!(audience_of(&issuer, ""), "https://sts.example");
        assert_eq!(audience_of(&issuer, ", audience: my-as"), "my-as");
        let err = with(&format!(
            "{endpoint}client_id: c\nauth: {{ method: none, audience: x }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("auth.audience does not apply"), "{err}");
    }

    /// `attempt_timeout` defaults to `timeout` and may not exceed it.
    #[test]
    fn attempt_timeout_bounds() {
        let endpoint = "token_endpoint: https://sts.example/token\n";
        let get = |lines: &str| with(&format!("{endpoint}{NONE}{lines}"));
        let a = get("timeout: 3s\n").unwrap();
        assert_eq!(a.authorities["a"].attempt_timeout, Duration::from_secs(3));
        let a = get("timeout: 3s\nattempt_timeout: 500ms\n").unwrap();
        let a = &a.authorities["a"];
        assert_eq!(
            (a.timeout, a.attempt_timeout),
            (Duration::from_secs(3), Duration::from_millis(500))
        );
        assert_eq!(
            get("").unwrap().authorities["a"].attempt_timeout,
            Duration::from_secs(2),
            "the default timeout"
        );
        let err = get("timeout: 1s\nattempt_timeout: 2s\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.yaml:7:22: authorities.a.attempt_timeout:")
                && err.contains("longer than timeout (1s)"),
            "{err}"
        );
        let err = get("attempt_timeout: 0s\n").unwrap_err().to_string();
        assert!(err.contains("greater than zero"), "{err}");
    }
}
