//! The one log line per finished inference request, on the target `switchyard::request`.
//!
//! An operator's first question about a request is "who answered, how, and how long did it take": the line
//! says it in one place, with plain values only (a field that does not apply is left out, never printed as
//! `None`). Key names appear, key values never do. A stream's line is written when the stream ends, however
//! it ends, so that its latency is the whole stream's and its tokens are known when the upstream reported
//! usage; a [`Record`] writes its line when it is dropped, so no way out of a handler or a stream task can
//! lose it.
//!
//! The line is INFO whatever the status: a 4xx is the caller's business and a 5xx is already explained by
//! the engine's own WARN lines. It is switched off with the filter `switchyard::request=off` (which is
//! what `--no-request-log` adds).

use std::time::Instant;

use axum::http::Method;
use switchyard_engine::{GatewayError, Served};
use switchyard_wire::types::Usage;

/// What is known about one request so far; logged once, on drop.
pub(crate) struct Record {
    id: String,
    method: Method,
    path: String,
    started: Instant,
    /// The `model` the caller asked for, once the body was read.
    model: Option<String>,
    status: u16,
    served: Option<Served>,
    tokens: Option<(u64, u64)>,
    stream: bool,
    /// The error's stable code, when the request failed (before or during a stream).
    error: Option<String>,
    /// Upstream calls made, when the request failed after some.
    failed_attempts: Option<usize>,
    /// How a stream ended: `completed`, `failed`, `client_closed`, `client_stalled` (also `client_closed`
    /// for a request whose client left before any answer).
    ended: Option<&'static str>,
    /// The request's cost in billionths of a dollar, once settled (a stream's when it is over).
    cost: std::sync::Arc<std::sync::Mutex<Option<u64>>>,
}

impl Record {
    pub(crate) fn new(id: &str, method: Method, path: &str) -> Self {
        Record {
            id: id.to_string(),
            method,
            path: path.chars().take(200).collect(),
            started: Instant::now(),
            model: None,
            status: 0,
            served: None,
            tokens: None,
            stream: false,
            error: None,
            failed_attempts: None,
            ended: None,
            cost: Default::default(),
        }
    }

    /// Where a stream's cost is put when it is settled, which may be after this record is handed on.
    pub(crate) fn cost_cell(&self) -> std::sync::Arc<std::sync::Mutex<Option<u64>>> {
        std::sync::Arc::clone(&self.cost)
    }

    /// The id the line is logged under, also sent back as `x-switchyard-request-id`.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn model(&mut self, model: &str) {
        self.model = Some(model.chars().take(200).collect());
    }

    pub(crate) fn status(&mut self, status: u16) {
        self.status = status;
    }

    pub(crate) fn served(&mut self, served: &Served) {
        self.served = Some(served.clone());
        if let Some(c) = served.cost_nano_usd {
            *self.cost.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
        }
    }

    pub(crate) fn usage(&mut self, u: Option<&Usage>) {
        if let Some(u) = u {
            self.tokens = Some((u.prompt_tokens, u.completion_tokens));
        }
    }

    pub(crate) fn embedding_tokens(&mut self, prompt_tokens: u64) {
        if prompt_tokens > 0 {
            self.tokens = Some((prompt_tokens, 0));
        }
    }

    pub(crate) fn streaming(&mut self) {
        self.stream = true;
        self.ended = Some("client_closed");
    }

    pub(crate) fn ended(&mut self, how: &'static str) {
        self.ended = Some(how);
    }

    pub(crate) fn failed(&mut self, e: &GatewayError) {
        self.error = Some(e.code());
        let n = e.sent_attempts();
        if n > 0 {
            self.failed_attempts = Some(n);
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let s = self.served.as_ref();
        let attempts = s.map(|s| s.attempts).or(self.failed_attempts);
        // No status: the handler was dropped before it answered, because the client went away.
        let status = (self.status != 0).then_some(self.status);
        let ended = self.ended.or(status.is_none().then_some("client_closed"));
        let shown_status = status.map_or_else(|| "(client went away first)".to_string(), |s| s.to_string());
        let cost = *self.cost.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!(
            target: "switchyard::request",
            request_id = %self.id,
            method = %self.method,
            path = %self.path,
            model = self.model.as_deref().map(tracing::field::display),
            provider = s.map(|s| tracing::field::display(s.provider.as_str())),
            served_model = s.map(|s| tracing::field::display(s.model.as_str())),
            key = s.and_then(|s| s.key.as_deref()).map(tracing::field::display),
            virtual_key = s.and_then(|s| s.virtual_key.as_deref()).map(tracing::field::display),
            status,
            latency_ms = self.started.elapsed().as_millis() as u64,
            attempts,
            fallback_index = s.map(|s| s.fallback_index),
            hedged = s.is_some_and(|s| s.hedged).then_some(true),
            tokens_in = self.tokens.map(|t| t.0),
            tokens_out = self.tokens.map(|t| t.1),
            cost_usd = cost.map(|c| tracing::field::display(crate::handlers::usd(c))),
            stream = self.stream.then_some(true),
            ended = ended.map(tracing::field::display),
            error = self.error.as_deref().map(tracing::field::display),
            "{} {} {shown_status}",
            self.method,
            self.path,
        );
    }
}
