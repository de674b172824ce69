//! What happened to one request, in one record: the request log's row, the source of the request-level
//! metrics and of the request's trace spans.
//!
//! Three consumers want the same facts (who called, which attempts were made, who answered, how long it
//! took, what it cost), and they must agree: a dashboard that disagrees with the log it links to is worse
//! than none. So the engine notes the facts as the request goes ([`Observed`], shared through the
//! request's context), the server completes them when the request is over, however it ends, and hands the
//! finished [`RequestRecord`] to every [`RequestSink`] once. Sinks must not block: the request log queues
//! the record for a batch writer, metrics update atomics, the tracer queues spans.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One upstream attempt, sent or skipped, in the order attempts ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// `provider/model`.
    pub target: String,
    pub provider: String,
    /// The provider's type (`openai`, `anthropic`, `ollama`, ...).
    #[serde(default)]
    pub kind: String,
    pub model: String,
    /// The key's configured name, never its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The upstream's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `success`, or the failure class (`transient`, `rate_limited`, `timeout`, ...; see `FailureClass`).
    pub outcome: String,
    /// Milliseconds from the request's arrival to the attempt's start.
    pub start_ms: u64,
    pub latency_ms: u64,
    /// Sent as the hedge (the second, concurrent request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hedged: bool,
    /// Nothing was sent (open circuit, keys cooling down, no room in a budget, ...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Why it failed (no secret: the upstream's message after scrubbing, or the gateway's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The attempt's span id (16 hex), sent upstream in `traceparent`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub span_id: String,
    /// `start_ms` and `latency_ms` in microseconds: the gateway's overhead (usually well under a
    /// millisecond) is measured from them. Not kept in the log.
    #[serde(skip)]
    pub start_us: u64,
    #[serde(skip)]
    pub latency_us: u64,
}

/// Who called, once the caller's virtual key was identified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Caller {
    /// The key's id and name (an id may be the key's value for keys defined that way, so only the name is
    /// ever shown; the id is what filters and joins use, as in the usage ledger).
    pub virtual_key_id: String,
    pub virtual_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// The key is residency-restricted: its bodies are never recorded unless `log_bodies` is set on it.
    #[serde(default)]
    pub restricted: bool,
    /// The key asks for its bodies to be recorded (`log_bodies: true` on the key).
    #[serde(default)]
    pub log_bodies: bool,
}

/// What the engine learns as the request goes; the server reads it when the request is over.
#[derive(Debug, Default)]
pub struct Observed {
    pub caller: Option<Caller>,
    /// The route (`routes[].model`) the request matched, when it matched one.
    pub route: Option<String>,
    pub attempts: Vec<AttemptRecord>,
}

/// The shared cell in a request's context. Locked for a few pushes per request, never across an await.
#[derive(Debug, Clone, Default)]
pub struct ObservedCell(Arc<Mutex<Observed>>);

impl ObservedCell {
    pub fn with<R>(&self, f: impl FnOnce(&mut Observed) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Everything noted so far, leaving the cell empty.
    pub fn take(&self) -> Observed {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One finished request: the request log's row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request id sent back in `x-request-id` (the caller's, when it sent a well-formed one).
    pub id: String,
    /// Unix ms of the request's arrival.
    pub at_ms: i64,
    /// `chat`, `embeddings`, `models`, ... (a fixed set named by the server, never by the caller).
    pub endpoint: String,
    pub method: String,
    pub path: String,
    /// The `model` the caller asked for (any string: never a metric label as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// Who answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The serving provider's tags (`on-prem`, `cloud`, ...), for the residency split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_tags: Vec<String>,
    pub attempts: Vec<AttemptRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_index: Option<usize>,
    #[serde(default)]
    pub hedged: bool,
    /// The HTTP status sent; `None` when the client went away before any answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The error's stable code (`upstream_error`, `budget_exceeded`, ...), when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure class of the last failed attempt, when the request failed after some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    pub latency_ms: u64,
    /// Time to the first streamed token, for streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// Milliseconds spent waiting on upstreams (the union of the attempts' spans); the rest of
    /// `latency_ms` is the gateway's own time.
    pub upstream_ms: u64,
    /// Microseconds of the gateway's own time: the total minus the time spent waiting on upstreams (for a
    /// stream, up to its first token: after it the gateway relays what the upstream sends). `None` only in
    /// records written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_cached: Option<u64>,
    /// USD in billionths (exact in an integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_nano_usd: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    /// How a stream ended: `completed`, `failed`, `client_closed`, `client_stalled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// `hit`, `miss`, `bypass` once there is a cache; `None` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// The W3C trace id (32 hex) the request's spans carry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// The request span's id (16 hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub span_id: String,
    /// The caller's parent span, from its `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    /// The caller's sampling decision (its `traceparent` flag), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_sampled: Option<bool>,
    /// Bodies, only when recording them is on (see the `logs:` section) and allowed for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

impl RequestRecord {
    /// `2xx`, `4xx`, `5xx`, or `none` (the client left before any answer): the metric label.
    pub fn status_class(&self) -> &'static str {
        match self.status {
            Some(200..=299) => "2xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
            None => "none",
        }
    }

    /// Served by a fallback target, or after another target failed or was skipped.
    pub fn fell_back(&self) -> bool {
        self.fallback_index.is_some_and(|i| i > 0)
    }
}

/// Where finished records go. Called once per request, from the task that finished it: must not block.
pub trait RequestSink: Send + Sync {
    fn record(&self, r: &Arc<RequestRecord>);
}

/// The sinks every finished record goes to, registered at start (before serving) and shared by the
/// gateway's handlers.
#[derive(Clone, Default)]
pub struct Sinks(Arc<arc_swap::ArcSwap<Vec<Arc<dyn RequestSink>>>>, Arc<std::sync::OnceLock<usize>>);

impl Sinks {
    /// Asks for request and response bodies, each cut to `max_bytes` (`logs.bodies`); set once, at start.
    /// The server then keeps them on the record, except for a residency-restricted caller whose key does
    /// not set `log_bodies`.
    pub fn capture_bodies(&self, max_bytes: usize) {
        let _ = self.1.set(max_bytes);
    }

    /// The most bytes of each body to keep, when bodies are asked for.
    pub fn body_limit(&self) -> Option<usize> {
        self.1.get().copied()
    }

    pub fn add(&self, sink: Arc<dyn RequestSink>) {
        self.0.rcu(|v| {
            let mut v = Vec::clone(v);
            v.push(Arc::clone(&sink));
            v
        });
    }

    pub fn record(&self, r: Arc<RequestRecord>) {
        for s in self.0.load().iter() {
            s.record(&r);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.load().is_empty()
    }
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sinks({})", self.0.load().len())
    }
}

/// Time (in the spans' unit: milliseconds or microseconds) of `spans` (start, length) covered by at least
/// one: overlapping hedges count once.
pub fn covered(spans: &mut [(u64, u64)]) -> u64 {
    spans.sort_unstable();
    let (mut total, mut end) = (0u64, 0u64);
    for &(start, len) in spans.iter() {
        let stop = start.saturating_add(len);
        if stop > end {
            total += stop - start.max(end);
            end = stop;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_attempts_count_once_in_upstream_time() {
        assert_eq!(covered(&mut []), 0);
        assert_eq!(covered(&mut [(10, 5)]), 5);
        // A hedge started at 20 while the first ran from 10 to 40: 10..45 is 35 ms.
        assert_eq!(covered(&mut [(20, 25), (10, 30)]), 35);
        // A gap between a failed attempt and the fallback is the gateway's time, not the upstream's.
        assert_eq!(covered(&mut [(0, 10), (15, 10)]), 20);
        assert_eq!(covered(&mut [(0, 50), (10, 5)]), 50);
    }
}
