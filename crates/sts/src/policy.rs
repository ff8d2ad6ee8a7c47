//! Token-exchange policy of a realm: "scope mapping between authorities" from the seed
//! documents, as pure functions.
//!
//! - Direct scope mapping: a subject scope maps to this realm's scopes
//!   (`openid` -> `email profile`).
//! - Claims-based rules: a subject claim grants scopes (`group` contains `admin` ->
//!   `write:documents`).
//! - Reduction: the issued scope is what was requested, narrowed to what mapping, rules
//!   and the client's cap allow; never wider.
//! - Claims transformation: which subject claims the new token carries, and under what name.
//! - Delegation (RFC 8693 §4.1, §4.4): the `act` chain and the `may_act` check.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use tokex_common::oauth::scope_tokens;

/// A realm's exchange policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub scope_mapping: BTreeMap<String, Vec<String>>,
    pub claim_rules: Vec<ClaimRule>,
    pub claims: ClaimsTransform,
}

/// "If claim C (contains|equals) V, grant scopes S".
#[derive(Debug, Clone)]
pub struct ClaimRule {
    pub claim: String,
    pub test: ClaimTest,
    pub grant: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum ClaimTest {
    /// The claim is an array holding the value, or a space-separated string with it.
    Contains(String),
    /// The claim equals the value exactly.
    Equals(Value),
}

/// Which subject claims are copied into the issued token, and renames.
#[derive(Debug, Clone, Default)]
pub struct ClaimsTransform {
    pub copy: Vec<String>,
    pub rename: BTreeMap<String, String>,
}

/// Claims the issuer sets itself; a transformation can never overwrite them.
pub const RESERVED: [&str; 11] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "client_id",
    "scope",
    "act",
    "may_act",
];

impl ClaimRule {
    pub fn matches(&self, claims: &Map<String, Value>) -> bool {
        let Some(value) = claims.get(&self.claim) else {
            return false;
        };
        match &self.test {
            ClaimTest::Equals(expected) => value == expected,
            ClaimTest::Contains(needle) => match value {
                Value::Array(items) => items.iter().any(|i| i.as_str() == Some(needle)),
                Value::String(s) => s.split(' ').any(|p| p == needle),
                _ => false,
            },
        }
    }
}

/// The scopes of a token (`scope` string, or `scp` array as some IdPs send).
pub fn token_scopes(claims: &Map<String, Value>) -> Vec<String> {
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => scope_tokens(s).map(String::from).collect(),
        (_, Some(Value::Array(a))) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

impl Policy {
    /// Every scope this subject could receive here: mapped subject scopes (or the
    /// scopes themselves when the subject is already in this realm's vocabulary) plus
    /// rule grants, capped by the client's allowed scopes.
    pub fn available(
        &self,
        subject: &Map<String, Value>,
        same_realm: bool,
        client_cap: Option<&[String]>,
    ) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for scope in token_scopes(subject) {
            if same_realm {
                out.insert(scope.clone());
            }
            if let Some(mapped) = self.scope_mapping.get(&scope) {
                out.extend(mapped.iter().cloned());
            }
        }
        for rule in self.claim_rules.iter().filter(|r| r.matches(subject)) {
            out.extend(rule.grant.iter().cloned());
        }
        if let Some(cap) = client_cap {
            out.retain(|s| cap.contains(s));
        }
        out
    }

    /// The subject claims the issued token carries, after copy and rename.
    pub fn transform(&self, subject: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for name in &self.claims.copy {
            if let Some(v) = subject.get(name) {
                let target = self.claims.rename.get(name).unwrap_or(name);
                if !RESERVED.contains(&target.as_str()) {
                    out.insert(target.clone(), v.clone());
                }
            }
        }
        out
    }
}

/// The issued scope: the request narrowed to what is available (RFC 6749 §3.3 lets an
/// AS grant less); nothing requested means everything available. `None` when the
/// request and the policy have nothing in common (`invalid_scope`).
pub fn narrow(requested: Option<&str>, available: &BTreeSet<String>) -> Option<Vec<String>> {
    let granted: Vec<String> = match requested {
        None => available.iter().cloned().collect(),
        Some(r) => {
            let mut seen = BTreeSet::new();
            scope_tokens(r)
                .filter(|s| available.contains(*s) && seen.insert(*s))
                .map(String::from)
                .collect()
        }
    };
    if granted.is_empty() && requested.is_some() {
        None
    } else {
        Some(granted)
    }
}

/// RFC 8693 §4.1: the new token's `act` names the current actor; the chain of earlier
/// actors (the subject token's own `act`) nests inside it.
pub fn act_claim(actor: &Map<String, Value>, prior: Option<&Value>) -> Value {
    let mut act = Map::new();
    for key in ["sub", "iss", "client_id"] {
        if let Some(v) = actor.get(key) {
            act.insert(key.to_string(), v.clone());
        }
    }
    if let Some(prior) = prior.or_else(|| actor.get("act")) {
        act.insert("act".into(), prior.clone());
    }
    Value::Object(act)
}

/// RFC 8693 §4.4: when the subject token has `may_act`, the actor must match every
/// claim it names (typically `sub`, optionally `iss`).
pub fn may_act_allows(may_act: Option<&Value>, actor: &Map<String, Value>) -> bool {
    match may_act {
        None => true,
        Some(Value::Object(required)) => {
            !required.is_empty() && required.iter().all(|(k, v)| actor.get(k) == Some(v))
        }
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn seed_policy() -> Policy {
        Policy {
            scope_mapping: BTreeMap::from([
                ("openid".into(), vec!["email".into(), "profile".into()]),
                ("read:calendar".into(), vec!["calendar.events.read".into()]),
            ]),
            claim_rules: vec![
                ClaimRule {
                    claim: "group".into(),
                    test: ClaimTest::Contains("admin".into()),
                    grant: vec!["write:documents".into()],
                },
                ClaimRule {
                    claim: "department".into(),
                    test: ClaimTest::Equals(json!("marketing")),
                    grant: vec!["read:analytics".into()],
                },
            ],
            claims: ClaimsTransform {
                copy: vec!["email".into(), "department".into(), "sub".into()],
                rename: BTreeMap::from([("department".into(), "dept".into())]),
            },
        }
    }

    /// Direct mapping: openid -> email profile, read:calendar -> calendar.events.read;
    /// unmapped foreign scopes are dropped.
    #[test]
    fn direct_scope_mapping() {
        let p = seed_policy();
        let s = claims(json!({"scope": "openid read:calendar foreign:thing"}));
        let got: Vec<_> = p.available(&s, false, None).into_iter().collect();
        assert_eq!(got, ["calendar.events.read", "email", "profile"]);
    }

    /// Claim rules: group contains admin grants write:documents; department equals
    /// marketing grants read:analytics; neither fires without its claim.
    #[test]
    fn claims_based_rules() {
        let p = seed_policy();
        let admin = claims(json!({"group": ["staff", "admin"]}));
        assert!(p.available(&admin, false, None).contains("write:documents"));
        let spaced = claims(json!({"group": "staff admin"}));
        assert!(
            p.available(&spaced, false, None)
                .contains("write:documents")
        );
        let marketing = claims(json!({"department": "marketing"}));
        assert_eq!(
            p.available(&marketing, false, None)
                .into_iter()
                .collect::<Vec<_>>(),
            ["read:analytics"]
        );
        let neither = claims(json!({"group": ["administrators"], "department": "sales"}));
        assert!(p.available(&neither, false, None).is_empty());
    }

    /// The client's cap removes scopes; same-realm subjects keep their own scopes.
    #[test]
    fn client_cap_and_same_realm() {
        let p = seed_policy();
        let s = claims(json!({"scope": "openid", "group": ["admin"]}));
        let cap = vec!["email".to_string()];
        assert_eq!(
            p.available(&s, false, Some(&cap))
                .into_iter()
                .collect::<Vec<_>>(),
            ["email"]
        );
        let own = claims(json!({"scope": "calendar.events.read"}));
        assert!(
            p.available(&own, true, None)
                .contains("calendar.events.read")
        );
        assert!(
            !p.available(&own, false, None)
                .contains("calendar.events.read")
        );
    }

    /// Narrowing never widens: the request is intersected; nothing in common is an error.
    #[test]
    fn narrowing() {
        let avail: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            narrow(Some("a c z"), &avail),
            Some(vec!["a".into(), "c".into()])
        );
        assert_eq!(narrow(Some("a a"), &avail), Some(vec!["a".into()]));
        assert_eq!(
            narrow(None, &avail),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(narrow(Some("z"), &avail), None);
        assert_eq!(narrow(None, &BTreeSet::new()), Some(vec![]));
    }

    /// Claims transformation copies, renames and never overwrites reserved claims.
    #[test]
    fn claims_transformation() {
        let p = seed_policy();
        let s =
            claims(json!({"sub": "alice", "email": "a@x", "department": "eng", "secret": "no"}));
        assert_eq!(
            Value::Object(p.transform(&s)),
            json!({"email": "a@x", "dept": "eng"})
        );
    }

    /// The act chain nests earlier actors; may_act restricts who may act.
    #[test]
    fn delegation_chain_and_may_act() {
        let svc_a = claims(json!({"sub": "svc-a", "iss": "https://backend"}));
        let first = act_claim(&svc_a, None);
        assert_eq!(first, json!({"sub": "svc-a", "iss": "https://backend"}));
        let svc_b = claims(json!({"sub": "svc-b"}));
        assert_eq!(
            act_claim(&svc_b, Some(&first)),
            json!({"sub": "svc-b", "act": {"sub": "svc-a", "iss": "https://backend"}})
        );
        assert!(may_act_allows(None, &svc_a));
        assert!(may_act_allows(Some(&json!({"sub": "svc-a"})), &svc_a));
        assert!(!may_act_allows(Some(&json!({"sub": "svc-b"})), &svc_a));
        assert!(!may_act_allows(
            Some(&json!({"sub": "svc-a", "iss": "other"})),
            &svc_a
        ));
        assert!(!may_act_allows(Some(&json!("svc-a")), &svc_a));
    }
}
