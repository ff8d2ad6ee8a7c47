//! Golden pods: every directory of `tests/golden` holds an `input.yaml` (an
//! `AdmissionReview`, or a bare Pod that the test wraps in one), the webhook's answer in
//! `expected.json` (the response, its JSON Patch decoded), and for an admitted pod the pod
//! as the API server would store it, the patch applied with json-patch, in
//! `injected.yaml`. `TOKEX_BLESS=1` rewrites the outputs; otherwise they must match
//! exactly, so the goldens cannot drift from the code. `configmap.yaml` beside a pod that
//! runs tokex is hand-written: the tokex config it mounts, which `scripts/test.sh` checks
//! with the pod (kubernetes-validate, check_deploy.py).

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};
use tokex_inject::config::InjectConfig;
use tokex_inject::review::{self, Decision};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The shipped example config: the goldens show what it injects.
fn example_config() -> InjectConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/inject-example.yaml");
    tokex_inject::config::load(&path).expect("config/inject-example.yaml loads")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `input` as the API server would send it: a bare Pod is wrapped in a CREATE review.
fn as_review(case: &str, input: Value) -> Value {
    if input["kind"] != "Pod" {
        return input;
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("golden-{case}"),
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": input["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": { "username": "golden" },
            "object": input,
        }
    })
}

/// The response with its base64 patch decoded, for people to read in `expected.json`.
fn readable(response: &Value) -> Value {
    let mut r = response.clone();
    if let Some(p) = r.get("patch").and_then(Value::as_str) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p)
            .expect("the patch is base64");
        r["patch"] = serde_json::from_slice(&bytes).expect("the patch is JSON");
    }
    r
}

/// Writes `text` under TOKEX_BLESS, else compares; returns a mismatch message.
fn compare(path: &Path, text: &str, bless: bool) -> Option<String> {
    if bless {
        std::fs::write(path, text).expect("write golden");
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(old) if old == text => None,
        Ok(_) => Some(format!(
            "{} differs (TOKEX_BLESS=1 rewrites it)",
            path.display()
        )),
        Err(_) => Some(format!(
            "{} is missing (TOKEX_BLESS=1 writes it)",
            path.display()
        )),
    }
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("input.yaml").exists())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// Every golden pod gets exactly the recorded answer, and an admitted pod exactly the
/// recorded result; the response carries the request's uid; a patched pod sent again is
/// left alone (reinvocation); each case's decision is the one its name says.
#[test]
fn golden_pods() {
    let bless = std::env::var_os("TOKEX_BLESS").is_some();
    let config = example_config();
    let mut problems = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 10, "golden cases found: {}", cases.len());
    for (case, dir) in &cases {
        let review = as_review(case, yaml(&dir.join("input.yaml")));
        let body = serde_json::to_vec(&review).unwrap();
        let (out, decision) = review::answer(&body, &config)
            .unwrap_or_else(|e| panic!("{case}: the review was refused: {e}"));
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1", "{case}");
        assert_eq!(out["kind"], "AdmissionReview", "{case}");
        let response = &out["response"];
        assert_eq!(response["uid"], review["request"]["uid"], "{case}: uid");
        let expected = serde_json::to_string_pretty(&readable(response)).unwrap() + "\n";
        problems.extend(compare(&dir.join("expected.json"), &expected, bless));

        let want = expectation(case);
        let got = match &decision {
            Decision::Inject(_) => "inject",
            Decision::Allow(_) => "allow",
            Decision::Warn(_) => "warn",
            Decision::Deny(_) => "deny",
        };
        assert_eq!(got, want, "{case}: {decision:?}");

        let injected = dir.join("injected.yaml");
        if response["allowed"] == true {
            let mut pod = review["request"]["object"].clone();
            if let Decision::Inject(patch) = &decision {
                json_patch::patch(&mut pod, &patch.0)
                    .unwrap_or_else(|e| panic!("{case}: the patch does not apply: {e}"));
                let again = as_review(case, pod.clone());
                let (_, second) =
                    review::answer(&serde_json::to_vec(&again).unwrap(), &config).unwrap();
                assert!(
                    matches!(second, Decision::Allow(_)),
                    "{case}: injected twice: {second:?}"
                );
            }
            let text = format!(
                "# The pod of input.yaml as admitted: the webhook's patch (expected.json) applied.\n\
                 # Generated by crates/inject/tests/golden.rs (TOKEX_BLESS=1); do not edit.\n{}",
                serde_saphyr::to_string(&pod).unwrap()
            );
            problems.extend(compare(&injected, &text, bless));
            let back: Value = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(back, pod, "{case}: injected.yaml reads back as the pod");
        } else {
            assert!(
                !injected.exists(),
                "{case}: a denied pod has no injected.yaml"
            );
            let message = response["status"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("tokex.io/"), "{case}: {message}");
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What each case is for, so a golden blessed with the wrong decision fails here.
fn expectation(case: &str) -> &'static str {
    match case {
        "already-injected" | "opted-out" => "allow",
        "missing-config" | "invalid-annotation" => "deny",
        _ => "inject",
    }
}
