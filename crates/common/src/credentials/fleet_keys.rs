//! The fleet's shared-cache keys (`cache.shared.key_file`): the secret every replica of a
//! workload holds, from which the shared cache derives the names and the encryption of
//! its entries.
//!
//! The file is text: one key per line, each the base64 of at least 32 random bytes
//! (`openssl rand -base64 32`), newest first. Blank lines and lines starting with `#` are
//! skipped. New entries are written under the first key; reads accept every key listed,
//! so a key is rotated by putting a new one on top, and retired by removing the old one
//! once every replica has the new file.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

use crate::secret::SecretBytes;

/// The fewest random bytes a key may have: 256 bits, the strength of what is derived.
pub const MIN_KEY_BYTES: usize = 32;

/// The most keys a file may list; each costs a name per read.
pub const MAX_KEYS: usize = 4;

/// The keys of a key file, newest first; never empty.
#[derive(Debug, Clone)]
pub struct FleetKeys(Vec<SecretBytes>);

impl FleetKeys {
    /// The keys, newest first.
    pub fn all(&self) -> &[SecretBytes] {
        &self.0
    }
}

/// Parses a key file; `path` names it in errors, which never quote a key.
pub fn parse_fleet_keys(path: &Path, bytes: &[u8]) -> Result<FleetKeys, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let decoded = STANDARD
            .decode(line)
            .or_else(|_| STANDARD_NO_PAD.decode(line))
            .map_err(|_| format!("{} line {}: not base64", path.display(), i + 1))?;
        if decoded.len() < MIN_KEY_BYTES {
            return Err(format!(
                "{} line {}: a key needs at least {MIN_KEY_BYTES} random bytes, this one has {}",
                path.display(),
                i + 1,
                decoded.len()
            ));
        }
        keys.push(SecretBytes::new(decoded));
    }
    if keys.is_empty() {
        return Err(format!(
            "{} holds no key: write one line of base64 of {MIN_KEY_BYTES} or more random bytes",
            path.display()
        ));
    }
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "{} lists {} keys; at most {MAX_KEYS} (the newest and those being retired)",
            path.display(),
            keys.len()
        ));
    }
    Ok(FleetKeys(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetKeys, String> {
        parse_fleet_keys(Path::new("keys"), text.as_bytes())
    }

    /// Keys are read newest first, padded or not, with comments and blank lines skipped.
    #[test]
    fn reads_keys_newest_first() {
        let (a, b) = (
            STANDARD.encode([1u8; 32]),
            STANDARD_NO_PAD.encode([2u8; 48]),
        );
        let keys = parse(&format!("# rotated 2026-12-01\n{a}\n\n  {b}  \n")).unwrap();
        let all: Vec<&[u8]> = keys.all().iter().map(|k| k.expose()).collect();
        assert_eq!(all, [&[1u8; 32][..], &[2u8; 48][..]]);
    }

    /// Short, non-base64, missing and too many keys are refused without quoting a key.
    #[test]
    fn refuses_weak_or_malformed_files() {
        let short = STANDARD.encode([7u8; 31]);
        let err = parse(&short).unwrap_err();
        assert!(
            err.contains("line 1") && err.contains("at least 32"),
            "{err}"
        );
        assert!(!err.contains(&short));
        assert!(parse("not base64!").unwrap_err().contains("not base64"));
        assert!(
            parse("# only a comment\n\n")
                .unwrap_err()
                .contains("no key")
        );
        let key = STANDARD.encode([3u8; 32]);
        let many = [key.as_str(); MAX_KEYS + 1].join("\n");
        assert!(parse(&many).unwrap_err().contains("at most"));
        assert!(parse_fleet_keys(Path::new("k"), &[0xff, 0xfe]).is_err());
    }
}
