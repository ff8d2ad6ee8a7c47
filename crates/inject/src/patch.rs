//! The RFC 6902 JSON Patch that injects tokex into one pod, written as explicit `add`
//! operations (RFC 6902 §4.1) against what the pod holds: a list or map that is absent is
//! created whole, one that exists is appended to or given new keys, so nothing the pod
//! already has is replaced. Keys with `/` (`tokex.io/injected`) are escaped as RFC 6901
//! §3 requires (`tokex.io~1injected`).
//!
//! The operations, in order: the labels `tokex.io/sidecar` and `tokex.io/injected`; the
//! annotations recording the version and image; the pod's `fsGroup` where the mounted
//! credentials need one; the volumes; the init containers, tokex first (after `tokex
//! init` in transparent mode), the pod's own after them in their order; the app
//! containers' proxy variables when asked for.

use std::collections::BTreeSet;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde_json::{Map, Value};

use crate::annotations::{INJECTED, INJECTED_IMAGE, INJECTED_VERSION, Options, SIDECAR};
use crate::config::InjectConfig;
use crate::sidecar::{self, TOKEX_UID};

/// Why a pod cannot be injected as it is.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the pod has no spec")]
    NoSpec,
    #[error("the pod already has a volume named {0}, which tokex needs")]
    VolumeExists(String),
    #[error("encoding the patch: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The version recorded in `tokex.io/injected-version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The patch that injects tokex into `pod` as `options` ask.
pub fn build(pod: &Pod, config: &InjectConfig, options: &Options) -> Result<Patch, PatchError> {
    let spec = pod.spec.as_ref().ok_or(PatchError::NoSpec)?;
    if let Some(taken) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| sidecar::VOLUME_NAMES.contains(&v.name.as_str()))
    {
        return Err(PatchError::VolumeExists(taken.name.clone()));
    }
    let mut ops = Vec::new();
    let meta = &pod.metadata;
    entries(
        &mut ops,
        &["metadata", "labels"],
        meta.labels.is_some(),
        &[(SIDECAR, "true"), (INJECTED, "true")],
    );
    entries(
        &mut ops,
        &["metadata", "annotations"],
        meta.annotations.is_some(),
        &[(INJECTED_VERSION, VERSION), (INJECTED_IMAGE, &config.image)],
    );
    let needs_group = options.credentials.is_some() || options.token_audience.is_some();
    let gid = fs_group(&mut ops, spec, needs_group);
    let volumes = sidecar::volumes(options)
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    append(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        volumes,
    );
    let mut first = Vec::new();
    if options.transparent {
        // Right before the sidecar: it binds transparent.listen for its check, which the
        // sidecar takes next, and no init container may run between redirect and tokex.
        first.push(serde_json::to_value(sidecar::init_container(config))?);
    }
    first.push(serde_json::to_value(sidecar::container(
        config, options, gid,
    ))?);
    match spec.init_containers {
        None => ops.push(add(&["spec", "initContainers"], Value::Array(first))),
        Some(_) => {
            for (i, c) in first.into_iter().enumerate() {
                ops.push(add(&["spec", "initContainers", &i.to_string()], c));
            }
        }
    }
    if options.proxy_env {
        proxy_env(&mut ops, spec, config.sidecar.proxy_port)?;
    }
    Ok(Patch(ops))
}

/// The group the sidecar runs as, adding the pod's `fsGroup` when its mounted credentials
/// need one. Secret and projected-token files are mode 0440, owned by root and the pod's
/// `fsGroup`, and the kubelet gives every container that group as a supplementary one. A
/// pod without `fsGroup` gets tokex's own group (65532). A pod with one keeps it (its app
/// may need its own files owned by it), and the sidecar then runs with that group as its
/// primary group too, so reading the files never depends on how the runtime merges
/// supplementary groups. A pod that mounts no credentials gets no `fsGroup`: setting one
/// makes the kubelet re-own every volume of the pod, the app's large ones included.
fn fs_group(ops: &mut Vec<PatchOperation>, spec: &PodSpec, needed: bool) -> i64 {
    let context = spec.security_context.as_ref();
    if let Some(gid) = context.and_then(|c| c.fs_group) {
        return gid;
    }
    if needed {
        match context {
            None => ops.push(add(
                &["spec", "securityContext"],
                serde_json::json!({ "fsGroup": TOKEX_UID }),
            )),
            Some(_) => ops.push(add(
                &["spec", "securityContext", "fsGroup"],
                TOKEX_UID.into(),
            )),
        }
    }
    TOKEX_UID
}

/// Sets the proxy variables on every app container, leaving any it already sets.
fn proxy_env(
    ops: &mut Vec<PatchOperation>,
    spec: &PodSpec,
    proxy_port: u16,
) -> Result<(), serde_json::Error> {
    for (i, c) in spec.containers.iter().enumerate() {
        let set: BTreeSet<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let missing = sidecar::proxy_env(proxy_port)
            .into_iter()
            .filter(|e| !set.contains(e.name.as_str()))
            .map(|e| serde_json::to_value(&e))
            .collect::<Result<Vec<_>, _>>()?;
        let index = i.to_string();
        append(
            ops,
            &["spec", "containers", &index, "env"],
            c.env.is_some(),
            missing,
        );
    }
    Ok(())
}

/// Adds `items` to the list at `path`: the whole list when absent, else one by one at
/// its end (`-`, RFC 6901 §4).
fn append(ops: &mut Vec<PatchOperation>, path: &[&str], present: bool, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if !present {
        ops.push(add(path, Value::Array(items)));
        return;
    }
    for item in items {
        let mut at = path.to_vec();
        at.push("-");
        ops.push(add(&at, item));
    }
}

/// Sets `keys` in the map at `path`: the whole map when absent, else key by key.
fn entries(ops: &mut Vec<PatchOperation>, path: &[&str], present: bool, keys: &[(&str, &str)]) {
    if !present {
        let map: Map<String, Value> = keys
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
            .collect();
        ops.push(add(path, Value::Object(map)));
        return;
    }
    for (k, v) in keys {
        let mut at = path.to_vec();
        at.push(k);
        ops.push(add(&at, Value::String((*v).to_string())));
    }
}

/// An `add` at the pointer made of `tokens`, each escaped (RFC 6901 §3).
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key with `/` and `~` is escaped in the pointer (RFC 6901 §3), so the operation
    /// names one map key and not a nested path.
    #[test]
    fn keys_are_escaped() {
        let op = add(&["metadata", "labels", "tokex.io/inj~ected"], Value::Null);
        assert_eq!(op.path().as_str(), "/metadata/labels/tokex.io~1inj~0ected");
    }
}
