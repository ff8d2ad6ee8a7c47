//! Where a config's values come from beyond its own text: the files it names (credentials
//! and CA bundles, each registered for rotation) resolved against the config's directory,
//! the environment (`SSL_CERT_FILE`) and the operating system's certificate store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::trust::Trust;
use crate::credentials::{Poll, Watched};
use tokex_common::values::PathText;

/// What validation reads besides the file, and what it registers for the rotation poller.
/// Offline it reads none of it.
pub(super) struct Sources {
    /// `tokex check --offline`: no credential file, CA file or environment is read.
    pub(super) offline: bool,
    /// The config file's directory, which relative paths resolve against.
    base: PathBuf,
    /// Every credential file read so far.
    pub(super) watched: Vec<Arc<dyn Poll>>,
    /// The trust roots every TLS client starts from, once the `tls` section is read.
    pub(super) trust: Trust,
}

impl Sources {
    pub(super) fn new(base: &Path, offline: bool) -> Self {
        Self {
            offline,
            base: base.to_path_buf(),
            watched: Vec::new(),
            trust: Trust::default(),
        }
    }

    /// The environment variable `name`; offline, none is set.
    pub(super) fn env(&self, name: &str) -> Option<String> {
        if self.offline {
            return None;
        }
        tokex_common::values::env_var(name)
    }

    /// The operating system's certificate store.
    pub(super) fn system_roots(&self) -> rustls_native_certs::CertificateResult {
        rustls_native_certs::load_native_certs()
    }

    /// `p` as written if absolute, else relative to the config file's directory.
    pub(super) fn resolve(&self, p: &PathText) -> PathBuf {
        super::resolve(&self.base, p)
    }

    /// Reads `paths` with `parse` (which also gets the paths, for its messages) and
    /// registers the value with the rotation poller. Offline nothing is read: `None`, and
    /// the caller builds a stand-in that the offline check then discards with the rest of
    /// the model.
    pub(super) fn watch<T: Send + Sync + std::fmt::Debug + 'static>(
        &mut self,
        paths: Vec<PathBuf>,
        parse: impl Fn(&[PathBuf], &[Vec<u8>]) -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Option<Watched<T>>, String> {
        if self.offline {
            return Ok(None);
        }
        let names = paths.clone();
        let value = Watched::load(paths, move |contents| parse(&names, contents))?;
        self.watched.push(Arc::new(value.clone()));
        Ok(Some(value))
    }
}
