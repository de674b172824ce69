//! OpenTelemetry traces: each request's spans, exported over OTLP/HTTP in protobuf.
//!
//! The spans are built from the finished [`RequestRecord`], not from live span objects carried through the
//! request path: the record already knows when each attempt started and ended, so the request path pays
//! nothing for tracing beyond the span ids it notes (and sends upstream in `traceparent`). One span per
//! request (kind SERVER, the caller's span as parent when it sent a `traceparent`) and one child per attempt
//! (kind CLIENT), named and attributed after the OpenTelemetry GenAI semantic conventions
//! (`gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.usage.*`, ...), with the
//! gateway's own facts under `switchyard.*`.
//!
//! Export goes through a bounded [`Batcher`]: a slow or absent collector drops spans (counted in
//! `switchyard_trace_requests_dropped_total`), never delays a request.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use crate::batch::{BatchSettings, Batcher};
use crate::config::TracesConfig;
use crate::observe::{AttemptRecord, RequestRecord, RequestSink};

const DROPPED: &str = "switchyard_trace_requests_dropped_total";

/// The request sink that queues sampled records for export.
pub struct Tracer {
    queue: Batcher<Arc<RequestRecord>>,
    sample_ratio: f64,
}

impl Tracer {
    /// The tracer and its exporter task; at shutdown call [`Tracer::stop`] and await the handle.
    pub fn start(cfg: &TracesConfig) -> Result<(Arc<Tracer>, tokio::task::JoinHandle<()>), String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
        let export = Arc::new(Export {
            http,
            endpoint: cfg.endpoint.clone(),
            headers: cfg.headers.clone(),
            resource: resource(&cfg.service_name),
            warned: std::sync::atomic::AtomicU64::new(0),
        });
        let settings = BatchSettings { queue: cfg.queue, batch: cfg.batch, linger: cfg.flush, dropped_metric: DROPPED };
        let (queue, writer) = Batcher::start(settings, move |batch: Vec<Arc<RequestRecord>>| {
            let export = Arc::clone(&export);
            async move { export.send(&batch).await }
        });
        Ok((Arc::new(Tracer { queue, sample_ratio: cfg.sample_ratio }), writer))
    }

    /// Asks the exporter to send what is queued and end.
    pub fn stop(&self) {
        self.queue.stop();
    }

    /// Parent-based: the caller's sampling flag decides when it sent one; otherwise `sample_ratio` of the
    /// trace ids (taken from the id itself, so every replica decides the same for one trace).
    fn sampled(&self, r: &RequestRecord) -> bool {
        if let Some(s) = r.parent_sampled {
            return s;
        }
        if self.sample_ratio >= 1.0 {
            return true;
        }
        let head = r.trace_id.get(16..32).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
        (head as f64) < self.sample_ratio * (u64::MAX as f64)
    }
}

impl RequestSink for Tracer {
    fn record(&self, r: &Arc<RequestRecord>) {
        if self.sampled(r) {
            self.queue.send(Arc::clone(r));
        }
    }
}

struct Export {
    http: reqwest::Client,
    endpoint: String,
    headers: Vec<(String, String)>,
    resource: Resource,
    /// Unix seconds of the last warning, so that a collector that is down is said once a minute.
    warned: std::sync::atomic::AtomicU64,
}

impl Export {
    /// POSTs one batch; the number of requests whose spans were lost.
    async fn send(&self, batch: &[Arc<RequestRecord>]) -> usize {
        let body = encode(&self.resource, batch);
        let mut req = self.http.post(&self.endpoint).header("content-type", "application/x-protobuf").body(body);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let problem = match req.send().await {
            Ok(resp) if resp.status().is_success() => None,
            Ok(resp) => Some(format!("the collector answered {}", resp.status())),
            Err(e) => Some(crate::images::error_chain(&e)),
        };
        match problem {
            None => {
                metrics::counter!("switchyard_trace_requests_exported_total").increment(batch.len() as u64);
                0
            }
            Some(p) => {
                let now = crate::governance::meter::now_ms() as u64 / 1000;
                let last = self.warned.load(std::sync::atomic::Ordering::Relaxed);
                if now >= last + 60
                    && self
                        .warned
                        .compare_exchange(last, now, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(endpoint = %self.endpoint, requests = batch.len(), "cannot export traces: {p} (said once a minute)");
                }
                batch.len()
            }
        }
    }
}

fn resource(service: &str) -> Resource {
    Resource { attributes: vec![kv("service.name", service), kv("service.version", env!("CARGO_PKG_VERSION"))], ..Default::default() }
}

/// The OTLP request body for `batch`: protobuf, as `application/x-protobuf` expects.
pub fn encode(resource: &Resource, batch: &[Arc<RequestRecord>]) -> Vec<u8> {
    let spans = batch.iter().flat_map(|r| spans(r)).collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "switchyard".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    req.encode_to_vec()
}

/// The request's span and one child per attempt.
pub fn spans(r: &RequestRecord) -> Vec<Span> {
    let trace_id = hex_bytes(&r.trace_id);
    let span_id = hex_bytes(&r.span_id);
    if trace_id.len() != 16 || span_id.len() != 8 {
        return Vec::new();
    }
    let op = operation(&r.endpoint);
    let start = (r.at_ms.max(0) as u64).saturating_mul(1_000_000);
    let winner = r.attempts.iter().rev().find(|a| a.outcome == "success");
    let mut attrs = vec![kv("gen_ai.operation.name", op), kv("http.request.method", r.method.as_str()), kv("url.path", r.path.as_str())];
    attrs.push(kv("switchyard.request_id", r.id.as_str()));
    if let Some(m) = &r.model {
        attrs.push(kv("gen_ai.request.model", m.as_str()));
    }
    if let Some(m) = &r.served_model {
        attrs.push(kv("gen_ai.response.model", m.as_str()));
    }
    if let Some(a) = winner {
        attrs.push(kv("gen_ai.provider.name", provider_name(&a.kind)));
    }
    if let Some(p) = &r.provider {
        attrs.push(kv("switchyard.provider", p.as_str()));
    }
    if let Some(k) = &r.key {
        attrs.push(kv("switchyard.key", k.as_str()));
    }
    if let Some(s) = r.status {
        attrs.push(int("http.response.status_code", i64::from(s)));
    }
    if let Some(t) = r.tokens_in {
        attrs.push(int("gen_ai.usage.input_tokens", t as i64));
    }
    if let Some(t) = r.tokens_out {
        attrs.push(int("gen_ai.usage.output_tokens", t as i64));
    }
    if let Some(c) = &r.caller {
        attrs.push(kv("switchyard.virtual_key", c.virtual_key.as_str()));
        if let Some(t) = &c.team {
            attrs.push(kv("switchyard.team", t.as_str()));
        }
        if let Some(t) = &c.customer {
            attrs.push(kv("switchyard.customer", t.as_str()));
        }
    }
    if let Some(route) = &r.route {
        attrs.push(kv("switchyard.route", route.as_str()));
    }
    if let Some(i) = r.fallback_index {
        attrs.push(int("switchyard.fallback_index", i as i64));
    }
    attrs.push(int("switchyard.attempts", r.attempts.iter().filter(|a| !a.skipped).count() as i64));
    if r.hedged {
        attrs.push(boolean("switchyard.hedged", true));
    }
    if let Some(c) = r.cost_nano_usd {
        attrs.push(double("switchyard.cost_usd", c as f64 / 1e9));
    }
    if let Some(t) = r.ttft_ms {
        attrs.push(int("switchyard.time_to_first_token_ms", t as i64));
    }
    if r.stream {
        attrs.push(boolean("switchyard.stream", true));
    }
    if let Some(e) = &r.ended {
        attrs.push(kv("switchyard.stream.ended", e.as_str()));
    }
    if !r.provider_tags.is_empty() {
        attrs.push(kv("switchyard.provider_tags", r.provider_tags.join(",").as_str()));
    }
    let failed = r.status.is_some_and(|s| s >= 500) || r.ended.as_deref() == Some("failed");
    if let Some(e) = r.error.as_deref().filter(|_| failed || r.status.is_some_and(|s| s >= 400)) {
        attrs.push(kv("error.type", e));
    }
    let name = match r.model.as_deref() {
        Some(m) if !m.is_empty() => format!("{op} {m}"),
        _ => op.to_string(),
    };
    let mut out = vec![Span {
        trace_id: trace_id.clone(),
        span_id: span_id.clone(),
        parent_span_id: r.parent_span_id.as_deref().map(hex_bytes).unwrap_or_default(),
        name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + r.latency_ms.saturating_mul(1_000_000),
        attributes: attrs,
        status: Some(status(failed, r.error.as_deref())),
        ..Default::default()
    }];
    out.extend(r.attempts.iter().map(|a| attempt_span(a, op, start, &trace_id, &span_id)));
    out
}

fn attempt_span(a: &AttemptRecord, op: &str, request_start: u64, trace_id: &[u8], parent: &[u8]) -> Span {
    let start = request_start + a.start_ms.saturating_mul(1_000_000);
    let mut id = hex_bytes(&a.span_id);
    if id.len() != 8 {
        // A skipped attempt sent nothing, so it had no span id upstream; it still gets a span here.
        id = hex_bytes(&crate::ctx::new_span_id());
    }
    let ok = a.outcome == "success";
    let mut attrs = vec![
        kv("gen_ai.operation.name", op),
        kv("gen_ai.provider.name", provider_name(&a.kind)),
        kv("gen_ai.request.model", a.model.as_str()),
        kv("switchyard.provider", a.provider.as_str()),
        kv("switchyard.attempt.outcome", a.outcome.as_str()),
    ];
    if let Some(k) = &a.key {
        attrs.push(kv("switchyard.key", k.as_str()));
    }
    if let Some(s) = a.status {
        attrs.push(int("http.response.status_code", i64::from(s)));
    }
    if !ok {
        attrs.push(kv("error.type", a.outcome.as_str()));
    }
    if a.hedged {
        attrs.push(boolean("switchyard.hedged", true));
    }
    if a.skipped {
        attrs.push(boolean("switchyard.skipped", true));
    }
    Span {
        trace_id: trace_id.to_vec(),
        span_id: id,
        parent_span_id: parent.to_vec(),
        name: format!("{op} {}", a.model),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + a.latency_ms.saturating_mul(1_000_000),
        attributes: attrs,
        status: Some(status(!ok, a.message.as_deref())),
        ..Default::default()
    }
}

fn status(failed: bool, message: Option<&str>) -> Status {
    if failed {
        Status { code: StatusCode::Error as i32, message: message.unwrap_or_default().chars().take(300).collect() }
    } else {
        Status { code: StatusCode::Unset as i32, message: String::new() }
    }
}

/// `gen_ai.operation.name` for one of the server's endpoints.
fn operation(endpoint: &str) -> &str {
    match endpoint {
        "embeddings" => "embeddings",
        // The semantic conventions' name for the legacy Completions API.
        "completions" => "text_completion",
        "chat" | "messages" | "responses" | "generate_content" | "converse" => "chat",
        other => other,
    }
}

/// `gen_ai.provider.name`: the conventions' well-known value for a provider type, else the type itself.
fn provider_name(kind: &str) -> &str {
    match kind {
        "azure" => "azure.ai.openai",
        "bedrock" => "aws.bedrock",
        "vertex" => "gcp.vertex_ai",
        "gemini" => "gcp.gemini",
        "mistral" => "mistral_ai",
        "xai" => "x_ai",
        other => other,
    }
}

fn hex_bytes(s: &str) -> Vec<u8> {
    if s.len() % 2 != 0 {
        return Vec::new();
    }
    (0..s.len()).step_by(2).map_while(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }), ..Default::default() }
}

fn double(key: &str, value: f64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::DoubleValue(value)) }), ..Default::default() }
}

fn boolean(key: &str, value: bool) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::BoolValue(value)) }), ..Default::default() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn attempt(outcome: &str, start_ms: u64, latency_ms: u64, span_id: &str) -> AttemptRecord {
        AttemptRecord {
            target: "cloud/gpt-4o".into(),
            provider: "cloud".into(),
            kind: "openai".into(),
            model: "gpt-4o".into(),
            key: Some("primary".into()),
            status: (outcome != "success").then_some(529),
            outcome: outcome.into(),
            start_ms,
            latency_ms,
            hedged: false,
            skipped: false,
            message: None,
            span_id: span_id.into(),
            start_us: start_ms * 1000,
            latency_us: latency_ms * 1000,
        }
    }

    fn record() -> RequestRecord {
        RequestRecord {
            id: "req-1".into(),
            at_ms: 1_700_000_000_000,
            endpoint: "chat".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            model: Some("gpt-4o".into()),
            provider: Some("cloud".into()),
            served_model: Some("gpt-4o".into()),
            attempts: vec![attempt("transient", 1, 10, "1111111111111111"), attempt("success", 12, 30, "2222222222222222")],
            status: Some(200),
            latency_ms: 45,
            tokens_in: Some(12),
            tokens_out: Some(3),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_span_id: Some("aaaaaaaaaaaaaaaa".into()),
            ..Default::default()
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref())
    }

    #[test]
    fn a_request_becomes_a_server_span_with_one_client_child_per_attempt() {
        let spans = spans(&record());
        assert_eq!(spans.len(), 3);
        let (root, first, second) = (&spans[0], &spans[1], &spans[2]);
        assert_eq!(root.name, "chat gpt-4o");
        assert_eq!(root.kind, SpanKind::Server as i32);
        assert_eq!(root.parent_span_id, hex_bytes("aaaaaaaaaaaaaaaa"));
        assert_eq!(root.end_time_unix_nano - root.start_time_unix_nano, 45_000_000);
        assert_eq!(attr(root, "gen_ai.usage.input_tokens"), Some(&any_value::Value::IntValue(12)));
        assert_eq!(attr(root, "gen_ai.provider.name"), Some(&any_value::Value::StringValue("openai".into())));
        for child in [first, second] {
            assert_eq!(child.kind, SpanKind::Client as i32);
            assert_eq!(child.parent_span_id, root.span_id);
            assert_eq!(child.trace_id, root.trace_id);
        }
        assert_eq!(first.span_id, hex_bytes("1111111111111111"));
        assert_eq!(first.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(attr(first, "error.type"), Some(&any_value::Value::StringValue("transient".into())));
        assert_eq!(second.start_time_unix_nano - root.start_time_unix_nano, 12_000_000);
        assert_eq!(second.status.as_ref().unwrap().code, StatusCode::Unset as i32);
    }

    #[test]
    fn the_body_decodes_as_an_otlp_export_request() {
        let body = encode(&resource("gw"), &[Arc::new(record())]);
        let back = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let rs = &back.resource_spans[0];
        assert_eq!(rs.resource.as_ref().unwrap().attributes[0].key, "service.name");
        assert_eq!(rs.scope_spans[0].spans.len(), 3);
    }

    #[test]
    fn a_record_without_valid_ids_gives_no_spans() {
        let r = RequestRecord { trace_id: "xyz".into(), ..record() };
        assert!(spans(&r).is_empty());
    }
}
