//! The shape of the printed config: the file's sections with their keys in the order
//! the reference documents them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::file::{AuthMethod, MissingTokenPolicy, Roots};

#[derive(Serialize)]
pub(super) struct Printed {
    pub(super) listen: String,
    pub(super) admin: String,
    pub(super) authorities: BTreeMap<String, PrintedAuthority>,
    pub(super) routes: Vec<PrintedRoute>,
    pub(super) cache: PrintedCache,
    pub(super) timeouts: Ordered<String>,
    pub(super) limits: Ordered<u32>,
    pub(super) audit: PrintedAudit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tracing: Option<PrintedTracing>,
    pub(super) tls: PrintedTls,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) transparent: Option<PrintedTransparent>,
}

#[derive(Serialize)]
pub(super) struct PrintedTransparent {
    pub(super) listen: String,
    pub(super) ports: Vec<u16>,
    pub(super) exclude_ports: Vec<u16>,
    pub(super) exclude_cidrs: Vec<String>,
    pub(super) proxy_uid: u32,
    pub(super) unmatched: crate::config::file::Unmatched,
}

#[derive(Serialize)]
pub(super) struct PrintedAuthority {
    /// Absent: read from the issuer's metadata when tokex runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) token_endpoint: Option<String>,
    pub(super) allow_insecure_http: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) issuer: Option<String>,
    pub(super) client_id: String,
    pub(super) auth: PrintedAuth,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actor_token: Option<Ordered<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ca_file: Option<String>,
    pub(super) timeout: String,
    pub(super) attempt_timeout: String,
    pub(super) retries: u32,
    pub(super) circuit_breaker: PrintedBreaker,
}

#[derive(Serialize)]
pub(super) struct PrintedBreaker {
    pub(super) failures: u32,
    pub(super) open_for: String,
}

/// The keys of `auth` that apply to its method.
#[derive(Serialize)]
pub(super) struct PrintedAuth {
    pub(super) method: AuthMethod,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) client_secret: Option<&'static str>,
    #[serde(flatten)]
    pub(super) rest: Ordered<String>,
}

#[derive(Serialize)]
pub(super) struct PrintedRoute {
    pub(super) name: String,
    #[serde(rename = "match")]
    pub(super) matcher: Ordered<String>,
    pub(super) strip_prefix: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ca_file: Option<String>,
    pub(super) on_missing_token: MissingTokenPolicy,
    pub(super) exchange: PrintedExchange,
    pub(super) cache: Ordered<String>,
    pub(super) timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) deadline: Option<String>,
    pub(super) retry_on_401: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum PrintedExchange {
    None(&'static str),
    Spec(Ordered<PrintedValue>),
}

/// One exchange parameter: a string, a small map (`subject_token_from`, `inject`), the
/// named `extra_params`, or a chain's legs.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum PrintedValue {
    Text(String),
    Map(Ordered<String>),
    Named(std::collections::BTreeMap<String, String>),
    /// `chain`: each leg's parameters.
    Legs(Vec<Ordered<PrintedValue>>),
}

#[derive(Serialize)]
pub(super) struct PrintedCache {
    pub(super) max_entries: u64,
    #[serde(flatten)]
    pub(super) lifetimes: Ordered<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) shared: Option<PrintedShared>,
}

#[derive(Serialize)]
pub(super) struct PrintedShared {
    pub(super) url: String,
    pub(super) key_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) password_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ca_file: Option<String>,
    pub(super) timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) lock: Option<Ordered<String>>,
    pub(super) circuit_breaker: PrintedBreaker,
}

#[derive(Serialize)]
pub(super) struct PrintedAudit {
    pub(super) enabled: bool,
    pub(super) cache_hits: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) file: Option<String>,
}

#[derive(Serialize)]
pub(super) struct PrintedTracing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) otlp_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sampling: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) service_name: Option<String>,
}

#[derive(Serialize)]
pub(super) struct PrintedTls {
    pub(super) roots: Roots,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ca_file: Option<String>,
}

/// A map that keeps its keys in the order they were inserted: the printed config reads in
/// the order the reference documents it, not alphabetically.
pub(super) struct Ordered<V>(Vec<(&'static str, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V, const N: usize> From<[(&'static str, V); N]> for Ordered<V> {
    fn from(entries: [(&'static str, V); N]) -> Self {
        Self(entries.into())
    }
}

impl<V> Ordered<V> {
    pub(super) fn insert(&mut self, key: &'static str, value: V) {
        self.0.push((key, value));
    }
}

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}
