//! Identity chaining across two authorities (`exchange.chain`): a token exchange at the
//! first for a JWT grant addressed to the second, then the jwt-bearer grant there.

mod config;
mod example;
mod fleet;
mod legs;
mod sharing;

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

/// The second authority takes each grant once, as one that enforces unique `jti`s does
/// (Keycloak by default): `orders-N` for a new grant, `invalid_grant` for a spent one.
/// The grants it took, in order.
fn single_use(b: &MockAs) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let spent = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let used = spent.clone();
    b.on(move |req, n| {
        let grant = req.param("assertion").unwrap_or_default().to_string();
        let mut used = used.lock().unwrap();
        if used.contains(&grant) {
            return Reply::json(400, serde_json::json!({"error": "invalid_grant"}));
        }
        used.push(grant);
        issue_with(req, &format!("orders-{n}"), Some(300))
    });
    spent
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
