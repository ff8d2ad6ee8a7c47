//! What the config refuses about `exchange.chain`, each at FILE:LINE:COL with its key.

use crate::support::*;

#[test]
fn chain_refusals_name_their_place() {
    let head = "authorities:
  a:
    token_endpoint: https://a.example/token
    client_id: c
    auth: { method: none }
  b:
    token_endpoint: https://b.example/token
    client_id: c
    auth: { method: none }
  delegating:
    token_endpoint: https://d.example/token
    client_id: c
    auth: { method: none }
    actor_token: { file: /nonexistent/actor.jwt }
routes:
  - name: r
    upstream: https://r.example
";
    let legs = "chain: [{ authority: a, audience: x }, { authority: b, scope: s }]";
    let beside = |extra: &str| format!("    exchange: {{ {extra}, {legs} }}\n");
    // Each case: the route's exchange line, where in it the error points, the message.
    let cases = [
        (
            "    exchange: { chain: [{ authority: a, audience: x }] }\n".to_string(),
            "[{",
            "routes[0].exchange.chain: give exactly two legs",
        ),
        (
            "    exchange: { chain: [{ authority: a, audience: x }, { authority: a, scope: s }] }\n".into(),
            "a, scope",
            "routes[0].exchange.chain[1].authority: the legs name two authorities",
        ),
        (beside("authority: a"), "a,", "routes[0].exchange.authority: with `chain`, each leg names its own"),
        (beside("scope: s"), "s,", "routes[0].exchange.scope: with `chain`, give it on the leg"),
        (beside("grant: jwt-bearer"), "jwt-bearer", "routes[0].exchange.grant: with `chain`"),
        (
            "    exchange: { chain: [{ authority: a }, { authority: b, scope: s }] }\n".into(),
            "a }",
            "routes[0].exchange.chain[0]: give audience and/or resource",
        ),
        (
            "    exchange: { chain: [{ authority: a, audience: x }, { authority: b, audience: y, scope: s }] }\n".into(),
            "y,",
            "routes[0].exchange.chain[1].audience: a token-exchange parameter, not sent on the second leg",
        ),
        (
            "    exchange: { chain: [{ authority: a, audience: x }, { authority: b }] }\n".into(),
            "b }",
            "routes[0].exchange.chain[1]: give scope and/or resource",
        ),
        (
            "    exchange: { chain: [{ authority: a, audience: x }, { authority: delegating, scope: s }] }\n".into(),
            "delegating,",
            "routes[0].exchange.chain[1].authority: jwt-bearer has no actor token",
        ),
        (
            "    exchange: { chain: [{ authority: nope, audience: x }, { authority: b, scope: s }] }\n".into(),
            "nope",
            "routes[0].exchange.chain[0].authority: unknown authority `nope`",
        ),
        (
            "    exchange: { chain: [{ authority: a, audience: x, extra_params: { scope: s } }, { authority: b, scope: s }] }\n".into(),
            "s }",
            "routes[0].exchange.chain[0].extra_params.scope: tokex sets `scope` itself",
        ),
        (
            "    exchange: { chain: [{ authority: a, audience: x, grant: jwt-bearer }, { authority: b, scope: s }] }\n".into(),
            "grant",
            "routes[0].exchange.chain[0].grant: unknown field `grant`",
        ),
        (
            "    exchange: { chain: [{ authority: a, audience: x, requested_token_type: 'urn:ietf:params:oauth:token-type:saml2' }, { authority: b, scope: s }] }\n".into(),
            "'urn:ietf:params:oauth:token-type:saml2'",
            "routes[0].exchange.chain[0].requested_token_type: leg two presents this token as a JWT assertion",
        ),
        (
            "    exchange: { subject_token_from: { header: host }, chain: [{ authority: a, audience: x }, { authority: b, scope: s }] }\n".into(),
            "a, audience",
            "routes[0].exchange.subject_token_from: `host` cannot carry a token",
        ),
    ];
    let cases: Vec<(&str, &str, &str)> =
        cases.iter().map(|(l, m, e)| (l.as_str(), *m, *e)).collect();
    assert_refused_at(head, 18, &cases);
}
