//! Per-request facts that several stages share: the request's identity when it arrives, and who answered
//! it when it leaves. Kept apart so the executor and the gateway both use them without importing each other.

use std::time::{SystemTime, UNIX_EPOCH};

/// Per-request identity, set when the request is accepted.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// `chatcmpl-…`, used where a provider gives no id.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
}

impl RequestCtx {
    pub fn new() -> Self {
        let mut rng = fastrand::Rng::new();
        let id: String = std::iter::repeat_with(|| rng.alphanumeric()).take(24).collect();
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        RequestCtx { id: format!("chatcmpl-{id}"), created }
    }
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
}
