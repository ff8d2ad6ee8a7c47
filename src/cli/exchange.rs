//! `tokex exchange`: one exchange exactly as a route would do it, for trying a config
//! against a real authorization server. Prints the result's claims, never the token.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::{EXIT_CONFIG, EXIT_RUNTIME};
use tokex::config::{self, model::Config};
use tokex::exchange::ExchangeClient;
use tokex::metrics::Metrics;

/// Runs the exchange of `route_name` for the subject token on stdin.
pub async fn exchange(path: &Path, route_name: &str) -> ExitCode {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match tokex::discovery::resolve(config, None, |_| {}).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(route) = config.routes.iter().find(|r| r.name == route_name) else {
        eprintln!(
            "{}: no route named `{route_name}`; {}",
            path.display(),
            routes_that_exchange(&config)
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let Some(params) = route.exchange.as_ref() else {
        eprintln!(
            "{}: route `{route_name}` has `exchange: none`; {}",
            path.display(),
            routes_that_exchange(&config)
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let Some(authority) = config.authorities.get(&params.authority) else {
        eprintln!(
            "{}: route `{route_name}` names an unknown authority",
            path.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let token = match read_subject() {
        Ok(token) => token,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let client = match client_for(&config, &params.authority) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let first = match params.first_leg.as_deref() {
        None => None,
        Some(leg) => match client_for(&config, &leg.authority) {
            Ok(c) => Some((c, leg)),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let now = tokex::clock::unix_now();
    let subject_exp = tokex::jwt::unverified_exp(token.expose());
    if subject_exp.is_some_and(|exp| exp <= now) {
        eprintln!("invalid_token: the subject token has expired");
        return ExitCode::from(EXIT_RUNTIME);
    }
    // A chain: the first leg's grant is the second leg's assertion.
    let grant = match &first {
        None => None,
        Some((first, leg)) => match first.exchange(token.expose(), leg).await {
            Ok(grant) => Some(grant),
            Err(e) => return failed(&e, "first leg: "),
        },
    };
    let assertion = grant
        .as_ref()
        .map_or(token.expose(), |g| g.access_token.expose());
    match client.exchange(assertion, params).await {
        Ok(issued) => {
            let issued_exp = tokex::jwt::unverified_exp(issued.access_token.expose());
            let bounds = tokex::cache::Bounds {
                now_unix: now,
                expires_in: issued.expires_in,
                issued_exp,
                subject_exp,
            };
            let mut report = serde_json::json!({
                "route": route.name,
                "authority": authority.name,
                "issued_token_type": issued.issued_token_type,
                "expires_in": issued.expires_in,
                "scope": issued.scope,
                "cache_ttl_seconds": tokex::cache::lifetime(bounds, &route.cache).as_secs(),
                "claims": tokex::jwt::unverified_claims(issued.access_token.expose()),
            });
            if let (Some((first, _)), Some(grant)) = (&first, &grant) {
                report["first_leg"] = serde_json::json!({
                    "authority": first.authority().name,
                    "issued_token_type": grant.issued_token_type,
                    "expires_in": grant.expires_in,
                    "claims": tokex::jwt::unverified_claims(grant.access_token.expose()),
                });
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&e, if first.is_some() { "second leg: " } else { "" }),
    }
}

/// The error's text carries the AS's error_description, tokens cut out.
fn failed(e: &tokex::exchange::Error, leg: &str) -> ExitCode {
    let p = tokex::error::ProxyError::from(e);
    eprintln!("{}: {leg}{e}", p.code.as_str());
    ExitCode::from(EXIT_RUNTIME)
}

/// The exchange client for authority `name` of `config`.
fn client_for(config: &Config, name: &str) -> Result<ExchangeClient, String> {
    let authority = config
        .authorities
        .get(name)
        .ok_or_else(|| format!("unknown authority {name}"))?;
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    ExchangeClient::new(authority.clone(), permits, Arc::new(Metrics::default()))
        .map_err(|e| e.to_string())
}

/// The names a `--route` can take, for a mistyped one.
fn routes_that_exchange(config: &Config) -> String {
    let names: Vec<&str> = config
        .routes
        .iter()
        .filter(|r| r.exchange.is_some())
        .map(|r| r.name.as_str())
        .collect();
    match names.as_slice() {
        [] => "no route in this file exchanges tokens".into(),
        names => format!("routes that exchange: {}", names.join(", ")),
    }
}

/// The subject token on stdin: the token alone, not an `Authorization` value.
fn read_subject() -> Result<tokex::secret::Secret, &'static str> {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() || input.trim().is_empty() {
        return Err("expected a subject token on stdin");
    }
    let token = input.trim();
    let scheme = token
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("bearer "));
    if scheme || token.eq_ignore_ascii_case("bearer") {
        return Err(
            "the input starts with `Bearer `: give the token alone, as it follows \
                    `Authorization: Bearer ` in a request",
        );
    }
    Ok(tokex::secret::Secret::new(token))
}
