//! Trace export: the OpenTelemetry SDK batching tokex's spans to an OTLP/HTTP collector
//! (protobuf).
//!
//! What is in force comes from the config's `tracing:` section and the standard `OTEL_*`
//! variables: a key written in the file wins over its variable, a variable over tokex's
//! default, and `OTEL_SDK_DISABLED=true` turns tracing off whatever the file says.
//! Headers, timeouts, compression, batch sizes and resource attributes are the SDK's own
//! `OTEL_*` variables. The process environment is read here and by the SDK, nowhere else.
//!
//! One exporter is in force at a time (the span layer reads it through [`activate`]); a
//! reload that leaves `tracing:` as it was keeps it. One that changes it starts another,
//! and the old one flushes once the last request of the old config has finished, so a
//! reload loses no span. Spans queue in a bounded buffer drained by the SDK's own thread:
//! a slow or absent collector never delays a request, it only drops spans.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use opentelemetry::trace::{SpanBuilder, Tracer, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};

use crate::config::model::TracingSettings;

/// Ratio of new traces recorded when neither the file nor `OTEL_TRACES_SAMPLER` says.
pub const DEFAULT_SAMPLING: f64 = 0.1;
/// How long a flush at shutdown may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds each export request; `OTEL_EXPORTER_OTLP_TIMEOUT` bounds an export's retries.
const EXPORT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SERVICE_NAME: &str = "tokex";

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the trace exporter: no async runtime")]
    NoRuntime,
    #[error("building the trace exporter's HTTP client: {0}")]
    Client(String),
    #[error("building the trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What the `OTEL_*` variables say about whether and how to trace, read once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    /// `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`.
    pub disabled: bool,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    pub endpoint: bool,
    /// `OTEL_TRACES_SAMPLER` is set (the SDK reads it with its `_ARG`).
    pub sampler: bool,
}

impl Environment {
    /// The variables as `var` returns them.
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        let is = |name: &str, value: &str| {
            var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
        };
        Self {
            disabled: is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none"),
            endpoint: set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                || set("OTEL_EXPORTER_OTLP_ENDPOINT"),
            sampler: set("OTEL_TRACES_SAMPLER"),
        }
    }

    /// This process's environment.
    pub fn process() -> &'static Self {
        static ENV: OnceLock<Environment> = OnceLock::new();
        ENV.get_or_init(|| Self::read(|name| std::env::var(name).ok()))
    }

    /// Tracing is on with a `tracing:` section or an endpoint variable, unless disabled.
    pub fn enabled(&self, file: Option<&TracingSettings>) -> bool {
        !self.disabled && (file.is_some() || self.endpoint)
    }

    /// The sampler: the file's ratio, else `None` for the SDK to read
    /// `OTEL_TRACES_SAMPLER`, else tokex's default ratio. Parent-based, so a trace the app
    /// sampled is always followed and one it did not is never recorded.
    pub fn sampler(&self, file: Option<&TracingSettings>) -> Option<Sampler> {
        match file.and_then(|t| t.sampling) {
            Some(ratio) => Some(parent_ratio(ratio)),
            None if self.sampler => None,
            None => Some(parent_ratio(DEFAULT_SAMPLING)),
        }
    }
}

fn parent_ratio(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

/// A running exporter and the settings it was started with.
pub struct Export {
    file: Option<TracingSettings>,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Export {
    /// The exporter `file` (the config's `tracing:`) and the environment ask for: `None`
    /// when tracing is off, `previous` again when it was started with the same section.
    /// Needs a tokio runtime, which carries the export requests.
    pub fn for_config(
        file: Option<&TracingSettings>,
        env: &Environment,
        previous: Option<&Arc<Export>>,
    ) -> Result<Option<Arc<Export>>, Error> {
        if !env.enabled(file) {
            return Ok(None);
        }
        if let Some(p) = previous.filter(|p| p.file.as_ref() == file) {
            return Ok(Some(p.clone()));
        }
        Self::start(file, env).map(|e| Some(Arc::new(e)))
    }

    fn start(file: Option<&TracingSettings>, env: &Environment) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let client = crate::tls::reqwest_builder(None, None)
            .map_err(|e| Error::Client(e.to_string()))?
            .timeout(EXPORT_REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime { client, runtime });
        if let Some(base) = file.and_then(|t| t.otlp_endpoint.as_deref()) {
            exporter = exporter.with_endpoint(format!("{base}/v1/traces"));
        }
        let processor = BatchSpanProcessor::builder(exporter.build()?).build();
        let mut provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource(file.and_then(|t| t.service_name.as_deref())));
        if let Some(sampler) = env.sampler(file) {
            provider = provider.with_sampler(sampler);
        }
        let provider = provider.build();
        let scope = InstrumentationScope::builder(SERVICE_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(Self {
            file: file.cloned(),
            provider,
            tracer,
        })
    }

    /// Exports what is queued and stops; off the runtime's threads, whose tasks carry
    /// the export requests.
    async fn flush(&self) {
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
            .await;
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        // The SDK would flush on the thread that drops the last reference and block it
        // while the runtime carries the requests; a runtime thread would wait on itself.
        let provider = self.provider.clone();
        let flush = move || {
            let _ = provider.shutdown_with_timeout(FLUSH_TIMEOUT);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(flush)),
            Err(_) => flush(),
        }
    }
}

/// `service.name` from the file, else from `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// (the SDK reads them), else `tokex`; `service.version` is tokex's.
fn resource(service_name: Option<&str>) -> Resource {
    let detected = Resource::builder().build();
    let from_env = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|n| !n.as_str().starts_with("unknown_service"));
    let name = match service_name {
        Some(n) => Some(n.to_string()),
        None if from_env => None,
        None => Some(SERVICE_NAME.to_string()),
    };
    let mut builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(name) = name {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// The exporter in force, and whether there is one (read for every span tokex opens).
fn active() -> &'static ArcSwapOption<Export> {
    static ACTIVE: OnceLock<ArcSwapOption<Export>> = OnceLock::new();
    ACTIVE.get_or_init(ArcSwapOption::empty)
}
static ON: AtomicBool = AtomicBool::new(false);

/// Puts `export` in force for the spans opened from now on; `None` stops tracing.
pub fn activate(export: Option<Arc<Export>>) {
    let on = export.is_some();
    active().store(export);
    ON.store(on, Ordering::Release);
}

/// Whether an exporter is in force.
pub fn on() -> bool {
    ON.load(Ordering::Acquire)
}

/// At exit: stops tracing and exports what is queued.
pub async fn shutdown() {
    ON.store(false, Ordering::Release);
    if let Some(export) = active().swap(None) {
        export.flush().await;
    }
}

/// The tracer the span layer starts spans with: the one of the exporter in force when the
/// span starts, which the span then keeps to its end.
#[derive(Debug, Clone, Copy)]
pub(super) struct CurrentTracer;

impl Tracer for CurrentTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        match &*active().load() {
            Some(export) => export.tracer.build_with_context(builder, parent_cx),
            // Tracing stopped between the span's opening and its start: record nothing.
            None => idle().build_with_context(builder, parent_cx),
        }
    }
}

fn idle() -> &'static SdkTracer {
    static IDLE: OnceLock<SdkTracer> = OnceLock::new();
    IDLE.get_or_init(|| SdkTracerProvider::builder().build().tracer(SERVICE_NAME))
}

/// tokex's reqwest client (rustls, its trust roots, no proxy variables), driven on the
/// tokio runtime: the SDK's export thread has none of its own.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Environment {
        Environment::read(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn section() -> TracingSettings {
        TracingSettings {
            otlp_endpoint: None,
            sampling: None,
            service_name: None,
        }
    }

    /// On with the file's section or an endpoint variable; `OTEL_SDK_DISABLED` and
    /// `OTEL_TRACES_EXPORTER=none` win over both; an empty variable is unset.
    #[test]
    fn when_tracing_is_on() {
        let file = section();
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let traces = (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces",
        );
        for (vars, with_file, on) in [
            (&[][..], false, false),
            (&[][..], true, true),
            (&[endpoint][..], false, true),
            (&[traces][..], false, true),
            (&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")][..], false, false),
            (&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")][..], true, false),
            (&[endpoint, ("OTEL_SDK_DISABLED", "false")][..], false, true),
            (
                &[endpoint, ("OTEL_TRACES_EXPORTER", "none")][..],
                true,
                false,
            ),
        ] {
            let file = with_file.then_some(&file);
            assert_eq!(
                env(vars).enabled(file),
                on,
                "{vars:?} with file {with_file}"
            );
        }
    }

    /// The file's ratio wins over `OTEL_TRACES_SAMPLER`, which wins over the default.
    #[test]
    fn sampler_precedence() {
        let ratio = |s: Option<Sampler>| match s {
            Some(Sampler::ParentBased(inner)) => Some(format!("{inner:?}")),
            None => None,
            Some(other) => panic!("not parent-based: {other:?}"),
        };
        let with_ratio = TracingSettings {
            sampling: Some(0.5),
            ..section()
        };
        let by_env = env(&[("OTEL_TRACES_SAMPLER", "always_on")]);
        assert_eq!(
            ratio(by_env.sampler(Some(&with_ratio))),
            Some(format!("{:?}", Sampler::TraceIdRatioBased(0.5)))
        );
        assert_eq!(ratio(by_env.sampler(Some(&section()))), None);
        assert_eq!(
            ratio(env(&[]).sampler(None)),
            Some(format!(
                "{:?}",
                Sampler::TraceIdRatioBased(DEFAULT_SAMPLING)
            ))
        );
    }

    /// A reload with the same section keeps the running exporter; a changed one, or
    /// tracing turned off, does not.
    #[tokio::test]
    async fn reload_keeps_an_unchanged_exporter() {
        let file = TracingSettings {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            ..section()
        };
        let env = env(&[]);
        let first = Export::for_config(Some(&file), &env, None)
            .unwrap()
            .unwrap();
        let same = Export::for_config(Some(&file), &env, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first, same.as_ref().unwrap()));
        let changed = TracingSettings {
            sampling: Some(1.0),
            ..file.clone()
        };
        let other = Export::for_config(Some(&changed), &env, Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(&first, other.as_ref().unwrap()));
        assert!(
            Export::for_config(None, &env, Some(&first))
                .unwrap()
                .is_none()
        );
    }
}
