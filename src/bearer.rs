//! The subject token: taking it from `Authorization: Bearer` (RFC 6750 §2.1), a header or
//! a cookie (step 2 of the request flow). What a JWT says of itself is read in
//! [`crate::jwt`].

use std::fmt;

use crate::config::model::SubjectSource;
use http::HeaderMap;

/// A bearer token borrowed from the request; never prints its value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BearerToken<'a>(&'a str);

impl<'a> BearerToken<'a> {
    /// A token held as a secret (for work that outlives the request's headers).
    pub fn from_secret(secret: &'a crate::secret::Secret) -> Self {
        Self(secret.expose())
    }

    /// The token itself, for hashing and for the one request that sends it to the AS.
    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for BearerToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::secret::REDACTED)
    }
}

/// Why the `Authorization` header could not be used (`invalid_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("more than one Authorization header")]
    Duplicate,
    #[error("empty bearer token")]
    Empty,
    #[error("bearer token has characters outside RFC 6750 b64token")]
    BadCharacters,
}

/// Extracts the bearer token. `Ok(None)` means no token: no header, or another scheme
/// (RFC 6750 §3.1 says such a request simply lacks authentication information).
pub fn extract(headers: &HeaderMap) -> Result<Option<BearerToken<'_>>, Malformed> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(bytes) = values.next().map(http::HeaderValue::as_bytes) else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Malformed::Duplicate);
    }
    // The scheme is case-insensitive (RFC 9110 §11.1); "Bearer" alone is an empty token.
    if bytes.len() < 6 || !bytes[..6].eq_ignore_ascii_case(b"bearer") {
        return Ok(None);
    }
    let rest = &bytes[6..];
    if !rest.is_empty() && rest[0] != b' ' {
        return Ok(None); // e.g. "BearerX ...": another scheme
    }
    token(rest)
}

/// A token's bytes, trimmed and checked against RFC 6750 b64token.
fn token(value: &[u8]) -> Result<Option<BearerToken<'_>>, Malformed> {
    let token = trim_spaces(value);
    if token.is_empty() {
        return Err(Malformed::Empty);
    }
    if !is_b64token(token) {
        return Err(Malformed::BadCharacters);
    }
    // b64token is ASCII, so this cannot fail; the fallback keeps the path panic-free.
    std::str::from_utf8(token)
        .map(|t| Some(BearerToken(t)))
        .map_err(|_| Malformed::BadCharacters)
}

fn trim_spaces(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b' ').map_or(start, |i| i + 1);
    &b[start..end]
}

/// The subject token from where the route says it is. A header holds the token alone;
/// a cookie is found among the `Cookie` header's pairs. Repeats are malformed.
pub fn extract_from<'h>(
    headers: &'h HeaderMap,
    source: &SubjectSource,
) -> Result<Option<BearerToken<'h>>, Malformed> {
    let value: &'h [u8] = match source {
        SubjectSource::Authorization => return extract(headers),
        SubjectSource::Header(name) => {
            let mut values = headers.get_all(name).iter();
            let Some(v) = values.next().map(http::HeaderValue::as_bytes) else {
                return Ok(None);
            };
            if values.next().is_some() {
                return Err(Malformed::Duplicate);
            }
            v
        }
        SubjectSource::Cookie(name) => {
            let mut found = None;
            for pair in cookie_pairs(headers) {
                if pair.0 == name.as_bytes() {
                    if found.is_some() {
                        return Err(Malformed::Duplicate);
                    }
                    found = Some(pair.1);
                }
            }
            let Some(v) = found else { return Ok(None) };
            v
        }
    };
    token(value)
}

/// `name=value` pairs of every `Cookie` header (RFC 6265 §4.2.1).
pub fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = trim_spaces(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            Some((&pair[..eq], &pair[eq + 1..]))
        })
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub fn is_b64token(t: &[u8]) -> bool {
    let body_end = t.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    body_end > 0
        && t[..body_end].iter().all(|&c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http::HeaderValue;
    use http::header::AUTHORIZATION;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn token(values: &[&str]) -> Result<Option<String>, Malformed> {
        extract(&headers(values)).map(|t| t.map(|t| t.expose().to_string()))
    }

    /// The RFC 6750 table: scheme case, other schemes, empties, duplicates, characters.
    #[test]
    fn bearer_extraction_table() {
        assert_eq!(token(&[]), Ok(None));
        assert_eq!(
            token(&["Bearer abc.DEF-_~+/=="]),
            Ok(Some("abc.DEF-_~+/==".into()))
        );
        assert_eq!(token(&["bEaReR   abc  "]), Ok(Some("abc".into())));
        assert_eq!(token(&["Basic dXNlcjpwYXNz"]), Ok(None));
        assert_eq!(token(&["BearerX abc"]), Ok(None));
        assert_eq!(token(&["Bearer"]), Err(Malformed::Empty));
        assert_eq!(token(&["Bearer    "]), Err(Malformed::Empty));
        assert_eq!(token(&["Bearer a b"]), Err(Malformed::BadCharacters));
        assert_eq!(token(&["Bearer a=b"]), Err(Malformed::BadCharacters));
        assert_eq!(token(&["Bearer ==="]), Err(Malformed::BadCharacters));
        assert_eq!(token(&["Bearer a,b"]), Err(Malformed::BadCharacters));
        assert_eq!(token(&["Bearer a", "Bearer b"]), Err(Malformed::Duplicate));
    }

    /// A header source holds the token alone; a cookie is found among others; repeats
    /// are malformed; a missing source is no token.
    #[test]
    fn other_sources() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-access-token",
            HeaderValue::from_static("eyJ.a.b"),
        );
        h.append(
            "cookie",
            HeaderValue::from_static("theme=dark; session=tok-1; lang=en"),
        );
        let header =
            SubjectSource::Header(http::HeaderName::from_static("x-forwarded-access-token"));
        let cookie = SubjectSource::Cookie("session".into());
        assert_eq!(
            extract_from(&h, &header).unwrap().map(|t| t.expose()),
            Some("eyJ.a.b")
        );
        assert_eq!(
            extract_from(&h, &cookie).unwrap().map(|t| t.expose()),
            Some("tok-1")
        );
        assert_eq!(
            extract_from(&h, &SubjectSource::Cookie("nope".into())),
            Ok(None)
        );
        h.append("cookie", HeaderValue::from_static("session=tok-2"));
        assert_eq!(extract_from(&h, &cookie), Err(Malformed::Duplicate));
    }

    /// The token type's Debug never shows the token.
    #[test]
    fn bearer_debug_is_redacted() {
        let h = headers(&["Bearer supersecrettoken"]);
        let t = extract(&h).unwrap().unwrap();
        assert!(!format!("{t:?}").contains("supersecret"));
    }
}
