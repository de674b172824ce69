//! The gateway's error families and how each one is shown to a caller.
//!
//! Every error maps to exactly one HTTP status and one stable machine `code`, so clients can branch on it.
//! Upstream failures keep the provider's status and message; when every target failed, the error lists each
//! attempt so an operator can see what happened without reading logs.

use serde::Serialize;
use switchyard_wire::{ProviderKind, UpstreamError};

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
    /// A self-hosted provider (Ollama, vLLM, an OpenAI-compatible server) does not have the model: not
    /// pulled, or the server was started with another one. The operator's to fix, not the caller's, and it
    /// says nothing about the server's health or the key: the next target is tried, this one is not again.
    /// (A cloud's 404 for an unknown model stays a [`FailureClass::CallerFault`]: there the caller named a
    /// model that does not exist.)
    ModelNotFound,
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
    /// Skipped without sending: a budget of the caller, its provider config, the provider or the model
    /// has no room for the request.
    BudgetExceeded,
    /// Skipped without sending: one of the gateway's own rate limits (requests or tokens per window) has
    /// no room for the request.
    LimitReached,
    /// Skipped without sending: the shared counters (Redis) cannot be reached and the policy is to refuse.
    CountersUnavailable,
}

impl FailureClass {
    /// Every class, for those that must know the whole set (the metrics' outcome label).
    pub const ALL: [FailureClass; 16] = [
        FailureClass::Transient,
        FailureClass::Timeout,
        FailureClass::RateLimited,
        FailureClass::KeyInvalid,
        FailureClass::QuotaExhausted,
        FailureClass::CallerFault,
        FailureClass::ModelNotFound,
        FailureClass::ContextTooLong,
        FailureClass::Malformed,
        FailureClass::TooLarge,
        FailureClass::Unsupported,
        FailureClass::Degraded,
        FailureClass::Overloaded,
        FailureClass::BudgetExceeded,
        FailureClass::LimitReached,
        FailureClass::CountersUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::Timeout => "timeout",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::KeyInvalid => "key_invalid",
            FailureClass::QuotaExhausted => "quota_exhausted",
            FailureClass::CallerFault => "caller_fault",
            FailureClass::ModelNotFound => "model_not_found",
            FailureClass::BudgetExceeded => "budget_exceeded",
            FailureClass::LimitReached => "limit_reached",
            FailureClass::CountersUnavailable => "counters_unavailable",
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

    /// Classifies an upstream HTTP error from a provider of `kind`: like [`FailureClass::of_status`], except
    /// that a self-hosted server's "model not found" is [`FailureClass::ModelNotFound`].
    pub fn of_response(kind: ProviderKind, status: u16, err: &UpstreamError) -> Self {
        if kind.is_self_hosted() && says_model_not_found(status, err) {
            return FailureClass::ModelNotFound;
        }
        Self::of_status(status, err)
    }

    /// Classifies an upstream HTTP error.
    pub fn of_status(status: u16, err: &UpstreamError) -> Self {
        let code = err.code.as_deref().unwrap_or("");
        let msg = err.message.to_ascii_lowercase();
        if code == "context_length_exceeded"
            || msg.contains("prompt is too long")
            // Bedrock's ValidationException for a prompt over the model's window.
            || msg.contains("input is too long")
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
            || code == "ServiceQuotaExceededException"
        {
            return FailureClass::QuotaExhausted;
        }
        match code {
            // Bedrock: a model still loading is a wait (429 on the wire, retried by AWS's SDKs), and a
            // model that failed while answering (424) says nothing about the request.
            "ModelNotReadyException" => return FailureClass::RateLimited,
            "ModelErrorException" | "ModelStreamErrorException" => return FailureClass::Transient,
            _ => {}
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

/// A 404 that says the model is missing, in the words of the servers we know:
/// Ollama's `/api/chat` `model 'x' not found` and `/api/embed` `model "x" not found, try pulling it first`,
/// vLLM's `The model `x` does not exist.`, and OpenAI's (and OpenAI-compatible servers') `model_not_found`
/// code. A 404 that does not name a model (Ollama's `404 page not found` for a wrong base URL path) is not
/// one: that is a route the server does not have.
fn says_model_not_found(status: u16, err: &UpstreamError) -> bool {
    if status != 404 {
        return false;
    }
    if err.code.as_deref() == Some("model_not_found") {
        return true;
    }
    let msg = err.message.to_ascii_lowercase();
    msg.contains("model") && (msg.contains("not found") || msg.contains("does not exist"))
}

/// How the operator makes a self-hosted provider serve `model`: said in the error, so that nobody has to
/// read the gateway's logs to learn it.
pub fn missing_model_fix(kind: ProviderKind, base_url: &str, model: &str) -> String {
    match kind {
        ProviderKind::Ollama => format!("run \"ollama pull {model}\" on the Ollama host ({base_url})"),
        _ => format!("the server at {base_url} does not serve {model}; start it with that model or fix the route"),
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
    /// Governance refused the caller: who it is (401), what it may do (403), what it may spend (402) or how
    /// fast (429). See [`Denial`].
    #[error("{message}")]
    Denied { denial: Denial, message: String, retry_after_ms: Option<u64> },
    #[error("{0}")]
    Internal(String),
}

/// Why governance refused a request; each is one stable code with one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// 401: inference needs a virtual key and none was presented.
    MissingKey,
    /// 401: the presented key is not one of the gateway's.
    UnknownKey,
    /// 403: the key exists but is switched off.
    InactiveKey,
    /// 403: the key may not use this model or provider.
    NotAllowed,
    /// 403: every target left for the request is one the key's residency policy forbids.
    Residency,
    /// 402: a budget has no room for the request.
    Budget,
    /// 429: a rate limit (requests, tokens, concurrent requests) of the gateway's own.
    RateLimit,
    /// 503: the counters the replicas share (Redis) cannot be reached and `when_unreachable` is `refuse`.
    CountersUnavailable,
}

impl Denial {
    pub fn status(self) -> u16 {
        match self {
            Denial::MissingKey | Denial::UnknownKey => 401,
            Denial::InactiveKey | Denial::NotAllowed | Denial::Residency => 403,
            Denial::Budget => 402,
            Denial::RateLimit => 429,
            Denial::CountersUnavailable => 503,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Denial::MissingKey => "missing_virtual_key",
            Denial::UnknownKey => "invalid_virtual_key",
            Denial::InactiveKey => "virtual_key_inactive",
            Denial::NotAllowed => "model_not_allowed",
            Denial::Residency => "residency_violation",
            Denial::Budget => "budget_exceeded",
            Denial::RateLimit => "rate_limit_exceeded",
            Denial::CountersUnavailable => "counters_unavailable",
        }
    }

    /// OpenAI's `type` for it (the SDKs pick their exception class by status; the type is for people).
    pub fn kind(self) -> &'static str {
        match self {
            Denial::MissingKey | Denial::UnknownKey => "authentication_error",
            Denial::InactiveKey | Denial::NotAllowed | Denial::Residency => "permission_error",
            Denial::Budget => "insufficient_quota",
            Denial::RateLimit => "rate_limit_error",
            Denial::CountersUnavailable => "service_unavailable",
        }
    }
}

/// The families errors fall into; each family's codes have their own statuses (docs/errors.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The request itself: malformed, unknown model, unsupported parameter (4xx).
    Request,
    /// Who the caller is and what it may do (401/403).
    AuthPolicy,
    /// Budgets and rate limits (402/429 from the gateway's own limits).
    BudgetLimit,
    /// What the upstreams answered, or failed to (the provider's status for its refusals, 429/502/503/504).
    Upstream,
    /// The gateway's own fault (500), or one of its own services unreachable (503 `counters_unavailable`).
    Internal,
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
            GatewayError::Denied { denial, .. } => denial.status(),
            GatewayError::Internal(_) => 500,
        }
    }

    pub fn family(&self) -> Family {
        match self {
            GatewayError::BadRequest { .. } | GatewayError::ModelNotFound { .. } | GatewayError::AmbiguousModel { .. } => Family::Request,
            GatewayError::Image(e) if e.status() < 500 => Family::Request,
            GatewayError::Denied { denial: Denial::Budget | Denial::RateLimit, .. } => Family::BudgetLimit,
            GatewayError::Denied { denial: Denial::CountersUnavailable, .. } => Family::Internal,
            GatewayError::AllFailed { code: "counters_unavailable", .. } => Family::Internal,
            GatewayError::Denied { .. } => Family::AuthPolicy,
            GatewayError::AllFailed { code: "budget_exceeded", .. } => Family::BudgetLimit,
            GatewayError::Upstream { .. }
            | GatewayError::AllFailed { .. }
            | GatewayError::StreamInterrupted { .. }
            | GatewayError::Image(_) => Family::Upstream,
            GatewayError::Internal(_) => Family::Internal,
        }
    }

    pub fn denied(denial: Denial, message: impl Into<String>) -> Self {
        GatewayError::Denied { denial, message: message.into(), retry_after_ms: None }
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
            GatewayError::Denied { denial, .. } => denial.kind(),
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
            GatewayError::Denied { denial, .. } => denial.code().into(),
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
            GatewayError::AllFailed { retry_after_ms, .. } | GatewayError::Denied { retry_after_ms, .. } => *retry_after_ms,
            GatewayError::Image(e) => e.retry_after_ms(),
            _ => None,
        }
    }

    /// The summary error when every target failed. The status tells the caller what to do:
    ///
    /// | every attempt was | status | code |
    /// |---|---|---|
    /// | `unsupported` | 400 | `unsupported_by_provider` |
    /// | `model_not_found` (a self-hosted provider lacks the model) | 502 | `upstream_model_not_found` |
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
        } else if all(&|a| a.class == C::ModelNotFound) {
            // The operator's configuration routes to a model its own server does not have: a gateway-side
            // fault (502), never a 404 that would tell the caller its model name is wrong.
            (502, "upstream_model_not_found", "upstream_error")
        } else if attempts.iter().any(|a| a.class == C::CountersUnavailable) {
            // Nothing may be metered, so nothing is sent: the gateway's own dependency, said as such.
            (503, "counters_unavailable", "service_unavailable")
        } else if all(&|a| a.class == C::BudgetExceeded) {
            // The caller's (or the operator's) money, not the upstream's fault: 402 as for a refused key.
            (402, "budget_exceeded", "insufficient_quota")
        } else if all(&|a| matches!(a.class, C::LimitReached | C::BudgetExceeded | C::RateLimited)) {
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
            "rate_limit_exceeded" if attempts.iter().any(|a| a.class == C::LimitReached) => {
                "a rate limit of the gateway's has no room for this request; retry after the time in retry-after"
            }
            "rate_limit_exceeded" => "the upstream provider is rate-limiting the gateway; retry after the time in retry-after",
            "budget_exceeded" => "a budget has no room for this request",
            "counters_unavailable" => "the gateway cannot reach the counters its replicas share, and its policy is to refuse metered requests meanwhile",
            "upstream_model_not_found" => "the gateway routes this model to a self-hosted provider that does not have it (not your request's fault; the gateway's operator must fix it)",
            _ if n == 1 => "the upstream failed",
            _ => "every attempt failed",
        };
        let message = if n > 1 { format!("{lead}; {n} attempts: {detail}") } else { format!("{lead}: {detail}") };
        // Overload, the gateway's own included, always says when to come back (a second, when nothing
        // better is known): a 503 without it invites an immediate retry storm.
        let overloaded = attempts.iter().any(|a| a.class == C::Overloaded);
        let retry_after_ms = match status {
            402 | 429 => retry_after_ms,
            503 if code == "counters_unavailable" => Some(1000),
            503 => retry_after_ms.or(overloaded.then_some(1000)),
            _ => None,
        };
        GatewayError::AllFailed { status, code, kind, message, attempts, retry_after_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16, message: &str, code: Option<&str>) -> UpstreamError {
        UpstreamError { status, message: message.into(), code: code.map(str::to_string), ..Default::default() }
    }

    #[test]
    fn bedrock_error_shapes_classify_by_meaning() {
        let k = ProviderKind::Bedrock;
        let c = |status, msg, code| FailureClass::of_response(k, status, &upstream(status, msg, Some(code)));
        assert_eq!(c(400, "Input is too long for requested model.", "ValidationException"), FailureClass::ContextTooLong);
        assert_eq!(c(400, "quota exceeded", "ServiceQuotaExceededException"), FailureClass::QuotaExhausted);
        assert_eq!(c(429, "Model is not ready", "ModelNotReadyException"), FailureClass::RateLimited);
        assert_eq!(c(424, "model failed", "ModelErrorException"), FailureClass::Transient);
        assert_eq!(c(429, "Too many requests", "ThrottlingException"), FailureClass::RateLimited);
        assert_eq!(c(403, "no access", "AccessDeniedException"), FailureClass::KeyInvalid);
        assert_eq!(c(400, "bad field", "ValidationException"), FailureClass::CallerFault);
        assert_eq!(c(408, "Model has timed out", "ModelTimeoutException"), FailureClass::Timeout);
    }

    #[test]
    fn a_self_hosted_servers_missing_model_is_its_own_class() {
        let missing = [
            // Ollama's /api/chat and /api/embed (server/routes.go).
            upstream(404, "model 'llava' not found", None),
            upstream(404, "model \"nomic-embed-text\" not found, try pulling it first", None),
            // vLLM's OpenAI server.
            upstream(404, "The model `Qwen/Qwen2.5-7B` does not exist.", None),
            // OpenAI's shape, which OpenAI-compatible servers copy.
            upstream(404, "The model `x` does not exist or you do not have access to it.", Some("model_not_found")),
        ];
        for e in &missing {
            for kind in [ProviderKind::Ollama, ProviderKind::Vllm, ProviderKind::OpenAiCompatible] {
                assert_eq!(FailureClass::of_response(kind, 404, e), FailureClass::ModelNotFound, "{kind:?}: {}", e.message);
            }
            // A cloud's unknown model is the caller's: the model name does not exist anywhere.
            assert_eq!(FailureClass::of_response(ProviderKind::OpenAi, 404, e), FailureClass::CallerFault, "{}", e.message);
        }
        // A 404 that names no model is a wrong path, not a missing model; other statuses keep their class.
        let page = upstream(404, "404 page not found", None);
        assert_eq!(FailureClass::of_response(ProviderKind::Ollama, 404, &page), FailureClass::CallerFault);
        let bad = upstream(400, "model 'x' not found", None);
        assert_eq!(FailureClass::of_response(ProviderKind::Ollama, 400, &bad), FailureClass::CallerFault);
        assert!(!FailureClass::ModelNotFound.is_provider_health(), "a missing model says nothing about the server");
    }

    #[test]
    fn the_fix_names_the_command_or_the_server() {
        assert_eq!(
            missing_model_fix(ProviderKind::Ollama, "http://10.0.0.5:11434", "llava:13b"),
            "run \"ollama pull llava:13b\" on the Ollama host (http://10.0.0.5:11434)"
        );
        assert_eq!(
            missing_model_fix(ProviderKind::Vllm, "http://gpu:8000/v1", "Qwen/Qwen2.5-7B"),
            "the server at http://gpu:8000/v1 does not serve Qwen/Qwen2.5-7B; start it with that model or fix the route"
        );
    }

    fn attempt(target: &str, class: FailureClass, status: Option<u16>) -> Attempt {
        Attempt { target: target.into(), key: None, status, class, message: "m".into(), latency_ms: 1, skipped: false }
    }

    #[test]
    fn a_missing_model_everywhere_is_the_operators_502() {
        let e = GatewayError::all_failed(vec![attempt("local/x", FailureClass::ModelNotFound, Some(404))], None);
        assert_eq!((e.status(), e.code().as_str(), e.kind()), (502, "upstream_model_not_found", "upstream_error"));
        assert!(e.to_string().contains("operator"), "{e}");
        // Mixed with an outage, the summary is the usual one; each attempt keeps its own class.
        let mixed = GatewayError::all_failed(
            vec![attempt("local/x", FailureClass::ModelNotFound, Some(404)), attempt("cloud/y", FailureClass::Transient, Some(500))],
            None,
        );
        assert_eq!((mixed.status(), mixed.code().as_str()), (502, "all_attempts_failed"));
        assert_eq!(mixed.attempts()[0].class, FailureClass::ModelNotFound);
    }
}
