//! Certificates tokex reads from files: CA bundles, the trust roots of a TLS client
//! (`ca_file`), and client identities, a certificate chain and its key for
//! `tls_client_auth` (RFC 8705 §2). Each parser proves what it accepts is usable, so a
//! rotated file that is not is refused while the last good one stays in force.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The trust roots of one TLS client: certificates read from PEM files (the last of which
/// is `path`) on top of a base set.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
    pub base: BaseRoots,
}

/// The roots under a bundle's own certificates; by default the compiled-in webpki roots.
#[derive(Debug, Clone)]
pub struct BaseRoots {
    /// The Mozilla roots compiled into tokex (webpki-roots).
    pub webpki: bool,
    /// Roots read once per config load and shared by every bundle: the operating
    /// system's store, or the file `SSL_CERT_FILE` names. Unlike a `ca_file`, a store is
    /// not the operator's to fix, so a certificate in it that rustls cannot use is skipped.
    pub loaded: Arc<Vec<CertificateDer<'static>>>,
}

impl Default for BaseRoots {
    fn default() -> Self {
        Self {
            webpki: true,
            loaded: Arc::default(),
        }
    }
}

/// Parses a CA bundle's PEM text; `path` names it in errors.
pub fn parse_ca(path: &Path, pem: &[u8]) -> Result<CaBundle, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} contains no certificates", path.display()));
    }
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots
            .add(cert.clone())
            .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
    }
    Ok(CaBundle {
        path: path.to_path_buf(),
        certs,
        base: BaseRoots::default(),
    })
}

/// A client certificate chain and its key, for `tls_client_auth`.
pub struct ClientIdentity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientIdentity([redacted])")
    }
}

/// Parses a certificate chain and key, and proves they form a usable client identity.
pub fn parse_identity(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<ClientIdentity, String> {
    let (certs, key) = parse_chain_and_key(cert_path, cert_pem, key_path, key_pem)?;
    // What rustls checks when a client config is built with this identity: a key it can
    // sign with, matching the certificate.
    certified(
        certs.clone(),
        key.clone_key(),
        (cert_path, key_path),
        "do not form a client identity",
    )?;
    Ok(ClientIdentity { certs, key })
}

/// Parses a certificate chain and its key, proven to belong together: what a server
/// presents.
pub fn parse_certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, String> {
    let (certs, key) = parse_chain_and_key(cert_path, cert_pem, key_path, key_pem)?;
    certified(
        certs,
        key,
        (cert_path, key_path),
        "are not a certificate and its key",
    )
}

/// A non-empty certificate chain and a private key (PKCS#8, PKCS#1 or SEC1), unchecked.
fn parse_chain_and_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} contains no certificates", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("no private key in {}: {e}", key_path.display()))?;
    Ok((certs, key))
}

/// The pair as rustls signs with it: a key it supports that matches the certificate;
/// else `(cert_path, key_path)` and what they `fail` to be.
fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    (cert_path, key_path): (&Path, &Path),
    fail: &str,
) -> Result<CertifiedKey, String> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        format!(
            "{} and {} {fail}: {e}",
            cert_path.display(),
            key_path.display()
        )
    })
}
