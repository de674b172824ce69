//! The one log line per finished inference request, on the target `switchyard::request`.
//!
//! An operator's first question about a request is "who answered, how, and how long did it take": the line
//! says it in one place, with plain values only (a field that does not apply is left out, never printed as
//! `None`). Key names appear, key values never do. A stream's line is written when the stream ends, however
//! it ends, so that its latency is the whole stream's and its tokens are known when the upstream reported
//! usage; a [`Record`] writes its line when it is dropped, so no way out of a handler or a stream task can
//! lose it.
//!
//! The same facts become the request's [`RequestRecord`], handed to the gateway's sinks (the request log
//! table, the request metrics, the tracer) when the record is dropped: the line, the row, the metrics and
//! the spans describe one request the same way.
//!
//! Bodies go on the record only when a sink asked for them (`logs.bodies`, see [`Sinks::body_limit`]),
//! each cut to the limit: the request's JSON as the caller sent it, a complete answer's JSON as sent, and
//! for a stream the text it delivered (the content deltas joined; the SSE framing is not kept). They are
//! dropped when the request is over if the caller is residency-restricted and its key does not set
//! `log_bodies`: such a key's content never leaves the request.
//!
//! The line is INFO whatever the status: a 4xx is the caller's business and a 5xx is already explained by
//! the engine's own WARN lines. It is switched off with the filter `switchyard::request=off` (which is
//! what `--no-request-log` adds).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use switchyard_engine::observe::{covered, ObservedCell, RequestRecord, Sinks};
use switchyard_engine::telemetry::metrics::RequestMetrics;
use switchyard_engine::{Gateway, GatewayError, RequestCtx, Served};
use switchyard_wire::types::Usage;

/// What is known about one request so far; logged and handed to the sinks once, on drop.
pub(crate) struct Record {
    r: RequestRecord,
    started: Instant,
    observed: ObservedCell,
    sinks: Sinks,
    /// Upstream calls made, when the request failed after some.
    failed_attempts: Option<usize>,
    attempts_served: Option<usize>,
    /// The request's cost in billionths of a dollar, once settled (a stream's when it is over).
    cost: Arc<Mutex<Option<u64>>>,
    /// A stream's first chunk, from arrival (its time to first token, precisely).
    first_chunk: Option<Duration>,
    /// A stream's last chunk so far, and where the gaps between chunks go.
    last_chunk: Option<(Instant, metrics::Histogram)>,
    metrics: Arc<RequestMetrics>,
    /// Bodies are kept, each up to this many bytes.
    body_limit: Option<usize>,
}

impl Record {
    /// `endpoint` names the route for metrics (`chat`, `embeddings`, ...): a fixed word, never the path.
    pub(crate) fn new(ctx: &RequestCtx, gateway: &Gateway, endpoint: &'static str, method: Method, path: &str) -> Self {
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let r = RequestRecord {
            id: ctx.request_id.clone(),
            at_ms,
            endpoint: endpoint.to_string(),
            method: method.to_string(),
            path: path.chars().take(200).collect(),
            trace_id: ctx.trace_id.clone(),
            span_id: ctx.span_id.clone(),
            parent_span_id: ctx.parent_span_id().map(str::to_string),
            parent_sampled: ctx.parent_sampled(),
            ..RequestRecord::default()
        };
        Record {
            r,
            started: ctx.arrived,
            observed: ctx.observed.clone(),
            sinks: gateway.sinks().clone(),
            failed_attempts: None,
            attempts_served: None,
            cost: Default::default(),
            first_chunk: None,
            last_chunk: None,
            metrics: Arc::clone(gateway.request_metrics()),
            body_limit: gateway.sinks().body_limit(),
        }
    }

    /// Keeps the request body as read, when bodies are kept.
    pub(crate) fn request_body(&mut self, bytes: &[u8]) {
        if let Some(max) = self.body_limit {
            self.r.request_body = Some(cut(bytes, max));
        }
    }

    /// Keeps a complete answer's body as sent, when bodies are kept.
    pub(crate) fn response_body(&mut self, bytes: &[u8]) {
        if let Some(max) = self.body_limit {
            self.r.response_body = Some(cut(bytes, max));
        }
    }

    /// Adds a stream chunk's text to the kept response, up to the limit.
    pub(crate) fn stream_text(&mut self, chunk: &switchyard_wire::types::ChatChunk) {
        let Some(max) = self.body_limit else { return };
        let out = self.r.response_body.get_or_insert_with(String::new);
        for c in &chunk.choices {
            if let Some(t) = &c.delta.content {
                if out.len() >= max {
                    return;
                }
                out.push_str(t);
                if out.len() > max {
                    *out = switchyard_engine::reqlog::truncate_body(std::mem::take(out), max);
                }
            }
        }
    }

    /// Where a stream's cost is put when it is settled, which may be after this record is handed on.
    pub(crate) fn cost_cell(&self) -> Arc<Mutex<Option<u64>>> {
        Arc::clone(&self.cost)
    }

    /// The id the line is logged under, also sent back as `x-request-id`.
    pub(crate) fn id(&self) -> &str {
        &self.r.id
    }

    pub(crate) fn model(&mut self, model: &str) {
        self.r.model = Some(model.chars().take(200).collect());
    }

    pub(crate) fn status(&mut self, status: u16) {
        self.r.status = Some(status);
    }

    pub(crate) fn served(&mut self, served: &Served) {
        self.r.provider = Some(served.provider.clone());
        self.r.served_model = Some(served.model.clone());
        self.r.key = served.key.clone();
        self.r.fallback_index = Some(served.fallback_index);
        self.r.hedged = served.hedged;
        self.r.provider_tags = served.provider_tags.clone();
        self.attempts_served = Some(served.attempts);
        if let Some(c) = served.cost_nano_usd {
            *self.cost.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
        }
    }

    pub(crate) fn usage(&mut self, u: Option<&Usage>) {
        if let Some(u) = u {
            self.r.tokens_in = Some(u.prompt_tokens);
            self.r.tokens_out = Some(u.completion_tokens);
            self.r.tokens_cached = u.cached_tokens();
        }
    }

    pub(crate) fn embedding_tokens(&mut self, prompt_tokens: u64) {
        if prompt_tokens > 0 {
            self.r.tokens_in = Some(prompt_tokens);
            self.r.tokens_out = Some(0);
        }
    }

    /// The caller asked for a stream (the record says so even when it failed before streaming).
    pub(crate) fn stream_asked(&mut self) {
        self.r.stream = true;
    }

    pub(crate) fn streaming(&mut self) {
        self.r.stream = true;
        self.r.ended = Some("client_closed".into());
    }

    /// A stream's chunk goes to the client: the first gives its time to first token, each later one a gap
    /// (the inter-token gap histogram). One clock read and one histogram push per chunk.
    pub(crate) fn chunk(&mut self) {
        let now = Instant::now();
        match &mut self.last_chunk {
            Some((last, gaps)) => {
                gaps.record(now.duration_since(*last).as_secs_f64());
                *last = now;
            }
            None => {
                let first = now.duration_since(self.started);
                self.first_chunk = Some(first);
                self.r.ttft_ms = Some(first.as_millis() as u64);
                let gaps =
                    self.metrics.inter_token_gaps(self.r.provider.as_deref().unwrap_or(""), self.r.served_model.as_deref().unwrap_or(""));
                self.last_chunk = Some((now, gaps));
            }
        }
    }

    pub(crate) fn ended(&mut self, how: &'static str) {
        self.r.ended = Some(how.into());
    }

    pub(crate) fn failed(&mut self, e: &GatewayError) {
        self.r.error = Some(e.code());
        self.r.error_class = e.attempts().iter().rev().find(|a| !a.skipped).or(e.attempts().last()).map(|a| a.class.as_str().to_string());
        let n = e.sent_attempts();
        if n > 0 {
            self.failed_attempts = Some(n);
        }
    }

    /// The record as it stands, with what the engine noted.
    fn finish(&mut self) -> RequestRecord {
        let mut r = std::mem::take(&mut self.r);
        let observed = self.observed.take();
        r.caller = observed.caller;
        r.route = observed.route;
        r.attempts = observed.attempts;
        let took = self.started.elapsed();
        r.latency_ms = took.as_millis() as u64;
        let upstream_us = covered(&mut r.attempts.iter().filter(|a| !a.skipped).map(|a| (a.start_us, a.latency_us)).collect::<Vec<_>>());
        r.upstream_ms = upstream_us / 1000;
        // A stream's time after its first chunk is the upstream's pace, relayed; before it, the same split
        // as a complete answer's. A stream that never got a chunk is measured to its end.
        let own_until = if r.stream { self.first_chunk.unwrap_or(took) } else { took };
        r.overhead_us = Some((own_until.as_micros() as u64).saturating_sub(upstream_us));
        r.cost_nano_usd = *self.cost.lock().unwrap_or_else(|e| e.into_inner());
        // A restricted key's content is kept only when the key asks for it.
        let allowed = r.caller.as_ref().is_none_or(|c| !c.restricted || c.log_bodies);
        if !allowed {
            r.request_body = None;
            r.response_body = None;
        }
        if r.status.is_none() {
            r.ended = Some("client_closed".into());
        }
        r
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let attempts = self.attempts_served.or(self.failed_attempts);
        let r = self.finish();
        let shown_status = r.status.map_or_else(|| "(client went away first)".to_string(), |s| s.to_string());
        let d = tracing::field::display;
        tracing::info!(
            target: "switchyard::request",
            request_id = %r.id,
            method = %r.method,
            path = %r.path,
            model = r.model.as_deref().map(d),
            provider = r.provider.as_deref().map(d),
            served_model = r.served_model.as_deref().map(d),
            key = r.key.as_deref().map(d),
            virtual_key = r.caller.as_ref().map(|c| d(c.virtual_key.as_str())),
            status = r.status,
            latency_ms = r.latency_ms,
            ttft_ms = r.ttft_ms,
            attempts,
            fallback_index = r.fallback_index,
            hedged = r.hedged.then_some(true),
            tokens_in = r.tokens_in,
            tokens_out = r.tokens_out,
            cost_usd = r.cost_nano_usd.map(|c| tracing::field::display(crate::handlers::usd(c))),
            stream = r.stream.then_some(true),
            ended = r.ended.as_deref().map(d),
            error = r.error.as_deref().map(d),
            "{} {} {shown_status}",
            r.method,
            r.path,
        );
        self.sinks.record(Arc::new(r));
    }
}

/// Bytes as text (invalid UTF-8 replaced), cut to `max` bytes on a character boundary.
fn cut(bytes: &[u8], max: usize) -> String {
    let head = &bytes[..bytes.len().min(max.saturating_add(4))];
    switchyard_engine::reqlog::truncate_body(String::from_utf8_lossy(head).into_owned(), max)
}
