//! Per-request facts that several stages share: the request's identity when it arrives, and who answered
//! it when it leaves. Kept apart so the executor and the gateway both use them without importing each other.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;

/// Per-request facts, set by the server when the request is accepted (stage 1) and read by every later
/// stage.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// `chatcmpl-…`, used where a provider gives no id, and as the request's id in logs.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// When the request was accepted; its deadline counts from here.
    pub arrived: Instant,
    /// The key the caller presented (a virtual key, if it is one of ours), never logged.
    pub credential: Option<SecretString>,
    /// The caller's W3C `traceparent`, when it sent a well-formed one.
    pub traceparent: Option<String>,
    /// The request's id in the request log and in `x-request-id`: the caller's `x-request-id` when it
    /// sent a well-formed one, otherwise `id`.
    pub request_id: String,
    /// The request's trace id (32 hex): the caller's, from its `traceparent`, or a new one.
    pub trace_id: String,
    /// The request span's id (16 hex); each attempt's span is its child.
    pub span_id: String,
    /// What the engine notes about the request as it goes (see `observe`).
    pub observed: crate::observe::ObservedCell,
}

impl RequestCtx {
    pub fn new() -> Self {
        let mut rng = fastrand::Rng::new();
        let id: String = std::iter::repeat_with(|| rng.alphanumeric()).take(24).collect();
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let id = format!("chatcmpl-{id}");
        RequestCtx {
            request_id: id.clone(),
            id,
            created,
            arrived: Instant::now(),
            credential: None,
            traceparent: None,
            trace_id: random_hex(&mut rng, 16),
            span_id: random_hex(&mut rng, 8),
            observed: Default::default(),
        }
    }

    /// The context with the caller's key and trace header; a valid `traceparent` makes this request's
    /// spans part of the caller's trace.
    pub fn with_caller(mut self, credential: Option<SecretString>, traceparent: Option<&str>) -> Self {
        self.credential = credential;
        self.traceparent = traceparent.filter(|t| valid_traceparent(t)).map(str::to_string);
        if let Some(t) = &self.traceparent {
            self.trace_id = t[3..35].to_string();
        }
        self
    }

    /// The context with the caller's `x-request-id`, kept when it is well-formed (1 to 128 of
    /// `A-Z a-z 0-9 - _ . :`), so that a caller's own id finds its log record; anything else is ignored.
    pub fn with_request_id(mut self, id: Option<&str>) -> Self {
        if let Some(id) = id.filter(|id| valid_request_id(id)) {
            self.request_id = id.to_string();
        }
        self
    }

    /// The caller's parent span id, from its `traceparent`.
    pub fn parent_span_id(&self) -> Option<&str> {
        self.traceparent.as_deref().map(|t| &t[36..52])
    }

    /// The caller's sampling flag, from its `traceparent`.
    pub fn parent_sampled(&self) -> Option<bool> {
        self.traceparent.as_deref().and_then(|t| u8::from_str_radix(&t[53..55], 16).ok()).map(|f| f & 1 == 1)
    }

    /// The `traceparent` to send upstream for an attempt whose span is `span_id`: same trace, the
    /// caller's sampling flag (sampled when the caller sent none).
    pub fn upstream_traceparent(&self, span_id: &str) -> String {
        let flags = self.traceparent.as_deref().map_or("01", |t| &t[53..55]);
        format!("00-{}-{span_id}-{flags}", self.trace_id)
    }
}

/// A new span id (16 hex).
pub fn new_span_id() -> String {
    random_hex(&mut fastrand::Rng::new(), 8)
}

fn random_hex(rng: &mut fastrand::Rng, bytes: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        // Never all zeros (W3C: an all-zero id is invalid): the first byte is at least 1.
        let b = if s.is_empty() { rng.u8(1..) } else { rng.u8(..) };
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero (W3C Trace Context).
fn valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    matches!(parts.as_slice(), [v, trace, parent, flags]
        if hex(v, 2) && *v != "ff" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && parent.bytes().any(|b| b != b'0'))
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// Who answered: the facts behind the `x-switchyard-*` response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub provider: String,
    pub model: String,
    pub key: Option<String>,
    /// Attempts made, the successful one included.
    pub attempts: usize,
    /// 0 for the primary target, n for the n-th fallback.
    pub fallback_index: usize,
    /// The answer came from a hedged (second, concurrent) request.
    pub hedged: bool,
    /// The caller's virtual key, by name.
    pub virtual_key: Option<String>,
    /// What the answer cost in US dollars, in billionths (exact in an integer), when known before the
    /// response goes out (not for streams, whose cost is settled when they end).
    pub cost_nano_usd: Option<u64>,
    /// The serving provider's tags (`on-prem`, `cloud`, ...), for the residency split.
    pub provider_tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_kept() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(RequestCtx::new().with_caller(None, Some(ok)).traceparent.as_deref(), Some(ok));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "junk",
        ] {
            assert!(RequestCtx::new().with_caller(None, Some(bad)).traceparent.is_none(), "{bad}");
        }
    }

    #[test]
    fn a_callers_trace_and_request_id_are_kept_when_well_formed() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let ctx = RequestCtx::new().with_caller(None, Some(ok)).with_request_id(Some("order-42:frame.7"));
        assert_eq!(ctx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_span_id(), Some("00f067aa0ba902b7"));
        assert_eq!(ctx.request_id, "order-42:frame.7");
        assert_eq!(ctx.upstream_traceparent("1111111111111111"), "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-00");
        for bad in ["", "has space", "new\nline", &"x".repeat(129)] {
            let ctx = RequestCtx::new().with_request_id(Some(bad));
            assert_eq!(ctx.request_id, ctx.id, "{bad:?}");
        }
        let fresh = RequestCtx::new();
        assert_eq!((fresh.trace_id.len(), fresh.span_id.len()), (32, 16));
        assert!(fresh.upstream_traceparent(&fresh.span_id).ends_with("-01"));
    }
}
