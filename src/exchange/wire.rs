//! The token request's wire format: encoding the request (RFC 8693 §2.1, RFC 7523 §2.1,
//! RFC 6749 §4.4) and judging the response (RFC 8693 §2.2.1 / RFC 6749 §5.1 success,
//! RFC 8693 §2.2.2 / RFC 6749 §5.2 error). Pure functions, tested with bodies
//! recorded from real servers' quirks.

use serde::Deserialize;

use super::Error;
use crate::client_auth::Authentication;
use crate::config::model::ExchangeParams;
use crate::oauth::{
    GRANT_TYPE_CLIENT_CREDENTIALS, GRANT_TYPE_JWT_BEARER, GRANT_TYPE_TOKEN_EXCHANGE,
    normalize_scope,
};
use crate::secret::Secret;

/// Largest AS response body tokex reads; a token response is a few KiB at most.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Largest access token accepted; it becomes a request header.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The inputs of one exchange. No `Debug`: they hold the caller's token in the clear.
#[derive(Clone, Copy)]
pub struct ExchangeInput<'a> {
    pub grant: Grant<'a>,
    pub params: &'a ExchangeParams,
    pub client_id: &'a str,
    pub authentication: &'a Authentication,
}

/// What is being traded for a token. No `Debug`, as for [`ExchangeInput`].
#[derive(Clone, Copy)]
pub enum Grant<'a> {
    /// RFC 8693: the caller's token, and tokex's own as actor when configured.
    Exchange {
        subject_token: &'a str,
        actor: Option<(&'a Secret, &'a str)>,
    },
    /// RFC 7523 §2.1: the caller's JWT as the authorization grant.
    JwtBearer { assertion: &'a str },
    /// RFC 6749 §4.4: tokex's own token, for requests that act for no user.
    ClientCredentials,
}

impl Grant<'_> {
    /// The caller's token this grant carries, if any.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Grant::Exchange { subject_token, .. } => Some(subject_token),
            Grant::JwtBearer { assertion } => Some(assertion),
            Grant::ClientCredentials => None,
        }
    }

    /// Whether the response is an RFC 6749 §5.1 one, which need not name the issued
    /// token's type (RFC 8693 §2.2.1 requires `issued_token_type`).
    pub fn issued_type_optional(&self) -> bool {
        !matches!(self, Grant::Exchange { .. })
    }
}

/// The form body (`application/x-www-form-urlencoded`, so `+ / =` in tokens are
/// percent-encoded) and the `Authorization` value for `client_secret_basic`.
pub fn encode_request(input: &ExchangeInput<'_>) -> (String, Option<Secret>) {
    let p = input.params;
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(1024));
    match input.grant {
        Grant::Exchange {
            subject_token,
            actor,
        } => {
            form.append_pair("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)
                .append_pair("subject_token", subject_token)
                .append_pair("subject_token_type", &p.subject_token_type)
                .append_pair("requested_token_type", &p.requested_token_type);
            if let Some((token, token_type)) = actor {
                form.append_pair("actor_token", token.expose())
                    .append_pair("actor_token_type", token_type);
            }
        }
        Grant::JwtBearer { assertion } => {
            form.append_pair("grant_type", GRANT_TYPE_JWT_BEARER)
                .append_pair("assertion", assertion);
        }
        Grant::ClientCredentials => {
            form.append_pair("grant_type", GRANT_TYPE_CLIENT_CREDENTIALS);
        }
    }
    for (name, value) in [
        ("audience", &p.audience),
        ("resource", &p.resource),
        ("scope", &p.scope),
    ] {
        if let Some(v) = value {
            form.append_pair(name, v);
        }
    }
    // The route's extra parameters belong to its exchange, not to tokex's own token.
    if input.grant.subject().is_some() {
        for (name, value) in &p.extra_params {
            form.append_pair(name, value);
        }
    }
    let basic = match input.authentication {
        Authentication::Basic(header) => Some(header.clone()),
        Authentication::Post(secret) => {
            form.append_pair("client_id", input.client_id)
                .append_pair("client_secret", secret.expose());
            None
        }
        Authentication::Assertion {
            assertion,
            assertion_type,
        } => {
            form.append_pair("client_id", input.client_id)
                .append_pair("client_assertion_type", assertion_type)
                .append_pair("client_assertion", assertion.expose());
            None
        }
        Authentication::ClientIdOnly => {
            form.append_pair("client_id", input.client_id);
            None
        }
    };
    (form.finish(), basic)
}

/// A validated token response; `refresh_token` is never kept (step 6 of the request flow).
#[derive(Debug)]
pub struct Issued {
    pub access_token: Secret,
    pub issued_token_type: String,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
    /// Usable only by the client it was issued to: a `DPoP` (RFC 9449) or other
    /// proof-of-possession `token_type`, or a JWT with a `cnf` claim (RFC 7800), such as
    /// a certificate-bound token (RFC 8705 §3). Such a token is never shared with other
    /// replicas.
    pub sender_constrained: bool,
}

impl Issued {
    /// The lifetime the authority gave the token, in seconds from `now_unix`: the
    /// shorter of `expires_in` and a JWT's `exp`; `None` when it gave neither.
    pub fn lifetime(&self, now_unix: u64) -> Option<u64> {
        let exp = crate::jwt::unverified_exp(self.access_token.expose());
        let by_exp = exp.map(|exp| exp.saturating_sub(now_unix));
        match (self.expires_in, by_exp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Deserialize)]
struct RawSuccess {
    access_token: Option<String>,
    issued_token_type: Option<String>,
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    error: String,
    #[serde(default)]
    error_description: Option<serde_json::Value>,
}

/// RFC 6749 §5.2: `error_description` is `%x20-21 / %x23-5B / %x5D-7E`. Anything else
/// (a control character, a quote, non-ASCII) drops it, rather than trusting it in a log.
/// The exchange client cuts echoed tokens out and bounds its length.
fn description(value: Option<serde_json::Value>) -> Option<String> {
    let serde_json::Value::String(d) = value? else {
        return None;
    };
    if d.is_empty()
        || !d
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))
    {
        return None;
    }
    Some(d)
}

/// Judges a complete AS response by status and body.
pub fn parse_response(status: u16, body: &[u8], params: &ExchangeParams) -> Result<Issued, Error> {
    parse_grant_response(status, body, params, false)
}

/// As [`parse_response`]; a `client_credentials` or `jwt-bearer` response (RFC 6749 §5.1)
/// need not carry `issued_token_type` (`issued_type_optional`).
pub fn parse_grant_response(
    status: u16,
    body: &[u8],
    params: &ExchangeParams,
    issued_type_optional: bool,
) -> Result<Issued, Error> {
    match status {
        200 => validate_success(body, params, issued_type_optional),
        400..=499 if status != 429 => Err(parse_error(status, body)),
        _ => Err(Error::BadResponse(format!("unexpected status {status}"))),
    }
}

fn validate_success(
    body: &[u8],
    params: &ExchangeParams,
    issued_type_optional: bool,
) -> Result<Issued, Error> {
    let bad = |m: &str| Error::BadResponse(m.to_string());
    let raw: RawSuccess =
        serde_json::from_slice(body).map_err(|_| bad("body is not a JSON token response"))?;
    let token = raw
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("access_token missing or empty"))?;
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(bad("access_token is not a header-safe token"));
    }
    // RFC 6750 §2.1: a token sent with the Bearer scheme is b64token; anything else could
    // split or extend the header it lands in, or be read differently upstream.
    if params.inject.requires_bearer() && !crate::bearer::is_b64token(token.as_bytes()) {
        return Err(bad("access_token is not RFC 6750 b64token syntax"));
    }
    let issued_type = match raw.issued_token_type {
        Some(t) => t,
        None if issued_type_optional => params.requested_token_type.clone(),
        None => return Err(bad("issued_token_type missing")),
    };
    if issued_type != params.requested_token_type {
        return Err(Error::BadResponse(format!(
            "issued_token_type {} is not the requested {}",
            quoted(&issued_type),
            params.requested_token_type
        )));
    }
    // RFC 6749 §7.1: only a Bearer token may be sent with the Bearer scheme; a route
    // that injects the token otherwise (a SAML assertion, an ID token) takes any type.
    match raw.token_type.as_deref() {
        Some(_) if !params.inject.requires_bearer() => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => {
            return Err(Error::BadResponse(format!(
                "token_type {} is not Bearer",
                quoted(t)
            )));
        }
        None => return Err(bad("token_type missing")),
    }
    let expires_in = match raw.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => {
            Some(seconds(&n).ok_or_else(|| bad("expires_in is not a non-negative number"))?)
        }
        // Some servers send the number as a string; RFC 6749 §5.1 means a number.
        Some(serde_json::Value::String(s)) => Some(
            s.trim()
                .parse::<serde_json::Number>()
                .ok()
                .as_ref()
                .and_then(seconds)
                .ok_or_else(|| bad("expires_in is not a number"))?,
        ),
        Some(_) => return Err(bad("expires_in is not a number")),
    };
    let scope = match raw.scope {
        None => None,
        Some(granted) if granted.trim().is_empty() => None,
        Some(granted) => {
            let granted = normalize_scope(&granted).map_err(|_| bad("scope is malformed"))?;
            // A `.default` scope (Microsoft Entra) asks for whatever the authority has
            // configured for a resource; the request names no set the answer could widen.
            let checked = params.scope.as_ref().filter(|r| {
                !r.split(' ')
                    .any(|s| s == ".default" || s.ends_with("/.default"))
            });
            if let Some(requested) = checked {
                let allowed: Vec<&str> = requested.split(' ').collect();
                if let Some(extra) = granted.split(' ').find(|s| !allowed.contains(s)) {
                    return Err(Error::BadResponse(format!(
                        "granted scope widened beyond the request ({extra:.64})"
                    )));
                }
            }
            Some(granted)
        }
    };
    let sender_constrained = !raw
        .token_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("n_a"))
        || crate::jwt::has_confirmation(&token);
    Ok(Issued {
        access_token: Secret::new(token),
        issued_token_type: issued_type,
        expires_in,
        scope,
        sender_constrained,
    })
}

/// A value the server sent, for a message that is logged: quoted, at most 64 characters,
/// control characters escaped, so one bad response cannot forge or flood log lines.
fn quoted(value: &str) -> String {
    let head: String = value.chars().take(64).collect();
    format!("{head:?}")
}

/// `expires_in` as whole seconds: any non-negative JSON number, fractions rounded down
/// (Python servers send `120.0`); huge values saturate, since lifetimes are capped anyway.
fn seconds(n: &serde_json::Number) -> Option<u64> {
    if let Some(whole) = n.as_u64() {
        return Some(whole);
    }
    let f = n.as_f64()?;
    // `as` saturates at u64::MAX and the sign and NaN are refused first.
    (f >= 0.0).then_some(f as u64)
}

fn parse_error(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<RawError>(body) {
        Ok(e) if crate::oauth::is_error_code(&e.error) => Error::Refused {
            oauth_error: e.error,
            status,
            description: description(e.error_description),
        },
        Ok(_) => Error::BadResponse(format!(
            "error response {status} with a malformed error code"
        )),
        // A bare 401 is a failed client authentication (RFC 6749 §5.2 invalid_client).
        Err(_) if status == 401 => Error::Refused {
            oauth_error: "invalid_client".into(),
            status,
            description: None,
        },
        Err(_) => Error::BadResponse(format!(
            "error response {status} without an OAuth error body"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ClientAuth;
    use crate::credentials::Watched;
    use crate::oauth::{TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn params(scope: Option<&str>) -> ExchangeParams {
        ExchangeParams {
            authority: "as".into(),
            grant: crate::config::model::Grant::TokenExchange,
            audience: Some("payments".into()),
            resource: Some("https://payments.example/".into()),
            scope: scope.map(String::from),
            subject_token_type: TOKEN_TYPE_ACCESS_TOKEN.into(),
            requested_token_type: TOKEN_TYPE_ACCESS_TOKEN.into(),
            extra_params: Vec::new(),
            subject_token_from: crate::config::model::SubjectSource::Authorization,
            inject: crate::config::model::Inject {
                header: http::header::AUTHORIZATION,
                scheme: Some("Bearer".into()),
            },
            first_leg: None,
        }
    }

    fn ok(body: &str, scope: Option<&str>) -> Result<Issued, Error> {
        parse_response(200, body.as_bytes(), &params(scope))
    }

    /// `+ / =` in tokens survive form encoding; basic auth urlencodes id and secret.
    #[test]
    fn request_encoding() {
        let p = params(Some("a b"));
        let auth = ClientAuth::ClientSecretBasic {
            client_secret: Watched::fixed(Secret::new("s p:c+/")),
        };
        let authentication = auth.authentication("my client").unwrap();
        let actor = Secret::new("act+or");
        let input = ExchangeInput {
            grant: Grant::Exchange {
                subject_token: "ab+/c==",
                actor: Some((&actor, TOKEN_TYPE_JWT)),
            },
            params: &p,
            client_id: "my client",
            authentication: &authentication,
        };
        let (form, basic) = encode_request(&input);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some(GRANT_TYPE_TOKEN_EXCHANGE));
        assert_eq!(get("subject_token"), Some("ab+/c=="));
        assert!(form.contains("subject_token=ab%2B%2Fc%3D%3D"));
        assert_eq!(get("scope"), Some("a b"));
        assert_eq!(get("actor_token"), Some("act+or"));
        assert_eq!(get("actor_token_type"), Some(TOKEN_TYPE_JWT));
        assert_eq!(get("client_secret"), None);
        let decoded = STANDARD
            .decode(basic.unwrap().expose().strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "my%20client:s%20p%3Ac%2B%2F"
        );

        let post = Authentication::Post(Secret::new("pw"));
        let (form, basic) = encode_request(&ExchangeInput {
            authentication: &post,
            grant: Grant::Exchange {
                subject_token: "s",
                actor: None,
            },
            ..input
        });
        assert!(basic.is_none());
        assert!(form.contains("client_id=my+client") && form.contains("client_secret=pw"));
        assert!(!form.contains("actor_token"));

        let (form, _) = encode_request(&ExchangeInput {
            authentication: &post,
            grant: Grant::ClientCredentials,
            ..input
        });
        let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "grant_type",
                "audience",
                "resource",
                "scope",
                "client_id",
                "client_secret"
            ]
        );
        assert_eq!(pairs[0].1, "client_credentials");
    }

    /// A jwt-bearer request carries the assertion and the extra parameters, never a
    /// token-exchange field; tokex's own client_credentials token leaves the extras out.
    #[test]
    fn jwt_bearer_encoding() {
        let mut p = params(Some("https://graph.microsoft.com/.default"));
        p.audience = None;
        p.resource = None;
        p.extra_params = vec![("requested_token_use".into(), "on_behalf_of".into())];
        let post = Authentication::Post(Secret::new("pw"));
        let input = ExchangeInput {
            grant: Grant::JwtBearer {
                assertion: "h.p+.s",
            },
            params: &p,
            client_id: "app",
            authentication: &post,
        };
        let (form, _) = encode_request(&input);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
            .into_owned()
            .collect();
        let expected = [
            ("grant_type", GRANT_TYPE_JWT_BEARER),
            ("assertion", "h.p+.s"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("requested_token_use", "on_behalf_of"),
            ("client_id", "app"),
            ("client_secret", "pw"),
        ];
        let got: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(got, expected);
        let (form, _) = encode_request(&ExchangeInput {
            grant: Grant::ClientCredentials,
            ..input
        });
        assert!(!form.contains("requested_token_use"), "{form}");
    }

    /// A client_credentials response need not name issued_token_type; an exchange must.
    #[test]
    fn client_credentials_responses() {
        let body = br#"{"access_token":"t","token_type":"Bearer","expires_in":60}"#;
        assert!(parse_grant_response(200, body, &params(None), true).is_ok());
        assert!(parse_grant_response(200, body, &params(None), false).is_err());
    }

    /// A good response passes; quirks real servers send are tolerated.
    #[test]
    fn tolerated_success_quirks() {
        let base = r#""access_token":"tok","issued_token_type":"urn:ietf:params:oauth:token-type:access_token""#;
        let i = ok(
            &format!(r#"{{{base},"token_type":"Bearer","expires_in":300,"scope":"a"}}"#),
            Some("a b"),
        )
        .unwrap();
        assert_eq!((i.expires_in, i.scope.as_deref()), (Some(300), Some("a")));
        // "refresh_token": null, lower-case token_type, no scope, string expires_in.
        let i = ok(
            &format!(r#"{{{base},"token_type":"bearer","refresh_token":null,"expires_in":"60"}}"#),
            Some("a"),
        )
        .unwrap();
        assert_eq!((i.expires_in, i.scope), (Some(60), None));
        // No expires_in at all.
        assert_eq!(
            ok(&format!(r#"{{{base},"token_type":"Bearer"}}"#), None)
                .unwrap()
                .expires_in,
            None
        );
    }

    /// `expires_in` is any non-negative JSON number; fractions round down.
    #[test]
    fn fractional_expires_in() {
        let base = r#""access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer""#;
        for (value, want) in [
            ("120.0", 120),
            ("59.9", 59),
            ("0.5", 0),
            ("1e3", 1000),
            ("\"30.5\"", 30),
        ] {
            let body = format!(r#"{{{base},"expires_in":{value}}}"#);
            assert_eq!(ok(&body, None).unwrap().expires_in, Some(want), "{value}");
        }
        let huge = format!(r#"{{{base},"expires_in":1e300}}"#);
        assert_eq!(ok(&huge, None).unwrap().expires_in, Some(u64::MAX));
    }

    /// b64token is required only where the token goes out as `Bearer`; a token put in
    /// a header of its own needs only to be header-safe.
    #[test]
    fn issued_token_syntax_follows_the_scheme() {
        let body = r#"{"access_token":"abc,def","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"N_A"}"#;
        let mut p = params(None);
        p.inject.scheme = None;
        p.inject.header = http::HeaderName::from_static("x-token");
        let issued = parse_response(200, body.as_bytes(), &p).unwrap();
        assert_eq!(issued.access_token.expose(), "abc,def");
        assert!(!issued.sender_constrained, "N_A is not bound to a sender");
    }

    /// A DPoP or unknown `token_type`, or a JWT with `cnf`, is bound to its sender;
    /// a Bearer token without `cnf` is not.
    #[test]
    fn sender_constrained_tokens_are_marked() {
        let body = |token: &str, token_type: &str| {
            format!(
                r#"{{"access_token":"{token}","issued_token_type":"{TOKEN_TYPE_ACCESS_TOKEN}","token_type":"{token_type}"}}"#
            )
        };
        let mut own_header = params(None);
        own_header.inject.scheme = None;
        let constrained = |b: String, p: &ExchangeParams| {
            parse_response(200, b.as_bytes(), p)
                .unwrap()
                .sender_constrained
        };
        assert!(!constrained(body("t", "Bearer"), &params(None)));
        assert!(constrained(body("t", "DPoP"), &own_header));
        assert!(constrained(body("t", "pop"), &own_header));
        let bound = format!(
            "e30.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"cnf":{"x5t#S256":"x"}}"#)
        );
        assert!(constrained(body(&bound, "Bearer"), &params(None)));
    }

    /// Each malformed success body is refused as a bad exchange response.
    #[test]
    fn refused_success_bodies() {
        let tt = r#""issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer""#;
        for body in [
            "not json".to_string(),
            format!(r#"{{{tt}}}"#),
            format!(r#"{{"access_token":"",{tt}}}"#),
            format!(r#"{{"access_token":"a b",{tt}}}"#),
            format!(r#"{{"access_token":"a\r\nX-Evil: 1",{tt}}}"#),
            r#"{"access_token":"t","token_type":"Bearer"}"#.to_string(),
            r#"{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:jwt","token_type":"Bearer"}"#.to_string(),
            r#"{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"N_A"}"#.to_string(),
            r#"{"access_token":"t","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#.to_string(),
            format!(r#"{{"access_token":"t",{tt},"expires_in":-5}}"#),
            format!(r#"{{"access_token":"t",{tt},"expires_in":-0.5}}"#),
            format!(r#"{{"access_token":"abc,def",{tt}}}"#),
            format!(r#"{{"access_token":"abc\"def",{tt}}}"#),
            format!(r#"{{"access_token":"=abc",{tt}}}"#),
            format!(r#"{{"access_token":"t",{tt},"scope":"a c"}}"#),
        ] {
            assert!(matches!(ok(&body, Some("a b")), Err(Error::BadResponse(_))), "{body}");
        }
    }

    /// A `.default` request takes the scopes the authority resolves it to (Entra answers
    /// with the consented permissions and the OpenID scopes); any other request refuses a
    /// scope it did not ask for.
    #[test]
    fn a_default_scope_is_the_authoritys_to_resolve() {
        let tt = r#""issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer""#;
        let body =
            format!(r#"{{"access_token":"t",{tt},"scope":"User.Read profile openid email"}}"#);
        for requested in [
            ".default",
            "https://graph.microsoft.com/.default",
            "api://orders/.default offline_access",
        ] {
            let issued = ok(&body, Some(requested)).unwrap_or_else(|e| panic!("{requested}: {e}"));
            assert_eq!(
                issued.scope.as_deref(),
                Some("User.Read profile openid email")
            );
        }
        for requested in [
            "User.Read",
            "https://graph.microsoft.com/.defaults",
            "x.default",
        ] {
            assert!(
                matches!(ok(&body, Some(requested)), Err(Error::BadResponse(_))),
                "{requested}"
            );
        }
    }

    /// What the server sent appears in a refusal's message (which is logged) quoted, cut
    /// short and with control characters escaped, so it cannot forge or flood log lines.
    #[test]
    fn refusals_quote_what_the_server_sent() {
        let long_type = format!("urn:{}\n2026-12-01 INFO forged", "x".repeat(5000));
        for body in [
            serde_json::json!({"access_token": "t", "issued_token_type": long_type, "token_type": "Bearer"}),
            serde_json::json!({"access_token": "t", "issued_token_type": "urn:x\r\nforged", "token_type": "Bearer"}),
        ] {
            let Err(Error::BadResponse(message)) = ok(&body.to_string(), None) else {
                panic!("{body} was accepted");
            };
            assert!(message.len() < 256, "{message}");
            assert!(!message.contains(['\r', '\n']), "{message}");
        }
        let body = serde_json::json!({"access_token": "t", "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN, "token_type": "N_A\r\nforged"});
        let message = ok(&body.to_string(), None).unwrap_err().to_string();
        assert!(
            message.contains(r#"token_type "N_A\r\nforged" is not Bearer"#),
            "{message}"
        );
    }

    /// Error bodies become refusals with their code; unknown codes are kept, junk is not.
    #[test]
    fn error_bodies() {
        let refused =
            |status, body: &str| match parse_response(status, body.as_bytes(), &params(None)) {
                Err(Error::Refused { oauth_error, .. }) => Some(oauth_error),
                _ => None,
            };
        assert_eq!(
            refused(
                400,
                r#"{"error":"invalid_target","error_description":"no"}"#
            )
            .as_deref(),
            Some("invalid_target")
        );
        assert_eq!(
            refused(400, r#"{"error":"invalid_grant"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(
            refused(403, r#"{"error":"scope_escalation"}"#).as_deref(),
            Some("scope_escalation")
        );
        assert_eq!(
            refused(401, "Unauthorized").as_deref(),
            Some("invalid_client")
        );
        assert_eq!(refused(400, "<html>"), None);
        assert_eq!(refused(400, r#"{"error":"bad\"code"}"#), None);
        assert!(matches!(
            parse_response(302, b"", &params(None)),
            Err(Error::BadResponse(_))
        ));
    }

    /// Bodies recorded from idpyoidc 5.0.0 (tests/interop): the granted scope comes back
    /// in any order, and its refusals carry the codes the error table expects.
    #[test]
    fn recorded_idpyoidc_bodies() {
        let success = br#"{"access_token": "eyJhbGciOiJFUzI1NiJ9.e30.sig", "scope": "write read", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "expires_in": 299, "token_type": "Bearer"}"#;
        let issued = parse_response(200, success, &params(Some("read write"))).unwrap();
        assert_eq!(
            (issued.expires_in, issued.scope.as_deref()),
            (Some(299), Some("write read"))
        );
        for (status, body, code) in [
            (
                400,
                r#"{"error": "invalid_target", "error_description": "Unknown audience"}"#,
                "invalid_target",
            ),
            (
                400,
                r#"{"error": "invalid_scope", "error_description": "Invalid requested scopes"}"#,
                "invalid_scope",
            ),
            (
                400,
                r#"{"error": "invalid_request", "error_description": "Subject token invalid"}"#,
                "invalid_request",
            ),
            (
                400,
                r#"{"error": "invalid_request", "error_description": "Actor token not supported"}"#,
                "invalid_request",
            ),
            (
                401,
                r#"{"error": "invalid_client", "error_description": "Authorization failed"}"#,
                "invalid_client",
            ),
        ] {
            match parse_response(status, body.as_bytes(), &params(None)) {
                Err(Error::Refused { oauth_error, .. }) => assert_eq!(oauth_error, code),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
