//! The webhook's serving certificate, read from `cert_file` and `key_file` and re-read when
//! either changes (cert-manager and the chart's generated Secret rotate them in place):
//! a rustls [`ResolvesServerCert`] that hands every new handshake the pair in force. A
//! rotated pair that does not load (a half-written file, a key that does not match) keeps
//! the last good one serving and is logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokex_common::credentials::certs::parse_certified_key;
use tokex_common::credentials::{Poll, Polled, Watched};

/// The serving certificate in force, and how many changes of its files were seen.
pub struct ServingCert {
    pair: Watched<CertifiedKey>,
    /// Changes of the files acted on, whether the new pair loaded or not.
    changes: AtomicU64,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("files", &self.pair.paths())
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Reads the pair; the error names the file and what is wrong with it.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, String> {
        let (cert_path, key_path) = (cert_file.to_path_buf(), key_file.to_path_buf());
        let pair = Watched::load(vec![cert_path.clone(), key_path.clone()], move |c| {
            parse_certified_key(&cert_path, &c[0], &key_path, &c[1])
        })?;
        Ok(Self {
            pair,
            changes: AtomicU64::new(0),
        })
    }

    /// Re-reads the files if they changed; logs a reload or a kept pair.
    pub fn poll(&self) {
        match self.pair.poll() {
            Polled::Unchanged => return,
            Polled::Reloaded => {
                tracing::info!(files = %self.pair.describe(), "serving certificate reloaded");
            }
            Polled::Kept(error) => {
                tracing::warn!(files = %self.pair.describe(), %error, "new serving certificate unusable; keeping the last good one");
            }
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// How many changes of the files were acted on (reloaded or refused).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// The files, for messages.
    pub fn files(&self) -> Vec<PathBuf> {
        self.pair.paths().to_vec()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair.current())
    }
}

/// The server config: TLS 1.2 and 1.3 from ring, h2 and HTTP/1.1 by ALPN, the certificate
/// from `cert`.
pub fn server_config(cert: Arc<ServingCert>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
