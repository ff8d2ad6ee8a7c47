//! `exchange.chain`: identity chaining across two authorities
//! (draft-ietf-oauth-identity-chaining). The first leg is a token exchange for a JWT
//! grant addressed to the second authority, the second leg presents it with the
//! jwt-bearer grant (RFC 7523 §2.1). The route's model is the second leg, carrying the
//! first in `first_leg`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::params::{GrantChoice, LegSpec, leg_params};
use super::{Invalid, at};
use crate::config::file::{FileExchangeSpec, FileLeg};
use crate::config::model::{Authority, ExchangeParams};
use crate::oauth::{TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT};
use tokex_common::values::Text;

/// What leg one may ask for: token types issued as JWTs (an access token is one at the
/// authorities that issue grants as access tokens, Keycloak for one).
const GRANT_TYPES: [&str; 3] = [TOKEN_TYPE_JWT, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN];

/// The chained exchange at `prefix` (`routes[0].exchange`), and the span its errors
/// about the request (subject source, injection) point at.
pub(super) fn params<'a>(
    chain: &'a Spanned<Vec<FileLeg>>,
    spec: &FileExchangeSpec,
    prefix: &str,
    authorities: &BTreeMap<String, Arc<Authority>>,
    delegating: &[&str],
) -> Result<(ExchangeParams, &'a Spanned<Text>), Invalid> {
    refuse_beside(spec, prefix)?;
    let [first, second] = chain.value.as_slice() else {
        return Err(at(
            chain,
            format!(
                "{prefix}.chain: give exactly two legs (a token exchange at the first authority, \
                 then the jwt-bearer grant at the second), not {}",
                chain.value.len()
            ),
        ));
    };
    if first.authority.value == second.authority.value {
        return Err(at(
            &second.authority,
            format!(
                "{prefix}.chain[1].authority: the legs name two authorities; for one, give \
                 `authority` without `chain`"
            ),
        ));
    }
    // The grant is for the second authority: by default addressed to its issuer.
    let issuer = authorities
        .get(&second.authority.value.0)
        .and_then(|a| a.issuer.clone());
    let audience = match (&first.audience, &first.resource, issuer) {
        (None, None, Some(issuer)) => Some(Spanned::new(
            Text(issuer),
            first.authority.referenced,
            first.authority.defined,
        )),
        _ => None,
    };
    let first_leg = LegSpec {
        authority: &first.authority,
        grant: GrantChoice::FirstLeg,
        audience: audience.as_ref().map_or(&first.audience, |_| &audience),
        resource: &first.resource,
        scope: &first.scope,
        subject_token_type: &first.subject_token_type,
        requested_token_type: &first.requested_token_type,
        requested_default: TOKEN_TYPE_JWT,
        extra_params: first.extra_params.as_ref(),
    };
    let second_leg = LegSpec {
        authority: &second.authority,
        grant: GrantChoice::SecondLeg,
        audience: &second.audience,
        resource: &second.resource,
        scope: &second.scope,
        subject_token_type: &second.subject_token_type,
        requested_token_type: &second.requested_token_type,
        requested_default: TOKEN_TYPE_ACCESS_TOKEN,
        extra_params: second.extra_params.as_ref(),
    };
    let mut one = leg_params(
        &first_leg,
        &format!("{prefix}.chain[0]"),
        authorities,
        delegating,
    )?;
    // The grant is leg two's assertion, so it must be a JWT: a SAML assertion or a
    // refresh token would pass the check and fail on every request.
    if let Some(asked) = &first.requested_token_type
        && !GRANT_TYPES.contains(&one.requested_token_type.as_str())
    {
        return Err(at(
            asked,
            format!(
                "{prefix}.chain[0].requested_token_type: leg two presents this token as a JWT \
                 assertion; ask for one of {}",
                GRANT_TYPES.join(", ")
            ),
        ));
    }
    // The grant goes into a form as it is, never into a header with a scheme.
    one.inject.scheme = None;
    let mut two = leg_params(
        &second_leg,
        &format!("{prefix}.chain[1]"),
        authorities,
        delegating,
    )?;
    two.first_leg = Some(Box::new(one));
    Ok((two, &first.authority))
}

/// With `chain`, the parameters of a one-step exchange belong to the legs.
fn refuse_beside(spec: &FileExchangeSpec, prefix: &str) -> Result<(), Invalid> {
    let texts = [
        ("audience", &spec.audience),
        ("resource", &spec.resource),
        ("scope", &spec.scope),
        ("subject_token_type", &spec.subject_token_type),
        ("requested_token_type", &spec.requested_token_type),
    ];
    let written = texts
        .into_iter()
        .find_map(|(key, v)| v.as_ref().map(|v| (key, at(v, ""))))
        .or_else(|| spec.grant.as_ref().map(|g| ("grant", at(g, ""))))
        .or_else(|| {
            let first = spec.extra_params.as_ref()?.values().next()?;
            Some(("extra_params", at(first, "")))
        });
    match written {
        None => Ok(()),
        Some((key, anchor)) => Err(Invalid {
            message: format!(
                "{prefix}.{key}: with `chain`, give it on the leg it belongs to (the first leg \
                 is a token exchange, the second a jwt-bearer grant)"
            ),
            ..anchor
        }),
    }
}
