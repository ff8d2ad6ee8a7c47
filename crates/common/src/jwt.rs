//! What a JWT (RFC 7519) says of itself, read without verifying anything: its claims and
//! its `exp` (read against [`crate::clock::unix_now`]).
//!
//! tokex never grants anything from unverified claims. `exp` is read to refuse subject
//! tokens that are certainly expired without an AS call, to cap cache lifetimes, and to
//! date credentials; the claims go into audit events and diagnostic output only.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The `exp` claim of a JWT, read without verifying anything. `None` for tokens that are
/// not JWTs, or have no numeric `exp`.
pub fn unverified_exp(token: &str) -> Option<u64> {
    let claims = unverified_claims(token)?;
    numeric_date(claims.get("exp")?)
}

/// A claim as an RFC 7519 NumericDate in whole seconds: an integer, or a float truncated
/// (RFC 7519 allows fractions, and JWT libraries accept them); a string or a negative
/// number is not one.
pub fn numeric_date(value: &serde_json::Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// Whether a JWT carries a confirmation claim (`cnf`, RFC 7800): a key or certificate
/// (RFC 8705 §3.1, RFC 9449 §6.1) that whoever sends it must prove to hold.
pub fn has_confirmation(token: &str) -> bool {
    unverified_claims(token).is_some_and(|claims| claims.contains_key("cnf"))
}

/// The claims of a compact JWS/JWT payload, unverified. Used for `exp` and for the
/// diagnostic output of `tokex exchange` and `tokex demo`.
pub fn unverified_claims(token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 16 * 1024 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp` is read from JWT payloads only, as integer or float; anything else is None.
    #[test]
    fn exp_reading() {
        let jwt = |payload: &str| format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload));
        assert_eq!(
            unverified_exp(&jwt(r#"{"exp":1700000000}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(
            unverified_exp(&jwt(r#"{"exp":1700000000.9}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(unverified_exp(&jwt(r#"{"exp":"1700000000"}"#)), None);
        assert_eq!(unverified_exp(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(unverified_exp("opaque-token"), None);
        assert_eq!(unverified_exp("a.b"), None);
        assert_eq!(unverified_exp("a.!!!.c"), None);
        assert_eq!(unverified_exp(&format!("{}.x", jwt(r#"{"exp":1}"#))), None);
    }

    /// A `cnf` claim, whatever it confirms, marks a token bound to its holder.
    #[test]
    fn confirmation_claims() {
        let jwt = |payload: &str| format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload));
        assert!(has_confirmation(&jwt(r#"{"cnf":{"x5t#S256":"abc"}}"#)));
        assert!(has_confirmation(&jwt(r#"{"cnf":{"jkt":"abc"}}"#)));
        assert!(!has_confirmation(&jwt(r#"{"sub":"x"}"#)));
        assert!(!has_confirmation("opaque-token"));
    }
}
