//! Traces: the `tokex` binary exporting to an in-process OTLP collector, configured by
//! the standard `OTEL_*` variables or the config's `tracing:` section, and W3C trace
//! context from the app through tokex to the upstream and the authorization server.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::otlp_collector::{Collector, Exported};
use crate::support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";

/// One request through tokex with the app's `traceparent` (sampled) and `tracestate`.
async fn send(tokex: &Spawned, subject: &str) -> u16 {
    client()
        .get(format!("http://{}/x", tokex.listen()))
        .header("host", "echo.internal")
        .bearer_auth(subject)
        .header("traceparent", format!("00-{TRACE}-{APP_SPAN}-01"))
        .header("tracestate", "vendor=1")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn named<'a>(spans: &'a [Exported], name: &str) -> &'a Exported {
    spans.iter().find(|s| s.span.name == name).unwrap()
}

/// Configured only through `OTEL_*`: the request's server span joins the app's trace
/// (followed although new traces are never sampled), the exchange's client span nests
/// under it, the upstream's `traceparent` names the server span and the AS's the exchange
/// span; the collector gets the configured headers and resource, spans are flushed at
/// shutdown, and no token or secret is in any export.
#[tokio::test]
async fn otel_environment_alone_exports_spans_and_propagates_context() {
    let mut collector = Collector::start().await;
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let endpoint = collector.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=k%201"),
        ("OTEL_SERVICE_NAME", "payments-sidecar"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ];
    let mut replica = TokexProcess::start_with(&config(&as_, &up.url()), &env).await;
    let tokex = &mut replica.process;
    assert_eq!(send(tokex, "subject-TOKEN-otel").await, 200);
    // The SDK batches every 5 s: the spans arrive now only if shutdown flushes them.
    assert!(tokex.terminate().await.success(), "{}", tokex.log());
    let spans = collector
        .spans_named(&["tokex proxy", "tokex exchange"])
        .await;
    let (proxy, exchange) = (
        named(&spans, "tokex proxy"),
        named(&spans, "tokex exchange"),
    );

    assert_eq!(
        (proxy.trace_id(), proxy.parent_span_id()),
        (TRACE.into(), APP_SPAN.into())
    );
    assert_eq!(proxy.span.kind, SpanKind::Server as i32);
    let a = proxy.attributes();
    assert_eq!(text(a.get("tokex.route")), Some("echo"));
    assert_eq!(text(a.get("http.request.method")), Some("GET"));
    assert_eq!(int(a.get("http.response.status_code")), Some(200));
    assert_eq!(text(a.get("tokex.outcome")), Some("ok"));
    assert_eq!(text(a.get("tokex.cache")), Some("miss"));
    assert!(
        int(a.get("tokex.ttl_left_s")).is_some_and(|s| s > 0 && s <= 300),
        "{a:?}"
    );

    assert_eq!(
        (exchange.trace_id(), exchange.parent_span_id()),
        (TRACE.into(), proxy.span_id())
    );
    assert_eq!(exchange.span.kind, SpanKind::Client as i32);
    assert_eq!(
        text(exchange.attributes().get("tokex.authority")),
        Some("main")
    );
    assert_eq!(text(exchange.attributes().get("tokex.outcome")), Some("ok"));

    let at_up = up.seen().pop().unwrap().headers;
    assert_eq!(
        at_up["traceparent"],
        format!("00-{TRACE}-{}-01", proxy.span_id())
    );
    assert_eq!(at_up["tracestate"], "vendor=1");
    let at_as = &as_.requests()[0].headers;
    assert_eq!(
        at_as["traceparent"],
        format!("00-{TRACE}-{}-01", exchange.span_id())
    );
    assert_eq!(at_as["tracestate"], "vendor=1");

    let r = proxy.resource();
    assert_eq!(text(r.get("service.name")), Some("payments-sidecar"));
    assert_eq!(text(r.get("deployment.environment")), Some("test"));
    let posts = collector.posts();
    assert!(posts.iter().all(|p| p.headers["x-collector-key"] == "k 1"));
    for post in &posts {
        let body = String::from_utf8_lossy(&post.body);
        for secret in ["subject-TOKEN", "narrowed-", "test-client-secret"] {
            assert!(!body.contains(secret), "{secret} exported");
        }
    }
}

/// The file's `tracing:` keys win over their `OTEL_*` variables (the endpoint variable
/// names a port nothing listens on); a new trace is sampled at the file's ratio and the
/// upstream's `traceparent` starts at tokex's span.
#[tokio::test]
async fn tracing_section_wins_over_the_environment() {
    let mut collector = Collector::start().await;
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = format!(
        "{}tracing: {{ otlp_endpoint: '{}', sampling: 1.0, service_name: from-file }}\n",
        config(&as_, &up.url()),
        collector.endpoint()
    );
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
        ("OTEL_SERVICE_NAME", "from-env"),
        ("OTEL_TRACES_SAMPLER", "always_off"),
    ];
    let mut replica = TokexProcess::start_with(&yaml, &env).await;
    let tokex = &mut replica.process;
    let r = client()
        .get(format!("http://{}/x", tokex.listen()))
        .header("host", "echo.internal")
        .bearer_auth("subject-TOKEN-file")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(tokex.terminate().await.success(), "{}", tokex.log());
    let spans = collector.spans_named(&["tokex proxy"]).await;
    let proxy = named(&spans, "tokex proxy");
    assert!(proxy.span.parent_span_id.is_empty(), "a new trace");
    assert_eq!(
        text(proxy.resource().get("service.name")),
        Some("from-file")
    );
    let at_up = up.seen().pop().unwrap().headers;
    assert_eq!(
        at_up["traceparent"],
        format!("00-{}-{}-01", proxy.trace_id(), proxy.span_id())
    );
    assert!(at_up.get("tracestate").is_none());
}

/// `OTEL_SDK_DISABLED=true` turns tracing off whatever the file says: nothing is
/// exported, and the app's trace context reaches the upstream and the AS unchanged.
#[tokio::test]
async fn sdk_disabled_turns_tracing_off() {
    let mut collector = Collector::start().await;
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = format!(
        "{}tracing: {{ otlp_endpoint: '{}', sampling: 1.0 }}\n",
        config(&as_, &up.url()),
        collector.endpoint()
    );
    let mut replica = TokexProcess::start_with(&yaml, &[("OTEL_SDK_DISABLED", "true")]).await;
    let tokex = &mut replica.process;
    assert_eq!(send(tokex, "subject-TOKEN-off").await, 200);
    assert!(tokex.terminate().await.success(), "{}", tokex.log());
    assert!(collector.posts().is_empty(), "exported while disabled");
    let app = format!("00-{TRACE}-{APP_SPAN}-01");
    let at_up = up.seen().pop().unwrap().headers;
    let at_as = as_.requests()[0].headers.clone();
    for seen in [at_up, at_as] {
        assert_eq!(seen["traceparent"], app);
        assert_eq!(seen["tracestate"], "vendor=1");
    }
}

/// A reload that changes `tracing:` sends later requests' spans to the new collector,
/// and the old exporter sends the spans it holds when the old config's last request is
/// done (batches are a minute apart here, so only that flush delivers them in time).
#[tokio::test]
async fn reload_moves_spans_to_the_new_collector() {
    let (mut first, mut second) = (Collector::start().await, Collector::start().await);
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let yaml = |c: &Collector| {
        format!(
            "listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\n{}tracing: {{ otlp_endpoint: '{}', sampling: 1.0 }}\n",
            config(&as_, &up.url()),
            c.endpoint()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokex.yaml");
    std::fs::write(&path, yaml(&first)).unwrap();
    let args = [std::ffi::OsStr::new("run"), "-c".as_ref(), path.as_os_str()];
    let env = [("OTEL_BSP_SCHEDULE_DELAY", "60000")];
    let mut tokex = spawn_tokex(&args, &env, "listening").await;
    assert_eq!(send(&tokex, "subject-TOKEN-1").await, 200);
    let next = dir.path().join("next.yaml");
    std::fs::write(&next, yaml(&second)).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let pid = tokex.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let before = first.spans_named(&["tokex proxy", "tokex exchange"]).await;
    assert!(before.iter().all(|s| s.trace_id() == TRACE));
    let r = client()
        .get(format!("http://{}/x", tokex.listen()))
        .header("host", "echo.internal")
        .bearer_auth("subject-TOKEN-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(tokex.terminate().await.success(), "{}", tokex.log());
    let after = second.spans_named(&["tokex proxy", "tokex exchange"]).await;
    assert!(after.iter().all(|s| s.trace_id() != TRACE), "a new trace");
    let late = first.received();
    assert!(late.iter().all(|s| s.trace_id() == TRACE), "{late:?}");
}
