//! The injection webhook's review in, response out (`tokex inject`): the bytes the API
//! server posts. Whatever comes in, the webhook never panics; a refusal is a short
//! message; an answer is an `admission.k8s.io/v1` AdmissionReview in JSON with the
//! request's uid; a patch it allows is base64 of the same JSON Patch, applies to the pod
//! that came in, and the patched pod sent again is left alone (reinvocation).
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokex_inject::config::InjectConfig;
use tokex_inject::review::{self, Decision};

static CONFIG: LazyLock<InjectConfig> = LazyLock::new(|| {
    let text = "inject:\n  cert_file: tls.crt\n  key_file: tls.key\n  image: ghcr.io/example/tokex:0.1.0\n  init_image: ghcr.io/example/tokex-init:0.1.0\n";
    tokex_inject::config::parse(text, Path::new("fuzz.yaml")).expect("the fuzz config loads")
});

/// The longest refusal: bounded messages, whatever the body quotes.
const MAX_MESSAGE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let config = &*CONFIG;
    let (out, decision) = match review::answer(data, config) {
        Ok(answered) => answered,
        Err(e) => {
            let message = e.to_string();
            assert!(
                !message.is_empty() && message.len() <= MAX_MESSAGE,
                "{message}"
            );
            return;
        }
    };
    let input: Value = serde_json::from_slice(data).expect("an answered review is JSON");
    let out: Value = serde_json::from_slice(&out).expect("the answer is JSON");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = &out["response"];
    assert_eq!(
        response["uid"], input["request"]["uid"],
        "the request's uid"
    );
    match decision {
        Decision::Inject(patch) => {
            assert_eq!(response["allowed"], true);
            assert_eq!(response["patchType"], "JSONPatch");
            let sent = base64::engine::general_purpose::STANDARD
                .decode(response["patch"].as_str().expect("the patch is a string"))
                .expect("the patch is base64");
            let sent: json_patch::Patch = serde_json::from_slice(&sent).expect("a JSON Patch");
            assert_eq!(sent, patch);
            let mut pod = input["request"]["object"].clone();
            json_patch::patch(&mut pod, &patch.0).expect("the patch applies to the pod sent");
            let mut again = input.clone();
            again["request"]["object"] = pod;
            let body = serde_json::to_vec(&again).expect("JSON");
            match review::answer(&body, config) {
                Ok((_, Decision::Allow(_))) => {}
                other => panic!("the injected pod is not left alone: {other:?}"),
            }
        }
        Decision::Allow(_) | Decision::Warn(_) => {
            assert_eq!(response["allowed"], true);
            assert!(response.get("patch").is_none());
        }
        Decision::Deny(message) => {
            assert_eq!(response["allowed"], false);
            assert!(response.get("patch").is_none());
            assert_eq!(response["status"]["message"], message.as_str());
            assert!(message.len() <= MAX_MESSAGE, "{message}");
        }
    }
});
