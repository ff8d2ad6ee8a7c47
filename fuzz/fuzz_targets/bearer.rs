//! The subject token from `Authorization: Bearer`, a header or a cookie, and the unverified
//! JWT `exp` read. Input: up to three header values, one per line (two make the duplicate).
//! Checked against a model of RFC 6750 §2.1; a token found is b64token text cut from the
//! header; `exp` agrees with the claims it came from.
#![no_main]

mod oracle;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tokex::bearer::{self, Malformed};
use tokex::config::model::SubjectSource;

const SUBJECT_HEADER: &str = "x-subject-token";

fuzz_target!(|data: &[u8]| {
    let values: Vec<HeaderValue> = data
        .split(|b| *b == b'\n')
        .take(3)
        .filter_map(|v| HeaderValue::from_bytes(v).ok())
        .collect();
    let mut headers = HeaderMap::new();
    for v in &values {
        headers.append(AUTHORIZATION, v.clone());
        headers.append(COOKIE, v.clone());
        headers.append(SUBJECT_HEADER, v.clone());
    }

    let got = bearer::extract(&headers).map(|t| t.map(|t| t.expose().as_bytes()));
    assert_eq!(got, expected(&values), "{values:?}");

    let header = SubjectSource::Header(HeaderName::from_static(SUBJECT_HEADER));
    if let Ok(Some(t)) = bearer::extract_from(&headers, &header) {
        assert_eq!(values.len(), 1);
        assert_eq!(t.expose().as_bytes(), trim_spaces(values[0].as_bytes()));
        assert!(oracle::is_b64token(t.expose().as_bytes()));
    }
    let cookie = SubjectSource::Cookie("session".into());
    if let Ok(Some(t)) = bearer::extract_from(&headers, &cookie) {
        assert!(oracle::is_b64token(t.expose().as_bytes()));
        assert!(
            values
                .iter()
                .any(|v| contains(v.as_bytes(), t.expose().as_bytes()))
        );
    }

    if let Ok(text) = std::str::from_utf8(data) {
        check_jwt(text);
        if let Ok(Some(t)) = bearer::extract(&headers) {
            check_jwt(t.expose());
        }
    }
});

/// RFC 6750 §2.1 and §3.1 as tokex applies them: no header or another scheme is no
/// token; the scheme is case-insensitive and followed by spaces; repeats are malformed.
fn expected(values: &[HeaderValue]) -> Result<Option<&[u8]>, Malformed> {
    let v = match values {
        [] => return Ok(None),
        [one] => one.as_bytes(),
        _ => return Err(Malformed::Duplicate),
    };
    let Some(rest) = v
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer"))
        .map(|_| &v[6..])
    else {
        return Ok(None);
    };
    if !(rest.is_empty() || rest[0] == b' ') {
        return Ok(None);
    }
    match trim_spaces(rest) {
        [] => Err(Malformed::Empty),
        t if oracle::is_b64token(t) => Ok(Some(t)),
        _ => Err(Malformed::BadCharacters),
    }
}

fn trim_spaces(mut b: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' '] = b {
        b = rest;
    }
    b
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `exp` exists only where the claims have a numeric `exp`, and is its whole seconds.
fn check_jwt(token: &str) {
    let claims = tokex::jwt::unverified_claims(token);
    if claims.is_some() {
        assert_eq!(
            token.split('.').count(),
            3,
            "claims from a non-JWT {token:?}"
        );
    }
    let Some(exp) = tokex::jwt::unverified_exp(token) else {
        return;
    };
    let claims = claims.expect("an exp without claims");
    let n = claims
        .get("exp")
        .and_then(|v| v.as_number())
        .expect("exp not a number");
    match n.as_u64() {
        Some(whole) => assert_eq!(exp, whole),
        None => {
            let f = n.as_f64().expect("a JSON number is an f64");
            assert!(f >= 0.0 && exp == f as u64, "exp {exp} from {f}");
        }
    }
}
