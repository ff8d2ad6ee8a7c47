//! The `transparent` section as written: where redirected connections arrive and which
//! outbound connections `tokex init` redirects there.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use tokex_common::values::{Addr, Text};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTransparent {
    /// Where redirected connections arrive; loopback (default `127.0.0.1:15006`).
    #[schemars(with = "Option<Addr>")]
    pub listen: Option<Spanned<Addr>>,
    /// Destination ports to intercept; empty: every TCP port but the excluded ones.
    #[serde(default)]
    #[schemars(with = "Vec<u16>")]
    pub ports: Vec<Spanned<u16>>,
    /// Destination ports never intercepted.
    #[serde(default)]
    #[schemars(with = "Vec<u16>")]
    pub exclude_ports: Vec<Spanned<u16>>,
    /// Destination networks never intercepted (`169.254.169.254/32`, `fd00::/8`).
    #[serde(default)]
    #[schemars(with = "Vec<Text>")]
    pub exclude_cidrs: Vec<Spanned<Text>>,
    /// The uid tokex runs as; its own connections are never redirected (default 65532).
    #[schemars(with = "Option<u32>")]
    pub proxy_uid: Option<Spanned<u32>>,
    #[serde(default)]
    pub unmatched: Unmatched,
}

/// What happens to intercepted traffic no route takes, and to TLS and other protocols tokex
/// cannot rewrite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Relay it to where the app sent it, unchanged: no token work at all.
    #[default]
    Passthrough,
    /// Refuse it: 404 `no_route` for HTTP, a closed connection for anything else.
    Reject,
}
