//! TLS client configuration shared by the exchange client and upstream connections.
//!
//! Trust is the built-in webpki roots plus an optional `ca_file` (SPEC §4 step 8);
//! certificates and host names are always verified. The crypto provider is `ring`,
//! chosen explicitly so no code path depends on a process-wide default provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Serialize, Serializer};

/// Trust roots read from a PEM file, kept with the path they came from.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

impl Serialize for CaBundle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.path.display())
    }
}

/// Reads every certificate in a PEM file; a file with none is an error.
pub fn load_ca_file(path: &Path) -> Result<CaBundle, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} contains no certificates", path.display()));
    }
    Ok(CaBundle {
        path: path.to_path_buf(),
        certs,
    })
}

/// Builds a client config trusting webpki roots plus `extra`, offering `alpn`.
pub fn client_config(
    extra: Option<&CaBundle>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(bundle) = extra {
        for cert in &bundle.certs {
            roots.add(cert.clone())?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The base of every `reqwest` client tokex builds: our rustls config (so no process-wide
/// crypto provider is needed), no redirects, and no proxy environment variables.
pub fn reqwest_builder(extra: Option<&CaBundle>) -> Result<reqwest::ClientBuilder, rustls::Error> {
    let tls = client_config(extra, &[b"h2", b"http/1.1"])?;
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("tokex/", env!("CARGO_PKG_VERSION"))))
}
