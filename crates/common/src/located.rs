//! Errors that name a place in a YAML file (`FILE:LINE:COL: message`), shared by the
//! sidecar's config and the embedded STS's, and reading such a file within a bound.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use crate::credentials::ReadError;
use crate::values::PathText;
use crate::yaml;

/// A file that could not be loaded, with where the problem is.
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

/// A [`ConfigError`] at `location`; the message is [`yaml::bounded`], so no error echoes
/// more than a few dozen characters of what the file holds.
pub fn located(path: &Path, location: Option<Location>, message: String) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: location.map(|l| l.line()),
        column: location.map(|l| l.column()),
        message: yaml::bounded(&message),
    }
}

/// A validation failure at a place in the file.
#[derive(Debug)]
pub struct Invalid {
    pub location: Option<Location>,
    pub message: String,
}

/// A failure at the value `span` holds.
pub fn at<T>(span: &Spanned<T>, message: impl Into<String>) -> Invalid {
    Invalid {
        location: Some(span.referenced),
        message: message.into(),
    }
}

/// A failure of no one place: of values that are not written, or of several together.
pub fn nowhere(message: impl Into<String>) -> Invalid {
    Invalid {
        location: None,
        message: message.into(),
    }
}

/// `p` as written if absolute, else relative to `base` (the directory of the file that
/// names it).
pub fn resolve(base: &Path, p: &PathText) -> PathBuf {
    if p.0.is_absolute() {
        p.0.clone()
    } else {
        base.join(&p.0)
    }
}

/// The largest config file tokex reads. Real ones are a few KiB (a thousand routes are
/// about 200 KiB), and parsing costs some 25 times the file's size in memory at its peak:
/// a hostile 4 MiB file would take about 100 MiB, enough to get a sidecar killed on reload.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A config file's text, read within [`MAX_CONFIG_BYTES`].
pub fn read(path: &Path) -> Result<String, ConfigError> {
    let bytes = crate::credentials::read_bounded(path, MAX_CONFIG_BYTES)
        .map_err(|e| unreadable(path, e))?;
    String::from_utf8(bytes).map_err(|_| located(path, None, "the file is not UTF-8 text".into()))
}

pub fn unreadable(path: &Path, e: ReadError) -> ConfigError {
    located(path, None, format!("cannot read config: {e}"))
}

/// Reads a YAML file into `T` with located errors.
pub fn load_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = read(path)?;
    if yaml::is_blank(&text) {
        return Err(located(path, None, "the file is empty".into()));
    }
    yaml::from_yaml(&text).map_err(|(loc, msg)| located(path, loc, msg))
}
