//! The gateway's error families and how each one is shown to a caller.
//!
//! Every error maps to exactly one HTTP status and one stable machine `code`, so clients can branch on it.
//! Upstream failures keep the provider's status and message; when every target failed, the error lists each
//! attempt so an operator can see what happened without reading logs.

use serde::Serialize;
use switchyard_wire::UpstreamError;

/// How one upstream attempt ended, for logs, headers and the final error.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    /// `provider/model`.
    pub target: String,
    /// The key's configured name, never its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub class: FailureClass,
    pub message: String,
    pub latency_ms: u64,
    /// Nothing was sent: the target was skipped (open circuit, every key cooling down, full queue, no
    /// key allowed). Not counted in `x-switchyard-attempts`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// Why an attempt failed. [`crate::retry`] decides from it what happens next.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Connect error, reset, 5xx/529, an error event before the first chunk.
    Transient,
    /// The upstream did not answer within its timeout.
    Timeout,
    /// 429.
    RateLimited,
    /// 401/403: the provider refused the gateway's key.
    KeyInvalid,
    /// The key's quota or credit is used up (OpenAI's 429 `insufficient_quota`, 402, Anthropic's "credit
    /// balance is too low"): not a rate limit, waiting will not help.
    QuotaExhausted,
    /// 400/404/413/422: the same request would fail anywhere.
    CallerFault,
    /// The provider says the prompt is longer than the model's context.
    ContextTooLong,
    /// The upstream answered something we could not read.
    Malformed,
    /// The upstream's answer was larger than `upstream.max_response_size`. Usually the request's doing (a
    /// huge embeddings batch), so it says nothing about the provider's health and is not retried; another
    /// target may still answer.
    TooLarge,
    /// This target cannot express the request (for example `n > 1` on Anthropic), or has no usable key.
    Unsupported,
    /// Skipped without sending: the provider is degraded and the route asks to fail fast.
    Degraded,
    /// Skipped without sending: the provider's in-flight limit and wait queue are full.
    Overloaded,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Timeout => "timeout",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::KeyInvalid => "key_invalid",
            FailureClass::QuotaExhausted => "quota_exhausted",
            FailureClass::CallerFault => "caller_fault",
            FailureClass::ContextTooLong => "context_too_long",
            FailureClass::Malformed => "malformed",
            FailureClass::TooLarge => "too_large",
            FailureClass::Unsupported => "unsupported",
            FailureClass::Degraded => "degraded",
            FailureClass::Overloaded => "overloaded",
        }
    }

    /// Failures that say something about the provider's health (the others are the request's or a key's).
    pub fn is_provider_health(self) -> bool {
        matches!(self, FailureClass::Transient | FailureClass::Timeout | FailureClass::Malformed)
    }

    /// Classifies an upstream HTTP error.
    pub fn of_status(status: u16, err: &UpstreamError) -> Self {
        let code = err.code.as_deref().unwrap_or("");
        let msg = err.message.to_ascii_lowercase();
        if code == "context_length_exceeded"
            || msg.contains("prompt is too long")
            || msg.contains("context length")
            || msg.contains("maximum context")
        {
            return FailureClass::ContextTooLong;
        }
        if status == 402
            || code == "insufficient_quota"
            || err.kind.as_deref() == Some("insufficient_quota")
            || msg.contains("exceeded your current quota")
            || msg.contains("credit balance is too low")
        {
            return FailureClass::QuotaExhausted;
        }
        match status {
            429 => FailureClass::RateLimited,
            401 | 403 => FailureClass::KeyInvalid,
            408 => FailureClass::Timeout,
            400..=499 => FailureClass::CallerFault,
            _ => FailureClass::Transient,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed or asks for something impossible.
    #[error("{message}")]
    BadRequest { message: String, param: Option<String>, code: &'static str },
    /// No configured provider serves the model.
    #[error("{message}")]
    ModelNotFound { message: String },
    /// A bare model name that several providers serve.
    #[error("{message}")]
    AmbiguousModel { message: String },
    /// The upstream refused the request for a reason that another target would share (a caller fault).
    #[error("{}", .error.message)]
    Upstream { status: u16, error: Box<UpstreamError>, provider: String, class: FailureClass, attempts: Vec<Attempt> },
    /// Every target failed. `code` and `kind` follow the failure classes (see [`GatewayError::all_failed`]).
    #[error("{message}")]
    AllFailed {
        status: u16,
        code: &'static str,
        kind: &'static str,
        message: String,
        attempts: Vec<Attempt>,
        /// Milliseconds after which a retry may succeed, when known.
        retry_after_ms: Option<u64>,
    },
    /// A stream failed after its first byte had gone to the client.
    #[error("{message}")]
    StreamInterrupted { message: String, class: FailureClass },
    /// An image URL the gateway had to fetch was refused, or fetching it failed (`crate::images`).
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    #[error("{0}")]
    Internal(String),
}

/// One stable code per kind of upstream refusal, whatever the provider calls it: providers' own codes are
/// kept when they are words (`context_length_exceeded`, `DeploymentNotFound`), numbers and type names are
/// replaced by OpenAI's codes for the status.
fn upstream_code(status: u16, e: &UpstreamError, class: FailureClass) -> String {
    if class == FailureClass::ContextTooLong {
        return "context_length_exceeded".into();
    }
    if let Some(c) = e.code.as_deref() {
        let is_number = c.bytes().all(|b| b.is_ascii_digit());
        let is_type = e.kind.as_deref() == Some(c) || c.ends_with("_error");
        if !c.is_empty() && !is_number && !is_type {
            return c.to_string();
        }
    }
    match status {
        400 => "invalid_request",
        401 => "invalid_api_key",
        402 => "insufficient_quota",
        403 => "permission_denied",
        404 => "model_not_found",
        413 => "payload_too_large",
        422 => "unprocessable_entity",
        429 => "rate_limit_exceeded",
        _ => class.as_str(),
    }
    .to_string()
}

impl GatewayError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        GatewayError::BadRequest { message: message.into(), param: param.map(str::to_string), code: "invalid_request" }
    }

    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest { code, .. } if *code == "payload_too_large" => 413,
            GatewayError::BadRequest { .. } | GatewayError::AmbiguousModel { .. } => 400,
            GatewayError::ModelNotFound { .. } => 404,
            GatewayError::Upstream { status, .. } => *status,
            GatewayError::AllFailed { status, .. } => *status,
            GatewayError::StreamInterrupted { .. } => 502,
            GatewayError::Image(e) => e.status(),
            GatewayError::Internal(_) => 500,
        }
    }

    /// OpenAI's `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::BadRequest { .. } | GatewayError::AmbiguousModel { .. } | GatewayError::ModelNotFound { .. } => {
                "invalid_request_error"
            }
            GatewayError::Upstream { status: 429, .. } => "rate_limit_error",
            GatewayError::Upstream { status, .. } if *status >= 500 => "upstream_error",
            GatewayError::Upstream { .. } => "invalid_request_error",
            GatewayError::AllFailed { kind, .. } => kind,
            GatewayError::StreamInterrupted { .. } => "upstream_error",
            GatewayError::Image(e) => e.kind(),
            GatewayError::Internal(_) => "internal_error",
        }
    }

    /// The stable machine code.
    pub fn code(&self) -> String {
        match self {
            GatewayError::BadRequest { code, .. } => (*code).to_string(),
            GatewayError::ModelNotFound { .. } => "model_not_found".into(),
            GatewayError::AmbiguousModel { .. } => "ambiguous_model".into(),
            GatewayError::Upstream { status, error, class, .. } => upstream_code(*status, error, *class),
            GatewayError::AllFailed { code, .. } => (*code).to_string(),
            GatewayError::StreamInterrupted { .. } => "stream_interrupted".into(),
            GatewayError::Image(e) => e.code().into(),
            GatewayError::Internal(_) => "internal_error".into(),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::BadRequest { param, .. } => param.as_deref(),
            GatewayError::Upstream { error, .. } => error.param.as_deref(),
            GatewayError::Image(e) => e.param(),
            _ => None,
        }
    }

    /// Upstream calls actually made (skipped targets excluded).
    pub fn sent_attempts(&self) -> usize {
        self.attempts().iter().filter(|a| !a.skipped).count()
    }

    pub fn attempts(&self) -> &[Attempt] {
        match self {
            GatewayError::Upstream { attempts, .. } | GatewayError::AllFailed { attempts, .. } => attempts,
            _ => &[],
        }
    }

    /// Milliseconds after which a retry may succeed (for `retry-after` and `retry-after-ms`).
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            GatewayError::AllFailed { retry_after_ms, .. } => *retry_after_ms,
            GatewayError::Image(e) => e.retry_after_ms(),
            _ => None,
        }
    }

    /// The summary error when every target failed. The status tells the caller what to do:
    ///
    /// | every attempt was | status | code |
    /// |---|---|---|
    /// | `unsupported` | 400 | `unsupported_by_provider` |
    /// | `rate_limited` | 429 | `rate_limit_exceeded` (with the soonest reset) |
    /// | `key_invalid` or `quota_exhausted` | 502 | `provider_auth_failed` / `provider_quota_exhausted` |
    /// | `timeout` | 504 | `upstream_timeout` |
    /// | `too_large` | 502 | `upstream_response_too_large` |
    /// | `overloaded`, `degraded`, `rate_limited`, or a 503/529 | 503 | `upstream_unavailable` |
    /// | anything else | 502 | `all_attempts_failed` |
    pub fn all_failed(attempts: Vec<Attempt>, retry_after_ms: Option<u64>) -> Self {
        use FailureClass as C;
        let all = |f: &dyn Fn(&Attempt) -> bool| !attempts.is_empty() && attempts.iter().all(f);
        let (status, code, kind) = if all(&|a| a.class == C::Unsupported) {
            (400, "unsupported_by_provider", "invalid_request_error")
        } else if all(&|a| a.class == C::RateLimited) {
            (429, "rate_limit_exceeded", "rate_limit_error")
        } else if all(&|a| a.class == C::QuotaExhausted) {
            (502, "provider_quota_exhausted", "upstream_authentication_error")
        } else if all(&|a| matches!(a.class, C::KeyInvalid | C::QuotaExhausted)) {
            (502, "provider_auth_failed", "upstream_authentication_error")
        } else if all(&|a| a.class == C::Timeout) {
            (504, "upstream_timeout", "upstream_error")
        } else if all(&|a| a.class == C::TooLarge) {
            (502, "upstream_response_too_large", "upstream_error")
        } else if all(&|a| matches!(a.class, C::RateLimited | C::Degraded | C::Overloaded) || matches!(a.status, Some(503 | 529))) {
            (503, "upstream_unavailable", "upstream_error")
        } else {
            (502, "all_attempts_failed", "upstream_error")
        };
        let n = attempts.len();
        let detail = attempts
            .iter()
            .map(|a| {
                let status = a.status.map(|s| format!(" {s}")).unwrap_or_default();
                let key = a.key.as_deref().map(|k| format!(" key {k}")).unwrap_or_default();
                format!("{}{key} ({}{}): {}", a.target, a.class.as_str(), status, a.message)
            })
            .collect::<Vec<_>>()
            .join("; ");
        let lead = match code {
            "provider_auth_failed" => "the upstream provider rejected the gateway's own provider credentials (not your API key; the gateway's operator must fix the provider key in the configuration)",
            "provider_quota_exhausted" => "the gateway's provider account is out of quota or credit (not your API key; the gateway's operator must fix the provider's billing or key)",
            "rate_limit_exceeded" => "the upstream provider is rate-limiting the gateway; retry after the time in retry-after",
            _ if n == 1 => "the upstream failed",
            _ => "every attempt failed",
        };
        let message = if n > 1 { format!("{lead}; {n} attempts: {detail}") } else { format!("{lead}: {detail}") };
        // Overload, the gateway's own included, always says when to come back (a second, when nothing
        // better is known): a 503 without it invites an immediate retry storm.
        let overloaded = attempts.iter().any(|a| a.class == C::Overloaded);
        let retry_after_ms = match status {
            429 => retry_after_ms,
            503 => retry_after_ms.or(overloaded.then_some(1000)),
            _ => None,
        };
        GatewayError::AllFailed { status, code, kind, message, attempts, retry_after_ms }
    }
}
