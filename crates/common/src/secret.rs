//! Types that hold credentials and never print them.
//!
//! Every token, client secret and key tokex touches lives in a [`Secret`]: its `Debug`
//! and `Display` print a fixed placeholder and its `Serialize` writes the same, so a
//! secret cannot reach a log line, a metric, an error body or `tokex check` output by
//! accident. Code that must use the value calls [`Secret::expose`], which is
//! easy to grep for. Key material that is bytes rather than text is a [`SecretBytes`],
//! which prints the same placeholder.

use std::fmt;

use serde::{Serialize, Serializer};

/// The text printed wherever a secret would otherwise appear.
pub const REDACTED: &str = "[redacted]";

/// A credential whose value never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<Box<str>>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that sends it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the credential is empty (an empty secret file is a config error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Key material that never prints: bytes, where [`Secret`] holds text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Box<[u8]>);

impl SecretBytes {
    /// Wraps key material.
    pub fn new(value: impl Into<Box<[u8]>>) -> Self {
        Self(value.into())
    }

    /// The bytes themselves, for the one place that derives keys from them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret prints only the placeholder through Debug, Display and Serialize.
    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(
            format!("{:#?}", Some(&s)),
            format!("Some(\n    {REDACTED},\n)")
        );
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{REDACTED}\"")
        );
        assert_eq!(s.expose(), "hunter2-very-secret");
        let bytes = SecretBytes::new(*b"hunter2-bytes");
        assert_eq!(format!("{bytes:?}"), REDACTED);
        assert_eq!(
            format!("{:?}", vec![bytes.clone()]),
            format!("[{REDACTED}]")
        );
        assert_eq!(bytes.expose(), b"hunter2-bytes");
    }
}
