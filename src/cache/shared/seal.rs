//! What the shared cache holds, and how: names and values derived from the fleet's keys.
//!
//! Each key of the key file yields two keys by HKDF-SHA256 (RFC 5869): one names entries,
//! one encrypts them. A name is `tokex:v1:` and the base64url of an HMAC-SHA256, under the
//! naming key, of the same material as the local cache key (route fields, actor, subject
//! token), so a name reveals nothing and cannot be tested against a guessed token without
//! the key. A value is AES-256-GCM under the value key, with a fresh random nonce and the
//! version and the name as associated data, so a value moved to another name, or altered,
//! does not open. It holds the entry's absolute bound (Unix milliseconds) and the header
//! value tokex puts on requests.
//!
//! Random 96-bit nonces keep a key safe for about 2^32 values (NIST SP 800-38D §8.3); a
//! fleet writes one per exchange, far fewer between two rotations.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, hkdf, hmac};

use crate::credentials::fleet_keys::FleetKeys;

/// What every name starts with; the version changes with the format.
pub const PREFIX: &str = "tokex:v1:";
const VERSION: u8 = 1;
const SALT: &[u8] = b"tokex shared cache";
const NAMES: &[u8] = b"tokex shared cache v1 names";
const VALUES: &[u8] = b"tokex shared cache v1 values";
const NONCE: usize = aead::NONCE_LEN;
/// The longest value written or opened. tokex takes no issued token over 16 KiB from an
/// authority, so a value it sealed stays under this; a longer one, which only someone
/// with write access to the server can have put there, is refused before any work on it.
pub const MAX_SEALED: usize = 17 * 1024;

/// The keys derived from a key file, newest first.
pub struct Keyring {
    keys: Vec<Derived>,
}

struct Derived {
    names: hmac::Key,
    values: aead::LessSafeKey,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

/// A value that opened: its bound and the header value.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub bound_ms: u64,
    pub value: Vec<u8>,
}

impl Keyring {
    pub fn derive(keys: &FleetKeys) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT);
        let keys = keys
            .all()
            .iter()
            .map(|k| {
                let prk = salt.extract(k.expose());
                // Invariant: HKDF-SHA256 expands to at most 255 * 32 bytes; both keys are 32.
                let names: hmac::Key = prk
                    .expand(&[NAMES], hmac::HMAC_SHA256)
                    .expect("32 bytes are within HKDF's limit")
                    .into();
                let values: aead::UnboundKey = prk
                    .expand(&[VALUES], &aead::AES_256_GCM)
                    .expect("32 bytes are within HKDF's limit")
                    .into();
                Derived {
                    names,
                    values: aead::LessSafeKey::new(values),
                }
            })
            .collect();
        Self { keys }
    }

    /// One name per key, newest first, each `material` keyed with that key's naming key.
    pub fn names(&self, material: impl Fn(&hmac::Key) -> [u8; 32]) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(material(&k.names))))
            .collect()
    }

    /// `value` with its bound, sealed under the newest key for `name`.
    pub fn seal(&self, name: &str, bound_ms: u64, value: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.first()?;
        if 1 + NONCE + 8 + value.len() + aead::MAX_TAG_LEN > MAX_SEALED {
            return None;
        }
        let mut nonce = [0u8; NONCE];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(1 + NONCE + 8 + value.len() + aead::MAX_TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let mut body = Vec::with_capacity(8 + value.len() + aead::MAX_TAG_LEN);
        body.extend_from_slice(&bound_ms.to_be_bytes());
        body.extend_from_slice(value);
        key.values
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                associated(name),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// Opens `sealed`, read under the name key `index` made; `None` for anything that
    /// is not a value that key sealed for that name.
    pub fn open(&self, index: usize, name: &str, sealed: &[u8]) -> Option<Opened> {
        let key = self.keys.get(index)?;
        if sealed.len() > MAX_SEALED {
            return None;
        }
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE {
            return None;
        }
        let (nonce, body) = rest.split_at(NONCE);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = key
            .values
            .open_in_place(nonce, associated(name), &mut body)
            .ok()?;
        if plain.len() < 8 {
            return None;
        }
        let (bound, value) = plain.split_at(8);
        Some(Opened {
            bound_ms: u64::from_be_bytes(bound.try_into().ok()?),
            value: value.to_vec(),
        })
    }
}

/// The version byte and the name: a value opens only where it was written.
fn associated(name: &str) -> aead::Aad<Vec<u8>> {
    let mut ad = Vec::with_capacity(1 + name.len());
    ad.push(VERSION);
    ad.extend_from_slice(name.as_bytes());
    aead::Aad::from(ad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::fleet_keys::parse_fleet_keys;
    use base64::engine::general_purpose::STANDARD;

    fn keyring(keys: &[[u8; 32]]) -> Keyring {
        let text: Vec<String> = keys.iter().map(|k| STANDARD.encode(k)).collect();
        let parsed = parse_fleet_keys(std::path::Path::new("k"), text.join("\n").as_bytes());
        Keyring::derive(&parsed.unwrap())
    }

    fn material(key: &hmac::Key) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(key, b"route|actor|subject").as_ref());
        out
    }

    /// Names are stable per key, differ between keys, and carry nothing of the material.
    #[test]
    fn names_are_keyed_and_opaque() {
        let names = keyring(&[[1; 32], [2; 32]]).names(material);
        assert_eq!(names, keyring(&[[1; 32], [2; 32]]).names(material));
        assert_ne!(names[0], names[1]);
        assert_eq!(names[1], keyring(&[[2; 32]]).names(material)[0]);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(PREFIX) && !n.contains("subject"))
        );
    }

    /// A value opens under its key and name, with its bound; tampering, another name,
    /// another key or a cut value does not open.
    #[test]
    fn values_open_only_where_they_were_sealed() {
        let ring = keyring(&[[1; 32]]);
        let names = ring.names(material);
        let sealed = ring
            .seal(&names[0], 1_700_000_000_000, b"Bearer abc")
            .unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"abc"), "not in clear");
        assert_eq!(
            ring.open(0, &names[0], &sealed),
            Some(Opened {
                bound_ms: 1_700_000_000_000,
                value: b"Bearer abc".to_vec()
            })
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 20;
        tampered[last] ^= 1;
        assert_eq!(ring.open(0, &names[0], &tampered), None, "tampered");
        assert_eq!(ring.open(0, "tokex:v1:other", &sealed), None, "moved");
        assert_eq!(ring.open(1, &names[0], &sealed), None, "no such key");
        let other = keyring(&[[9; 32]]);
        assert_eq!(other.open(0, &names[0], &sealed), None, "another key");
        assert_eq!(ring.open(0, &names[0], &sealed[..10]), None, "cut");
        assert_eq!(ring.open(0, &names[0], b""), None, "empty");
        let mut version = sealed.clone();
        version[0] = 2;
        assert_eq!(ring.open(0, &names[0], &version), None, "another version");
    }

    /// After a rotation the old key still opens what it sealed, under the old name.
    #[test]
    fn a_previous_key_still_reads() {
        let old = keyring(&[[1; 32]]);
        let sealed = old.seal(&old.names(material)[0], 5, b"v").unwrap();
        let rotated = keyring(&[[2; 32], [1; 32]]);
        let names = rotated.names(material);
        assert_eq!(rotated.open(1, &names[1], &sealed).unwrap().value, b"v");
        assert_eq!(rotated.open(0, &names[0], &sealed), None);
    }

    /// Nonces are fresh: the same value seals differently each time.
    #[test]
    fn sealing_twice_differs() {
        let ring = keyring(&[[1; 32]]);
        let name = &ring.names(material)[0];
        assert_ne!(ring.seal(name, 1, b"v"), ring.seal(name, 1, b"v"));
    }

    /// Debug shows how many keys, never a key.
    #[test]
    fn debug_hides_the_keys() {
        assert_eq!(format!("{:?}", keyring(&[[1; 32]])), "Keyring(1 keys)");
    }
}
