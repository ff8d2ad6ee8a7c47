//! Distributed tracing: OpenTelemetry spans over OTLP/HTTP (JSON), off by default.
//!
//! Each proxied request is a server span that joins the app's trace (W3C Trace Context
//! `traceparent`) or starts one (sampled at `sampling`); each exchange is a client span
//! under it. The upstream request carries a `traceparent` naming the request span, the
//! exchange request one naming the exchange span, so the upstream's and the AS's spans
//! nest under tokex's. Spans are batched to `{otlp_endpoint}/v1/traces` by a background
//! task; a slow or absent collector never delays a request (the queue is bounded and
//! drops). Attributes carry route, authority, cache hit, outcome and TTL left, never a
//! token.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::model::OtelSettings;

/// Spans waiting for export at most; past this new spans are dropped.
const QUEUE: usize = 4096;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The exporter: a queue to a background task that posts batches.
pub struct Otel {
    settings: OtelSettings,
    queue: mpsc::Sender<Value>,
}

/// A span's identity and where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl SpanContext {
    /// The `traceparent` value naming this span (W3C Trace Context §3.2).
    pub fn traceparent(&self) -> HeaderValue {
        let v = format!(
            "00-{}-{}-{}",
            hex(&self.trace_id),
            hex(&self.span_id),
            if self.sampled { "01" } else { "00" }
        );
        HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000000-0000000000000000-00",
        ))
    }

    /// Reads a valid `traceparent`; `None` for absent or malformed ones.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let v = headers.get("traceparent")?.to_str().ok()?;
        let mut parts = v.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || flags.len() != 2 {
            return None;
        }
        let trace_id: [u8; 16] = unhex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = unhex(span)?.try_into().ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }
}

/// A span being timed; `finish` queues it for export when sampled.
pub struct Span {
    pub context: SpanContext,
    parent: Option<[u8; 8]>,
    name: &'static str,
    kind: u8,
    start: u128,
    attributes: Mutex<Vec<(&'static str, Value)>>,
}

/// OTLP span kinds.
const SERVER: u8 = 2;
const CLIENT: u8 = 3;

impl Span {
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Ok(mut a) = self.attributes.lock() {
            a.push((key, value.into()));
        }
    }
}

impl Otel {
    /// Starts the exporter task. Needs a tokio runtime.
    pub fn start(settings: OtelSettings) -> Result<Self, String> {
        let client = crate::tls::reqwest_builder(None, None)
            .map_err(|e| e.to_string())?
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let url = format!("{}/v1/traces", settings.otlp_endpoint.trim_end_matches('/'));
        tokio::spawn(export(client, url, settings.service_name.clone(), rx));
        Ok(Self { settings, queue })
    }

    pub fn settings(&self) -> &OtelSettings {
        &self.settings
    }

    /// The server span of a request: a child of the app's span when it sent one.
    pub fn request_span(&self, headers: &HeaderMap) -> Span {
        let parent = SpanContext::from_headers(headers);
        let context = match parent {
            Some(p) => SpanContext {
                span_id: random(),
                ..p
            },
            None => SpanContext {
                trace_id: random(),
                span_id: random(),
                sampled: sample(self.settings.sampling),
            },
        };
        Span {
            context,
            parent: parent.map(|p| p.span_id),
            name: "tokex proxy",
            kind: SERVER,
            start: now_nanos(),
            attributes: Mutex::new(Vec::new()),
        }
    }

    /// A client span with `parent` as its parent (the exchange under the request).
    pub fn span_under(&self, parent: SpanContext, name: &'static str) -> Span {
        let context = SpanContext {
            span_id: random(),
            ..parent
        };
        Span {
            context,
            parent: Some(parent.span_id),
            name,
            kind: CLIENT,
            start: now_nanos(),
            attributes: Mutex::new(Vec::new()),
        }
    }

    /// Queues a finished span for export (dropped when unsampled or the queue is full).
    pub fn finish(&self, span: Span, error: bool) {
        if !span.context.sampled {
            return;
        }
        let attributes: Vec<Value> = span
            .attributes
            .into_inner()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
            .collect();
        let mut record = json!({
            "traceId": hex(&span.context.trace_id),
            "spanId": hex(&span.context.span_id),
            "name": span.name,
            "kind": span.kind,
            "startTimeUnixNano": span.start.to_string(),
            "endTimeUnixNano": now_nanos().to_string(),
            "attributes": attributes,
            "status": { "code": if error { 2 } else { 1 } },
        });
        if let Some(parent) = span.parent {
            record["parentSpanId"] = hex(&parent).into();
        }
        let _ = self.queue.try_send(record);
    }
}

fn any_value(v: Value) -> Value {
    match v {
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n.as_f64() }),
        Value::String(s) => json!({ "stringValue": s }),
        other => json!({ "stringValue": other.to_string() }),
    }
}

async fn export(
    client: reqwest::Client,
    url: String,
    service: String,
    mut rx: mpsc::Receiver<Value>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(s) => { batch.push(s); if batch.len() >= BATCH { break; } }
                    None => { post(&client, &url, &service, &mut batch).await; return; }
                },
                () = &mut deadline => break,
            }
        }
        post(&client, &url, &service, &mut batch).await;
    }
}

async fn post(client: &reqwest::Client, url: &str, service: &str, batch: &mut Vec<Value>) {
    if batch.is_empty() {
        return;
    }
    let body = json!({ "resourceSpans": [{
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
        "scopeSpans": [{ "scope": { "name": "tokex", "version": env!("CARGO_PKG_VERSION") }, "spans": std::mem::take(batch) }],
    }]});
    match client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::debug!(status = %r.status(), "OTLP export refused"),
        Err(e) => tracing::debug!(error = %e, "OTLP export failed"),
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn sample(ratio: f64) -> bool {
    let r: [u8; 8] = random();
    (u64::from_le_bytes(r) as f64 / u64::MAX as f64) < ratio
}

/// Random ids: a ChaCha-quality generator is not needed, only uniqueness; a per-thread
/// xorshift seeded from the OS avoids a syscall per request.
fn random<const N: usize>() -> [u8; N] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    let mut out = [0u8; N];
    STATE.with(|s| {
        for chunk in out.chunks_mut(8) {
            let mut x = s.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.set(x);
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    });
    if out.iter().all(|b| *b == 0) {
        out[0] = 1;
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2)
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// traceparent round-trips; malformed, zero and uppercase ids are refused.
    #[test]
    fn traceparent_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let c = SpanContext::from_headers(&h).unwrap();
        assert!(c.sampled);
        assert_eq!(
            c.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        for bad in [
            "junk",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            assert!(SpanContext::from_headers(&h).is_none(), "{bad}");
        }
    }

    /// Sampling 0 and 1 are exact; ids are not zero and differ.
    #[test]
    fn sampling_and_ids() {
        assert!((0..100).all(|_| sample(1.0)) && (0..100).all(|_| !sample(0.0)));
        let (a, b): ([u8; 16], [u8; 16]) = (random(), random());
        assert!(a != b && a != [0; 16]);
    }
}
