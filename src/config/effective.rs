//! The effective config as `tokex check` prints it: the file's own format with every
//! default filled in, so the output is itself a config that loads to the same model and
//! prints the same again.
//!
//! Values come from the validated model (defaults applied, URLs and scopes normalised),
//! except what the model does not keep: which credentials were files (printed as their
//! absolute paths) and the `private_key_jwt` keys. Inline secrets, `${NAME}` ones
//! included, print as the redaction placeholder. Every string has `${` written as `$${`,
//! so a value that held a literal `${` is not expanded when the output is read back.

mod printed;

use std::path::Path;

use super::file::{self, AuthMethod, FileAuth, FileAuthority, FileConfig, FileRoute};
use super::model::{
    Authority, Config, Grant, MissingTokenPolicy, Roots, Route, SubjectSource, Unmatched,
};
use crate::secret::REDACTED;
use printed::*;
use tokex_common::values::{PathText, format_duration};

/// `config` (loaded from `file`, whose directory is `base`) in the file's YAML format.
pub(super) fn render(file: &FileConfig, config: &Config, base: &Path) -> Result<String, String> {
    let path = |p: &PathText| path(base, p);
    let printed = Printed {
        listen: config.listen.to_string(),
        admin: config.admin.to_string(),
        authorities: config
            .authorities
            .iter()
            .filter_map(|(name, a)| {
                let written = &file.authorities.get(name)?.value;
                Some((text(name), authority(a, written, &path)))
            })
            .collect(),
        routes: config
            .routes
            .iter()
            .zip(&file.routes)
            .map(|(r, written)| route(r, &written.value, &path))
            .collect(),
        cache: PrintedCache {
            max_entries: config.cache.max_entries,
            lifetimes: cache(&config.cache.defaults),
            shared: config
                .cache
                .shared
                .as_ref()
                .zip(file.cache.shared.as_ref())
                .map(|(m, w)| shared(m, &w.value, &path)),
        },
        timeouts: Ordered::from([
            ("upstream_connect", dur(config.timeouts.upstream_connect)),
            ("upstream_response", dur(config.timeouts.upstream_response)),
            (
                "client_header_read",
                dur(config.timeouts.client_header_read),
            ),
            ("idle", dur(config.timeouts.idle)),
            ("body_idle", dur(config.timeouts.body_idle)),
            ("drain", dur(config.timeouts.drain)),
        ]),
        limits: Ordered::from([
            ("max_connections", config.limits.max_connections),
            (
                "max_concurrent_exchanges",
                config.limits.max_concurrent_exchanges,
            ),
        ]),
        audit: PrintedAudit {
            enabled: config.audit.enabled,
            cache_hits: config.audit.cache_hits,
            file: file.audit.file.as_ref().map(&path),
        },
        // As written: a key left out comes from its `OTEL_*` variable at start.
        tracing: config.tracing.as_ref().map(|t| PrintedTracing {
            otlp_endpoint: t.otlp_endpoint.as_deref().map(text),
            sampling: t.sampling,
            service_name: t.service_name.as_deref().map(text),
        }),
        tls: PrintedTls {
            roots: roots(config.tls.roots),
            ca_file: file.tls.ca_file.as_ref().map(|f| path(&f.value)),
        },
        transparent: config.transparent.as_ref().map(|t| PrintedTransparent {
            listen: t.listen.to_string(),
            ports: t.ports.clone(),
            exclude_ports: t.exclude_ports.clone(),
            exclude_cidrs: t.exclude_cidrs.iter().map(ToString::to_string).collect(),
            proxy_uid: t.proxy_uid,
            unmatched: match t.unmatched {
                Unmatched::Passthrough => file::Unmatched::Passthrough,
                Unmatched::Reject => file::Unmatched::Reject,
            },
        }),
    };
    let yaml = serde_saphyr::to_string(&printed).map_err(|e| e.to_string())?;
    let mut header =
        String::from("# tokex effective config: defaults filled in, secrets redacted\n");
    if let Some(f) = &config.tls.ssl_cert_file {
        // Not a key of the file, so a comment: it replaces what tls.roots says.
        header.push_str(&format!(
            "# trust: the environment's SSL_CERT_FILE ({}) replaces tls.roots\n",
            f.display()
        ));
    }
    Ok(header + &yaml)
}

fn authority(
    a: &Authority,
    written: &FileAuthority,
    path: &impl Fn(&PathText) -> String,
) -> PrintedAuthority {
    PrintedAuthority {
        token_endpoint: a.discover.is_none().then(|| text(&a.token_endpoint)),
        allow_insecure_http: a.allow_insecure_http,
        issuer: a.issuer.as_deref().map(text),
        client_id: text(&a.client_id),
        auth: auth(
            &written.auth,
            &super::validate::assertion_audience(written),
            path,
        ),
        actor_token: a
            .actor_token
            .as_ref()
            .zip(written.actor_token.as_ref())
            .map(|(m, w)| {
                Ordered::from([("file", path(&w.file.value)), ("type", text(&m.token_type))])
            }),
        ca_file: written.ca_file.as_ref().map(|f| path(&f.value)),
        timeout: dur(a.timeout),
        attempt_timeout: dur(a.attempt_timeout),
        retries: a.retries,
        circuit_breaker: PrintedBreaker {
            failures: a.circuit_breaker.failures,
            open_for: dur(a.circuit_breaker.open_for),
        },
    }
}

fn auth(auth: &FileAuth, audience: &str, path: &impl Fn(&PathText) -> String) -> PrintedAuth {
    use AuthMethod as M;
    let method = auth.method.value;
    let mut rest = Ordered::default();
    let mut file = |key, f: &Option<serde_saphyr::Spanned<PathText>>| {
        if let Some(f) = f {
            rest.insert(key, path(&f.value));
        }
    };
    file("client_secret_file", &auth.client_secret_file);
    file("private_key_file", &auth.private_key_file);
    file("assertion_file", &auth.assertion_file);
    file("cert_file", &auth.cert_file);
    file("key_file", &auth.key_file);
    if method == M::PrivateKeyJwt {
        let alg = auth.alg.as_ref().map_or("ES256", |a| a.0.as_str());
        rest.insert("alg", text(alg));
        if let Some(kid) = &auth.key_id {
            rest.insert("key_id", text(&kid.0));
        }
        rest.insert("audience", text(audience));
    }
    if method == M::ClientAssertion {
        let kind = auth
            .assertion_type
            .as_ref()
            .map_or(crate::oauth::CLIENT_ASSERTION_TYPE_JWT_BEARER, |t| {
                t.0.as_str()
            });
        rest.insert("assertion_type", text(kind));
    }
    PrintedAuth {
        method,
        client_secret: auth.client_secret.as_ref().map(|_| REDACTED),
        rest,
    }
}

fn route(r: &Route, written: &FileRoute, path: &impl Fn(&PathText) -> String) -> PrintedRoute {
    let mut matcher = Ordered::default();
    if let Some(h) = &r.host {
        let host = match h.port {
            Some(port) => format!("{}:{port}", h.host),
            None => h.host.clone(),
        };
        matcher.insert("host", text(&host));
    }
    if let Some(p) = &r.path_prefix {
        matcher.insert("path_prefix", text(p));
    }
    if let Some(d) = &r.destination {
        matcher.insert("destination", d.to_string());
    }
    PrintedRoute {
        name: text(&r.name),
        matcher,
        strip_prefix: r.strip_prefix,
        upstream: r.upstream.as_ref().map(|u| text(&u.url)),
        ca_file: written.ca_file.as_ref().map(|f| path(&f.value)),
        on_missing_token: missing_token_policy(r.on_missing_token),
        exchange: exchange(r),
        cache: cache(&r.cache),
        timeout: dur(r.timeout),
        deadline: r.deadline.map(dur),
        retry_on_401: r.retry_on_401,
    }
}

fn missing_token_policy(p: MissingTokenPolicy) -> file::MissingTokenPolicy {
    match p {
        MissingTokenPolicy::Reject => file::MissingTokenPolicy::Reject,
        MissingTokenPolicy::Forward => file::MissingTokenPolicy::Forward,
        MissingTokenPolicy::ClientCredentials => file::MissingTokenPolicy::ClientCredentials,
    }
}

fn roots(r: Roots) -> file::Roots {
    match r {
        Roots::Webpki => file::Roots::Webpki,
        Roots::System => file::Roots::System,
        Roots::WebpkiAndSystem => file::Roots::WebpkiAndSystem,
    }
}

fn exchange(r: &Route) -> PrintedExchange {
    let Some(e) = &r.exchange else {
        return PrintedExchange::None("none");
    };
    let mut spec = match e.first_leg.as_deref() {
        None => leg(e, true),
        Some(first) => Ordered::from([(
            "chain",
            PrintedValue::Legs(vec![leg(first, false), leg(e, false)]),
        )]),
    };
    let from = match &e.subject_token_from {
        SubjectSource::Authorization => ("header", "Authorization".to_string()),
        SubjectSource::Header(h) => ("header", h.as_str().to_string()),
        SubjectSource::Cookie(c) => ("cookie", text(c)),
    };
    spec.insert(
        "subject_token_from",
        PrintedValue::Map(Ordered::from([from])),
    );
    let header = match e.inject.header.as_str() {
        "authorization" => "Authorization".to_string(),
        other => other.to_string(),
    };
    let scheme = e
        .inject
        .scheme
        .as_deref()
        .map_or_else(|| "none".to_string(), text);
    let inject = Ordered::from([("header", header), ("scheme", scheme)]);
    spec.insert("inject", PrintedValue::Map(inject));
    PrintedExchange::Spec(spec)
}

/// What one token request sends; `grant` only where the file may choose it (a chain's
/// legs have theirs fixed).
fn leg(e: &super::model::ExchangeParams, grant: bool) -> Ordered<PrintedValue> {
    let mut spec = Ordered::default();
    let mut put = |key, value: Option<&str>| {
        if let Some(v) = value {
            spec.insert(key, PrintedValue::Text(text(v)));
        }
    };
    put("authority", Some(&e.authority));
    put("grant", grant.then(|| e.grant.as_str()));
    put("audience", e.audience.as_deref());
    put("resource", e.resource.as_deref());
    put("scope", e.scope.as_deref());
    // jwt-bearer fixes both types, and refuses them written.
    if e.grant == Grant::TokenExchange {
        put("subject_token_type", Some(&e.subject_token_type));
        put("requested_token_type", Some(&e.requested_token_type));
    }
    if !e.extra_params.is_empty() {
        let extra = e
            .extra_params
            .iter()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect();
        spec.insert("extra_params", PrintedValue::Named(extra));
    }
    spec
}

fn cache(c: &super::model::CacheSettings) -> Ordered<String> {
    Ordered::from([
        ("max_ttl", dur(c.max_ttl)),
        ("default_ttl", dur(c.default_ttl)),
        ("early_expiry", dur(c.early_expiry)),
        ("refresh_ahead", dur(c.refresh_ahead)),
    ])
}

fn shared(
    m: &super::model::SharedCacheSettings,
    written: &file::FileSharedCache,
    path: &impl Fn(&PathText) -> String,
) -> PrintedShared {
    let file = |f: &Option<serde_saphyr::Spanned<PathText>>| f.as_ref().map(|f| path(&f.value));
    PrintedShared {
        url: text(&m.url),
        key_file: path(&written.key_file.value),
        password_file: file(&written.password_file),
        ca_file: file(&written.ca_file),
        timeout: dur(m.timeout),
        lock: m
            .lock
            .map(|l| Ordered::from([("poll_interval", dur(l.poll_interval))])),
        circuit_breaker: PrintedBreaker {
            failures: m.circuit_breaker.failures,
            open_for: dur(m.circuit_breaker.open_for),
        },
    }
}

fn dur(d: std::time::Duration) -> String {
    format_duration(d)
}

/// A string as the file must write it: `${` escaped, so it is read back as itself.
fn text(s: &str) -> String {
    s.replace("${", "$${")
}

/// A configured path as the absolute path it names, so the output loads from anywhere.
fn path(base: &Path, p: &PathText) -> String {
    let joined = super::validate::resolve(base, p);
    let absolute = std::path::absolute(&joined).unwrap_or(joined);
    text(&absolute.display().to_string())
}
