//! What `tokex demo` prints: the subject token's claims beside the exchanged token's,
//! the chained token's, and the commands to try.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{Map, Value};

pub(super) fn report(
    user_token: &str,
    answer: &Value,
    chained: &Value,
    sidecar: SocketAddr,
) -> String {
    let subject = tokex::jwt::unverified_claims(user_token).unwrap_or_default();
    let exchanged: Map<String, Value> = answer["received_token_claims"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut keys: Vec<&String> = subject.keys().chain(exchanged.keys()).collect();
    keys.sort_by_key(|k| (claim_rank(k), k.to_string()));
    keys.dedup();
    let show = |m: &Map<String, Value>, k: &str| {
        m.get(k).map_or("-".to_string(), |v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tokex demo: requests through the sidecar, exchanged at the backend authority\n"
    );
    let row = |a: &str, b: &str, c: &str| format!("{a:<11} {b:<44} {c}\n");
    out.push_str(&row(
        "claim",
        "subject token (client authority)",
        "exchanged token (backend authority)",
    ));
    out.push_str(&row(
        "-----",
        "--------------------------------",
        "-----------------------------------",
    ));
    for k in keys {
        out.push_str(&row(
            k,
            &clip(&show(&subject, k), 44),
            &clip(&show(&exchanged, k), 80),
        ));
    }
    let _ = writeln!(
        out,
        "\nScopes were mapped (openid -> email profile, read:calendar -> calendar.events.read), \
         granted by a claim rule (group admin -> write:documents), narrowed to the route's request \
         (read:analytics needs department marketing), the audience set to orders-api, and `act` \
         names tokex's workload as the actor.\n"
    );
    let _ = writeln!(
        out,
        "Across authorities (route orders-chained): the client authority exchanged the same \
         token for a JWT grant addressed to the backend authority, which the backend took with \
         the jwt-bearer grant (identity chaining; the grant carried the actor):\n"
    );
    let chained = chained["received_token_claims"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let two = |a: &str, b: &str| format!("{a:<11} {b}\n");
    out.push_str(&two("claim", "chained token (backend authority)"));
    out.push_str(&two("-----", "---------------------------------"));
    for k in ["iss", "sub", "aud", "scope", "act", "client_id"] {
        out.push_str(&two(k, &clip(&show(&chained, k), 80)));
    }
    let _ = writeln!(
        out,
        "\nThe sidecar is listening on {sidecar}. Try it (Ctrl-C to stop):\n"
    );
    for host in ["orders.internal", "orders-chained.internal"] {
        let _ = writeln!(
            out,
            "  curl -s -H 'Host: {host}' -H 'Authorization: Bearer {user_token}' http://{sidecar}/orders/42"
        );
    }
    out
}

fn claim_rank(k: &str) -> usize {
    ["iss", "sub", "aud", "scope", "act", "client_id"]
        .iter()
        .position(|c| *c == k)
        .unwrap_or(10)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
