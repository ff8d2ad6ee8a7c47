//! Configuration: loading the YAML configuration file into a validated [`Config`].
//!
//! Layout: [`file`] mirrors the YAML, [`authority`] builds authorities and their
//! credentials, [`values`] parses scalars (durations, URLs, `${ENV}`),
//! [`model`] is the validated form the proxy runs on, [`sources`] is where `${NAME}` and
//! the files a config names are read from. Every error names the file, line, column and
//! the key path, as `FILE:LINE:COL: message`.

pub mod authority;
pub mod file;
pub mod model;
pub mod sources;
pub mod values;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::{Authority, CacheSettings, ClientAuth, Config, ExchangeParams, Route};

/// A config that could not be loaded, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if let (Some(line), Some(col)) = (self.line, self.column) {
            write!(f, "{line}:{col}:")?;
        }
        write!(f, " {}", self.message)
    }
}

/// The JSON Schema of the config file (`tokex schema`), generated from the file model
/// so editors can validate `tokex.yaml`.
pub fn schema() -> String {
    let mut schema = schemars::schema_for!(file::FileConfig);
    schema.insert("title".into(), "tokex configuration".into());
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let unreadable = |e: String| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        message: e,
    };
    // The watcher stamps the file before the read below, so no change can slip between.
    let source = crate::credentials::Watched::load(vec![path.to_path_buf()], |_| Ok(()))
        .map_err(unreadable)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| unreadable(format!("cannot read config: {e}")))?;
    let mut config = parse(&text, path)?;
    config.source = Some(source);
    Ok(config)
}

/// Parses and validates config text; `path` names it in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let parsed: file::FileConfig = from_yaml(text).map_err(|(loc, msg)| located(path, loc, msg))?;
    let base = path.parent().unwrap_or(Path::new("."));
    model::validate(parsed, base).map_err(|e| located(path, e.location, e.message))
}

/// As [`parse`], with `${NAME}` and every file the config names read from `fixed` alone:
/// the result depends on nothing but the arguments.
pub fn parse_isolated(
    text: &str,
    path: &Path,
    fixed: std::rc::Rc<sources::Fixed>,
) -> Result<Config, ConfigError> {
    sources::isolated(fixed, || parse(text, path))
}

/// Reads a YAML file into `T` with located errors; shared with the embedded STS config.
pub(crate) fn load_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| located(path, None, format!("cannot read config: {e}")))?;
    from_yaml(&text).map_err(|(loc, msg)| located(path, loc, msg))
}

pub(crate) fn located(
    path: &Path,
    location: Option<serde_saphyr::Location>,
    message: String,
) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: location.map(|l| l.line()),
        column: location.map(|l| l.column()),
        message,
    }
}

/// The one place YAML is parsed, so the YAML crate can be swapped in one line.
///
/// The error message is prefixed with the key path (`routes[0].cache.max_ttl`) that
/// serde_path_to_error tracked, because the parser's own message only names the value.
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, (Option<serde_saphyr::Location>, String)> {
    let mut key_path = None;
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            key_path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let location = e.location();
        let message = plain_message(&e);
        // `Spanned` fields show up as a `.value` segment; no config key is named `value`.
        match key_path
            .map(|p| p.replace(".value", ""))
            .filter(|p| p != ".")
        {
            Some(p) => (location, format!("{p}: {message}")),
            None => (location, message),
        }
    })
}

/// The parser's message without its own `error: line N column M:` prefix.
fn plain_message(e: &serde_saphyr::Error) -> String {
    let full = e.to_string();
    let first = full.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("error: ").unwrap_or(first);
    match rest.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((_, message)) => message.to_string(),
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::rc::Rc;

    use super::sources::Fixed;

    const ISOLATED: &str = "authorities:
  as:
    token_endpoint: https://as.example/token
    client_id: ${TOKEX_ISOLATED_CLIENT_ID}
    auth: { method: client_secret_post, client_secret_file: secret }
routes:
  - name: r
    upstream: http://u
    exchange: { authority: as, audience: a }
";

    /// An isolated parse reads `${NAME}` and files from the fixed set only, and the
    /// thread reads the process's environment and disk again afterwards.
    #[test]
    fn isolated_parse_reads_only_the_fixed_set() {
        let path = Path::new("/nowhere/tokex.yaml");
        let mut fixed = Fixed::default();
        fixed
            .env
            .insert("TOKEX_ISOLATED_CLIENT_ID".into(), "from-fixed".into());
        let missing = super::parse_isolated(ISOLATED, path, Rc::new(fixed.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("/nowhere/secret: no such file"),
            "{missing}"
        );

        fixed
            .files
            .insert(PathBuf::from("/nowhere/secret"), b"s3cret\n".to_vec());
        let config = super::parse_isolated(ISOLATED, path, Rc::new(fixed)).unwrap();
        let authority = &config.authorities["as"];
        assert_eq!(authority.client_id, "from-fixed");
        match authority.auth.credential("from-fixed").unwrap() {
            crate::client_auth::Credential::Post(secret) => assert_eq!(secret.expose(), "s3cret"),
            other => panic!("{other:?}"),
        }

        let outside = super::parse(ISOLATED, path).unwrap_err().to_string();
        assert!(outside.contains("TOKEX_ISOLATED_CLIENT_ID"), "{outside}");
    }

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
}
