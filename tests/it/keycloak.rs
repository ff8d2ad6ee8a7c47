//! Interoperability with Keycloak, the authorization server most teams run: its RFC 8693
//! "standard token exchange", realm issuers with a path, client authentication by
//! secret, signed JWT and certificate, and its refusals as tokex reports them.
//!
//! One Keycloak serves the whole test binary (see `server`), with the realm in
//! tests/interop/keycloak-realm.json; each test uses its own clients of that realm, so
//! the tests can run side by side. Every token the upstream receives is checked against
//! the realm's JWKS. scripts/keycloak.sh installs Keycloak (scripts/test.sh runs it);
//! without it these tests fail rather than skip.

mod chaining;
mod client_auth;
mod exchange;
mod refusals;
mod restart;
mod server;

use serde_json::Value;

use crate::support::*;
use server::Server;

/// The client the realm's exchange clients narrow tokens to.
const TARGET: &str = "orders-api";
/// The realm's user, whose tokens the tests exchange.
const USER: (&str, &str) = ("alice", "alice-password");

/// tokex with authority `keycloak` at the realm's plain-HTTP token endpoint (`authority`
/// holds its `client_id` and `auth` lines), and route `orders` on `orders.internal` to
/// `upstream`, exchanging with `exchange` (the keys after `authority`), plus `route` lines.
fn config(kc: &Server, authority: &str, upstream: &str, exchange: &str, route: &str) -> String {
    format!(
        "authorities:
  keycloak:
    token_endpoint: {}
    issuer: {}
{authority}    timeout: 10s
    retries: 0
routes:
  - name: orders
    match: {{ host: orders.internal }}
    upstream: {upstream}
    exchange: {{ authority: keycloak, {exchange} }}
{route}",
        kc.token_endpoint(),
        kc.issuer(),
    )
}

/// `client_id` and `client_secret_basic` lines for a realm client whose secret is
/// `<client>-secret`.
fn basic(client: &str) -> String {
    format!(
        "    client_id: {client}\n    auth: {{ method: client_secret_basic, client_secret: {client}-secret }}\n"
    )
}

/// The exchange every route of these tests asks for: narrowed to the target, read only.
const NARROW: &str = "audience: orders-api, scope: 'orders:read'";

/// An access token for the realm's user from the public client `client` (direct grant),
/// and its refresh token.
async fn user_token(kc: &Server, client: &str) -> (String, String) {
    let r = post_form(
        &kc.token_endpoint(),
        &[
            ("grant_type", "password"),
            ("client_id", client),
            ("username", USER.0),
            ("password", USER.1),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "direct grant for {client}: {}", r.body);
    let j = r.json();
    (
        j["access_token"].as_str().unwrap().to_string(),
        j["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> Got {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let req = client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    got(req.send().await.unwrap()).await
}

/// The realm's signing keys (its JWKS document).
async fn jwks(kc: &Server) -> Value {
    let url = format!("{}/protocol/openid-connect/certs", kc.issuer());
    let r = got(client().get(url).send().await.unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The claims of `token` after checking it as a resource server would: RS256 signature
/// by a key of `jwks` (by `kid`), issuer `issuer`, audience [`TARGET`], not expired.
fn verified(token: &str, jwks: &Value, issuer: &str) -> Value {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header, jwk::Jwk};
    let kid = decode_header(token).unwrap().kid.expect("a kid");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("no key {kid} in the realm's JWKS"));
    let jwk: Jwk = serde_json::from_value(key.clone()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[TARGET]);
    validation.set_issuer(&[issuer]);
    decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
        .unwrap_or_else(|e| panic!("the forwarded token does not verify: {e}"))
        .claims
}

/// The token the upstream received, from the echo upstream's answer.
fn forwarded(r: &Got) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["authorization"]
        .as_str()
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_else(|| panic!("no bearer token reached the upstream: {}", r.body))
        .to_string()
}

/// The value of one series in tokex's metrics, 0 when it has none yet.
async fn metric(tokex: &Tokex, series: &str) -> u64 {
    tokex
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Successful exchanges (and client-credentials grants) tokex made at Keycloak.
async fn exchanges(tokex: &Tokex) -> u64 {
    metric(
        tokex,
        "tokex_exchanges_total{authority=\"keycloak\",outcome=\"ok\"}",
    )
    .await
}
