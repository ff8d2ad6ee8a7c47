//! The OAuth 2.0 vocabulary both sides of a token request share: the sidecar's exchange
//! client and client authentication, and the embedded STS.
//!
//! Grant types (RFC 6749 §4.4, RFC 8693 §2.1, RFC 7523 §2.1), token type identifiers (RFC 8693 §3), the
//! JWT client assertion type (RFC 7523 §2.2), scope syntax (RFC 6749 §3.3) and error code
//! syntax (RFC 6749 §5.2).

/// RFC 6749 §4.4 `grant_type`.
pub const GRANT_TYPE_CLIENT_CREDENTIALS: &str = "client_credentials";

/// RFC 8693 §2.1 `grant_type`.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 7523 §2.1 `grant_type`: a JWT presented as an authorization grant.
pub const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// RFC 8693 §3 token type identifiers.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// RFC 7523 §2.2 `client_assertion_type` for JWTs.
pub const CLIENT_ASSERTION_TYPE_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The scope-tokens of a `scope` value: space-separated, empty ones skipped
/// (RFC 6749 §3.3). Their characters are not checked here; [`normalize_scope`] does.
pub fn scope_tokens(scope: &str) -> impl Iterator<Item = &str> {
    scope.split(' ').filter(|t| !t.is_empty())
}

/// RFC 6749 §3.3: space-separated scope-tokens of `%x21 / %x23-5B / %x5D-7E`, each
/// kept once, joined by single spaces.
pub fn normalize_scope(v: &str) -> Result<String, String> {
    let mut out: Vec<&str> = Vec::new();
    for token in scope_tokens(v) {
        if !token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        {
            return Err(format!("invalid scope token `{token}` (RFC 6749 §3.3)"));
        }
        if !out.contains(&token) {
            out.push(token);
        }
    }
    if out.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(out.join(" "))
}

/// Whether `code` is a well-formed RFC 6749 §5.2 error code worth echoing to the app:
/// `1*( %x20-21 / %x23-5B / %x5D-7E )`, kept short.
pub fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scopes are validated per RFC 6749 §3.3 and normalised to single spaces.
    #[test]
    fn scope_normalisation() {
        assert_eq!(normalize_scope("a  b a").unwrap(), "a b");
        assert!(normalize_scope("a \"b\"").is_err());
        assert!(normalize_scope("   ").is_err());
        assert_eq!(scope_tokens(" a  b ").collect::<Vec<_>>(), ["a", "b"]);
    }

    /// Error codes: the RFC 6749 §5.2 characters, not empty, not long.
    #[test]
    fn error_code_syntax() {
        assert!(is_error_code("invalid_target"));
        assert!(!is_error_code("bad\"quote"));
        assert!(!is_error_code(""));
        assert!(!is_error_code(&"x".repeat(65)));
    }
}
