//! Identity chaining across two authorities (`exchange.chain`): a token exchange at the
//! first for a JWT grant addressed to the second, then the jwt-bearer grant there.

mod config;
mod example;
mod fleet;
mod legs;

use crate::support::*;

/// The second authority's issuer, and so the first leg's default audience.
const ISSUER_B: &str = "https://as-b.example";

/// Authorities `a` and `b` at two mock token endpoints, and route `orders` chaining
/// through them; `routes` adds more.
fn chained(a: &MockAs, b: &MockAs, upstream: &str, routes: &str) -> String {
    format!(
        "authorities:
  a:
    token_endpoint: {}
    client_id: tokex-a
    auth: {{ method: client_secret_post, client_secret: a-secret }}
    timeout: 1s
    retries: 0
  b:
    token_endpoint: {}
    issuer: {ISSUER_B}
    client_id: tokex-b
    auth: {{ method: client_secret_post, client_secret: b-secret }}
    timeout: 1s
    retries: 0
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {upstream}
    exchange:
      chain:
        - authority: a
        - {{ authority: b, scope: orders.read }}
{routes}",
        a.endpoint(),
        b.endpoint()
    )
}

/// The first authority's answers: `grant-N`, a JWT grant for `expires_in` seconds.
fn grants(a: &MockAs, expires_in: u64) {
    a.on(move |req, n| issue_with(req, &format!("grant-{n}"), Some(expires_in)));
}

/// The second authority's answers: `orders-N` for `expires_in` seconds.
fn tokens(b: &MockAs, expires_in: u64) {
    b.on(move |req, n| issue_with(req, &format!("orders-{n}"), Some(expires_in)));
}

/// Two mock authorities, `a` and `b`, and the upstream.
async fn parts() -> (MockAs, MockAs, Upstream) {
    (
        MockAs::start().await,
        MockAs::start().await,
        Upstream::start().await,
    )
}

/// One more route through the same legs: `name` on `{name}.internal`, leg two asking
/// for `scope`.
fn route(name: &str, upstream: &str, scope: &str) -> String {
    format!(
        "  - name: {name}
    match: {{ host: {name}.internal }}
    upstream: {upstream}
    exchange:
      chain:
        - authority: a
        - {{ authority: b, scope: {scope} }}
"
    )
}

/// [`chained`] with `early_expiry: 30s`, so lifetimes in the tens of seconds are short.
fn early(a: &MockAs, b: &MockAs, upstream: &str) -> String {
    format!(
        "{}cache: {{ early_expiry: 30s }}\n",
        chained(a, b, upstream, "")
    )
}
