//! `tokex inject`: a Kubernetes mutating admission webhook that adds the tokex sidecar to
//! pods on `CREATE`, answering `admission.k8s.io/v1` `AdmissionReview`s with an RFC 6902
//! JSON Patch. A crate of its own, linked by the `tokex` binary only, so the sidecar's
//! library carries no Kubernetes types.
//!
//! Layout:
//! - [`config`]: the webhook's YAML file (the `inject` section), validated.
//! - [`annotations`]: the `tokex.io/...` labels and annotations a pod asks with.
//! - [`quantity`]: Kubernetes resource quantities, checked before they reach a patch.
//! - [`sidecar`]: the containers and volumes injected, as Kubernetes types.
//! - [`patch`]: the JSON Patch operations that add them to one pod.
//! - [`review`]: one review in, one response out.
//! - [`certs`]: the serving certificate, reloaded when its files rotate.
//! - [`server`]: the HTTPS listener (`/inject`, `/`, `/healthz`, `/readyz`).
#![forbid(unsafe_code)]

pub mod annotations;
pub mod certs;
pub mod config;
pub mod patch;
pub mod quantity;
pub mod review;
pub mod server;
pub mod sidecar;
