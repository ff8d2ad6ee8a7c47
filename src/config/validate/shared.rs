//! The shared cache (`cache.shared`): the server's URL and transport, the fleet's key file,
//! the password and CA files, each registered for rotation, and the timeouts.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::sources::Sources;
use super::{Invalid, at};
use crate::config::file::FileSharedCache;
use crate::config::model::{FleetLock, SharedCacheSettings};
use crate::credentials::fleet_keys::parse_fleet_keys;
use crate::credentials::parse_secret;
use tokex_common::values::{Dur, RedisUrl};

const PATH: &str = "cache.shared";

/// `None` without the section, and offline, where the files it names are not read.
pub(super) fn shared_cache(
    written: Option<&Spanned<FileSharedCache>>,
    sources: &mut Sources,
) -> Result<Option<SharedCacheSettings>, Invalid> {
    let Some(spanned) = written else {
        return Ok(None);
    };
    let s = &spanned.value;
    let url = &s.url.value;
    if !url.tls && !is_loopback(&url.host) {
        return Err(at(
            &s.url,
            format!(
                "{PATH}.url: `{}` is plain redis to a host that is not loopback: the password \
                 and the cache's traffic would cross the network in clear, open to tampering; \
                 use rediss://",
                url.text
            ),
        ));
    }
    if let (false, Some(ca)) = (url.tls, &s.ca_file) {
        return Err(at(
            ca,
            format!("{PATH}.ca_file applies only to a rediss:// url"),
        ));
    }
    let timeout = positive(s.timeout.as_ref(), Duration::from_millis(50), "timeout")?;
    let lock = match &s.lock {
        None => None,
        Some(l) => Some(FleetLock {
            poll_interval: positive(
                l.poll_interval.as_ref(),
                Duration::from_millis(20),
                "lock.poll_interval",
            )?,
        }),
    };
    let circuit_breaker =
        super::authority::breaker(s.circuit_breaker.as_ref(), PATH).map_err(|m| at(spanned, m))?;
    let ca_file = match url.tls {
        true => super::trust::ca_bundle(s.ca_file.as_ref(), &format!("{PATH}.ca_file"), sources)?,
        false => None,
    };
    let key_file = sources.resolve(&s.key_file.value);
    let keys = sources
        .watch(vec![key_file], |p, c| parse_fleet_keys(&p[0], &c[0]))
        .map_err(|m| at(&s.key_file, format!("{PATH}.key_file: {m}")))?;
    let password = match &s.password_file {
        None => None,
        Some(f) => {
            let file = sources.resolve(&f.value);
            let password = sources
                .watch(vec![file], |p, c| parse_secret(&p[0], &c[0]))
                .map_err(|m| at(f, format!("{PATH}.password_file: {m}")))?;
            match password {
                Some(p) => Some(p),
                None => return Ok(None),
            }
        }
    };
    let Some(keys) = keys else {
        return Ok(None);
    };
    Ok(Some(settings(
        url,
        keys,
        password,
        ca_file,
        timeout,
        lock,
        circuit_breaker,
    )))
}

#[allow(clippy::too_many_arguments)]
fn settings(
    url: &RedisUrl,
    keys: crate::credentials::Watched<crate::credentials::fleet_keys::FleetKeys>,
    password: Option<crate::credentials::Watched<crate::secret::Secret>>,
    ca_file: Option<crate::credentials::Watched<crate::credentials::certs::CaBundle>>,
    timeout: Duration,
    lock: Option<FleetLock>,
    circuit_breaker: crate::config::model::BreakerSettings,
) -> SharedCacheSettings {
    let host = match &url.host {
        // The URL writes an IPv6 address in brackets; a socket address takes it bare.
        url::Host::Ipv6(ip) => ip.to_string(),
        other => other.to_string(),
    };
    SharedCacheSettings {
        url: url.text.clone(),
        host,
        port: url.port,
        tls: url.tls,
        db: url.db,
        username: url.username.clone(),
        password,
        ca_file,
        keys,
        timeout,
        lock,
        circuit_breaker,
    }
}

/// `key`'s duration, or `default`; zero is refused, since nothing could be done in it.
fn positive(
    value: Option<&Spanned<Dur>>,
    default: Duration,
    key: &str,
) -> Result<Duration, Invalid> {
    match value {
        None => Ok(default),
        Some(d) if d.value.0.is_zero() => {
            Err(at(d, format!("{PATH}.{key} must be greater than zero")))
        }
        Some(d) => Ok(d.value.0),
    }
}

/// 127.0.0.0/8, `::1` or `localhost`: a connection that never leaves the machine.
fn is_loopback(host: &url::Host) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError, parse};

    /// A config with `cache.shared` holding `lines` (indented into it), its key file in
    /// `dir`.
    fn with(dir: &Path, lines: &str) -> Result<Config, ConfigError> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        std::fs::write(dir.join("key"), key).unwrap();
        let mut text = "routes: []\ncache:\n  shared:\n    key_file: key\n".to_string();
        for line in lines.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        parse(&text, &dir.join("t.yaml"))
    }

    /// Plain `redis://` is refused at the key unless it stays on the machine; TLS and
    /// loopback pass, with their defaults.
    #[test]
    fn plain_redis_only_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "redis://10.0.0.5:6379",
            "redis://redis.svc",
            "redis://127.0.0.1.nip.io",
        ] {
            let err = with(dir.path(), &format!("url: {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.ends_with(&format!(
                    "t.yaml:5:10: cache.shared.url: `{bad}` is plain redis to a host that is not \
                     loopback: the password and the cache's traffic would cross the network in \
                     clear, open to tampering; use rediss://"
                )),
                "{err}"
            );
        }
        for good in [
            "redis://127.0.0.1:6379",
            "redis://[::1]",
            "redis://localhost/3",
            "rediss://redis.svc:6380/0",
        ] {
            let config = with(dir.path(), &format!("url: {good}")).unwrap();
            let shared = config.cache.shared.unwrap();
            assert_eq!(
                shared.timeout,
                std::time::Duration::from_millis(50),
                "{good}"
            );
            assert_eq!((shared.lock, shared.circuit_breaker.failures), (None, 5));
        }
    }

    /// Each refusal names its key and place: a password in the URL, a zero timeout or
    /// poll interval, a `ca_file` without TLS, a key file that is not one.
    #[test]
    fn refusals_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = |lines: &str| with(dir.path(), lines).unwrap_err().to_string();
        assert!(
            err("url: rediss://:pw@r.svc")
                .contains("t.yaml:5:10: cache.shared.url: invalid Redis URL")
        );
        assert!(
            !err("url: rediss://:pw@r.svc").contains("pw@"),
            "the password is not echoed"
        );
        assert!(
            err("url: rediss://r.svc\ntimeout: 0s")
                .contains("t.yaml:6:14: cache.shared.timeout must be greater than zero")
        );
        assert!(
            err("url: rediss://r.svc\nlock: { poll_interval: 0ms }")
                .contains("cache.shared.lock.poll_interval must be greater than zero")
        );
        assert!(
            err("url: redis://127.0.0.1\nca_file: ca.pem")
                .contains("t.yaml:6:14: cache.shared.ca_file applies only to a rediss:// url")
        );
        std::fs::write(dir.path().join("short"), "c2hvcnQ=").unwrap();
        let short = "url: rediss://r.svc\nkey_file: short";
        assert!(
            with_key(dir.path(), short).contains("cache.shared.key_file:")
                && with_key(dir.path(), short).contains("at least 32"),
            "{}",
            with_key(dir.path(), short)
        );
    }

    /// As [`with`], but `lines` set the key file themselves.
    fn with_key(dir: &Path, lines: &str) -> String {
        let mut text = "routes: []\ncache:\n  shared:\n".to_string();
        for line in lines.lines() {
            text.push_str(&format!("    {line}\n"));
        }
        parse(&text, &dir.join("t.yaml")).unwrap_err().to_string()
    }
}
