//! A route's RFC 8693 §2.1 exchange parameters: audience and resource (RFC 8707), scope
//! (RFC 6749 §3.3), token types, where the subject token comes from and where the issued
//! one goes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_saphyr::Spanned;

use super::{Invalid, absolute_uri, at};
use crate::config::model::{Authority, ExchangeParams, Inject, SubjectSource};
use crate::oauth::{TOKEN_TYPE_ACCESS_TOKEN, normalize_scope};
use tokex_common::values::Text;

pub(super) fn exchange_params(
    spec: &crate::config::file::FileExchangeSpec,
    path: &str,
    authorities: &BTreeMap<String, Arc<Authority>>,
) -> Result<ExchangeParams, Invalid> {
    let authority = spec.authority.value.0.clone();
    if !authorities.contains_key(&authority) {
        let known: Vec<&str> = authorities.keys().map(String::as_str).collect();
        return Err(at(
            &spec.authority,
            format!(
                "{path}.exchange.authority: unknown authority `{authority}` (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    if spec.audience.is_none() && spec.resource.is_none() {
        return Err(at(
            &spec.authority,
            format!(
                "{path}.exchange: give audience and/or resource, so the issued token is narrowed to the target"
            ),
        ));
    }
    let opt = |v: &Option<Spanned<Text>>, key: &str, check: fn(&str) -> Result<String, String>| {
        v.as_ref()
            .map(|s| match &s.value.0 {
                unknown if tokex_common::offline::unresolved(unknown) => Ok(unknown.clone()),
                known => check(known).map_err(|m| at(s, format!("{path}.exchange.{key}: {m}"))),
            })
            .transpose()
    };
    let token_type = |v: &Option<Spanned<Text>>, key: &str| {
        opt(v, key, absolute_uri).map(|t| t.unwrap_or_else(|| TOKEN_TYPE_ACCESS_TOKEN.to_string()))
    };
    Ok(ExchangeParams {
        authority,
        audience: opt(&spec.audience, "audience", non_empty)?,
        resource: opt(&spec.resource, "resource", resource_uri)?,
        scope: opt(&spec.scope, "scope", normalize_scope)?,
        subject_token_type: token_type(&spec.subject_token_type, "subject_token_type")?,
        requested_token_type: token_type(&spec.requested_token_type, "requested_token_type")?,
        subject_token_from: subject_source(spec.subject_token_from.as_ref()).map_err(|m| {
            at(
                &spec.authority,
                format!("{path}.exchange.subject_token_from: {m}"),
            )
        })?,
        inject: inject(spec.inject.as_ref())
            .map_err(|m| at(&spec.authority, format!("{path}.exchange.inject: {m}")))?,
    })
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
