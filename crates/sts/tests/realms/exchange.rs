//! Token exchange: scopes by policy, claims carried over, delegation chains and `may_act`.

use serde_json::json;

use crate::support::*;

/// alice's client-realm token exchanged at the backend realm, as a sidecar's `orders`
/// route asks: a backend token for orders-api, scopes mapped (openid -> email
/// profile, read:calendar -> calendar.events.read) plus the admin rule's
/// write:documents, read:analytics withheld (alice is not in marketing), claims copied
/// and renamed, and no `act` (impersonation: tokex has no actor token). bob, in
/// marketing, gets read:analytics but not write:documents.
#[tokio::test]
async fn exchange_maps_scopes_and_claims_by_policy() {
    let fx = Fixture::start().await;
    let orders = [("audience", "orders-api"), ("scope", ORDERS_SCOPE)];
    let subject = fx.alice().await;
    let subject_exp = claims_of(&subject)["exp"].as_u64().unwrap();

    let token = issued(&fx.exchange(&subject, &orders).await);
    assert_ne!(token, subject);
    let c = claims_of(&token);
    assert_eq!(c["iss"], fx.sts.issuer("backend"));
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "orders-api");
    assert_eq!(c["client_id"], "tokex");
    assert_eq!(
        c["scope"], "email profile calendar.events.read write:documents",
        "mapped + rule-granted, in request order, read:analytics withheld"
    );
    assert_eq!(c["email"], "alice@example.com", "copied");
    assert_eq!(c["dept"], "engineering", "copied and renamed");
    for absent in ["department", "name", "group", "act", "may_act"] {
        assert!(c.get(absent).is_none(), "{absent} in {c}");
    }
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert!(exp <= iat + 600 && exp <= subject_exp, "token_ttl 10m: {c}");
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().typ.as_deref(),
        Some("at+jwt")
    );

    let bob = fx
        .mint("marketing-app", "marketing-secret", Some("openid"))
        .await;
    let c = claims_of(&issued(&fx.exchange(&bob, &orders).await));
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["scope"], "email profile read:analytics");
    assert_eq!(c["dept"], "marketing");
    assert!(c.get("act").is_none(), "{c}");
}

/// A two-hop chain: hop 1 (tokex, actor svc-a, as a sidecar with an actor token asks)
/// gives T1 {sub alice, act svc-a}; hop 2
/// exchanges T1 at the backend realm, which trusts its own tokens, with actor svc-b: T2
/// has act {sub svc-b, act {sub svc-a}}. T1's backend scopes carry over (same realm),
/// narrowed to the request; without a new actor the existing chain is kept.
#[tokio::test]
async fn two_hop_delegation_nests_act() {
    let fx = Fixture::start().await;
    let actor_a = fx.mint("svc-a", "svc-a-secret", None).await;
    let hop1 = [
        ("audience", "orders-api"),
        ("scope", ORDERS_SCOPE),
        ("actor_token", actor_a.as_str()),
        ("actor_token_type", JWT),
    ];
    let t1 = issued(&fx.exchange(&fx.alice().await, &hop1).await);
    assert_eq!(claims_of(&t1)["act"]["sub"], "svc-a");

    let actor_b = fx.mint("svc-b", "svc-b-secret", None).await;
    let hop2 = |actor: Option<String>| {
        let (t1, sts) = (t1.clone(), &fx.sts);
        async move {
            let mut form = vec![
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", t1.as_str()),
                ("subject_token_type", ACCESS_TOKEN),
                ("audience", "inventory-api"),
                (
                    "scope",
                    "calendar.events.read write:documents inventory.admin",
                ),
            ];
            if let Some(a) = &actor {
                form.push(("actor_token", a.as_str()));
                form.push(("actor_token_type", JWT));
            }
            sts.post("backend", Some(("orders-svc", "orders-secret")), &form)
                .await
        }
    };
    let r = hop2(Some(actor_b)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["scope"], "calendar.events.read write:documents");
    let t2 = claims_of(r.json()["access_token"].as_str().unwrap());
    assert_eq!(t2["sub"], "alice");
    assert_eq!(t2["aud"], "inventory-api");
    assert_eq!(t2["client_id"], "orders-svc");
    assert_eq!(t2["act"]["sub"], "svc-b", "{t2}");
    assert_eq!(t2["act"]["act"]["sub"], "svc-a", "{t2}");
    assert!(t2["act"]["act"].get("act").is_none(), "{t2}");
    assert!(t2["exp"].as_u64().unwrap() <= claims_of(&t1)["exp"].as_u64().unwrap());

    let r = hop2(None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let kept = claims_of(r.json()["access_token"].as_str().unwrap());
    assert_eq!(
        kept["act"],
        claims_of(&t1)["act"],
        "chain kept, not dropped"
    );
}

/// RFC 8693 §4.4: a subject token's `may_act` limits who may act for it: svc-a (named)
/// is accepted, svc-b is refused with invalid_request; `may_act` is not carried over.
/// The subject comes from a trusted IdP (a JWKS file), since a realm never mints
/// `may_act` from client claims (it is reserved).
#[tokio::test]
async fn may_act_admits_only_the_named_actor() {
    let fx = Fixture::start().await;
    let subject = fx.idp_token(json!({"scope": "openid", "may_act": {"sub": "svc-a"}}));
    let svc_a = fx.mint("svc-a", "svc-a-secret", None).await;
    let svc_b = fx.mint("svc-b", "svc-b-secret", None).await;
    let exchange_with = |actor: String| {
        let (fx, subject) = (&fx, subject.clone());
        async move {
            fx.exchange(
                &subject,
                &[
                    ("audience", "orders-api"),
                    ("actor_token", &actor),
                    ("actor_token_type", JWT),
                ],
            )
            .await
        }
    };
    let ok = exchange_with(svc_a).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let c = claims_of(ok.json()["access_token"].as_str().unwrap());
    assert_eq!(
        (c["sub"].clone(), c["act"]["sub"].clone()),
        (json!("carol"), json!("svc-a"))
    );
    assert!(c.get("may_act").is_none(), "{c}");
    assert_eq!(c["scope"], "email profile");

    let refused = exchange_with(svc_b).await;
    assert_oauth_error(&refused, 400, "invalid_request", "actor not in may_act");
    assert!(
        refused.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("may_act"),
        "{}",
        refused.body
    );

    // A realm client's `may_act` claim is dropped: it cannot grant itself delegation rules.
    let yaml = "realms:
  r:
    clients:
      c:
        client_secret: s
        grants: [client_credentials]
        audiences: [api]
        claims: { may_act: { sub: svc-a }, act: { sub: mallory }, team: blue }
";
    let sts = StsServer::start(yaml).await;
    let r = sts
        .post(
            "r",
            Some(("c", "s")),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let c = claims_of(r.json()["access_token"].as_str().unwrap());
    assert_eq!(c["team"], "blue");
    assert!(c.get("may_act").is_none() && c.get("act").is_none(), "{c}");
}

/// The access token of a successful token response.
fn issued(r: &Got) -> String {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}
