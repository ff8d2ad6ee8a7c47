//! Unit tests of what a read makes of a value: its life from the bound it carries,
//! capped by the route's `max_ttl`, and the values it refuses. The server side is tested
//! against a real Redis in the integration tests.

use super::*;
use crate::credentials::fleet_keys::parse_fleet_keys;

fn lifetimes(max_ttl: Duration) -> CacheSettings {
    CacheSettings {
        max_ttl,
        default_ttl: Duration::from_secs(60),
        early_expiry: Duration::from_secs(30),
        refresh_ahead: Duration::ZERO,
    }
}

fn keyring() -> Keyring {
    use base64::Engine;
    let line = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    Keyring::derive(&parse_fleet_keys(std::path::Path::new("k"), line.as_bytes()).unwrap())
}

fn names(keyring: &Keyring) -> Vec<String> {
    keyring.names(|k| {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::hmac::sign(k, b"material").as_ref());
        out
    })
}

/// What a plain fill (no refresh) of `names` looks for.
fn wanted<'a>(ring: &'a Keyring, names: &'a [String], settings: &'a CacheSettings) -> Wanted<'a> {
    Wanted {
        keyring: ring,
        names,
        lifetimes: settings,
        newer_than: None,
    }
}

fn bound_in(d: Duration) -> u64 {
    millis(clock::unix_time() + d)
}

/// A value opens into an entry that lives until its bound, marked as the fleet's.
#[tokio::test(start_paused = true)]
async fn an_entry_lives_until_the_bound_it_carries() {
    let (ring, settings) = (keyring(), lifetimes(Duration::from_secs(600)));
    let names = names(&ring);
    let wanted = wanted(&ring, &names, &settings);
    let sealed = ring
        .seal(&names[0], bound_in(Duration::from_secs(120)), b"Bearer t")
        .unwrap();
    let entry = wanted.open(0, &sealed).unwrap();
    let left = entry.expires_at - clock::now();
    assert!(
        left <= Duration::from_secs(120) && left > Duration::from_secs(119),
        "{left:?}"
    );
    assert!(entry.from_shared && entry.shareable);
    assert!(entry.authorization.is_sensitive());
    assert_eq!(entry.authorization, "Bearer t");
}

/// A reader never keeps an entry longer than its own `max_ttl`, whatever the writer's.
#[tokio::test(start_paused = true)]
async fn a_readers_max_ttl_caps_the_life() {
    let (ring, settings) = (keyring(), lifetimes(Duration::from_secs(60)));
    let names = names(&ring);
    let wanted = wanted(&ring, &names, &settings);
    let sealed = ring
        .seal(&names[0], bound_in(Duration::from_secs(3600)), b"Bearer t")
        .unwrap();
    let entry = wanted.open(0, &sealed).unwrap();
    assert_eq!(entry.expires_at - clock::now(), Duration::from_secs(60));
}

/// Past its bound, not sealed for this name, or not a header value: refused, each for
/// its own reason.
#[tokio::test(start_paused = true)]
async fn refused_values_say_why() {
    let (ring, settings) = (keyring(), lifetimes(Duration::from_secs(600)));
    let names = names(&ring);
    let wanted = wanted(&ring, &names, &settings);
    let sealed = ring
        .seal(&names[0], bound_in(Duration::from_secs(10)), b"Bearer t")
        .unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(wanted.open(0, &sealed).err(), Some(Ignored::Expired));
    let moved = ring
        .seal(
            "tokex:v1:elsewhere",
            bound_in(Duration::from_secs(60)),
            b"Bearer t",
        )
        .unwrap();
    assert_eq!(wanted.open(0, &moved).err(), Some(Ignored::Undecryptable));
    let broken = ring
        .seal(
            &names[0],
            bound_in(Duration::from_secs(60)),
            b"Bearer t\r\nX-Forged: 1",
        )
        .unwrap();
    assert_eq!(wanted.open(0, &broken).err(), Some(Ignored::Unusable));
}

/// The largest token an authority may issue still goes to the fleet; a value beyond the
/// cap is neither written nor opened, so a filled-up server costs a replica no decryption.
#[tokio::test(start_paused = true)]
async fn values_past_the_size_cap_are_neither_written_nor_read() {
    let (ring, settings) = (keyring(), lifetimes(Duration::from_secs(600)));
    let names = names(&ring);
    let wanted = wanted(&ring, &names, &settings);
    let bound = bound_in(Duration::from_secs(60));
    let largest = format!("Bearer {}", "t".repeat(16 * 1024));
    let sealed = ring.seal(&names[0], bound, largest.as_bytes()).unwrap();
    assert!(wanted.open(0, &sealed).is_ok());
    let past = "t".repeat(seal::MAX_SEALED);
    assert!(ring.seal(&names[0], bound, past.as_bytes()).is_none());
    let mut padded = sealed.clone();
    padded.resize(seal::MAX_SEALED + 1, 0);
    assert_eq!(wanted.open(0, &padded).err(), Some(Ignored::Unusable));
}
