//! The credential-file parsers: client secrets and assertions, `private_key_jwt` keys for
//! every algorithm, the shared cache's key files, CA bundles and client identities (the whole input serves as both the
//! certificate and the key file, as one PEM holding both would). None panics; what they
//! accept is usable; what they refuse is described without the file's key material.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tokex::credentials::assertion::{AssertionKey, parse_alg, parse_assertion};
use tokex::credentials::certs::{parse_ca, parse_identity};
use tokex::credentials::fleet_keys::{MAX_KEYS, MIN_KEY_BYTES, parse_fleet_keys};
use tokex::credentials::parse_secret;

const PATH: &str = "/run/secrets/fuzzed";

fuzz_target!(|data: &[u8]| {
    let path = Path::new(PATH);
    match parse_secret(path, data) {
        Ok(secret) => {
            let value = secret.expose();
            assert!(!value.is_empty() && !value.ends_with(['\r', '\n']));
            assert!(data.starts_with(value.as_bytes()));
        }
        Err(e) => assert_described(&e, data, Secret::Whole),
    }
    match parse_assertion(path, data) {
        Ok(a) => assert!(!a.expose().is_empty()),
        Err(e) => assert_described(&e, data, Secret::Whole),
    }
    match parse_fleet_keys(path, data) {
        Ok(keys) => {
            let n = keys.all().len();
            assert!((1..=MAX_KEYS).contains(&n));
            assert!(keys.all().iter().all(|k| k.expose().len() >= MIN_KEY_BYTES));
        }
        Err(e) => assert_described(&e, data, Secret::Pem),
    }
    match parse_ca(path, data) {
        Ok(bundle) => assert!(!bundle.certs.is_empty()),
        Err(e) => assert_described(&e, data, Secret::Pem),
    }
    match parse_identity(path, data, path, data) {
        Ok(identity) => assert!(!identity.certs.is_empty()),
        Err(e) => assert_described(&e, data, Secret::Pem),
    }
    for alg in ["ES256", "RS256", "PS256", "EdDSA"] {
        let alg = parse_alg(alg).expect("a supported alg");
        match AssertionKey::parse(path, data, alg, None) {
            Ok(key) => signs(&key),
            Err(e) => assert_described(&e, data, Secret::Pem),
        }
    }
});

/// A key that parsed signs assertions that are JWTs with the RFC 7523 claims.
fn signs(key: &AssertionKey) {
    let jwt = key
        .sign_assertion("orders-service", "https://as.example")
        .expect("an accepted key signs");
    let claims = tokex::jwt::unverified_claims(jwt.expose()).expect("an assertion is a JWT");
    assert_eq!(claims["iss"], "orders-service");
    assert_eq!(claims["aud"], "https://as.example");
    assert!(tokex::jwt::unverified_exp(jwt.expose()).is_some());
}

/// Errors name the file and never quote its content: not a secret's value, and not the
/// base64 lines of PEM that carry key material.
fn assert_described(message: &str, data: &[u8], secret: Secret) {
    assert!(message.contains(PATH), "{message}");
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let value = text.trim_end_matches(['\r', '\n']);
    if secret == Secret::Whole && value.len() >= 8 {
        assert!(!message.contains(value), "{message}");
    }
    let key_material = |l: &&str| {
        l.len() >= 24
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    };
    for line in text.lines().map(str::trim).filter(key_material) {
        assert!(!message.contains(line), "{message}");
    }
}

/// How much of a file is secret.
#[derive(PartialEq)]
enum Secret {
    Whole,
    Pem,
}
