//! Grammar checks written from the RFCs, independent of the library's own, for the targets'
//! assertions.

/// RFC 6750 §2.1 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub fn is_b64token(t: &[u8]) -> bool {
    let body = match t.iter().rposition(|&c| c != b'=') {
        Some(last) => &t[..=last],
        None => return false,
    };
    body.iter()
        .all(|&c| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c))
}
