//! tokex's spans and W3C Trace Context (`traceparent`, `tracestate`) in and out.
//!
//! Each proxied request is a server span that joins the app's trace, or starts one; each
//! exchange is a client span under it. The upstream request carries a `traceparent`
//! naming the request span, the token request one naming the exchange span. The code
//! that makes outgoing requests takes the context from the span it runs in
//! ([`inject_current`]), so no trace context is passed down by hand.
//!
//! With tracing off the spans are never created (no layer wants them), the app's
//! `traceparent` and `tracestate` reach the upstream untouched with its other headers,
//! and the app's context, when valid, is what the token request carries: the request
//! headers are parsed for it only when an exchange happens.
//!
//! Span attributes: `tokex.route`, `http.request.method`, `http.response.status_code`,
//! `tokex.outcome`, `tokex.cache`, `tokex.ttl_left_s`, and `tokex.authority` on exchange
//! spans. None is ever a token.

use std::future::Future;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of tokex's trace spans: only the span layer takes them, the log never.
pub const SPANS: &str = "tokex::spans";

/// The trace of one request from the app, from its arrival to its response.
pub struct RequestTrace {
    span: tracing::Span,
}

impl RequestTrace {
    /// Opens the request's server span as a child of the app's context in `headers`, and
    /// puts the span's `traceparent` in `headers` in place of the app's, for the upstream.
    /// With tracing off, `headers` are not looked at.
    pub fn start(headers: &mut HeaderMap) -> Self {
        let span = tracing::info_span!(
            target: SPANS,
            "tokex proxy",
            otel.kind = "server",
            otel.status_code = Empty,
            "tokex.route" = Empty,
            "http.request.method" = Empty,
            "http.response.status_code" = Empty,
            "tokex.outcome" = Empty,
            "tokex.cache" = Empty,
            "tokex.ttl_left_s" = Empty,
        );
        if !span.is_disabled() {
            let _ = span.set_parent(extract(headers));
            inject(&span.context(), headers);
        }
        Self { span }
    }

    /// Runs `work` (the rest of the request) in the request's span. Not an async
    /// wrapper: entering a disabled span costs less than polling through one.
    pub fn around<F: Future>(&self, work: F) -> tracing::instrument::Instrumented<F> {
        work.instrument(self.span.clone())
    }

    /// Records how the request ended in `response`: its status, and as the outcome `ok`
    /// or its `tokex-error` code.
    pub fn finish<B>(&self, route: &str, method: &http::Method, response: &http::Response<B>) {
        if self.span.is_disabled() {
            return;
        }
        let status = response.status().as_u16();
        let outcome = response
            .headers()
            .get(crate::error::TOKEX_ERROR)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("ok");
        let s = &self.span;
        s.record("tokex.route", route);
        s.record("http.request.method", method.as_str());
        // As i64: the span layer exports an unsigned value as text.
        s.record("http.response.status_code", i64::from(status));
        s.record("tokex.outcome", outcome);
        s.record(
            "otel.status_code",
            if status >= 500 { "error" } else { "ok" },
        );
    }
}

/// The trace of one exchange: a client span under the span it is opened in (the
/// request's, or none for a background refresh, which then starts its own trace).
pub struct ExchangeTrace {
    span: tracing::Span,
    /// With tracing off: the app's valid context, for the token request.
    app: Option<Context>,
}

impl ExchangeTrace {
    /// `app_headers`: the request's, read only with tracing off (and only now, on a
    /// cache miss, so a request served from the cache never parses them).
    pub fn start(authority: &str, app_headers: Option<&HeaderMap>) -> Self {
        let span = tracing::info_span!(
            target: SPANS,
            "tokex exchange",
            otel.kind = "client",
            otel.status_code = Empty,
            "tokex.authority" = authority,
            "tokex.outcome" = Empty,
        );
        let app = match app_headers {
            Some(headers) if span.is_disabled() => {
                Some(extract(headers)).filter(|cx| cx.span().span_context().is_valid())
            }
            _ => None,
        };
        Self { span, app }
    }

    /// Runs the token request in the exchange's span, or in the app's context.
    pub async fn around<F: Future>(&self, work: F) -> F::Output {
        run_in(&self.span, self.app.as_ref(), work).await
    }

    /// Records the outcome (`ok` or the error code) and ends the span.
    pub fn finish(self, outcome: &str) {
        self.span.record("tokex.outcome", outcome);
        let status = if outcome == "ok" { "ok" } else { "error" };
        self.span.record("otel.status_code", status);
    }
}

/// `work` in `span` when tracing is on, else in the app's context when there is one.
async fn run_in<F: Future>(span: &tracing::Span, app: Option<&Context>, work: F) -> F::Output {
    match app {
        _ if !span.is_disabled() => work.instrument(span.clone()).await,
        Some(app) => work.with_context(app.clone()).await,
        None => work.await,
    }
}

/// Records a token lookup on the request span it runs in: hit or miss, and the
/// narrowed token's seconds left.
pub fn note_lookup(cache: &str, ttl_left_s: u64) {
    let span = tracing::Span::current();
    span.record("tokex.cache", cache);
    span.record(
        "tokex.ttl_left_s",
        i64::try_from(ttl_left_s).unwrap_or(i64::MAX),
    );
}

/// Adds the `traceparent` (and `tracestate`) of the span or context this runs in to an
/// outgoing request's `headers`; nothing outside a valid trace.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&Context::current(), headers);
}

fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut Headers(headers));
}

/// Sets propagated fields; an empty one (a `tracestate` with no entries) is removed, so
/// an app's stale value does not outlive the trace it belonged to.
struct Headers<'a>(&'a mut HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            return;
        };
        match HeaderValue::from_str(&value) {
            Ok(v) if !value.is_empty() => drop(self.0.insert(name, v)),
            _ => drop(self.0.remove(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    /// With tracing off, the app's valid context is what the token request carries, and
    /// the request's headers are left as they came; a malformed or uppercase
    /// `traceparent` is not passed on.
    #[tokio::test]
    async fn without_tracing_the_app_context_is_carried() {
        let mut app = headers(&[("traceparent", APP), ("tracestate", "vendor=1")]);
        let _request = RequestTrace::start(&mut app);
        assert_eq!(app.len(), 2);
        assert_eq!(app["traceparent"], APP);
        let to_as = |app: HeaderMap| async move {
            let trace = ExchangeTrace::start("main", Some(&app));
            let mut out = HeaderMap::new();
            trace.around(async { inject_current(&mut out) }).await;
            out
        };
        let sent = to_as(app).await;
        assert_eq!(sent["traceparent"], APP);
        assert_eq!(sent["tracestate"], "vendor=1");
        for bad in [
            "junk",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let sent = to_as(headers(&[("traceparent", bad), ("tracestate", "vendor=1")])).await;
            assert!(sent.is_empty(), "{bad}: {sent:?}");
        }
    }

    /// An empty `tracestate` removes a stale one instead of sending an empty header.
    #[test]
    fn empty_fields_are_removed() {
        let mut h = headers(&[("tracestate", "stale=1")]);
        Headers(&mut h).set("tracestate", String::new());
        Headers(&mut h).set("traceparent", APP.into());
        assert_eq!(h.len(), 1);
        assert_eq!(h["traceparent"], APP);
    }
}
