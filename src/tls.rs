//! TLS client configuration shared by the exchange client and upstream connections.
//!
//! Trust is a base set (the built-in webpki roots, the operating system's store, or the
//! file `SSL_CERT_FILE` names) plus `tls.ca_file` and the authority's or route's own
//! `ca_file` (step 8 of the request flow); certificates and host names are always
//! verified. A client certificate can be presented for `tls_client_auth` (RFC 8705 §2).
//! The crypto provider is `ring`, chosen explicitly so no code path depends on a
//! process-wide default provider.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
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

/// Reads every certificate in a PEM file; a file with none is an error.
pub fn load_ca_file(path: &Path) -> Result<CaBundle, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_ca(path, &pem)
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
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} contains no certificates", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("no private key in {}: {e}", key_path.display()))?;
    let identity = ClientIdentity { certs, key };
    client_config(None, Some(&identity), &[]).map_err(|e| {
        format!(
            "{} and {} do not form a client identity: {e}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(identity)
}

/// Builds a client config trusting `extra` (its certificates and base set; without it,
/// the webpki roots), presenting `identity` when given, offering `alpn`.
pub fn client_config(
    extra: Option<&CaBundle>,
    identity: Option<&ClientIdentity>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    let base = extra.map_or_else(BaseRoots::default, |b| b.base.clone());
    if base.webpki {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots.add_parsable_certificates(base.loaded.iter().cloned());
    if let Some(bundle) = extra {
        for cert in &bundle.certs {
            roots.add(cert.clone())?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.certs.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The base of every `reqwest` client tokex builds: our rustls config (so no process-wide
/// crypto provider is needed), no redirects, and no proxy environment variables.
pub fn reqwest_builder(
    extra: Option<&CaBundle>,
    identity: Option<&ClientIdentity>,
) -> Result<reqwest::ClientBuilder, rustls::Error> {
    let tls = client_config(extra, identity, &[b"h2", b"http/1.1"])?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("tokex/", env!("CARGO_PKG_VERSION"))))
}
