//! Why something failed, in words for the log line that reports the failure.
//!
//! Operators read the cause where they read the failure: a `WARN request failed` line
//! that only says `upstream_unavailable` sends them to `debug` logs they do not have.
//! Causes come from I/O, TLS and HTTP errors and from request targets; none of them
//! holds a token or a secret, and what comes from the app is escaped and bounded.

use std::error::Error;
use std::fmt::Write;

/// Longest text taken from a request (a host, a path) into a log line.
const MAX_ECHO: usize = 128;

/// An error and its sources, `outer: inner: innermost`, with a hint for the common
/// certificate mistakes.
pub fn describe(e: &(dyn Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Wrappers often repeat their source's message; once is enough.
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    if let Some(hint) = certificate_hint(e) {
        s.push_str(" (");
        s.push_str(hint);
        s.push(')');
    }
    s
}

/// A hint for the certificate mistakes that are easy to make and hard to read from
/// the verifier's words.
fn certificate_hint(e: &(dyn Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError as C;
    let mut next: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = next {
        // An io::Error hides the error it wraps from `source()`: look inside as well.
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()?
                .get_ref()?
                .downcast_ref::<rustls::Error>()
        });
        if let Some(rustls::Error::InvalidCertificate(cert)) = tls {
            return Some(match cert {
                C::UnknownIssuer => {
                    "the server's certificate is not signed by a trusted root: put its CA in ca_file"
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "the server's certificate does not name this host in its subjectAltName \
                     (a common name alone is not enough)"
                }
                C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired",
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet: check both clocks"
                }
                C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                    "the server presents a CA certificate as its own: it needs a leaf \
                     certificate issued by that CA, and ca_file holds the CA"
                }
                _ => return None,
            });
        }
        next = err.source();
    }
    None
}

/// Text from a request, safe for a log line: control characters and quotes escaped,
/// at most [`MAX_ECHO`] characters.
pub fn echo(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ECHO) + 2);
    let mut chars = text.chars();
    for c in chars.by_ref().take(MAX_ECHO) {
        let _ = write!(out, "{}", c.escape_debug());
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connect failed")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chains_and_hints() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let text = describe(&Wrapper(refused));
        assert!(text.starts_with("connect failed: "), "{text}");
        assert!(text.contains("refused"), "{text}");

        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let text = describe(&Wrapper(tls));
        assert!(
            text.contains("UnknownIssuer") || text.contains("unknown issuer"),
            "{text}"
        );
        assert!(text.contains("put its CA in ca_file"), "{text}");
    }

    #[test]
    fn echo_is_escaped_and_bounded() {
        assert_eq!(echo("a\"b\r\nc"), "a\\\"b\\r\\nc");
        let long = "x".repeat(1000);
        assert_eq!(echo(&long).chars().count(), MAX_ECHO + 1);
    }
}
