//! TLS client configuration shared by the exchange client and upstream connections.
//!
//! Trust is a base set (the built-in webpki roots, the operating system's store, or the
//! file `SSL_CERT_FILE` names) plus `tls.ca_file` and the authority's or route's own
//! `ca_file` (step 8 of the request flow); certificates and host names are always
//! verified. A client certificate can be presented for `tls_client_auth` (RFC 8705 §2).
//! The crypto provider is `ring`, chosen explicitly so no code path depends on a
//! process-wide default provider.

use std::sync::Arc;

use rustls::RootCertStore;

use crate::credentials::certs::{BaseRoots, CaBundle, ClientIdentity};

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
