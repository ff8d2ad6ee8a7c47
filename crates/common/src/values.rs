//! Scalar config values that validate while they are parsed.
//!
//! Parsing inside `Deserialize` (parse, don't validate) means a bad duration, URL or
//! address fails with the YAML location of the offending value attached by the parser.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{Deserializer, Error as _};

/// A YAML string with every `${NAME}` replaced by the environment variable NAME.
///
/// An unset variable is an error: silently sending an empty client secret would
/// surface much later as an opaque `invalid_client`. `$${` writes a literal `${`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if crate::offline::active() {
            // Validated as written; an unset variable is not an error offline.
            return expand_env(&raw, |name| Some(format!("${{{name}}}")))
                .map(Text)
                .map_err(D::Error::custom);
        }
        expand_env(&raw, env_var)
            .map(Text)
            .map_err(D::Error::custom)
    }
}

/// The environment variable `name`: the one place the config reads the environment
/// (never during an offline check).
pub fn env_var(name: &str) -> Option<String> {
    if crate::offline::active() {
        return None;
    }
    std::env::var(name).ok()
}

/// Expands `${NAME}` references using `lookup`.
pub fn expand_env(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| "unterminated `${` in string".to_string())?;
            let name = &after[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid environment variable name `{name}`"));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A duration written as a string with a unit: `250ms`, `30s`, `5m`, `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        if crate::offline::unresolved(&raw) {
            return Ok(Dur(crate::offline::DURATION));
        }
        parse_duration(&raw).map(Dur).map_err(D::Error::custom)
    }
}

/// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration `{raw}`: expected a whole number and a unit (ms, s, m, h), e.g. `30s`"
        )
    };
    let split = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    };
    millis.map(Duration::from_millis).ok_or_else(bad)
}

/// Writes a duration back in the form the config accepts.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// An absolute `http` or `https` URL with a host and without credentials or fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl(pub url::Url);

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        if crate::offline::unresolved(&raw) {
            return parse_http_url(crate::offline::URL)
                .map(HttpUrl)
                .map_err(D::Error::custom);
        }
        parse_http_url(&raw).map(HttpUrl).map_err(D::Error::custom)
    }
}

/// Parses and checks an `http(s)` URL.
pub fn parse_http_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("invalid URL `{raw}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("invalid URL `{raw}`: scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("invalid URL `{raw}`: a host is required"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "invalid URL `{raw}`: credentials do not belong in a URL"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("invalid URL `{raw}`: a fragment is not allowed"));
    }
    Ok(url)
}

/// A Redis or Valkey URL: `redis://` or `rediss://` (TLS), a host, an optional port (6379)
/// and database number (`/0`), and at most a user name: a password in the URL would be
/// printed wherever the URL is, so it comes from a file instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    /// As written.
    pub text: String,
    pub tls: bool,
    pub host: url::Host,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        if super::offline::unresolved(&raw) {
            return parse_redis_url("rediss://unresolved.invalid/").map_err(D::Error::custom);
        }
        parse_redis_url(&raw).map_err(D::Error::custom)
    }
}

/// Parses and checks a `redis://` or `rediss://` URL.
pub fn parse_redis_url(raw: &str) -> Result<RedisUrl, String> {
    let bad = |why: &str| format!("invalid Redis URL `{}`: {why}", without_userinfo(raw));
    let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    let tls = match url.scheme() {
        "rediss" => true,
        "redis" => false,
        _ => return Err(bad("scheme must be rediss (TLS) or redis")),
    };
    // `redis` is not a scheme the URL standard knows, so its host is left as text; an
    // address written there is still an address.
    let host = match url.host() {
        Some(url::Host::Domain("")) | None => return Err(bad("a host is required")),
        Some(url::Host::Domain(d)) => match d.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => url::Host::Ipv4(ip),
            Ok(std::net::IpAddr::V6(ip)) => url::Host::Ipv6(ip),
            Err(_) => url::Host::Domain(d.to_string()),
        },
        Some(h) => h.to_owned(),
    };
    if url.password().is_some() {
        return Err(bad(
            "a password does not belong in a URL; put it in password_file",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query or fragment is not allowed"));
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        n => n
            .parse::<u16>()
            .map_err(|_| bad("the path is a database number, such as /0"))?,
    };
    let username = match url.username() {
        "" => None,
        // What the URL holds is percent-encoded; a plain name needs no decoding.
        u if u.contains('%') => return Err(bad("write the user name without escapes")),
        u => Some(u.to_string()),
    };
    Ok(RedisUrl {
        text: raw.to_string(),
        tls,
        host,
        port: url.port().unwrap_or(6379),
        db: i64::from(db),
        username,
    })
}

/// `raw` with whatever stands before an `@` in its authority replaced, so an error about
/// a URL that holds a password does not print it.
fn without_userinfo(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}{}", crate::secret::REDACTED, &rest[at..]),
        None => raw.to_string(),
    }
}

/// A socket address such as `127.0.0.1:15001`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        if crate::offline::unresolved(&raw) {
            return Ok(Addr(([127, 0, 0, 1], 0).into()));
        }
        raw.parse().map(Addr).map_err(|_| {
            D::Error::custom(format!("invalid socket address `{raw}`: expected IP:PORT"))
        })
    }
}

/// A filesystem path (env-expanded, non-empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathText(pub PathBuf);

impl<'de> Deserialize<'de> for PathText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Text(raw) = Text::deserialize(d)?;
        if raw.is_empty() {
            return Err(D::Error::custom("empty path"));
        }
        Ok(PathText(PathBuf::from(raw)))
    }
}

impl fmt::Display for PathText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations accept each unit and reject missing units, fractions and junk.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "5d",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
        for d in ["250ms", "30s", "5m", "2h", "0s", "1500ms"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
    }

    /// `${NAME}` expands, `$${` escapes, and an unset variable is an error naming it.
    #[test]
    fn env_expansion() {
        let env = |n: &str| (n == "SECRET").then(|| "s3cr3t".to_string());
        assert_eq!(expand_env("a-${SECRET}-b", env).unwrap(), "a-s3cr3t-b");
        assert_eq!(expand_env("cost $5 $${X}", env).unwrap(), "cost $5 ${X}");
        assert!(
            expand_env("${MISSING}", env)
                .unwrap_err()
                .contains("`MISSING` is not set")
        );
        assert!(expand_env("${UNCLOSED", env).is_err());
        assert!(expand_env("${1BAD}", env).is_err());
    }

    /// Redis URLs take a host, port, database and user name, and refuse passwords,
    /// other schemes, queries and paths that are not a database number.
    #[test]
    fn redis_urls() {
        let u = parse_redis_url("rediss://tokex@redis.svc:6380/2").unwrap();
        assert_eq!(
            (
                u.tls,
                u.host.to_string(),
                u.port,
                u.db,
                u.username.as_deref()
            ),
            (true, "redis.svc".into(), 6380, 2, Some("tokex"))
        );
        let plain = parse_redis_url("redis://127.0.0.1").unwrap();
        assert_eq!(
            (plain.tls, plain.port, plain.db, plain.username),
            (false, 6379, 0, None)
        );
        assert_eq!(plain.host, url::Host::<String>::Ipv4([127, 0, 0, 1].into()));
        let v6 = parse_redis_url("redis://[::1]:7000").unwrap();
        assert_eq!(
            (v6.host, v6.port),
            (url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST), 7000)
        );
        for bad in [
            "https://redis.svc",
            "rediss://:hunter2@redis.svc",
            "rediss://u:hunter2@redis.svc",
            "rediss://:hunter2@",
            "rediss://redis.svc/x",
            "rediss://redis.svc/0?protocol=resp3",
            "rediss://",
            "redis.svc:6379",
        ] {
            let err = parse_redis_url(bad).unwrap_err();
            assert!(err.starts_with("invalid Redis URL"), "{bad}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    /// Only absolute http(s) URLs with a host and no userinfo or fragment pass.
    #[test]
    fn urls() {
        assert!(parse_http_url("https://sts.example/oauth2/token").is_ok());
        assert!(parse_http_url("http://127.0.0.1:8080").is_ok());
        for bad in [
            "ftp://x",
            "/relative",
            "https://u:p@host/",
            "https://h/#frag",
            "nonsense",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad} should be rejected");
        }
    }
}

/// A string where `${NAME}` may stand for any part (used in every string schema).
const ENV_REF: &str = r"\$\{[A-Za-z_][A-Za-z0-9_]*\}";

macro_rules! string_schema {
    ($ty:ty, $name:literal, $extra:tt) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let mut schema = schemars::json_schema!($extra);
                schema.insert("type".into(), "string".into());
                schema
            }
        }
    };
}

string_schema!(Text, "Text", { "description": "a string; ${NAME} is replaced by the environment variable NAME" });
string_schema!(PathText, "Path", { "description": "a file path, relative to the config file's directory", "minLength": 1 });
string_schema!(Addr, "SocketAddr", { "description": "IP:PORT", "examples": ["127.0.0.1:15001"] });
string_schema!(HttpUrl, "HttpUrl", {
    "description": "an absolute http or https URL without credentials or fragment",
    "pattern": format!("^(https?://|.*{ENV_REF})")
});
string_schema!(RedisUrl, "RedisUrl", {
    "description": "a rediss:// (TLS) or redis:// URL with a host and optional port and database number, without a password",
    "pattern": format!("^(rediss?://|.*{ENV_REF})")
});
string_schema!(Dur, "Duration", {
    "description": "a whole number and a unit: 250ms, 30s, 5m, 1h",
    "pattern": format!("^([0-9]+(ms|s|m|h)|.*{ENV_REF}.*)$")
});
