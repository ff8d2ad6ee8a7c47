//! Configuration: loading the YAML configuration file into a validated [`Config`]. Every
//! error names the file, line, column and the key path, as `FILE:LINE:COL: message`.
//!
//! Layout:
//! - [`file`] mirrors the YAML; [`values`] parses scalars (durations, URLs, `${ENV}`);
//!   `yaml` parses and words the parser's errors.
//! - [`model`] is the validated form the proxy runs on: types only, which the runtime
//!   modules read and which depend on none of them.
//! - [`validate`] builds the model from the file model, reading what the file names:
//!   credential files, the environment and the operating system's certificate store.
//! - `offline` lets `tokex check --offline` parse and validate without the environment.
//! - `effective` writes a loaded config back in the file's format (`tokex check`).

mod effective;
pub mod file;
pub mod model;
pub mod validate;

pub use tokex_common::located::{ConfigError, MAX_CONFIG_BYTES};
pub use tokex_common::values;
pub(crate) use tokex_common::yaml::from_yaml;

use std::path::Path;

use tokex_common::credentials::ReadError;
use tokex_common::located::{located, read, unreadable};
use tokex_common::{offline, yaml};

pub use model::{Authority, CacheSettings, ClientAuth, Config, ExchangeParams, Route};

/// The JSON Schema of the config file (`tokex schema`), generated from the file model
/// so editors can validate `tokex.yaml`.
pub fn schema() -> String {
    let mut schema = schemars::schema_for!(file::FileConfig);
    schema.insert("title".into(), "tokex configuration".into());
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_file(path).map(|(_, config)| config)
}

/// Loads the config at `path` as [`load`] does and writes it as `tokex check` prints it:
/// in the file's own format, defaults filled in, secrets redacted.
pub fn effective(path: &Path) -> Result<String, ConfigError> {
    let (file, config) = load_file(path)?;
    effective::render(&file, &config, base_of(path)).map_err(|e| {
        located(
            path,
            None,
            format!("cannot print the effective config: {e}"),
        )
    })
}

fn load_file(path: &Path) -> Result<(file::FileConfig, Config), ConfigError> {
    // Refused by its size before the watcher below reads it whole.
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_CONFIG_BYTES) {
        return Err(unreadable(path, ReadError::TooLarge(MAX_CONFIG_BYTES)));
    }
    // The watcher stamps the file before the read below, so no change can slip between.
    let source = crate::credentials::Watched::load(vec![path.to_path_buf()], |_| Ok(()))
        .map_err(|e| located(path, None, e))?;
    let text = read(path)?;
    let file = parse_file(&text, path)?;
    let mut config = validate::validate(&file, base_of(path))
        .map_err(|e| located(path, e.location, e.message))?;
    config.source = Some(source);
    Ok((file, config))
}

/// Parses and validates config text; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file = parse_file(text, path)?;
    validate::validate(&file, base_of(path)).map_err(|e| located(path, e.location, e.message))
}

fn parse_file(text: &str, path: &Path) -> Result<file::FileConfig, ConfigError> {
    if yaml::is_blank(text) {
        return Err(located(path, None, EMPTY.into()));
    }
    from_yaml(text).map_err(|(loc, msg)| located(path, loc, msg))
}

/// The directory relative paths in the config at `path` resolve against.
fn base_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Checks the config file at `path` without reading the credential and CA files it names
/// or the environment (`tokex check --offline`, for CI): `${NAME}` and `*_file` are
/// accepted unresolved, everything the file itself says is checked.
pub fn check_offline(path: &Path) -> Result<(), ConfigError> {
    check_offline_text(&read(path)?, path)
}

/// [`check_offline`] on config text; `path` names it in errors. Reads nothing from the
/// machine, so its result depends on the text alone (the config fuzz target runs it).
pub fn check_offline_text(text: &str, path: &Path) -> Result<(), ConfigError> {
    let file = offline::scope(|| parse_file(text, path))?;
    offline::scope(|| validate::check_offline(&file, base_of(path)))
        .map_err(|e| located(path, e.location, e.message))
}

/// The `transparent` section of the config at `path`, for `tokex init`: the whole file is
/// checked as `--offline` does (an init container has no secrets mounted), and only that
/// section, which comes from the file alone, is kept.
pub fn transparent_section(path: &Path) -> Result<Option<model::Transparent>, ConfigError> {
    let text = read(path)?;
    let file = offline::scope(|| parse_file(&text, path))?;
    offline::scope(|| validate::offline_model(&file, base_of(path)))
        .map(|config| config.transparent)
        .map_err(|e| located(path, e.location, e.message))
}

/// What an empty config file is told.
const EMPTY: &str =
    "the file is empty: a config needs at least `routes` (`routes: []` is the smallest)";

#[cfg(test)]
mod tests {
    /// The committed schema is what the config types generate; regenerate it with
    /// `cargo run -- schema > docs/tokex.schema.json`.
    #[test]
    fn committed_schema_is_current() {
        let committed = include_str!("../docs/tokex.schema.json");
        assert!(
            committed == super::schema(),
            "docs/tokex.schema.json is stale: run `cargo run -- schema > docs/tokex.schema.json`"
        );
    }

    fn error(text: &str) -> String {
        super::parse(text, std::path::Path::new("t.yaml"))
            .unwrap_err()
            .to_string()
    }

    /// Integers are "a whole number" with their range, not the Rust type.
    #[test]
    fn integer_errors_say_whole_number() {
        for (text, expected) in [
            (
                "limits:\n  max_connections: abc\nroutes: []\n",
                "t.yaml:2:20: limits.max_connections: expected a whole number from 0 to 4294967295",
            ),
            (
                "limits:\n  max_connections: -5\nroutes: []\n",
                "t.yaml:2:20: limits.max_connections: expected a whole number from 0 to 4294967295",
            ),
            (
                "cache:\n  max_entries: 1.5\nroutes: []\n",
                "t.yaml:2:16: cache.max_entries: expected a whole number from 0 to 18446744073709551615",
            ),
        ] {
            let err = error(text);
            assert!(err.starts_with(expected), "{err}");
            assert!(!err.contains("u32") && !err.contains("u64"), "{err}");
        }
    }

    /// A repeated key names itself and where it first appeared, without the parser's advice.
    #[test]
    fn duplicate_keys_name_the_first_line() {
        let err = error("routes: []\nlisten: 127.0.0.1:1\nroutes: []\n");
        assert!(
            err.starts_with("t.yaml:3:1: key `routes` appears twice, first at line 1"),
            "{err}"
        );
        let text = "authorities:\n  a:\n    token_endpoint: https://x/t\n    client_id: c\n    auth: { method: none }\n    client_id: d\nroutes: []\n";
        let err = error(text);
        assert!(
            err.starts_with(
                "t.yaml:6:5: authorities.a: key `client_id` appears twice, first at line 4"
            ),
            "{err}"
        );
        assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
    }

    /// An empty file (or one of comments only) says what a config needs at least.
    #[test]
    fn empty_file_says_what_is_required() {
        for text in ["", "\n\n", "# only a comment\n"] {
            let err = error(text);
            assert!(
                err.contains("the file is empty: a config needs at least `routes`"),
                "{text:?}: {err}"
            );
        }
    }

    /// `early_expiry` not shorter than `max_ttl` is located, and says when 30s is the default.
    #[test]
    fn early_expiry_error_is_located_and_explains_the_default() {
        let err = error("cache:\n  max_ttl: 20s\nroutes: []\n");
        assert!(
            err.starts_with("t.yaml:2:12: cache.early_expiry")
                && err.contains("30s, the default")
                && err.contains("max_ttl (20s)"),
            "{err}"
        );
        let err = error("cache:\n  max_ttl: 20s\n  early_expiry: 25s\nroutes: []\n");
        assert!(
            err.starts_with("t.yaml:3:17: cache.early_expiry") && !err.contains("default"),
            "{err}"
        );
        let route = "routes:\n  - name: a\n    upstream: http://127.0.0.1:9\n    exchange: none\n    cache: { max_ttl: 10s }\n";
        let err = error(route);
        assert!(
            err.starts_with("t.yaml:5:23: routes[0].cache.early_expiry")
                && err.contains("30s, the default"),
            "{err}"
        );
    }

    /// A host written as a URL says a host has no scheme and what to write instead.
    #[test]
    fn host_with_scheme_suggests_the_fix() {
        let err = error(
            "routes:\n  - name: a\n    match: { host: http://payments.internal }\n    upstream: http://127.0.0.1:9\n    exchange: none\n",
        );
        assert!(
            err.starts_with("t.yaml:3:20: routes[0].match.host:")
                && err.contains("a host has no scheme")
                && err.contains("host: payments.internal")
                && !err.contains("invalid port"),
            "{err}"
        );
    }

    /// A file past the size limit is refused before it is read, naming file and limit.
    #[test]
    fn oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let mut text = "routes: []\n# ".to_string();
        text.push_str(&"x".repeat(2 << 20));
        std::fs::write(&path, text).unwrap();
        let err = super::load(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&path.display().to_string()) && err.contains("larger than 1 MiB"),
            "{err}"
        );
    }

    /// Whatever a huge value does wrong, the message echoes a few dozen characters of it.
    #[test]
    fn echoed_values_are_bounded() {
        let huge = "A".repeat(1 << 20);
        let route = |line: &str| {
            format!(
                "routes:\n  - name: a\n    upstream: http://127.0.0.1:9\n    exchange: none\n    {line}\n"
            )
        };
        for text in [
            format!("listen: {huge}\nroutes: []\n"),
            format!("routes: {huge}\n"),
            format!("{huge}: 1\nroutes: []\n"),
            route(&format!("timeout: {huge}")),
            route(&format!("match: {{ host: {huge} }}")),
            route(&format!("ca_file: /{huge}")),
            format!(
                "routes:\n  - name: {huge}\n    upstream: http://127.0.0.1:9\n    exchange: none\n"
            ),
            format!("routes:\n  - name: a\n    upstream: http://{huge}/\n    exchange: none\n"),
        ] {
            let err = super::parse(&text, std::path::Path::new("t.yaml"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| panic!("accepted: {}", &text[..80]));
            assert!(err.len() < 400, "{} bytes: {}", err.len(), &err[..400]);
        }
    }
}
