//! An in-process OTLP/HTTP collector on an ephemeral port: it accepts `POST /v1/traces`
//! (protobuf), decodes each export with the OpenTelemetry protocol's own types and hands
//! the spans to the test, with the raw bodies for checks on what was sent at all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::sync::mpsc;

use crate::support::{Task, full, serve};

/// One span as exported, with the resource it was exported under.
#[derive(Debug, Clone)]
pub struct Exported {
    pub span: opentelemetry_proto::tonic::trace::v1::Span,
    pub resource: Vec<KeyValue>,
}

impl Exported {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    /// The span's attributes by key.
    pub fn attributes(&self) -> HashMap<String, Value> {
        values(&self.span.attributes)
    }
    pub fn resource(&self) -> HashMap<String, Value> {
        values(&self.resource)
    }
}

/// One export request as it arrived.
#[derive(Debug)]
pub struct Post {
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// The collector; spans arrive in the order they were exported.
pub struct Collector {
    pub addr: SocketAddr,
    spans: mpsc::UnboundedReceiver<Exported>,
    posts: mpsc::UnboundedReceiver<Post>,
    _task: Task,
}

impl Collector {
    pub async fn start() -> Self {
        let (span_tx, spans) = mpsc::unbounded_channel();
        let (body_tx, posts) = mpsc::unbounded_channel();
        let (addr, task) = serve(move |req: http::Request<hyper::body::Incoming>| {
            let (span_tx, body_tx) = (span_tx.clone(), body_tx.clone());
            async move {
                let traces = req.method() == http::Method::POST && req.uri().path() == "/v1/traces";
                let protobuf = req.headers().get("content-type")
                    == Some(&http::HeaderValue::from_static("application/x-protobuf"));
                if !traces || !protobuf {
                    return full(404, "");
                }
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let Ok(export) = ExportTraceServiceRequest::decode(body.clone()) else {
                    return full(400, "not an OTLP trace export");
                };
                let _ = body_tx.send(Post {
                    headers: parts.headers,
                    body,
                });
                for resource_spans in export.resource_spans {
                    let resource = resource_spans
                        .resource
                        .map(|r| r.attributes)
                        .unwrap_or_default();
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            let resource = resource.clone();
                            let _ = span_tx.send(Exported { span, resource });
                        }
                    }
                }
                full(200, "")
            }
        })
        .await;
        Self {
            addr,
            spans,
            posts,
            _task: task,
        }
    }

    /// The base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT` or `tracing.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (10 s at most) until spans with all of `names` have arrived, and returns
    /// every span received so far.
    pub async fn spans_named(&mut self, names: &[&str]) -> Vec<Exported> {
        let mut got: Vec<Exported> = Vec::new();
        while !names.iter().all(|n| got.iter().any(|s| s.span.name == *n)) {
            let next = tokio::time::timeout(Duration::from_secs(10), self.spans.recv()).await;
            let names_seen: Vec<_> = got.iter().map(|s| s.span.name.clone()).collect();
            match next {
                Ok(Some(span)) => got.push(span),
                _ => panic!("spans {names:?} not exported; got {names_seen:?}"),
            }
        }
        got
    }

    /// The spans received and not yet returned, without waiting.
    pub fn received(&mut self) -> Vec<Exported> {
        std::iter::from_fn(|| self.spans.try_recv().ok()).collect()
    }

    /// Every export received so far.
    pub fn posts(&mut self) -> Vec<Post> {
        std::iter::from_fn(|| self.posts.try_recv().ok()).collect()
    }
}

fn values(attributes: &[KeyValue]) -> HashMap<String, Value> {
    attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
