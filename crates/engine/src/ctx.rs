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
}

impl RequestCtx {
    pub fn new() -> Self {
        let mut rng = fastrand::Rng::new();
        let id: String = std::iter::repeat_with(|| rng.alphanumeric()).take(24).collect();
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        RequestCtx { id: format!("chatcmpl-{id}"), created, arrived: Instant::now(), credential: None, traceparent: None }
    }

    /// The context with the caller's key and trace header.
    pub fn with_caller(mut self, credential: Option<SecretString>, traceparent: Option<&str>) -> Self {
        self.credential = credential;
        self.traceparent = traceparent.filter(|t| valid_traceparent(t)).map(str::to_string);
        self
    }
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
}
