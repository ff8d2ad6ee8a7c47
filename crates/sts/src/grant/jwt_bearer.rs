//! The jwt-bearer authorization grant (RFC 7523 §2.1): the second leg of identity
//! chaining (draft-ietf-oauth-identity-chaining), and Microsoft Entra's on-behalf-of.
//!
//! The `assertion` must come from a trusted issuer and name this realm in its `aud`
//! (its issuer or its token endpoint URL, RFC 7523 §3), so a realm that trusts another
//! accepts the grants that realm addressed to it, never a user's token for some API.
//! The issued token is for the assertion's `sub`, with this realm's policy deciding its
//! scope as for a token exchange, and it never outlives the assertion.

use serde_json::Value;

use super::{ExpCap, Form, Issue, audiences_or_default, err, issue, subject_scope};
use crate::config::ClientConfig;
use crate::{Realm, Sts, verify};
use tokex_common::oauth::TOKEN_TYPE_ACCESS_TOKEN;

pub(super) async fn grant(
    sts: &Sts,
    realm: &Realm,
    client: &ClientConfig,
    form: &Form,
) -> Result<Value, super::OAuthError> {
    let assertion = form
        .get("assertion")
        .ok_or_else(|| err("invalid_request", "assertion is missing"))?;
    let endpoint = format!("{}/token", realm.url);
    let names = [realm.issuer.as_str(), endpoint.as_str()];
    let verified = verify::verify_grant(&realm.trusted, assertion, &sts.http, &names)
        .await
        .map_err(|e| {
            tracing::debug!(realm = %realm.config.name, error = %e, "authorization grant rejected");
            // RFC 7523 §3.1: an assertion that is not valid is `invalid_grant`.
            err(
                "invalid_grant",
                "the assertion is invalid, not trusted or not addressed to this realm",
            )
        })?;
    let audiences = audiences_or_default(client, form)?;
    let scope = subject_scope(realm, client, form, &verified)?;
    let claims = &verified.claims;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    issue(
        realm,
        Issue {
            subject,
            audiences,
            client_id: &client.id,
            scope,
            extra: realm.config.policy.transform(claims),
            act: claims.get("act").cloned(),
            // RFC 7523 §3.1: an expired assertion is `invalid_grant`.
            exp_cap: ExpCap::of(claims, "invalid_grant"),
            token_type: TOKEN_TYPE_ACCESS_TOKEN,
        },
    )
}
