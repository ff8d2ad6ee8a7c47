//! The authorization server's token response (RFC 8693 §2.2, RFC 6749 §5). Input: a first
//! line `STATUS FLAGS`, then the body. FLAGS letters shape the request it answers:
//! `s` a scope was requested, `j` a JWT was requested, `n` the token is injected without
//! the Bearer scheme, `c` a client_credentials grant. An accepted token is safe to send
//! and what was asked for; a refusal is a short, single-line message that never holds the token.
#![no_main]

mod oracle;

use libfuzzer_sys::fuzz_target;
use tokex::config::model::{ExchangeParams, Grant, Inject, SubjectSource};
use tokex::exchange::Error;
use tokex::exchange::wire::{self, Issued};
use tokex::oauth::{TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT};

const REQUESTED_SCOPE: &str = "read write openid";

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(nl) => (&data[..nl], &data[nl + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let (status, flags) = head.split_once(' ').unwrap_or((head, ""));
    let Ok(status) = status.parse::<u16>() else {
        return;
    };
    let params = params(flags);
    let client_credentials = flags.contains('c');
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match wire::parse_grant_response(status, body, &params, client_credentials) {
        Ok(issued) => accepted(status, &issued, &params, json.as_ref()),
        Err(e) => refused(status, &e, body, json.as_ref(), |other: &[u8]| {
            wire::parse_grant_response(status, other, &params, client_credentials)
                .err()
                .map(|e| e.to_string())
        }),
    }
});

fn params(flags: &str) -> ExchangeParams {
    ExchangeParams {
        authority: "as".into(),
        grant: Grant::TokenExchange,
        audience: Some("payments".into()),
        resource: None,
        scope: flags.contains('s').then(|| REQUESTED_SCOPE.into()),
        subject_token_type: TOKEN_TYPE_ACCESS_TOKEN.into(),
        requested_token_type: match flags.contains('j') {
            true => TOKEN_TYPE_JWT.into(),
            false => TOKEN_TYPE_ACCESS_TOKEN.into(),
        },
        extra_params: Vec::new(),
        subject_token_from: SubjectSource::Authorization,
        inject: Inject {
            header: http::header::AUTHORIZATION,
            scheme: (!flags.contains('n')).then(|| "Bearer".into()),
        },
        first_leg: None,
    }
}

fn accepted(
    status: u16,
    issued: &Issued,
    params: &ExchangeParams,
    json: Option<&serde_json::Value>,
) {
    assert_eq!(status, 200);
    let token = issued.access_token.expose();
    assert!(!token.is_empty() && token.len() <= 16 * 1024);
    assert!(
        token.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "{token:?}"
    );
    if params.inject.requires_bearer() {
        assert!(
            oracle::is_b64token(token.as_bytes()),
            "not b64token: {token:?}"
        );
    }
    assert_eq!(issued.issued_token_type, params.requested_token_type);
    if let Some(granted) = &issued.scope {
        let tokens: Vec<&str> = granted.split(' ').collect();
        for (i, t) in tokens.iter().enumerate() {
            assert!(!t.is_empty() && !tokens[..i].contains(t), "{granted:?}");
            if let Some(requested) = &params.scope {
                assert!(
                    requested.split(' ').any(|r| r == *t),
                    "{t} was not requested"
                );
            }
        }
    }
    // serde_json skips unknown fields without checking their UTF-8, so an accepted body
    // may still not parse as a whole.
    let Some(json) = json else { return };
    match (json.get("expires_in"), issued.expires_in) {
        (None | Some(serde_json::Value::Null), None) => {}
        (Some(serde_json::Value::Number(n)), Some(secs)) => assert_seconds(n, secs),
        // A string is read as the JSON number it holds, whitespace around it allowed.
        (Some(serde_json::Value::String(s)), Some(secs)) => match s.trim().parse() {
            Ok(n) => assert_seconds(&n, secs),
            Err(e) => panic!("expires_in {s:?} ({e}) kept as {secs}"),
        },
        (sent, kept) => panic!("expires_in {sent:?} kept as {kept:?}"),
    }
}

/// Whole seconds, fractions rounded down, huge values saturated.
fn assert_seconds(n: &serde_json::Number, secs: u64) {
    match n.as_u64() {
        Some(whole) => assert_eq!(secs, whole, "{n}"),
        None => assert_eq!(secs, n.as_f64().unwrap_or(-1.0) as u64, "{n}"),
    }
}

fn refused(
    status: u16,
    e: &Error,
    body: &[u8],
    json: Option<&serde_json::Value>,
    reparse: impl Fn(&[u8]) -> Option<String>,
) {
    // The message is logged: one bounded line, whatever the server sent. The exchange
    // client cuts echoed tokens out of an error_description and then bounds it, so here
    // only its characters are checked, below.
    let message = match e.clone() {
        Error::Refused {
            oauth_error,
            status,
            ..
        } => Error::Refused {
            oauth_error,
            status,
            description: None,
        },
        other => other,
    }
    .to_string();
    assert!(
        message.len() <= 1024,
        "{} bytes: {message:.1100}",
        message.len()
    );
    assert!(!message.chars().any(char::is_control), "{message:?}");
    if let Some(token) = json
        .and_then(|j| j.get("access_token"))
        .and_then(|t| t.as_str())
    {
        let elsewhere = body
            .windows(token.len().max(1))
            .filter(|w| *w == token.as_bytes())
            .count()
            > 1;
        if token.len() >= 8 && !elsewhere && message.contains(token) {
            // A token may spell words of the message itself (`issued_token` is inside
            // "issued_token_type missing"): then the same body with another token of
            // that length gives a message with those words still in it. An echo would
            // follow the token instead.
            let other = if token.starts_with('Q') { "R" } else { "Q" }.repeat(token.len());
            let swapped = String::from_utf8_lossy(body).replace(token, &other);
            let again = reparse(swapped.as_bytes()).unwrap_or_default();
            assert!(again.contains(token), "{message}");
        }
    }
    match e {
        Error::Refused {
            oauth_error,
            status: s,
            description,
        } => {
            // Kept only in RFC 6749's characters: nothing that could forge a log line.
            assert!(
                description.as_deref().is_none_or(|d| !d.is_empty()
                    && d.bytes()
                        .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))),
                "{description:?}"
            );
            assert_eq!(*s, status);
            assert!((400..500).contains(&status) && status != 429);
            // RFC 6749 §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E ).
            assert!(
                !oauth_error.is_empty()
                    && oauth_error
                        .bytes()
                        .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e)),
                "{oauth_error:?}"
            );
        }
        Error::BadResponse(why) => {
            // Any non-negative JSON number is a lifetime (fractions round down).
            let lifetime = json
                .and_then(|j| j.get("expires_in"))
                .and_then(|v| v.as_f64())
                .is_some_and(|f| f >= 0.0);
            assert!(
                !(status == 200 && lifetime && why.starts_with("expires_in")),
                "a non-negative expires_in refused: {message}"
            );
        }
        other => panic!("the wire format made {other:?}"),
    }
}
