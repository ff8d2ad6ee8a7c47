//! The webhook's YAML configuration: the `inject` section of its file, a serde file model
//! with unknown keys refused, validated into [`InjectConfig`]. Errors name
//! `FILE:LINE:COL` and the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::quantity;
use tokex_common::located::{ConfigError, Invalid, at, located, resolve};
use tokex_common::values::{Addr, PathText, Text};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoot {
    inject: FileInject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInject {
    listen: Option<Addr>,
    cert_file: PathText,
    key_file: PathText,
    image: Spanned<Text>,
    init_image: Option<Spanned<Text>>,
    image_pull_policy: Option<PullPolicy>,
    #[serde(default)]
    failure_policy: FailurePolicy,
    #[serde(default)]
    sidecar: FileSidecar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSidecar {
    proxy_port: Option<Spanned<u16>>,
    admin_port: Option<Spanned<u16>>,
    #[serde(default)]
    resources: FileResources,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileResources {
    #[serde(default)]
    requests: FileQuantities,
    #[serde(default)]
    limits: FileQuantities,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuantities {
    cpu: Option<Spanned<Text>>,
    memory: Option<Spanned<Text>>,
}

/// When the sidecar image is pulled (the container's `imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// What the webhook does with a pod it cannot inject for lack of `tokex.io/config`; the
/// same trade-off as the `MutatingWebhookConfiguration`'s own `failurePolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum FailurePolicy {
    /// Deny the pod: it would otherwise start without the sidecar it asked for.
    #[default]
    Fail,
    /// Allow it unchanged, with a warning to the client.
    Ignore,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The sidecar image.
    pub image: String,
    /// The image of the `tokex init` container of transparent pods.
    pub init_image: String,
    pub image_pull_policy: Option<PullPolicy>,
    pub failure_policy: FailurePolicy,
    pub sidecar: Sidecar,
}

/// Defaults for every injected sidecar.
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// The egress listener the app's `HTTP_PROXY` points at (`listen` in tokex's config).
    pub proxy_port: u16,
    /// The admin listener the probes use (`admin` in tokex's config).
    pub admin_port: u16,
    pub resources: Resources,
}

/// The sidecar's requests and limits; `None` leaves one unset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub cpu_request: Option<Quantity>,
    pub memory_request: Option<Quantity>,
    pub cpu_limit: Option<Quantity>,
    pub memory_limit: Option<Quantity>,
}

/// Where the webhook listens unless `listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// tokex's own defaults for `listen` and `admin` ports.
pub const DEFAULT_PROXY_PORT: u16 = 15001;
pub const DEFAULT_ADMIN_PORT: u16 = 15000;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<InjectConfig, ConfigError> {
    let file: FileRoot = tokex_common::located::load_yaml(path)?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(file.inject, base).map_err(|e| located(path, e.location, e.message))
}

/// Parses config text; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<InjectConfig, ConfigError> {
    let file: FileRoot =
        tokex_common::yaml::from_yaml(text).map_err(|(loc, msg)| located(path, loc, msg))?;
    let base = path.parent().unwrap_or(Path::new("."));
    validate(file.inject, base).map_err(|e| located(path, e.location, e.message))
}

fn validate(f: FileInject, base: &Path) -> Result<InjectConfig, Invalid> {
    let image = image(&f.image, "inject.image")?;
    let init_image = match &f.init_image {
        Some(i) => self::image(i, "inject.init_image")?,
        None => image.clone(),
    };
    let port = |p: &Option<Spanned<u16>>, key: &str, default: u16| match p {
        Some(s) if s.value == 0 => Err(at(s, format!("{key}: a port from 1 to 65535"))),
        Some(s) => Ok(s.value),
        None => Ok(default),
    };
    let proxy_port = port(
        &f.sidecar.proxy_port,
        "inject.sidecar.proxy_port",
        DEFAULT_PROXY_PORT,
    )?;
    let admin_port = port(
        &f.sidecar.admin_port,
        "inject.sidecar.admin_port",
        DEFAULT_ADMIN_PORT,
    )?;
    if proxy_port == admin_port
        && let Some(s) = f
            .sidecar
            .admin_port
            .as_ref()
            .or(f.sidecar.proxy_port.as_ref())
    {
        return Err(at(
            s,
            "inject.sidecar: proxy_port and admin_port must differ",
        ));
    }
    let r = &f.sidecar.resources;
    let q = |v: &Option<Spanned<Text>>, key: &str, default: Option<&str>| match v {
        Some(s) => quantity::parse(&s.value.0)
            .map(Some)
            .map_err(|e| at(s, format!("inject.sidecar.resources.{key}: {e}"))),
        None => Ok(default.map(|d| Quantity(d.to_string()))),
    };
    let resources = Resources {
        cpu_request: q(&r.requests.cpu, "requests.cpu", Some("50m"))?,
        memory_request: q(&r.requests.memory, "requests.memory", Some("48Mi"))?,
        cpu_limit: q(&r.limits.cpu, "limits.cpu", None)?,
        memory_limit: q(&r.limits.memory, "limits.memory", Some("128Mi"))?,
    };
    let listen = match f.listen {
        Some(a) => a.0,
        None => DEFAULT_LISTEN
            .parse()
            .map_err(|_| tokex_common::located::nowhere("inject.listen: bad default"))?,
    };
    Ok(InjectConfig {
        listen,
        cert_file: resolve(base, &f.cert_file),
        key_file: resolve(base, &f.key_file),
        image,
        init_image,
        image_pull_policy: f.image_pull_policy,
        failure_policy: f.failure_policy,
        sidecar: Sidecar {
            proxy_port,
            admin_port,
            resources,
        },
    })
}

/// An image reference: not empty, no whitespace or control characters (the API server
/// would take them, and the kubelet then fail to pull, pod after pod).
fn image(s: &Spanned<Text>, key: &str) -> Result<String, Invalid> {
    let v = s.value.0.trim();
    if v.is_empty() {
        return Err(at(s, format!("{key}: an image reference is required")));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(at(
            s,
            format!("{key}: `{v}` is not an image reference (it contains whitespace)"),
        ));
    }
    Ok(v.to_string())
}
