//! What a pod asks of the webhook: the `tokex.io/...` labels and annotations, their names,
//! and their values parsed into [`Options`]. Every refusal names the label or annotation
//! at fault.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::config::{InjectConfig, Resources};
use crate::quantity;

/// Pod label: `disabled` opts a pod out even in a namespace that opted in; `enabled`
/// opts it in (the webhook configuration's selectors look at it).
pub const INJECT: &str = "tokex.io/inject";
/// Pod label the webhook sets: this pod has been injected (reinvocation is a no-op).
pub const INJECTED: &str = "tokex.io/injected";
/// Pod label marking pods that run tokex: the PodMonitor selects it.
pub const SIDECAR: &str = "tokex.io/sidecar";
/// Annotation the webhook sets: the version of the webhook that injected the pod.
pub const INJECTED_VERSION: &str = "tokex.io/injected-version";
/// Annotation the webhook sets: the sidecar image it injected.
pub const INJECTED_IMAGE: &str = "tokex.io/injected-image";

/// The ConfigMap holding `tokex.yaml` (required).
pub const CONFIG: &str = "tokex.io/config";
/// The Secret mounted at `/var/run/secrets/tokex`.
pub const CREDENTIALS: &str = "tokex.io/credentials";
/// `"true"`: add the `tokex init` container (transparent mode).
pub const TRANSPARENT: &str = "tokex.io/transparent";
/// The audience of a projected service-account token at `/var/run/secrets/tokens/tokex`.
pub const TOKEN_AUDIENCE: &str = "tokex.io/service-account-token-audience";
/// `"true"`: set `HTTP_PROXY`/`NO_PROXY` on the app containers.
pub const PROXY_ENV: &str = "tokex.io/proxy-env";
pub const CPU_REQUEST: &str = "tokex.io/proxy-cpu-request";
pub const MEMORY_REQUEST: &str = "tokex.io/proxy-memory-request";
pub const CPU_LIMIT: &str = "tokex.io/proxy-cpu-limit";
pub const MEMORY_LIMIT: &str = "tokex.io/proxy-memory-limit";

/// The name of tokex's sidecar container; a pod with a container of that name has tokex.
pub const SIDECAR_CONTAINER: &str = "tokex";

/// What to do with a pod before looking at how to inject it.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Inject with these options.
    Inject(Options),
    /// Leave the pod as it is; the reason is logged.
    Skip(&'static str),
    /// The pod asks for injection but has no `tokex.io/config`.
    NoConfig,
}

/// How one pod is injected.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub config_map: String,
    pub credentials: Option<String>,
    pub transparent: bool,
    pub token_audience: Option<String>,
    pub proxy_env: bool,
    pub resources: Resources,
}

/// Why a pod's labels or annotations cannot be used; the message names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {message}")]
pub struct Refusal {
    pub key: &'static str,
    pub message: String,
}

fn refuse(key: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        key,
        message: message.into(),
    }
}

/// Reads what `pod` asks for, against the webhook's defaults.
pub fn read(pod: &Pod, config: &InjectConfig) -> Result<Verdict, Refusal> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    match labels.get(INJECT).map(String::as_str) {
        Some("disabled") => {
            return Ok(Verdict::Skip(
                "the pod opted out (tokex.io/inject: disabled)",
            ));
        }
        None | Some("enabled") => {}
        Some(other) => {
            return Err(refuse(
                INJECT,
                format!("`{other}` is neither enabled nor disabled"),
            ));
        }
    }
    if already_injected(pod, labels) {
        return Ok(Verdict::Skip("the pod already runs tokex"));
    }
    let Some(config_map) = annotations.get(CONFIG) else {
        return Ok(Verdict::NoConfig);
    };
    let config_map = object_name(CONFIG, config_map)?;
    let credentials = annotations
        .get(CREDENTIALS)
        .map(|v| object_name(CREDENTIALS, v))
        .transpose()?;
    let token_audience = annotations
        .get(TOKEN_AUDIENCE)
        .map(|v| audience(v))
        .transpose()?;
    let flag = |key: &'static str| match annotations.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(refuse(
            key,
            format!("`{other}` is neither \"true\" nor \"false\""),
        )),
    };
    let base = &config.sidecar.resources;
    let quantity = |key: &'static str, default: &Option<_>| match annotations.get(key) {
        Some(v) => quantity::parse(v).map(Some).map_err(|e| refuse(key, e)),
        None => Ok(default.clone()),
    };
    Ok(Verdict::Inject(Options {
        config_map,
        credentials,
        transparent: flag(TRANSPARENT)?,
        token_audience,
        proxy_env: flag(PROXY_ENV)?,
        resources: Resources {
            cpu_request: quantity(CPU_REQUEST, &base.cpu_request)?,
            memory_request: quantity(MEMORY_REQUEST, &base.memory_request)?,
            cpu_limit: quantity(CPU_LIMIT, &base.cpu_limit)?,
            memory_limit: quantity(MEMORY_LIMIT, &base.memory_limit)?,
        },
    }))
}

/// Marked by the webhook, or tokex added by hand or by another mutation: injecting again
/// would add a second sidecar the API server refuses (duplicate container names).
fn already_injected(pod: &Pod, labels: &BTreeMap<String, String>) -> bool {
    if labels.get(INJECTED).is_some_and(|v| v == "true") {
        return true;
    }
    let Some(spec) = &pod.spec else {
        return false;
    };
    let names = spec.containers.iter().map(|c| &c.name);
    let inits = spec.init_containers.iter().flatten().map(|c| &c.name);
    names.chain(inits).any(|n| n == SIDECAR_CONTAINER)
}

/// A ConfigMap or Secret name: an RFC 1123 DNS subdomain, as the API server requires.
fn object_name(key: &'static str, v: &str) -> Result<String, Refusal> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if v.is_empty() || v.len() > 253 || !v.split('.').all(label_ok) {
        return Err(refuse(
            key,
            format!(
                "`{}` is not a valid object name (lowercase letters, digits, '-' and '.', at \
                 most 253 characters)",
                tokex_common::yaml::bounded(v)
            ),
        ));
    }
    Ok(v.to_string())
}

/// A token audience: what the authorization server expects in `aud`, usually its issuer
/// URL. Non-empty, no whitespace or control characters.
fn audience(v: &str) -> Result<String, Refusal> {
    if v.is_empty() || v.len() > 1024 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refuse(
            TOKEN_AUDIENCE,
            "expected one audience (such as the authorization server's issuer URL), without \
             spaces",
        ));
    }
    Ok(v.to_string())
}
