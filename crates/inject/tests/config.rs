//! The webhook's config file: the shipped example loads, defaults are those documented,
//! and every mistake is reported as `FILE:LINE:COL: key: message`.

use std::path::Path;

use tokex_inject::config::{self, FailurePolicy, PullPolicy};

fn parse(text: &str) -> Result<config::InjectConfig, String> {
    config::parse(text, Path::new("/etc/tokex-injector/inject.yaml")).map_err(|e| e.to_string())
}

const MINIMAL: &str = "inject:\n  cert_file: tls.crt\n  key_file: /tls/tls.key\n  image: ghcr.io/example/tokex:0.1.0\n";

/// config/inject-example.yaml loads as its comments say.
#[test]
fn shipped_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/inject-example.yaml");
    let c = config::load(&path).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(c.image, "ghcr.io/example/tokex:0.1.0");
    assert_eq!(c.init_image, "ghcr.io/example/tokex-init:0.1.0");
    assert_eq!(c.image_pull_policy, Some(PullPolicy::IfNotPresent));
    assert_eq!(c.failure_policy, FailurePolicy::Fail);
    assert_eq!((c.sidecar.proxy_port, c.sidecar.admin_port), (15001, 15000));
}

/// Only the required keys: the documented defaults, relative paths beside the file.
#[test]
fn defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
    assert_eq!(c.cert_file, Path::new("/etc/tokex-injector/tls.crt"));
    assert_eq!(c.key_file, Path::new("/tls/tls.key"));
    assert_eq!(c.init_image, c.image);
    assert_eq!(c.image_pull_policy, None);
    let r = &c.sidecar.resources;
    let q = |q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        q.as_ref().map(|q| q.0.clone())
    };
    assert_eq!(
        (
            q(&r.cpu_request),
            q(&r.memory_request),
            q(&r.cpu_limit),
            q(&r.memory_limit)
        ),
        (
            Some("50m".into()),
            Some("48Mi".into()),
            None,
            Some("128Mi".into())
        )
    );
}

/// Unknown keys, wrong types, bad values and missing keys name file, line, column and
/// key.
#[test]
fn errors_are_located() {
    let file = "/etc/tokex-injector/inject.yaml";
    let mut wrong = Vec::new();
    for (text, want) in [
        (
            "listen: 0.0.0.0:8443\n",
            format!("{file}:1:1: listen: unknown field `listen`, expected one of inject"),
        ),
        (
            &format!("{MINIMAL}  imagee: x\n"),
            format!("{file}:5:3: inject.imagee: unknown field `imagee`"),
        ),
        (
            &format!("{MINIMAL}  failure_policy: Sometimes\n"),
            format!("{file}:5:19: inject.failure_policy: unknown variant `Sometimes`"),
        ),
        (
            &format!("{MINIMAL}  sidecar:\n    resources:\n      limits: {{ memory: 128MB }}\n"),
            format!(
                "{file}:7:25: inject.sidecar.resources.limits.memory: `128MB` is not a Kubernetes quantity"
            ),
        ),
        (
            &format!("{MINIMAL}  sidecar:\n    admin_port: 0\n"),
            format!("{file}:6:17: inject.sidecar.admin_port: a port from 1 to 65535"),
        ),
        (
            &format!("{MINIMAL}  sidecar:\n    admin_port: 15001\n"),
            format!("{file}:6:17: inject.sidecar: proxy_port and admin_port must differ"),
        ),
        (
            "inject:\n  cert_file: a\n  key_file: b\n  image: \"\"\n",
            format!("{file}:4:10: inject.image: an image reference is required"),
        ),
        (
            "inject:\n  cert_file: a\n  key_file: b\n",
            format!("{file}:3:3: inject: missing field `image`"),
        ),
        (
            &format!("{MINIMAL}  image_pull_policy: always\n"),
            format!("{file}:5:22: inject.image_pull_policy: unknown variant `always`"),
        ),
    ] {
        let e = parse(text).unwrap_err();
        if !e.starts_with(&want) {
            wrong.push(format!(" got: {e}\nwant: {want}…"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
