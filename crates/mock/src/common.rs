//! Plumbing every flavour shares: the per-request context, the neutral error type each flavour renders in
//! its own shape, ids, timestamps and small response helpers. It exists so that the flavour modules hold
//! only what differs between the wire formats. It is the bottom of the module graph: it imports no flavour
//! and no fault code (rendering an error in the request's flavour is dispatched in `lib.rs`), so every
//! other module can import it without a cycle.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::knobs::Knobs;
use crate::{Flavor, KeyEcho, MockHandle};

/// Everything a flavour handler needs about one request.
pub(crate) struct Ctx {
    pub handle: MockHandle,
    pub flavor: Flavor,
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The raw body bytes (seed for deterministic ids).
    pub raw: bytes::Bytes,
    /// The body parsed as JSON, `None` if empty or not JSON.
    pub body: Option<Value>,
    pub key: Option<String>,
    /// The requested model with any `+key=value` suffix stripped.
    pub model: Option<String>,
    pub knobs: Knobs,
    pub started: Instant,
    /// Random alphanumerics used to build the flavour's request id.
    pub request_id: String,
}

impl Ctx {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// Whether `model` is configured (an empty list accepts anything).
    pub fn model_known(&self, model: &str) -> bool {
        let models = &self.handle.config().models;
        models.is_empty() || models.iter().any(|m| m == model)
    }

    pub fn model_or_empty(&self) -> &str {
        self.model.as_deref().unwrap_or("")
    }

    /// Milliseconds since the request arrived.
    pub fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    /// A seed for deterministic ids: the hash of the request's `messages` (so a streamed and a
    /// non-streamed request for the same conversation get the same tool-call ids), else of the body.
    pub fn seed(&self) -> [u8; 32] {
        match self.body.as_ref().and_then(|b| b.get("messages")) {
            Some(m) => Sha256::digest(m.to_string().as_bytes()).into(),
            None => Sha256::digest(&self.raw).into(),
        }
    }
}

/// A flavour-neutral error; each flavour renders it with its own status mapping and body shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ApiError {
    /// A bare status (faults, `[[error:N]]`, `key_status`): the flavour's canonical body for it.
    Status(u16),
    /// 400: the request is invalid.
    Invalid { message: String, param: Option<String> },
    /// 401: no key was presented.
    MissingKey,
    /// 401: a key was presented but is not accepted.
    BadKey,
    /// 404: the model (Azure: deployment) does not exist.
    ModelNotFound(String),
    /// 404: no such route.
    NoRoute,
    /// 405: the route exists with another method.
    MethodNotAllowed,
    /// 400: the prompt is over the context window. `window` is the mock's configured `context_window`
    /// (the message then names it and the real prompt count); `None` is the `[[context]]` directive,
    /// which names the flavour's usual window and a prompt over it.
    ContextLength { prompt_tokens: u64, window: Option<u64> },
    /// The account is out of quota or credit (`quota_exhausted_keys`, `[[quota]]`): OpenAI and Azure 429
    /// `insufficient_quota`, Anthropic 400, Ollama 429. Not a rate limit: no retry or rate-limit headers.
    Quota,
    /// 413: the body is too large.
    TooLarge,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid { message: message.into(), param: None }
    }

    pub fn invalid_param(message: impl Into<String>, param: impl Into<String>) -> Self {
        ApiError::Invalid { message: message.into(), param: Some(param.into()) }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Status(s) => *s,
            ApiError::Quota => 429,
            ApiError::Invalid { .. } | ApiError::ContextLength { .. } => 400,
            ApiError::MissingKey | ApiError::BadKey => 401,
            ApiError::ModelNotFound(_) | ApiError::NoRoute => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::TooLarge => 413,
        }
    }
}

/// The API key for counting and `key_status`: the one the flavour authenticates with, else any of
/// `authorization` (Bearer), `x-api-key` or `api-key`.
pub(crate) fn extract_key(flavor: Flavor, h: &HeaderMap) -> Option<String> {
    auth_key(flavor, h).or_else(|| bearer(h)).or_else(|| header(h, "x-api-key")).or_else(|| header(h, "api-key"))
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

fn bearer(h: &HeaderMap) -> Option<String> {
    let v = header(h, "authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string()).filter(|t| !t.is_empty())
}

/// The key as the real service authenticates it, read only from the headers that service reads
/// (OpenAI, Ollama and Cohere: Bearer; Azure: `api-key` or Bearer; Anthropic: `x-api-key` or Bearer; Gemini:
/// `x-goog-api-key` or Bearer; Bedrock: a Bedrock API key as Bearer, or the access key id of a SigV4
/// `Authorization`).
pub(crate) fn auth_key(flavor: Flavor, h: &HeaderMap) -> Option<String> {
    match flavor {
        Flavor::Bedrock => bearer(h).or_else(|| {
            let v = header(h, "authorization")?;
            switchyard_wire::sigv4::parse_authorization(&v).ok().map(|a| a.access_key_id.to_string())
        }),
        Flavor::Anthropic => header(h, "x-api-key").or_else(|| bearer(h)),
        Flavor::Azure => header(h, "api-key").or_else(|| bearer(h)),
        Flavor::OpenAi | Flavor::Ollama | Flavor::Cohere => bearer(h),
        // The Gemini API's key, or Vertex's OAuth token (`?key=` is read in `lib.rs`, which sees the query).
        Flavor::Gemini => header(h, "x-goog-api-key").or_else(|| bearer(h)),
    }
}

/// Checks the authenticating key against `require_key` (and, if `required`, that one is present).
pub(crate) fn check_key(ctx: &Ctx, required: bool) -> Result<(), ApiError> {
    match (auth_key(ctx.flavor, &ctx.headers), &ctx.handle.config().require_key) {
        (None, Some(_)) => Err(ApiError::MissingKey),
        (None, None) if required => Err(ApiError::MissingKey),
        (Some(k), Some(want)) if &k != want => Err(ApiError::BadKey),
        _ => Ok(()),
    }
}

/// Text of the context-length error: (the window it names, the prompt tokens it names). With a configured
/// window those are the window and the real count; the `[[context]]` directive names the flavour's
/// `default_window` and a prompt that much over it.
pub(crate) fn context_numbers(prompt_tokens: u64, window: Option<u64>, default_window: u64) -> (u64, u64) {
    match window {
        Some(w) => (w, prompt_tokens),
        None => (default_window, default_window + prompt_tokens),
    }
}

/// A key masked as OpenAI masks it in "Incorrect API key provided": the first 8 characters, `*` for each
/// one of the middle, the last 4 (`sk-proj-****…abcd`); a key of 12 characters or fewer is all `*`.
pub(crate) fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 12 {
        return "*".repeat(chars.len().max(4));
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 12))
}

/// The presented key as an `echo_key` upstream quotes it, if it does.
pub(crate) fn echoed_key(ctx: &Ctx) -> Option<String> {
    let key = ctx.key.as_deref()?;
    match ctx.knobs.echo_key? {
        KeyEcho::Masked => Some(mask_key(key)),
        KeyEcho::Bearer => Some(format!("Bearer {key}")),
    }
}

/// Makes the error message at `pointer` in `body` quote the key, when `echo_key` asks for it (and the
/// message does not quote it already).
pub(crate) fn echo_key_into(ctx: &Ctx, body: &mut Value, pointer: &str) {
    let Some(shown) = echoed_key(ctx) else { return };
    if let Some(Value::String(m)) = body.pointer_mut(pointer) {
        if !m.contains(&shown) {
            m.push_str(&format!(" (request key: {shown})"));
        }
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Now as RFC 3339 UTC with nanoseconds (Ollama's `created_at`).
pub(crate) fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (date, time) = civil(d.as_secs());
    format!("{date}T{time}.{:09}Z", d.subsec_nanos())
}

/// RFC 3339 UTC without fractions for a unix time.
pub(crate) fn rfc3339(secs: u64) -> String {
    let (date, time) = civil(secs);
    format!("{date}T{time}Z")
}

/// (YYYY-MM-DD, HH:MM:SS) for a unix time, via the days-to-civil algorithm.
fn civil(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), format!("{:02}:{:02}:{:02}", rem / 3_600, (rem % 3_600) / 60, rem % 60))
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(crate) fn random_alnum(len: usize) -> String {
    (0..len).map(|_| fastrand::alphanumeric()).collect()
}

pub(crate) fn random_hex(len: usize) -> String {
    (0..len).map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)])).collect()
}

/// `len` (at most 32) alphanumerics derived from `seed` and `index`: deterministic per request body.
pub(crate) fn derived_alnum(seed: &[u8], index: usize, len: usize) -> String {
    let mut h = Sha256::new();
    h.update(seed);
    h.update((index as u64).to_le_bytes());
    h.finalize().iter().take(len).map(|b| char::from(ALNUM[usize::from(*b) % ALNUM.len()])).collect()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn b64_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s.trim())
}

pub(crate) fn b64_encode(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The media type of an image from its first bytes.
pub(crate) fn sniff_image(data: &[u8]) -> &'static str {
    if data.starts_with(&[0x89, b'P', b'N', b'G']) {
        "image/png"
    } else if data.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if data.starts_with(b"GIF8") {
        "image/gif"
    } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "application/octet-stream"
    }
}

/// Percent-decodes a URL component (`+` is kept as is: it is literal in paths).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Deterministic unit-length embedding of `dims` values for `text`.
pub(crate) fn embedding(text: &str, dims: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(dims);
    let mut block = 0u64;
    while v.len() < dims {
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        h.update(block.to_le_bytes());
        for pair in h.finalize().chunks(2) {
            if v.len() == dims {
                break;
            }
            let n = u16::from_le_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            v.push(f32::from(n) / 32_767.5 - 1.0);
        }
        block += 1;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

/// A response with a JSON body and extra headers.
pub(crate) fn json_response(status: u16, headers: &[(&'static str, String)], body: &Value) -> Response {
    bytes_response(status, "application/json", headers, Body::from(body.to_string()))
}

/// A response with the given content type, extra headers and body.
pub(crate) fn bytes_response(status: u16, content_type: &'static str, headers: &[(&'static str, String)], body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    resp
}

/// `retry-after` / `retry-after-ms` headers for statuses clients retry after waiting (never on a quota
/// error: waiting does not bring credit back).
pub(crate) fn retry_headers(ctx: &Ctx, err: &ApiError, out: &mut Vec<(&'static str, String)>) {
    if *err != ApiError::Quota && matches!(err.status(), 429 | 503 | 529) {
        if let Some(secs) = ctx.knobs.retry_after {
            out.push(("retry-after", secs.to_string()));
            out.push(("retry-after-ms", (secs * 1000).to_string()));
        }
    }
}

/// Whitespace-separated words (the mock's token count).
pub(crate) fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// A short JSON type name for error messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_715_367_049), "2024-05-10T18:50:49Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%2Bb+c%20d"), "a+b+c d");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("x%4"), "x%4");
    }

    #[test]
    fn embeddings_are_unit_and_stable() {
        let a = embedding("hello", 8);
        assert_eq!(a.len(), 8);
        assert_eq!(a, embedding("hello", 8));
        assert_ne!(a, embedding("world", 8));
        let n: f32 = a.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
        assert_eq!(embedding("x", 40).len(), 40);
    }

    #[test]
    fn masks() {
        assert_eq!(mask_key("sk-proj-abcdefgh1234"), "sk-proj-********1234");
        assert_eq!(mask_key("sk-abcdefgh1234"), "sk-abcde***1234");
        assert_eq!(mask_key("short"), "*****");
    }
}
