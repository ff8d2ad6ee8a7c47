//! What tokex tells operators besides metrics: the log, the audit file and traces, all
//! through one `tracing` subscriber.
//!
//! Logging: structured `tracing` output on stderr, as text or JSON lines, with the level
//! from `RUST_LOG` (default `info`). No token or secret is ever a field value: they live
//! in types whose Debug and Display print a placeholder.
//!
//! Audit events (`tokex::audit`, see [`crate::audit`]) go to the log like any event, or,
//! when `audit.file` is configured, to that file alone as JSON lines.
//!
//! Traces: tokex's spans ([`context`]) go to the OpenTelemetry layer alone, and only
//! while an exporter ([`export`]) is in force; otherwise no layer wants them and opening
//! one costs a filter check.
//!
//! - [`context`]: the request and exchange spans, W3C trace context in and out.
//! - [`export`]: the OTLP exporter, its settings from `tracing:` and `OTEL_*`, reloads.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::audit;

pub mod context;
pub mod export;

pub use context::{RequestTrace, SPANS};
pub use export::Export;

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

type Sink = Mutex<LineWriter<File>>;

fn audit_sink() -> &'static ArcSwapOption<Sink> {
    static SINK: OnceLock<ArcSwapOption<Sink>> = OnceLock::new();
    SINK.get_or_init(ArcSwapOption::empty)
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat) {
    // `RUST_LOG` as `level` or `target=level` pairs (`info`, `warn,tokex=debug`); an
    // unreadable value means the default. (Targets, not EnvFilter: no regex engine.)
    let env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let _ = subscriber(format, env).try_init();
}

/// The log at `env`'s levels in `format`, the audit file, and the span layer.
fn subscriber(format: LogFormat, env: Targets) -> impl tracing::Subscriber + Send + Sync {
    // While audit events go to their own file they stay out of the log. Trace spans
    // never enter it: the log would pay for every request's span.
    let not_filed = filter_fn(|m| {
        m.target() != SPANS && (m.target() != audit::TARGET || audit_sink().load().is_none())
    });
    // Colour only on a terminal: log files and `kubectl logs` must not get escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let audit_file = AuditFile.with_filter(filter_fn(|m| m.target() == audit::TARGET));
    Registry::default()
        .with(spans().with_filter(filter_fn(|m| m.target() == SPANS && export::on())))
        .with(log.with_filter(env.and(not_filed)))
        .with(audit_file)
}

/// The layer that turns tokex's spans into OpenTelemetry spans of the exporter in force:
/// their own attributes only (no code locations, threads or timings), and their context
/// current while they are entered, which outgoing requests propagate.
fn spans<S>() -> tracing_opentelemetry::OpenTelemetryLayer<S, export::CurrentTracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(export::CurrentTracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
}

/// Sends audit events to `path` (appending), or back to the log with `None`.
pub fn set_audit_file(path: Option<&Path>) -> std::io::Result<()> {
    let sink = match path {
        None => None,
        Some(p) => Some(Arc::new(Mutex::new(LineWriter::new(
            File::options().create(true).append(true).open(p)?,
        )))),
    };
    audit_sink().store(sink);
    Ok(())
}

/// Writes audit events to the configured file as one JSON object per line.
struct AuditFile;

impl<S: tracing::Subscriber> Layer<S> for AuditFile {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let Some(sink) = audit_sink().load_full() else {
            return;
        };
        let mut fields = JsonFields(serde_json::Map::new());
        fields.0.insert("time".into(), rfc3339_now().into());
        event.record(&mut fields);
        fields.0.remove("message");
        if let (Ok(mut out), Ok(line)) = (sink.lock(), serde_json::to_string(&fields.0)) {
            let _ = writeln!(out, "{line}");
        }
    }
}

struct JsonFields(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        // The actor chain is recorded as JSON text; keep it structured in the file.
        let v = match field.name() {
            "actor" => serde_json::from_str(value).unwrap_or_else(|_| value.into()),
            _ => value.into(),
        };
        self.0.insert(field.name().into(), v);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// The current UTC time as RFC 3339 with milliseconds.
fn rfc3339_now() -> String {
    let now = crate::clock::unix_time();
    let (secs, millis) = (now.as_secs(), now.subsec_millis());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no exporter in force tokex's spans are never created, even with the log at
    /// `trace`, which takes every other span: a request pays a filter check for its span.
    #[test]
    fn spans_are_not_created_without_an_exporter() {
        assert!(!export::on());
        let all = Targets::new().with_default(tracing::Level::TRACE);
        tracing::subscriber::with_default(subscriber(LogFormat::Text, all), || {
            assert!(tracing::info_span!(target: SPANS, "probe").is_disabled());
            assert!(!tracing::info_span!("any other").is_disabled());
        });
    }

    /// The timestamp has RFC 3339 shape and today's year.
    #[test]
    fn timestamp_shape() {
        let t = super::rfc3339_now();
        assert_eq!(
            (t.len(), &t[4..5], &t[10..11], &t[23..]),
            (24, "-", "T", "Z"),
            "{t}"
        );
        assert!(t.starts_with("20"), "{t}");
    }
}
