//! The audit trail: one event per exchange and refusal (docs/audit.md).
//!
//! One structured event per exchange and per refusal on the `tokex::audit` tracing
//! target: which route and authority, who the subject is (`sub`/`iss` of a JWT subject,
//! else a short keyed-hash fingerprint), the actor chain of the issued token, the
//! audience/resource, requested and granted scopes, the outcome (`ok` or an error
//! code), cache hit or miss, and the AS latency. Never a token or a secret: every
//! field is an identifier, a code or a number. `telemetry` can send the target to its
//! own file as JSON lines.

use std::time::Duration;

use serde_json::Value;

use crate::config::ExchangeParams;
use crate::config::model::Grant;

/// The tracing target of audit events.
pub const TARGET: &str = "tokex::audit";

/// What an exchange produced, as audit events record it; kept with the cache entry for
/// later events.
#[derive(Debug, Clone, Default)]
pub struct ExchangeRecord {
    pub scope: Option<String>,
    /// The issued token's `act` claim: the delegation chain.
    pub act: Option<Value>,
    pub latency: Duration,
}

impl ExchangeRecord {
    /// Reads `act` from the issued token if it is a JWT (unverified: for the record only).
    pub fn new(token: &str, scope: Option<String>, latency: Duration) -> Self {
        let act = crate::jwt::unverified_claims(token).and_then(|mut c| c.remove("act"));
        Self {
            scope,
            act,
            latency,
        }
    }
}

/// Who the subject is, in words safe to record.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub sub: Option<String>,
    pub iss: Option<String>,
    /// For opaque tokens: a short keyed hash, enough to correlate, useless to replay.
    pub fingerprint: Option<String>,
}

impl Subject {
    /// `fingerprint` makes the keyed hash when the token is not a JWT with `sub`.
    pub fn of(token: &str, fingerprint: impl FnOnce() -> String) -> Self {
        let claims = crate::jwt::unverified_claims(token);
        let get = |k: &str| {
            claims
                .as_ref()
                .and_then(|c| c.get(k)?.as_str().map(|s| s.chars().take(256).collect()))
        };
        let (sub, iss) = (get("sub"), get("iss"));
        let fingerprint = sub.is_none().then(fingerprint);
        Self {
            sub,
            iss,
            fingerprint,
        }
    }
}

/// One audit event.
pub struct Event<'a> {
    pub route: &'a str,
    pub params: Option<&'a ExchangeParams>,
    pub subject: Option<&'a Subject>,
    pub record: Option<&'a ExchangeRecord>,
    /// `ok`, or the error code of the refusal.
    pub outcome: &'a str,
    /// `hit` or `miss`, when the cache was consulted.
    pub cache: Option<&'static str>,
    /// Whether this was tokex's own (client_credentials) token.
    pub own_token: bool,
}

impl Event<'_> {
    pub fn emit(&self) {
        let p = self.params;
        // A chain's first leg: where the grant the route's authority accepted came from.
        let first = p.and_then(|p| p.first_leg.as_deref());
        let s = self.subject;
        let act = self
            .record
            .and_then(|i| i.act.as_ref())
            .map(|a| a.to_string());
        tracing::info!(
            target: TARGET,
            route = self.route,
            authority = p.map(|p| p.authority.as_str()),
            first_authority = first.map(|l| l.authority.as_str()),
            first_audience = first.and_then(|l| l.audience.as_deref()),
            grant = match p.map(|p| p.grant) {
                _ if self.own_token => "client_credentials",
                Some(Grant::JwtBearer) => "jwt_bearer",
                _ => "token_exchange",
            },
            subject_sub = s.and_then(|s| s.sub.as_deref()),
            subject_iss = s.and_then(|s| s.iss.as_deref()),
            subject_fingerprint = s.and_then(|s| s.fingerprint.as_deref()),
            actor = act.as_deref(),
            audience = p.and_then(|p| p.audience.as_deref()),
            resource = p.and_then(|p| p.resource.as_deref()),
            requested_scope = p.and_then(|p| p.scope.as_deref()),
            granted_scope = self.record.and_then(|i| i.scope.as_deref()),
            outcome = self.outcome,
            cache = self.cache,
            as_latency_ms = self.record.filter(|_| self.cache == Some("miss")).map(|i| i.latency.as_millis() as u64),
            "audit"
        );
    }
}
