//! Errors of the translation layer, and the provider-neutral view of an upstream's error body.
//!
//! Translation can fail in two ways only: the caller asked for something the target provider cannot express
//! (a 400 for the caller), or the upstream sent something we cannot read (a 502). Everything else is I/O and
//! belongs to the engine.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    /// The request cannot be expressed for this provider (for example `n > 1` on Anthropic).
    #[error("{message}")]
    Unsupported { message: String, param: Option<String> },
    /// The upstream answered with a body we could not parse.
    #[error("upstream sent a malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// The upstream answered 2xx but the body is an error object.
    #[error("upstream returned an error: {}", .0.message)]
    Upstream(UpstreamError),
    /// A stream's line or event grew past the parser's bound without ending (a broken or hostile
    /// upstream); the stream cannot be read on.
    #[error("upstream sent {what} longer than {limit} bytes")]
    TooLong { what: &'static str, limit: usize },
}

impl WireError {
    pub fn unsupported(message: impl Into<String>, param: Option<&str>) -> Self {
        WireError::Unsupported { message: message.into(), param: param.map(str::to_string) }
    }

    /// OpenAI's deprecated `function` role at `messages[i]`, which only OpenAI-shaped providers still take.
    pub fn function_role(provider: &str, i: usize) -> Self {
        WireError::unsupported(
            format!("the deprecated \"function\" role cannot be sent to {provider}; use \"tool\" messages with a tool_call_id"),
            Some(&format!("messages[{i}].role")),
        )
    }

    pub fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Self {
        WireError::Malformed { what, detail: detail.to_string() }
    }
}

/// An upstream error, normalised from whatever shape the provider uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamError {
    /// HTTP status; for an error that arrived inside a 200 stream, the status it stands for
    /// (for example 529 for Anthropic's `overloaded_error`), or 0 when the provider gave no hint.
    pub status: u16,
    pub message: String,
    /// The provider's error type (`rate_limit_error`, `invalid_request_error`, ...).
    pub kind: Option<String>,
    /// The provider's machine code (`context_length_exceeded`, `DeploymentNotFound`, ...).
    pub code: Option<String>,
    pub param: Option<String>,
}

impl UpstreamError {
    /// Reads the common error shapes: `{"error":{message,type,code,param}}` (OpenAI, Azure, vLLM with an
    /// integer code), `{"error":"text"}` (Ollama, vLLM auth), `{"type":"error","error":{type,message}}`
    /// (Anthropic), flat `{"object":"error","message":…}` (Mistral, old vLLM), `{"message":…}` (Cohere),
    /// `{"detail":…}` (FastAPI servers), or plain text from a proxy.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        let mut out = UpstreamError { status, ..Default::default() };
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                let obj = match v.get("error") {
                    Some(Value::String(s)) => {
                        out.message = s.clone();
                        return out.with_default_message();
                    }
                    Some(e @ Value::Object(_)) => e,
                    _ => &v,
                };
                out.message = obj.get("message").or_else(|| obj.get("detail")).map(value_text).unwrap_or_default();
                out.kind = obj.get("type").and_then(value_opt_text);
                out.code = obj.get("code").and_then(value_opt_text);
                out.param = obj.get("param").and_then(value_opt_text);
            }
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                out.message = truncate(text.trim(), 512);
            }
        }
        out.with_default_message()
    }

    fn with_default_message(mut self) -> Self {
        if self.message.is_empty() {
            self.message = format!("upstream returned status {}", self.status);
        }
        self
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn value_opt_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => Some(value_text(other)),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_known_shape() {
        let e = UpstreamError::from_body(
            429,
            br#"{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(
            (e.message.as_str(), e.code.as_deref(), e.kind.as_deref()),
            ("slow down", Some("rate_limit_exceeded"), Some("requests"))
        );
        let e = UpstreamError::from_body(400, br#"{"error":{"message":"bad","type":"BadRequestError","param":null,"code":400}}"#);
        assert_eq!(e.code.as_deref(), Some("400"));
        let e = UpstreamError::from_body(404, br#"{"error":"model \"x\" not found"}"#);
        assert_eq!(e.message, "model \"x\" not found");
        let e = UpstreamError::from_body(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#,
        );
        assert_eq!((e.message.as_str(), e.kind.as_deref()), ("Overloaded", Some("overloaded_error")));
        let e = UpstreamError::from_body(
            422,
            br#"{"object":"error","message":"nope","type":"invalid_request_error","param":null,"code":null}"#,
        );
        assert_eq!(e.message, "nope");
        let e = UpstreamError::from_body(401, br#"{"detail":"Unauthorized"}"#);
        assert_eq!(e.message, "Unauthorized");
        let e = UpstreamError::from_body(502, b"<html>Bad Gateway</html>");
        assert_eq!(e.message, "<html>Bad Gateway</html>");
        let e = UpstreamError::from_body(500, b"");
        assert_eq!(e.message, "upstream returned status 500");
    }
}
