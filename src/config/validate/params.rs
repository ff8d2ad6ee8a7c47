//! A route's exchange parameters: the grant (RFC 8693 §2.1 token exchange or RFC 7523 §2.1
//! jwt-bearer), audience and resource (RFC 8707), scope (RFC 6749 §3.3), token types, extra
//! form parameters, where the subject token comes from and where the issued one goes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::{Invalid, absolute_uri, at};
use crate::config::file::{FileExchangeSpec, FileGrant};
use crate::config::model::{Authority, ExchangeParams, Grant, Inject, SubjectSource};
use crate::oauth::{TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, normalize_scope};
use tokex_common::values::Text;

pub(super) fn exchange_params<T>(
    spec: &FileExchangeSpec,
    path: &str,
    route: &Spanned<T>,
    authorities: &BTreeMap<String, Arc<Authority>>,
    delegating: &[&str],
) -> Result<ExchangeParams, Invalid> {
    let prefix = format!("{path}.exchange");
    let (mut params, anchor) = match (&spec.chain, &spec.authority) {
        (None, Some(authority)) => {
            let leg = LegSpec::of_exchange(spec, authority);
            (
                leg_params(&leg, &prefix, authorities, delegating)?,
                authority,
            )
        }
        (Some(chain), None) => super::chain::params(chain, spec, &prefix, authorities, delegating)?,
        (Some(_), Some(a)) => {
            return Err(at(
                a,
                format!("{prefix}.authority: with `chain`, each leg names its own authority"),
            ));
        }
        (None, None) => {
            return Err(at(
                route,
                format!("{prefix}: give `authority` (one exchange) or `chain` (two legs)"),
            ));
        }
    };
    params.subject_token_from = subject_source(spec.subject_token_from.as_ref())
        .map_err(|m| at(anchor, format!("{prefix}.subject_token_from: {m}")))?;
    params.inject =
        inject(spec.inject.as_ref()).map_err(|m| at(anchor, format!("{prefix}.inject: {m}")))?;
    Ok(params)
}

/// One token request's parameters as written: a one-step exchange's, or a leg's.
pub(super) struct LegSpec<'a> {
    pub authority: &'a Spanned<Text>,
    pub grant: GrantChoice<'a>,
    pub audience: &'a Option<Spanned<Text>>,
    pub resource: &'a Option<Spanned<Text>>,
    pub scope: &'a Option<Spanned<Text>>,
    pub subject_token_type: &'a Option<Spanned<Text>>,
    pub requested_token_type: &'a Option<Spanned<Text>>,
    pub requested_default: &'static str,
    pub extra_params: Option<&'a BTreeMap<String, Spanned<Text>>>,
}

/// The grant as the file chooses it, or as the leg fixes it.
pub(super) enum GrantChoice<'a> {
    Written(Option<&'a Spanned<FileGrant>>),
    /// The first leg of a chain: always a token exchange.
    FirstLeg,
    /// The second leg of a chain: always jwt-bearer.
    SecondLeg,
}

impl<'a> LegSpec<'a> {
    fn of_exchange(spec: &'a FileExchangeSpec, authority: &'a Spanned<Text>) -> Self {
        Self {
            authority,
            grant: GrantChoice::Written(spec.grant.as_ref()),
            audience: &spec.audience,
            resource: &spec.resource,
            scope: &spec.scope,
            subject_token_type: &spec.subject_token_type,
            requested_token_type: &spec.requested_token_type,
            requested_default: TOKEN_TYPE_ACCESS_TOKEN,
            extra_params: spec.extra_params.as_ref(),
        }
    }
}

/// The parameters of one token request at `prefix` (`routes[0].exchange`, or a leg's
/// `routes[0].exchange.chain[1]`); the subject source and injection are the caller's.
pub(super) fn leg_params(
    spec: &LegSpec<'_>,
    prefix: &str,
    authorities: &BTreeMap<String, Arc<Authority>>,
    delegating: &[&str],
) -> Result<ExchangeParams, Invalid> {
    let authority = spec.authority.value.0.clone();
    if !authorities.contains_key(&authority) {
        let known: Vec<&str> = authorities.keys().map(String::as_str).collect();
        return Err(at(
            spec.authority,
            format!(
                "{prefix}.authority: unknown authority `{authority}` (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let grant = grant(spec, prefix, delegating.contains(&authority.as_str()))?;
    if grant == Grant::JwtBearer && spec.scope.is_none() && spec.resource.is_none() {
        return Err(at(
            spec.authority,
            format!(
                "{prefix}: give scope and/or resource, so the issued token is narrowed to the target"
            ),
        ));
    }
    if grant == Grant::TokenExchange && spec.audience.is_none() && spec.resource.is_none() {
        return Err(at(
            spec.authority,
            format!(
                "{prefix}: give audience and/or resource, so the issued token is narrowed to the target"
            ),
        ));
    }
    let opt = |v: &Option<Spanned<Text>>, key: &str, check: fn(&str) -> Result<String, String>| {
        v.as_ref()
            .map(|s| match &s.value.0 {
                unknown if tokex_common::offline::unresolved(unknown) => Ok(unknown.clone()),
                known => check(known).map_err(|m| at(s, format!("{prefix}.{key}: {m}"))),
            })
            .transpose()
    };
    let token_type = |v: &Option<Spanned<Text>>, key: &str, default: &str| {
        opt(v, key, absolute_uri).map(|t| t.unwrap_or_else(|| default.to_string()))
    };
    // A jwt-bearer assertion is a JWT (RFC 7523 §2.1) and its response an RFC 6749 §5.1
    // access token response; neither type is configurable there.
    let subject_default = match grant {
        Grant::TokenExchange => TOKEN_TYPE_ACCESS_TOKEN,
        Grant::JwtBearer => TOKEN_TYPE_JWT,
    };
    Ok(ExchangeParams {
        authority,
        grant,
        audience: opt(spec.audience, "audience", non_empty)?,
        resource: opt(spec.resource, "resource", resource_uri)?,
        scope: opt(spec.scope, "scope", normalize_scope)?,
        subject_token_type: token_type(
            spec.subject_token_type,
            "subject_token_type",
            subject_default,
        )?,
        requested_token_type: token_type(
            spec.requested_token_type,
            "requested_token_type",
            spec.requested_default,
        )?,
        extra_params: extra_params(spec.extra_params, prefix)?,
        subject_token_from: SubjectSource::Authorization,
        inject: Inject {
            header: http::header::AUTHORIZATION,
            scheme: Some("Bearer".to_string()),
        },
        first_leg: None,
    })
}

/// The grant, and the refusal of what only token exchange has: a jwt-bearer request
/// carries one JWT and nothing else of the caller's (RFC 7523 §2.1 defines no audience,
/// token types or actor).
fn grant(spec: &LegSpec<'_>, prefix: &str, delegating: bool) -> Result<Grant, Invalid> {
    let (anchor, why) = match &spec.grant {
        GrantChoice::Written(None) | GrantChoice::FirstLeg => return Ok(Grant::TokenExchange),
        GrantChoice::Written(Some(g)) if g.value == FileGrant::TokenExchange => {
            return Ok(Grant::TokenExchange);
        }
        GrantChoice::Written(Some(g)) => (at(g, ""), "with grant jwt-bearer"),
        GrantChoice::SecondLeg => (
            at(spec.authority, ""),
            "on the second leg, a jwt-bearer grant",
        ),
    };
    let only_exchange = [
        (
            "audience",
            spec.audience,
            "for jwt-bearer give scope and/or resource",
        ),
        (
            "subject_token_type",
            spec.subject_token_type,
            "the assertion is always a JWT",
        ),
        (
            "requested_token_type",
            spec.requested_token_type,
            "jwt-bearer issues an access token",
        ),
    ];
    for (key, value, hint) in only_exchange {
        if let Some(v) = value {
            return Err(at(
                v,
                format!("{prefix}.{key}: a token-exchange parameter, not sent {why} ({hint})"),
            ));
        }
    }
    if delegating {
        let key = match spec.grant {
            GrantChoice::SecondLeg => "authority",
            _ => "grant",
        };
        return Err(Invalid {
            message: format!(
                "{prefix}.{key}: jwt-bearer has no actor token, but authority `{}` sets actor_token",
                spec.authority.value.0
            ),
            ..anchor
        });
    }
    Ok(Grant::JwtBearer)
}

/// The form parameters tokex writes itself; `extra_params` may not repeat or replace one.
pub(super) const OWN_PARAMS: [&str; 14] = [
    "grant_type",
    "subject_token",
    "subject_token_type",
    "actor_token",
    "actor_token_type",
    "requested_token_type",
    "audience",
    "resource",
    "scope",
    "assertion",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];

/// `extra_params`: names are RFC 6749 §8.2 parameter names (`-`, `.`, `_`, digits,
/// letters), none tokex sets; values are non-empty and free of control characters.
pub(super) fn extra_params(
    params: Option<&BTreeMap<String, Spanned<Text>>>,
    prefix: &str,
) -> Result<Vec<(String, String)>, Invalid> {
    let mut out = Vec::new();
    for (name, value) in params.into_iter().flatten() {
        let key = format!("{prefix}.extra_params.{name}");
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !name_ok {
            return Err(at(
                value,
                format!(
                    "{key}: `{name}` is not a form parameter name (letters, digits, `-`, `.`, `_`)"
                ),
            ));
        }
        // Some servers read form names regardless of case: `Scope` would be a second scope.
        if OWN_PARAMS.iter().any(|own| own.eq_ignore_ascii_case(name)) {
            return Err(at(
                value,
                format!(
                    "{key}: tokex sets `{name}` itself; give it with its own key or not at all"
                ),
            ));
        }
        let v = &value.value.0;
        if v.is_empty() || v.chars().any(char::is_control) {
            return Err(at(
                value,
                format!("{key}: the value must be non-empty, without control characters"),
            ));
        }
        out.push((name.clone(), v.clone()));
    }
    Ok(out)
}

/// Headers that can never carry or receive a token: connection-level or routing fields.
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "cookie",
];

fn header_name(raw: &str) -> Result<http::HeaderName, String> {
    let name = http::HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| format!("`{raw}` is not a header name"))?;
    if RESERVED_HEADERS.contains(&name.as_str()) {
        return Err(format!("`{raw}` cannot carry a token"));
    }
    Ok(name)
}

fn subject_source(f: Option<&crate::config::file::FileSource>) -> Result<SubjectSource, String> {
    match f {
        None => Ok(SubjectSource::Authorization),
        Some(f) => match (&f.header, &f.cookie) {
            (Some(h), None) if h.0.eq_ignore_ascii_case("authorization") => {
                Ok(SubjectSource::Authorization)
            }
            (Some(h), None) => header_name(&h.0).map(SubjectSource::Header),
            (None, Some(c))
                if !c.0.is_empty()
                    && c.0
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) =>
            {
                Ok(SubjectSource::Cookie(c.0.clone()))
            }
            (None, Some(c)) => Err(format!("`{}` is not a cookie name", c.0)),
            _ => Err("give exactly one of header, cookie".into()),
        },
    }
}

fn inject(f: Option<&crate::config::file::FileInject>) -> Result<Inject, String> {
    let header = match f.and_then(|f| f.header.as_ref()) {
        None => http::header::AUTHORIZATION,
        Some(h) if h.0.eq_ignore_ascii_case("authorization") => http::header::AUTHORIZATION,
        Some(h) => header_name(&h.0)?,
    };
    let scheme = match f.and_then(|f| f.scheme.as_ref()).map(|s| s.0.as_str()) {
        None => Some("Bearer".to_string()),
        Some("none") => None,
        Some(s)
            if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b)) =>
        {
            Some(s.to_string())
        }
        Some(s) => return Err(format!("`{s}` is not an authentication scheme")),
    };
    Ok(Inject { header, scheme })
}

fn non_empty(v: &str) -> Result<String, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v.to_string())
    }
}

/// RFC 8707 §2: an absolute URI without a fragment.
fn resource_uri(v: &str) -> Result<String, String> {
    let url = url::Url::parse(v).map_err(|_| format!("`{v}` is not an absolute URI"))?;
    if url.fragment().is_some() {
        return Err(format!("`{v}` must not have a fragment (RFC 8707 §2)"));
    }
    Ok(v.to_string())
}
