//! One `admission.k8s.io/v1` `AdmissionReview` in, one out: what the webhook decides for a
//! pod on `CREATE`. A review that cannot be read is a [`BadReview`] (the server answers
//! 400); anything else gets a response with the request's `uid`, allowed with or without a
//! patch, or denied with a message naming the label or annotation at fault.

use base64::Engine;
use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::annotations::{self, CONFIG, Verdict};
use crate::config::{FailurePolicy, InjectConfig};
use crate::patch;

/// The only review version the webhook speaks (`admissionReviewVersions: ["v1"]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// A review the webhook cannot answer: the API server gets 400 with this message.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    /// The parser's message, bounded: it may quote the body.
    #[error("malformed AdmissionReview: {0}")]
    Json(String),
    #[error("expected apiVersion {API_VERSION} and kind {KIND}, got apiVersion `{0}` kind `{1}`")]
    Version(String, String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("request.object is missing")]
    NoObject,
    #[error("request.object is not a Pod: {0}")]
    NotAPod(String),
    #[error("encoding the response: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("encoding the patch: {0}")]
    Patch(#[source] kube_core::admission::SerializePatchError),
}

/// What the webhook did with one review, for the log and the tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed with this patch.
    Inject(Patch),
    /// Allowed unchanged, for this reason.
    Allow(String),
    /// Allowed unchanged with a warning to the client (failure_policy Ignore).
    Warn(String),
    /// Denied with this message.
    Deny(String),
}

/// The answer to the review in `body`: the response review's JSON and the decision.
pub fn answer(body: &[u8], config: &InjectConfig) -> Result<(Vec<u8>, Decision), BadReview> {
    let malformed = |e: serde_json::Error| BadReview::Json(bounded(&e.to_string()));
    let raw: Value = serde_json::from_slice(body).map_err(malformed)?;
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(raw.clone()).map_err(malformed)?;
    if review.types.api_version != API_VERSION || review.types.kind != KIND {
        return Err(BadReview::Version(
            bounded(&review.types.api_version),
            bounded(&review.types.kind),
        ));
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| BadReview::NoRequest)?;
    let decision = decide(&request, raw.pointer("/request/object"), config)?;
    let response = AdmissionResponse::from(&request);
    let response = match &decision {
        Decision::Inject(p) => response.with_patch(p.clone()).map_err(BadReview::Patch)?,
        Decision::Allow(_) => response,
        Decision::Warn(w) => {
            let mut r = response;
            r.warnings = Some(vec![w.clone()]);
            r
        }
        Decision::Deny(message) => response.deny(message),
    };
    let mut out = serde_json::to_value(response.into_review()).map_err(BadReview::Encode)?;
    base64_patch(&mut out);
    let bytes = serde_json::to_vec(&out).map_err(BadReview::Encode)?;
    Ok((bytes, decision))
}

/// What to do with one request; `object` is the pod as sent, which the patch must fit.
fn decide(
    request: &AdmissionRequest<DynamicObject>,
    object: Option<&Value>,
    config: &InjectConfig,
) -> Result<Decision, BadReview> {
    let kind = &request.kind;
    if !kind.group.is_empty() || kind.kind != "Pod" || request.sub_resource.is_some() {
        return Ok(Decision::Allow(format!(
            "not a pod: {}",
            bounded(&kind.kind)
        )));
    }
    if request.operation != Operation::Create {
        return Ok(Decision::Allow(format!(
            "{:?} is not CREATE",
            request.operation
        )));
    }
    let object = object.filter(|o| !o.is_null()).ok_or(BadReview::NoObject)?;
    // The patch adds under metadata and spec: both must be objects in what was sent,
    // whatever defaults the typed model would fill in.
    for part in ["metadata", "spec"] {
        if !object.get(part).is_some_and(Value::is_object) {
            return Err(BadReview::NotAPod(format!("{part} is not an object")));
        }
    }
    let pod: Pod = serde_json::from_value(object.clone())
        .map_err(|e| BadReview::NotAPod(bounded(&e.to_string())))?;
    let options = match annotations::read(&pod, config) {
        Ok(Verdict::Inject(o)) => o,
        Ok(Verdict::Skip(why)) => return Ok(Decision::Allow(why.to_string())),
        Ok(Verdict::NoConfig) => {
            let message = format!(
                "tokex injection: the pod has no {CONFIG} annotation naming the ConfigMap that \
                 holds its tokex.yaml"
            );
            return Ok(match config.failure_policy {
                FailurePolicy::Fail => Decision::Deny(message),
                FailurePolicy::Ignore => {
                    Decision::Warn(format!("{message}; admitted without tokex"))
                }
            });
        }
        Err(refusal) => {
            return Ok(Decision::Deny(bounded(&format!(
                "tokex injection: {refusal}"
            ))));
        }
    };
    match patch::build(&pod, config, &options) {
        Ok(p) => Ok(Decision::Inject(p)),
        Err(patch::PatchError::Encode(e)) => Err(BadReview::Encode(e)),
        Err(e) => Ok(Decision::Deny(bounded(&format!("tokex injection: {e}")))),
    }
}

/// The API documents `response.patch` as base64 (how Go encodes `[]byte` in JSON);
/// kube-core writes the bytes as a number array, so they are re-encoded here.
fn base64_patch(review: &mut Value) {
    let Some(patch) = review.pointer_mut("/response/patch") else {
        return;
    };
    let bytes: Option<Vec<u8>> = patch.as_array().and_then(|a| {
        a.iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect()
    });
    if let Some(bytes) = bytes {
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
}

fn bounded(s: &str) -> String {
    tokex_common::yaml::bounded(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: &str) -> InjectConfig {
        let text = format!(
            "inject:\n  cert_file: c\n  key_file: k\n  image: ghcr.io/example/tokex:0.1.0\n{extra}"
        );
        crate::config::parse(&text, std::path::Path::new("inject.yaml")).unwrap()
    }

    fn review(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "request": {
                "uid": "u",
                "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "operation": "CREATE",
                "userInfo": {},
                "object": object,
            }
        }))
        .unwrap()
    }

    /// With failure_policy Ignore, a pod without tokex.io/config is admitted unchanged,
    /// and the client is told why in a warning.
    #[test]
    fn ignore_admits_with_a_warning() {
        let pod = json!({ "metadata": {}, "spec": { "containers": [] } });
        let (out, decision) = answer(&review(pod), &config("  failure_policy: Ignore\n")).unwrap();
        assert!(matches!(decision, Decision::Warn(_)), "{decision:?}");
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
        let warning = out["response"]["warnings"][0].as_str().unwrap();
        assert!(warning.contains("tokex.io/config"), "{warning}");
    }

    /// Lists and maps sent as `null` are created by the patch, which then applies.
    #[test]
    fn null_lists_are_created() {
        let pod = json!({
            "metadata": { "labels": null, "annotations": { "tokex.io/config": "c", "tokex.io/proxy-env": "true" } },
            "spec": { "initContainers": null, "volumes": null, "containers": [{ "name": "app", "env": null }] }
        });
        let (_, decision) = answer(&review(pod.clone()), &config("")).unwrap();
        let Decision::Inject(patch) = decision else {
            panic!("{decision:?}");
        };
        let mut patched = pod;
        json_patch::patch(&mut patched, &patch.0).unwrap();
        assert_eq!(patched["spec"]["initContainers"][0]["name"], "tokex");
        assert_eq!(
            patched["spec"]["containers"][0]["env"][0]["name"],
            "HTTP_PROXY"
        );
        assert_eq!(patched["metadata"]["labels"]["tokex.io/sidecar"], "true");
    }

    /// A pod whose own volume has a name tokex needs is denied with that name, rather than
    /// patched into a pod the API server refuses.
    #[test]
    fn volume_name_collision_is_denied() {
        let pod = json!({
            "metadata": { "annotations": { "tokex.io/config": "c" } },
            "spec": { "containers": [], "volumes": [{ "name": "tokex-config", "emptyDir": {} }] }
        });
        let (_, decision) = answer(&review(pod), &config("")).unwrap();
        assert!(
            matches!(&decision, Decision::Deny(m) if m.contains("tokex-config")),
            "{decision:?}"
        );
    }

    /// Bad label and annotation values are denied naming the key: the opt-in label, the
    /// booleans, the object names and the audience.
    #[test]
    fn bad_values_name_their_key() {
        for (labels, annotations, key) in [
            (
                json!({ "tokex.io/inject": "yes" }),
                json!({ "tokex.io/config": "c" }),
                "tokex.io/inject",
            ),
            (
                json!({}),
                json!({ "tokex.io/config": "c", "tokex.io/transparent": "True" }),
                "tokex.io/transparent",
            ),
            (
                json!({}),
                json!({ "tokex.io/config": "c", "tokex.io/proxy-env": "1" }),
                "tokex.io/proxy-env",
            ),
            (
                json!({}),
                json!({ "tokex.io/config": "Not_A_Name" }),
                "tokex.io/config",
            ),
            (
                json!({}),
                json!({ "tokex.io/config": "c", "tokex.io/credentials": "-x" }),
                "tokex.io/credentials",
            ),
            (
                json!({}),
                json!({ "tokex.io/config": "c", "tokex.io/service-account-token-audience": "a b" }),
                "tokex.io/service-account-token-audience",
            ),
            (
                json!({}),
                json!({ "tokex.io/config": "c", "tokex.io/proxy-cpu-limit": "-1" }),
                "tokex.io/proxy-cpu-limit",
            ),
        ] {
            let pod = json!({ "metadata": { "labels": labels, "annotations": annotations }, "spec": { "containers": [] } });
            let (_, decision) = answer(&review(pod), &config("")).unwrap();
            assert!(
                matches!(&decision, Decision::Deny(m) if m.contains(key)),
                "{key}: {decision:?}"
            );
        }
    }
}
