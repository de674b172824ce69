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

/// Why an attempt failed. Decides whether the next target is tried.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Connect error, reset, timeout before the first byte, 5xx/529, an error event before the first chunk.
    Transient,
    /// The upstream did not answer within its timeout.
    Timeout,
    /// 429.
    RateLimited,
    /// 401/402/403 for this key.
    KeyInvalid,
    /// 400/404/413/422: the same request would fail anywhere.
    CallerFault,
    /// The provider says the prompt is longer than the model's context.
    ContextTooLong,
    /// The upstream answered something we could not read.
    Malformed,
    /// This target cannot express the request (for example `n > 1` on Anthropic), or has no usable key.
    Unsupported,
    /// Skipped without sending: the provider's circuit breaker is open.
    CircuitOpen,
    /// Skipped without sending: the provider's in-flight limit and wait queue are full.
    Overloaded,
}

impl FailureClass {
    /// Classes after which the same request may succeed on another target.
    pub fn falls_back(self) -> bool {
        matches!(
            self,
            FailureClass::Transient
                | FailureClass::Timeout
                | FailureClass::RateLimited
                | FailureClass::KeyInvalid
                | FailureClass::Malformed
                | FailureClass::Unsupported
                | FailureClass::CircuitOpen
                | FailureClass::Overloaded
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Timeout => "timeout",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::KeyInvalid => "key_invalid",
            FailureClass::CallerFault => "caller_fault",
            FailureClass::ContextTooLong => "context_too_long",
            FailureClass::Malformed => "malformed",
            FailureClass::Unsupported => "unsupported",
            FailureClass::CircuitOpen => "circuit_open",
            FailureClass::Overloaded => "overloaded",
        }
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
        match status {
            429 => FailureClass::RateLimited,
            401..=403 => FailureClass::KeyInvalid,
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
    /// Every target failed.
    #[error("{message}")]
    AllFailed { status: u16, message: String, attempts: Vec<Attempt>, retry_after: Option<u64> },
    /// A stream failed after its first byte had gone to the client.
    #[error("{message}")]
    StreamInterrupted { message: String, class: FailureClass },
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
            GatewayError::AllFailed { status: 400, .. } => "invalid_request_error",
            GatewayError::AllFailed { .. } | GatewayError::StreamInterrupted { .. } => "upstream_error",
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
            GatewayError::AllFailed { status: 400, .. } => "unsupported_by_provider".into(),
            GatewayError::AllFailed { .. } => "all_attempts_failed".into(),
            GatewayError::StreamInterrupted { .. } => "stream_interrupted".into(),
            GatewayError::Internal(_) => "internal_error".into(),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::BadRequest { param, .. } => param.as_deref(),
            GatewayError::Upstream { error, .. } => error.param.as_deref(),
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

    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::AllFailed { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The summary error when every target failed: 400 if no target could express the request, 504 if all
    /// timed out, 503 if every target was overloaded, rate-limited, out of usable keys or behind an open
    /// circuit (with `Retry-After`), else 502.
    pub fn all_failed(attempts: Vec<Attempt>, retry_after: Option<u64>) -> Self {
        let n = attempts.len();
        let status = if n > 0 && attempts.iter().all(|a| a.class == FailureClass::Unsupported) {
            // No target can express the request: the caller must change it.
            400
        } else if n > 0 && attempts.iter().all(|a| a.class == FailureClass::Timeout) {
            504
        } else if n > 0
            && attempts.iter().all(|a| {
                matches!(
                    a.class,
                    FailureClass::RateLimited | FailureClass::CircuitOpen | FailureClass::Overloaded | FailureClass::KeyInvalid
                ) || matches!(a.status, Some(503 | 529))
            })
        {
            503
        } else {
            502
        };
        let detail = attempts
            .iter()
            .map(|a| {
                let status = a.status.map(|s| format!(" {s}")).unwrap_or_default();
                format!("{} ({}{}): {}", a.target, a.class.as_str(), status, a.message)
            })
            .collect::<Vec<_>>()
            .join("; ");
        let message = if n == 1 { format!("the upstream failed: {detail}") } else { format!("all {n} attempts failed: {detail}") };
        GatewayError::AllFailed { status, message, attempts, retry_after }
    }
}
