//! Trust roots for token endpoints and upstreams: a base set (`tls.roots`, or the file
//! `SSL_CERT_FILE` names), `tls.ca_file`, and each authority's or route's own `ca_file`,
//! merged into the one bundle its TLS client is built from.
//!
//! `SSL_CERT_FILE` replaces the base set rather than adding to it, as it does for OpenSSL
//! and rustls-native-certs: setting it is how an operator narrows trust to a bundle of
//! their own, and a variable that only widened trust could not do that.

use std::path::PathBuf;
use std::sync::Arc;

use serde_saphyr::Spanned;

use rustls_pki_types::CertificateDer;

use super::sources::Sources;
use super::{Invalid, at, nowhere};
use crate::config::file::{self, FileTls};
use crate::config::model::{Roots, TlsSettings};
use crate::credentials::certs::{BaseRoots, CaBundle, parse_ca};
use crate::credentials::{MAX_FILE_BYTES, Watched, read_bounded};
use tokex_common::values::PathText;

/// What every bundle starts from.
#[derive(Default)]
pub(super) struct Trust {
    base: BaseRoots,
    /// Files every bundle reads before its own, watched for changes: `tls.ca_file`.
    shared: Vec<PathBuf>,
    /// Anything but the default (webpki roots alone), so every TLS client needs a bundle.
    custom: bool,
}

/// Reads the `tls` section and `SSL_CERT_FILE` into what every bundle starts from.
/// `SSL_CERT_FILE` and the system store are read here once, not per bundle: a host that
/// sets `SSL_CERT_FILE` to its full bundle would otherwise parse it for every authority
/// and route on every reload.
pub(super) fn trust(t: &FileTls, sources: &Sources) -> Result<(Trust, TlsSettings), Invalid> {
    let ssl_cert_file = sources
        .env("SSL_CERT_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let roots = t.roots.as_ref().map_or(Roots::Webpki, |r| roots(r.value));
    let base = match &ssl_cert_file {
        Some(file) => BaseRoots {
            webpki: false,
            loaded: Arc::new(read_store(file).map_err(|m| nowhere(format!("SSL_CERT_FILE: {m}")))?),
        },
        None if roots == Roots::Webpki => BaseRoots::default(),
        None if sources.offline => BaseRoots {
            webpki: roots == Roots::WebpkiAndSystem,
            loaded: Arc::default(),
        },
        None => BaseRoots {
            webpki: roots == Roots::WebpkiAndSystem,
            loaded: Arc::new(system_roots(sources).map_err(|m| match &t.roots {
                Some(r) => at(r, format!("tls.roots: {m}")),
                None => nowhere(format!("tls.roots: {m}")),
            })?),
        },
    };
    let ca_file = t.ca_file.as_ref().map(|f| (f, sources.resolve(&f.value)));
    let mut shared = Vec::new();
    if let Some((span, path)) = &ca_file {
        if !sources.offline {
            read(path).map_err(|m| at(*span, format!("tls.ca_file: {m}")))?;
        }
        shared.push(path.clone());
    }
    let settings = TlsSettings {
        roots,
        ca_file: ca_file.map(|(_, p)| p),
        ssl_cert_file,
    };
    let custom = !shared.is_empty() || !base.webpki || !base.loaded.is_empty();
    Ok((
        Trust {
            base,
            shared,
            custom,
        },
        settings,
    ))
}

fn roots(r: file::Roots) -> Roots {
    match r {
        file::Roots::Webpki => Roots::Webpki,
        file::Roots::System => Roots::System,
        file::Roots::WebpkiAndSystem => Roots::WebpkiAndSystem,
    }
}

/// The trust for one authority or route whose own `ca_file` (at key `key`) is `own`;
/// `None` when that is the default, the webpki roots alone.
pub(super) fn ca_bundle(
    own: Option<&Spanned<PathText>>,
    key: &str,
    sources: &mut Sources,
) -> Result<Option<Watched<CaBundle>>, Invalid> {
    let trust = &sources.trust;
    if !trust.custom && own.is_none() {
        return Ok(None);
    }
    let mut paths = trust.shared.clone();
    let base = trust.base.clone();
    if let Some(f) = own {
        paths.push(sources.resolve(&f.value));
    }
    if paths.is_empty() {
        let bundle = CaBundle {
            path: PathBuf::new(),
            certs: Vec::new(),
            base,
        };
        return Ok(Some(Watched::fixed(bundle)));
    }
    sources
        .watch(paths, move |p, c| merge(p, c, &base))
        .map_err(|m| match own {
            Some(f) => at(f, format!("{key}: {m}")),
            None => nowhere(format!("{key}: {m}")),
        })
}

/// One bundle of every certificate in `contents` (read from `paths`) over `base`.
fn merge(paths: &[PathBuf], contents: &[Vec<u8>], base: &BaseRoots) -> Result<CaBundle, String> {
    let mut certs = Vec::new();
    for (path, pem) in paths.iter().zip(contents) {
        certs.extend(parse_ca(path, pem)?.certs);
    }
    Ok(CaBundle {
        path: paths.last().cloned().unwrap_or_default(),
        certs,
        base: base.clone(),
    })
}

/// The certificates of a CA file every bundle uses, read here so its error points at its
/// own key.
fn read(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_bounded(path, MAX_FILE_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_ca(path, &pem).map(|b| b.certs)
}

/// The certificates of the bundle `SSL_CERT_FILE` names. Like the system store it often
/// is, it is read leniently: a certificate rustls cannot use is skipped when the TLS
/// clients are built, as rustls-native-certs users expect.
fn read_store(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = read_bounded(path, MAX_FILE_BYTES)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} contains no certificates", path.display()));
    }
    Ok(certs)
}

/// The operating system's store, read through rustls-native-certs (which honours
/// `SSL_CERT_DIR`); an empty store would silently fail every TLS connection, so it is an
/// error.
fn system_roots(sources: &Sources) -> Result<Vec<CertificateDer<'static>>, String> {
    let found = sources.system_roots();
    if found.certs.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(String::new, |e| format!(": {e}"));
        return Err(format!(
            "the operating system's certificate store has no certificates{why}"
        ));
    }
    Ok(found.certs)
}
