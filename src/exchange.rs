//! The token client: one exchange at one authority (steps 4 and 6 of the request flow), by
//! RFC 8693 token exchange or the RFC 7523 §2.1 jwt-bearer grant.
//!
//! One `reqwest` client per authority, built for this purpose only: its own trust roots,
//! no redirects (a 3xx from a token endpoint is an error, not a hint), no proxy variables,
//! connect and total timeouts. Transient failures (connect errors, 5xx, 429,
//! `temporarily_unavailable`) are retried with jittered exponential backoff.

mod error;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::Semaphore;

use crate::clock;
use crate::config::model::{Authority, ExchangeParams, Grant};
use crate::error::Code;
use crate::metrics::{Counter, Gauge, Histogram, Metrics, seconds};
use crate::resilience::{Admit, Breaker, RetryBudget};
pub use error::Error;
pub use wire::Issued;

/// Why a client for an authority could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("building TLS config for authority {0}: {1}")]
    Tls(String, #[source] rustls::Error),
    #[error("building HTTP client for authority {0}: {1}")]
    Http(String, #[source] reqwest::Error),
}

fn tls_generation(a: &Authority) -> u64 {
    let ca = a.ca_file.as_ref().map_or(0, |c| c.generation());
    let identity = a.auth.identity().map_or(0, |i| i.generation());
    ca + identity
}

fn build_http(a: &Authority) -> Result<Http, BuildError> {
    let tls_generation = tls_generation(a);
    let ca = a.ca_file.as_ref().map(|c| c.current());
    let identity = a.auth.identity().map(|i| i.current());
    let client = crate::tls::reqwest_builder(ca.as_deref(), identity.as_deref())
        .map_err(|e| BuildError::Tls(a.name.clone(), e))?
        .connect_timeout(a.attempt_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| BuildError::Http(a.name.clone(), e))?;
    Ok(Http {
        tls_generation,
        client,
    })
}

/// Longest `Retry-After` tokex waits out itself before giving up on a retry.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// The exchange client for one authority.
pub struct ExchangeClient {
    authority: Arc<Authority>,
    breaker: Breaker,
    budget: RetryBudget,
    /// Rebuilt when the CA bundle or client certificate rotates.
    http: ArcSwap<Http>,
    permits: Arc<Semaphore>,
    metrics: AuthorityMetrics,
}

/// The series one authority records into, made when its client is built (and so at 0
/// from the first scrape).
struct AuthorityMetrics {
    duration: Histogram,
    /// `tokex_exchanges_total` for `ok`, then for each of [`OUTCOMES`].
    ok: Counter,
    failed: [Counter; OUTCOMES.len()],
    retries: Counter,
    budget_exhausted: Counter,
    circuit_open: Gauge,
    issued_lifetime: Histogram,
}

/// The codes an exchange can fail with.
const OUTCOMES: [Code; 7] = [
    Code::InvalidToken,
    Code::InsufficientScope,
    Code::ExchangeDenied,
    Code::ExchangeMisconfigured,
    Code::BadExchangeResponse,
    Code::AuthorityUnavailable,
    Code::Overloaded,
];

impl AuthorityMetrics {
    fn new(metrics: &Metrics, authority: &str) -> Self {
        let outcome = |o: &str| metrics.exchanges.series(&[authority, o]);
        Self {
            duration: metrics.exchange_duration.series(&[authority]),
            ok: outcome("ok"),
            failed: OUTCOMES.map(|c| outcome(c.as_str())),
            retries: metrics.exchange_retries.series(&[authority]),
            budget_exhausted: metrics.retry_budget_exhausted.series(&[authority]),
            circuit_open: metrics.circuit_open.series(&[authority]),
            issued_lifetime: metrics.issued_lifetime.series(&[authority]),
        }
    }

    fn count(&self, result: &Result<Issued, Error>) {
        let code = match result {
            Ok(_) => {
                self.ok.inc();
                return;
            }
            Err(e) => e.code(),
        };
        if let Some(i) = OUTCOMES.iter().position(|c| *c == code) {
            self.failed[i].inc();
        }
    }
}

struct Http {
    tls_generation: u64,
    client: reqwest::Client,
}

impl ExchangeClient {
    /// `permits` bounds concurrent AS calls across all authorities.
    pub fn new(
        authority: Arc<Authority>,
        permits: Arc<Semaphore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let http = ArcSwap::from_pointee(build_http(&authority)?);
        Ok(Self {
            breaker: Breaker::new(authority.circuit_breaker),
            budget: RetryBudget::new(clock::now()),
            metrics: AuthorityMetrics::new(&metrics, &authority.name),
            authority,
            http,
            permits,
        })
    }

    /// The HTTP client for the current TLS material.
    fn http(&self) -> Result<reqwest::Client, Error> {
        let current = self.http.load();
        if current.tls_generation == tls_generation(&self.authority) {
            return Ok(current.client.clone());
        }
        let fresh = build_http(&self.authority).map_err(|e| Error::Misconfigured(e.to_string()))?;
        let client = fresh.client.clone();
        self.http.store(Arc::new(fresh));
        Ok(client)
    }

    /// The digest of the actor token in force, which cache keys include.
    pub fn actor_digest(&self) -> Option<[u8; 32]> {
        self.authority
            .actor_token
            .as_ref()
            .map(|a| a.token.with(|t| t.digest))
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Exchanges `subject_token` for a token narrowed by `params`.
    pub async fn exchange(
        &self,
        subject_token: &str,
        params: &ExchangeParams,
    ) -> Result<Issued, Error> {
        self.call(Some(subject_token), params).await
    }

    /// tokex's own token (`client_credentials`), for requests that act for no user.
    pub async fn client_credentials(&self, params: &ExchangeParams) -> Result<Issued, Error> {
        self.call(None, params).await
    }

    /// One grant at the authority, behind the breaker, with budgeted retries.
    async fn call(
        &self,
        subject_token: Option<&str>,
        params: &ExchangeParams,
    ) -> Result<Issued, Error> {
        let Ok(_permit) = self.permits.try_acquire() else {
            let refused = Err(Error::Overloaded);
            self.metrics.count(&refused);
            return refused;
        };
        let a = &self.authority;
        let admitted = match self.breaker.admit(clock::now()) {
            Ok(admitted) => admitted,
            Err(retry_after) => {
                // Fail fast: queueing on a dead AS only adds latency and load.
                let refused = Err(Error::Unavailable {
                    reason: "circuit open".into(),
                    retry_after: Some(retry_after),
                    oauth_error: None,
                });
                self.metrics.count(&refused);
                return refused;
            }
        };
        let actor = a
            .actor_token
            .as_ref()
            .map(|t| (t.token.current(), t.token_type.as_str()));
        let started = clock::now();
        self.budget.deposit(started);
        // `timeout` bounds the whole exchange, retries and backoff included: an AS that
        // does not answer costs the app `timeout`, not `timeout` per attempt.
        let deadline = clock::now() + a.timeout;
        let attempts = async {
            let mut attempt = 0;
            loop {
                let grant = match (subject_token, params.grant) {
                    (Some(subject_token), Grant::TokenExchange) => wire::Grant::Exchange {
                        subject_token,
                        actor: actor.as_ref().map(|(t, ty)| (&t.token, *ty)),
                    },
                    (Some(assertion), Grant::JwtBearer) => wire::Grant::JwtBearer { assertion },
                    (None, _) => wire::Grant::ClientCredentials,
                };
                let one = tokio::time::timeout(a.attempt_timeout, self.attempt(grant, params));
                let result = one.await.unwrap_or_else(|_| Err(timed_out()));
                match &result {
                    Err(e)
                        if e.is_transient() && attempt < a.retries && admitted == Admit::Call =>
                    {
                        let delay = backoff(attempt, e.retry_after());
                        let wake = clock::now() + delay;
                        if delay > MAX_RETRY_WAIT || wake >= deadline {
                            return result;
                        }
                        if !self.budget.withdraw(clock::now()) {
                            self.metrics.budget_exhausted.inc();
                            return result;
                        }
                        self.metrics.retries.inc();
                        tracing::debug!(authority = %a.name, attempt, error = %e, ?delay, "retrying token exchange");
                        tokio::time::sleep_until(wake).await;
                        attempt += 1;
                    }
                    _ => return result,
                }
            }
        };
        let result = tokio::time::timeout_at(deadline, attempts)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        let transient = matches!(&result, Err(e) if e.is_transient());
        self.breaker.record(admitted, transient, clock::now());
        self.metrics
            .circuit_open
            .set(i64::from(self.breaker.tripped()));
        self.metrics.duration.observe(seconds(started.elapsed()));
        self.metrics.count(&result);
        match &result {
            Ok(issued) => {
                if let Some(lifetime) = issued.lifetime(clock::unix_now()) {
                    self.metrics.issued_lifetime.observe(lifetime as f64);
                }
            }
            Err(e) => tracing::debug!(authority = %a.name, error = %e, "token exchange failed"),
        }
        result
    }

    /// One token request. The client authentication is made per attempt, so a retried
    /// `private_key_jwt` carries a fresh `jti`.
    async fn attempt(
        &self,
        grant: wire::Grant<'_>,
        params: &ExchangeParams,
    ) -> Result<Issued, Error> {
        let a = &self.authority;
        let authentication = a
            .auth
            .authentication(&a.client_id)
            .map_err(Error::Misconfigured)?;
        let input = wire::ExchangeInput {
            grant,
            params,
            client_id: &a.client_id,
            authentication: &authentication,
        };
        let (form, basic) = wire::encode_request(&input);
        let form = form.as_str();
        let basic = basic.as_ref();
        let unavailable = |reason: String| Error::Unavailable {
            reason,
            retry_after: None,
            oauth_error: None,
        };
        let mut request = self
            .http()?
            .post(&self.authority.token_endpoint)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form.to_string());
        // The exchange span this runs in (or the app's context) is the AS's parent.
        let mut trace = http::HeaderMap::new();
        crate::telemetry::context::inject_current(&mut trace);
        request = request.headers(trace);
        if let Some(basic) = basic {
            let mut value = HeaderValue::from_str(basic.expose())
                .map_err(|_| Error::BadResponse("client credentials are not header-safe".into()))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if response
            .content_length()
            .is_some_and(|l| l > wire::MAX_RESPONSE_BYTES as u64)
        {
            return Err(Error::BadResponse("response body too large".into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(describe(&e)))?
        {
            if body.len() + chunk.len() > wire::MAX_RESPONSE_BYTES {
                return Err(Error::BadResponse("response body too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        if status == 429 || status >= 500 {
            let oauth_error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(String::from))
                .filter(|c| crate::oauth::is_error_code(c));
            return Err(Error::Unavailable {
                reason: format!("HTTP {status}"),
                retry_after,
                oauth_error,
            });
        }
        let parsed =
            wire::parse_grant_response(status, &body, params, grant.issued_type_optional());
        match parsed.map_err(|e| scrub(e, &grant, &authentication)) {
            Err(Error::Refused { oauth_error, .. }) if oauth_error == "temporarily_unavailable" => {
                Err(Error::Unavailable {
                    reason: "temporarily_unavailable".into(),
                    retry_after,
                    oauth_error: Some(oauth_error),
                })
            }
            other => other,
        }
    }
}

/// Longest `error_description` kept from an AS.
const MAX_DESCRIPTION: usize = 256;

/// An AS may echo what it was sent in its `error_description` ("invalid token abc..."):
/// every token and secret of the request is cut out before the text reaches a log or a
/// terminal, then the text is bounded (after, so no cut leaves a token's prefix).
fn scrub(
    mut e: Error,
    grant: &wire::Grant<'_>,
    authentication: &crate::client_auth::Authentication,
) -> Error {
    let Error::Refused {
        description: Some(d),
        ..
    } = &mut e
    else {
        return e;
    };
    let mut sent: Vec<&str> = Vec::with_capacity(3);
    sent.extend(grant.subject());
    if let wire::Grant::Exchange { actor, .. } = grant {
        sent.extend(actor.map(|(t, _)| t.expose()));
    }
    sent.extend(authentication.secret());
    for secret in sent.into_iter().filter(|s| !s.is_empty()) {
        if d.contains(secret) {
            *d = d.replace(secret, "[redacted]");
        }
    }
    if d.len() > MAX_DESCRIPTION {
        // The text is ASCII (wire checked), so any index is a char boundary.
        d.truncate(MAX_DESCRIPTION);
        d.push_str("...");
    }
    e
}

fn timed_out() -> Error {
    Error::Unavailable {
        reason: "timed out".into(),
        retry_after: None,
        oauth_error: None,
    }
}

/// A reqwest error in words: its kind and the chain of its sources (connection refused,
/// the TLS verifier's complaint), leaving out reqwest's own message, which repeats the URL.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {}", crate::error::cause::describe(source)),
        None => kind.into(),
    }
}

/// Full-jitter exponential backoff from 100 ms, or the server's `Retry-After`.
fn backoff(attempt: u32, retry_after: Option<u64>) -> Duration {
    if let Some(secs) = retry_after {
        return Duration::from_secs(secs);
    }
    let ceiling = 100u64 << attempt.min(5);
    let mut byte = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    let jitter = u64::from(u16::from_le_bytes(byte)) * ceiling / u64::from(u16::MAX);
    Duration::from_millis(ceiling / 2 + jitter / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backoff grows, stays jittered within bounds, and defers to Retry-After.
    #[test]
    fn backoff_bounds() {
        for attempt in 0..8 {
            let ceiling = 100u64 << attempt.min(5);
            let d = backoff(attempt, None).as_millis() as u64;
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d}");
        }
        assert_eq!(backoff(0, Some(3)), Duration::from_secs(3));
    }
}
