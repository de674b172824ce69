//! The Anthropic flavour: `POST /v1/messages` (JSON and named-event SSE), `POST /v1/messages/count_tokens`
//! and `GET /v1/models`, with the Messages API's strict validation (required `max_tokens` and
//! `anthropic-version`, user/assistant roles only, `tool_result` ids that match the previous turn's
//! `tool_use` blocks, raw base64 images of the allowed types) and its error bodies. The strictness is the
//! point: an OpenAI-to-Anthropic translation bug in the gateway should fail loudly here.
//!
//! Extended thinking as Anthropic does it: with `thinking` enabled an answer starts with a `thinking` block
//! whose `signature` the mock can check later (a hash of its text), and a request whose last assistant turn
//! called tools must send that turn's thinking back first, unchanged, or it is refused with Anthropic's 400.

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::behaviour::{
    self, arg_fragments, prompt_tokens, text_chunks, Conversation, Finish, Image, Message, Reply, Role, ToolCall, ToolChoice,
};
use crate::common::{
    b64_decode, check_key, context_numbers, derived_alnum, echo_key_into, json_response, json_type, percent_decode, random_alnum,
    retry_headers, rfc3339, sniff_image, ApiError, Ctx,
};
use crate::faults::{gate, json_ok, stream_response, Frame, Framing};
use crate::ratelimit::{input_tokens, output_tokens, rfc3339_after, wait, Limit};
use crate::FaultKind;

const MEDIA_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];
/// A fixed creation date for listed models.
const MODEL_CREATED: u64 = 1_747_180_800;
/// The organisation's limits the mock reports, a minute each (a high usage tier's Sonnet): requests,
/// input tokens and output tokens.
const RPM: u64 = 4_000;
const ITPM: u64 = 2_000_000;
const OTPM: u64 = 400_000;
/// The `limit`, `remaining` and `reset` headers of the requests, tokens, input-tokens and output-tokens limits.
const RATE_LIMIT_HEADERS: [[&str; 3]; 4] = [
    ["anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"],
    ["anthropic-ratelimit-tokens-limit", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"],
    ["anthropic-ratelimit-input-tokens-limit", "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"],
    ["anthropic-ratelimit-output-tokens-limit", "anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset"],
];

enum Route {
    Messages,
    CountTokens,
    Models,
    Model(String),
    Unknown,
}

fn route(path: &str) -> Route {
    let p = path.trim_end_matches('/');
    match p {
        "/v1/messages" => Route::Messages,
        "/v1/messages/count_tokens" => Route::CountTokens,
        "/v1/models" => Route::Models,
        _ => match p.strip_prefix("/v1/models/") {
            Some(id) if !id.is_empty() && !id.contains('/') => Route::Model(percent_decode(id)),
            _ => Route::Unknown,
        },
    }
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    let route = route(&ctx.path);
    let want = match route {
        Route::Messages | Route::CountTokens => Method::POST,
        Route::Models | Route::Model(_) => Method::GET,
        Route::Unknown => return error(&ctx, ApiError::NoRoute),
    };
    if ctx.method != want {
        return error(&ctx, ApiError::MethodNotAllowed);
    }
    if let Err(e) = check_key(&ctx, true) {
        return error(&ctx, e);
    }
    if ctx.header("anthropic-version").is_none_or(|v| v.trim().is_empty()) {
        return error(&ctx, ApiError::invalid("anthropic-version: header is required"));
    }
    let kind = match gate(&ctx).await {
        Ok(k) => k,
        Err(e) => return error(&ctx, e),
    };
    match route {
        Route::Messages => messages(&ctx, kind),
        Route::CountTokens => count_tokens(&ctx, kind),
        Route::Models => models(&ctx, kind),
        Route::Model(id) => model(&ctx, &id, kind),
        Route::Unknown => error(&ctx, ApiError::NoRoute),
    }
}

fn request_id(ctx: &Ctx) -> String {
    format!("req_{}", ctx.request_id)
}

/// Headers every Anthropic response carries.
fn headers(ctx: &Ctx) -> Vec<(&'static str, String)> {
    vec![("request-id", request_id(ctx)), ("anthropic-organization-id", "switchyard-mock".to_string())]
}

/// Anthropic's `anthropic-ratelimit-*` headers (resets as RFC 3339 times): requests, input tokens, output
/// tokens, and `tokens-*` for whichever token limit is the more restrictive. An answer used one request,
/// its input estimate and its `max_tokens`; a 429 (`refused`) found the request limit used up, as its
/// message says.
fn rate_limit_headers(ctx: &Ctx, refused: bool, out: &mut Vec<(&'static str, String)>) {
    let (requests, input, output) = if refused {
        (Limit::used_up(RPM, wait(ctx)), Limit::full(ITPM), Limit::full(OTPM))
    } else {
        (Limit::after(RPM, 1), Limit::after(ITPM, input_tokens(ctx)), Limit::after(OTPM, output_tokens(ctx, &["max_tokens"])))
    };
    let limits = [requests, input.tighter(output), input, output];
    for ([limit, remaining, reset], l) in RATE_LIMIT_HEADERS.into_iter().zip(limits) {
        out.push((limit, l.limit.to_string()));
        out.push((remaining, l.remaining.to_string()));
        out.push((reset, rfc3339_after(l.reset)));
    }
}

/// Headers of a served Messages answer: the common ones plus the rate-limit headers.
fn answer_headers(ctx: &Ctx) -> Vec<(&'static str, String)> {
    let mut h = headers(ctx);
    rate_limit_headers(ctx, false, &mut h);
    h
}

pub(crate) fn error(ctx: &Ctx, err: ApiError) -> Response {
    // Anthropic answers an exhausted credit balance with a plain 400.
    let status = if err == ApiError::Quota { 400 } else { err.status() };
    let model = ctx.model_or_empty();
    let (kind, message): (&str, String) = match &err {
        ApiError::Invalid { message, .. } => ("invalid_request_error", message.clone()),
        ApiError::MissingKey => ("authentication_error", "x-api-key header is required".into()),
        ApiError::BadKey | ApiError::Status(401) => ("authentication_error", "invalid x-api-key".into()),
        ApiError::Status(402) => ("billing_error", "Your credit balance is too low to access the Anthropic API.".into()),
        ApiError::Status(403) => ("permission_error", "Your API key does not have permission to use the specified resource.".into()),
        ApiError::ModelNotFound(m) => ("not_found_error", format!("model: {m}")),
        ApiError::Status(404) => ("not_found_error", format!("model: {model}")),
        ApiError::NoRoute => ("not_found_error", "Not Found".into()),
        ApiError::MethodNotAllowed => ("invalid_request_error", "Method Not Allowed".into()),
        ApiError::TooLarge | ApiError::Status(413) => ("request_too_large", "Request exceeds the maximum allowed number of bytes.".into()),
        ApiError::ContextLength { prompt_tokens, window } => {
            let (window, tokens) = context_numbers(*prompt_tokens, *window, 200_000);
            ("invalid_request_error", format!("prompt is too long: {tokens} tokens > {window} maximum"))
        }
        ApiError::Quota => (
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."
                .into(),
        ),
        ApiError::Status(429) => (
            "rate_limit_error",
            "This request would exceed your organization's rate limit of 4,000 requests per minute. Please retry later.".into(),
        ),
        ApiError::Status(500) => ("api_error", "Internal server error".into()),
        ApiError::Status(503) => ("api_error", "Service unavailable".into()),
        ApiError::Status(504) => ("timeout_error", "Request timed out".into()),
        ApiError::Status(529) => ("overloaded_error", "Overloaded".into()),
        ApiError::Status(s) if *s >= 500 => ("api_error", format!("Internal server error ({s})")),
        ApiError::Status(s) => ("invalid_request_error", format!("Request failed ({s})")),
    };
    let mut body = json!({"type": "error", "error": {"type": kind, "message": message},
        "request_id": request_id(ctx)});
    echo_key_into(ctx, &mut body, "/error/message");
    let mut h = headers(ctx);
    if status == 429 {
        rate_limit_headers(ctx, true, &mut h);
    }
    retry_headers(ctx, &err, &mut h);
    json_response(status, &h, &body)
}

fn field_required(path: &str) -> ApiError {
    ApiError::invalid(format!("{path}: Field required"))
}

fn text_of_blocks(v: &Value, path: &str) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => match b.get("text").and_then(Value::as_str) {
                        Some(t) => out.push(t.to_string()),
                        None => return Err(field_required(&format!("{path}.{j}.text"))),
                    },
                    Some("image" | "document" | "search_result") => {}
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "{path}.{j}.type: Input should be 'text', 'image', 'document' or 'search_result'"
                        )))
                    }
                }
            }
            Ok(out)
        }
        other => {
            Err(ApiError::invalid(format!("{path}: Input should be a valid string or list of content blocks, got {}", json_type(other))))
        }
    }
}

fn parse_image(b: &Value, path: &str) -> Result<Image, ApiError> {
    let src = b.get("source").ok_or_else(|| field_required(&format!("{path}.source")))?;
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mt = src.get("media_type").and_then(Value::as_str).unwrap_or("");
            if !MEDIA_TYPES.contains(&mt) {
                return Err(ApiError::invalid(format!(
                    "{path}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                )));
            }
            let data = src.get("data").and_then(Value::as_str).ok_or_else(|| field_required(&format!("{path}.source.base64.data")))?;
            if data.starts_with("data:") {
                return Err(ApiError::invalid(format!(
                    "{path}.source.base64.data: The image data must be raw base64 without a data URL prefix"
                )));
            }
            let bytes = b64_decode(data).map_err(|_| ApiError::invalid(format!("{path}.source.base64.data: Invalid base64 image data")))?;
            let sniffed = sniff_image(&bytes);
            if sniffed != "application/octet-stream" && sniffed != mt {
                return Err(ApiError::invalid(format!("{path}.source.base64.data: Image does not match the provided media type {mt}")));
            }
            Ok(Image::Inline { media_type: mt.to_string(), data: bytes })
        }
        Some("url") => {
            let url = src.get("url").and_then(Value::as_str).unwrap_or("");
            if url.starts_with("https://") || url.starts_with("http://") {
                Ok(Image::Url(url.to_string()))
            } else {
                Err(ApiError::invalid(format!("{path}.source.url.url: Input should be a valid URL")))
            }
        }
        _ => Err(ApiError::invalid(format!(
            "{path}.source: Input tag found using 'type' does not match any of the expected tags: 'base64', 'url', 'file'"
        ))),
    }
}

/// A `document` block: a base64 PDF (`application/pdf` only, as Anthropic has it) or a plain-text source,
/// kept as bytes for the echo; URL, `content` and `file` sources are accepted and noted as empty.
fn parse_document(b: &Value, path: &str) -> Result<Image, ApiError> {
    let src = b.get("source").ok_or_else(|| field_required(&format!("{path}.source")))?;
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mt = src.get("media_type").and_then(Value::as_str).unwrap_or("");
            if mt != "application/pdf" {
                return Err(ApiError::invalid(format!("{path}.source.base64.media_type: Input should be 'application/pdf'")));
            }
            let data = src.get("data").and_then(Value::as_str).ok_or_else(|| field_required(&format!("{path}.source.base64.data")))?;
            let bytes = b64_decode(data).map_err(|_| ApiError::invalid(format!("{path}.source.base64.data: Invalid base64 data")))?;
            if !bytes.starts_with(b"%PDF-") {
                return Err(ApiError::invalid(format!("{path}.source.base64.data: The PDF specified was not valid.")));
            }
            Ok(Image::Document { media_type: mt.to_string(), data: bytes })
        }
        Some("text") => {
            if src.get("media_type").and_then(Value::as_str) != Some("text/plain") {
                return Err(ApiError::invalid(format!("{path}.source.text.media_type: Input should be 'text/plain'")));
            }
            let data = src.get("data").and_then(Value::as_str).ok_or_else(|| field_required(&format!("{path}.source.text.data")))?;
            Ok(Image::Document { media_type: "text/plain".into(), data: data.as_bytes().to_vec() })
        }
        Some(kind @ ("url" | "content" | "file")) => Ok(Image::Document { media_type: format!("({kind})"), data: Vec::new() }),
        _ => Err(ApiError::invalid(format!(
            "{path}.source: Input tag found using 'type' does not match any of the expected tags: 'base64', 'text', 'content', 'url', 'file'"
        ))),
    }
}

/// Parses and validates a Messages body. Returns the conversation and whether it asks for a stream.
pub(crate) fn parse_messages(body: &Value, need_max_tokens: bool) -> Result<(Conversation, bool), ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::invalid("Input should be a valid dictionary"))?;
    match obj.get("model") {
        Some(Value::String(_)) => {}
        None => return Err(field_required("model")),
        Some(_) => return Err(ApiError::invalid("model: Input should be a valid string")),
    }
    let mut conv = Conversation { n: 1, ..Conversation::default() };
    match obj.get("max_tokens") {
        None | Some(Value::Null) if need_max_tokens => return Err(field_required("max_tokens")),
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => conv.max_tokens = Some(n),
            Some(_) => return Err(ApiError::invalid("max_tokens: Input should be greater than or equal to 1")),
            None => return Err(ApiError::invalid("max_tokens: Input should be a valid integer")),
        },
    }
    let msgs = match obj.get("messages") {
        Some(Value::Array(a)) => a,
        None => return Err(field_required("messages")),
        Some(_) => return Err(ApiError::invalid("messages: Input should be a valid list")),
    };
    if msgs.is_empty() {
        return Err(ApiError::invalid("messages: at least one message is required"));
    }
    let mut prev_tool_ids: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system") => {
                return Err(ApiError::invalid(
                    "messages: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role.",
                ))
            }
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )))
            }
            None => return Err(field_required(&format!("messages.{i}.role"))),
        };
        if i == 0 && role != Role::User {
            return Err(ApiError::invalid("messages: first message must use the \"user\" role"));
        }
        let mut msg = Message::new(role);
        let mut this_tool_ids: Vec<String> = Vec::new();
        let mut answered: Vec<String> = Vec::new();
        let path = format!("messages.{i}.content");
        match m.get("content") {
            None | Some(Value::Null) => return Err(field_required(&path)),
            Some(Value::String(s)) => msg.texts.push(s.clone()),
            Some(Value::Array(blocks)) => {
                for (j, b) in blocks.iter().enumerate() {
                    let bp = format!("{path}.{j}");
                    let t = b.get("type").and_then(Value::as_str).unwrap_or("");
                    match t {
                        "text" => match b.get("text").and_then(Value::as_str) {
                            Some(s) => msg.texts.push(s.to_string()),
                            None => return Err(field_required(&format!("{bp}.text"))),
                        },
                        "image" => msg.images.push(parse_image(b, &bp)?),
                        "document" if role == Role::User => msg.images.push(parse_document(b, &bp)?),
                        "tool_use" => {
                            if role != Role::Assistant {
                                return Err(ApiError::invalid(format!(
                                    "{bp}: `tool_use` blocks can only be in `assistant` messages"
                                )));
                            }
                            let id = b
                                .get("id")
                                .and_then(Value::as_str)
                                .ok_or_else(|| field_required(&format!("{bp}.id")))?;
                            let name = b
                                .get("name")
                                .and_then(Value::as_str)
                                .ok_or_else(|| field_required(&format!("{bp}.name")))?;
                            let input = b.get("input").unwrap_or(&Value::Null);
                            if !input.is_object() {
                                return Err(ApiError::invalid(format!(
                                    "{bp}.input: Input should be a valid dictionary"
                                )));
                            }
                            this_tool_ids.push(id.to_string());
                            msg.tool_calls.push(ToolCall {
                                name: name.to_string(),
                                arguments: input.to_string(),
                            });
                        }
                        "tool_result" => {
                            if role != Role::User {
                                return Err(ApiError::invalid(format!(
                                    "{bp}: `tool_result` blocks can only be in `user` messages"
                                )));
                            }
                            let id = b
                                .get("tool_use_id")
                                .and_then(Value::as_str)
                                .ok_or_else(|| field_required(&format!("{bp}.tool_use_id")))?;
                            if !prev_tool_ids.iter().any(|p| p == id) {
                                return Err(ApiError::invalid(format!(
                                    "{bp}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                                )));
                            }
                            answered.push(id.to_string());
                            let text = match b.get("content") {
                                None | Some(Value::Null) => Vec::new(),
                                Some(c) => text_of_blocks(c, &format!("{bp}.content"))?,
                            };
                            msg.tool_results.push(text.join(" "));
                        }
                        "document" | "thinking" | "redacted_thinking" | "search_result"
                        | "server_tool_use" | "web_search_tool_result" => {}
                        other => {
                            return Err(ApiError::invalid(format!(
                                "{bp}: Input tag '{other}' found using 'type' does not match any of the expected tags: 'text', 'image', 'document', 'search_result', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result', 'server_tool_use', 'web_search_tool_result'"
                            )))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "{path}: Input should be a valid string or list of content blocks, got {}",
                    json_type(other)
                )))
            }
        }
        let missing: Vec<&String> = prev_tool_ids.iter().filter(|id| !answered.contains(id)).collect();
        if !missing.is_empty() {
            return Err(ApiError::invalid(format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        prev_tool_ids = this_tool_ids;
        conv.messages.push(msg);
    }
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(v) => conv.system = text_of_blocks(v, "system")?,
    }
    if let Some(t) = obj.get("temperature").filter(|v| !v.is_null()) {
        match t.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => {}
            Some(x) if x > 1.0 => return Err(ApiError::invalid("temperature: Input should be less than or equal to 1")),
            Some(_) => return Err(ApiError::invalid("temperature: Input should be greater than or equal to 0")),
            None => return Err(ApiError::invalid("temperature: Input should be a valid number")),
        }
    }
    match obj.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (j, s) in a.iter().enumerate() {
                match s.as_str() {
                    Some(s) => conv.stop.push(s.to_string()),
                    None => return Err(ApiError::invalid(format!("stop_sequences.{j}: Input should be a valid string"))),
                }
            }
        }
        Some(_) => return Err(ApiError::invalid("stop_sequences: Input should be a valid list")),
    }
    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        let tools = tools.as_array().ok_or_else(|| ApiError::invalid("tools: Input should be a valid list"))?;
        for (j, t) in tools.iter().enumerate() {
            let name = t.get("name").and_then(Value::as_str).ok_or_else(|| field_required(&format!("tools.{j}.name")))?;
            let custom = t.get("type").is_none_or(|ty| ty == "custom");
            if custom && !t.get("input_schema").is_some_and(Value::is_object) {
                return Err(field_required(&format!("tools.{j}.custom.input_schema")));
            }
            conv.tools.push(name.to_string());
            if let Some(schema) = t.get("input_schema").filter(|s| s.is_object()) {
                conv.tool_schemas.insert(name.to_string(), schema.clone());
            }
        }
    }
    if let Some(oc) = obj.get("output_config").filter(|v| !v.is_null()) {
        if let Some(f) = oc.get("format").filter(|v| !v.is_null()) {
            if f.get("type").and_then(Value::as_str) != Some("json_schema") {
                return Err(ApiError::invalid("output_config.format.type: Input should be 'json_schema'"));
            }
            if !f.get("schema").is_some_and(Value::is_object) {
                return Err(field_required("output_config.format.schema"));
            }
            conv.json_mode = true;
        }
    }
    if let Some(tc) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        conv.tool_choice = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => ToolChoice::Auto,
            Some("any") => ToolChoice::Required,
            Some("none") => ToolChoice::None,
            Some("tool") => match tc.get("name").and_then(Value::as_str) {
                Some(n) => ToolChoice::Named(n.to_string()),
                None => return Err(field_required("tool_choice.tool.name")),
            },
            _ => {
                return Err(ApiError::invalid(
                    "tool_choice: Input tag found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
                ))
            }
        };
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("stream: Input should be a valid boolean")),
    };
    Ok((conv, stream))
}

fn stop_reason(r: &Reply) -> &'static str {
    match r.finish {
        Finish::Stop if r.stop_sequence.is_some() => "stop_sequence",
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::Filter => "refusal",
    }
}

fn tool_id(seed: &[u8], i: usize) -> String {
    format!("toolu_{}", derived_alnum(seed, i, 24))
}

fn args_object(args: &str) -> Value {
    serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or_else(|| json!({}))
}

pub(crate) fn messages(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let Some(body) = ctx.body.as_ref() else {
        return error(ctx, ApiError::invalid("There was an error parsing the body of your request: it is not valid JSON"));
    };
    let (conv, stream) = match parse_messages(body, true) {
        Ok(p) => p,
        Err(e) => return error(ctx, e),
    };
    let thinking = match check_thinking(body) {
        Ok(t) => t,
        Err(e) => return error(ctx, e),
    };
    let model = ctx.model_or_empty().to_string();
    if !ctx.model_known(&model) {
        return error(ctx, ApiError::ModelNotFound(model));
    }
    let reply = match behaviour::decide(&conv, ctx.knobs.context_window) {
        Ok(r) => r,
        Err(e) => return error(ctx, e),
    };
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) && !stream {
        return error(ctx, ApiError::Status(500));
    }
    let id = format!("msg_01{}", random_alnum(22));
    let seed = ctx.seed();
    let u = reply.usage;
    let thought = thinking.then(|| thought_of(&reply));
    if !stream {
        let mut content: Vec<Value> = Vec::new();
        if let Some(t) = &thought {
            content.push(json!({"type": "thinking", "thinking": t, "signature": signature_of(t)}));
        }
        if !reply.text.is_empty() {
            content.push(json!({"type": "text", "text": reply.text}));
        }
        for (i, c) in reply.tool_calls.iter().enumerate() {
            content.push(json!({"type": "tool_use", "id": tool_id(&seed, i), "name": c.name,
                "input": args_object(&c.arguments)}));
        }
        let body = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason(&reply),
            "stop_sequence": reply.stop_sequence,
            "usage": {"input_tokens": u.prompt - u.cached, "output_tokens": u.completion,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": u.cached,
                "service_tier": "standard"},
        });
        return json_ok(ctx, kind, &answer_headers(ctx), &body);
    }
    let mut frames = vec![Frame::named(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": u.prompt - u.cached, "output_tokens": 1,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": u.cached,
                "service_tier": "standard"}}}),
    )];
    let ping = Frame::named("ping", &json!({"type": "ping"}));
    let mut index = 0usize;
    if let Some(t) = &thought {
        frames.push(Frame::named(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ));
        frames.push(ping.clone());
        for piece in text_chunks(t) {
            frames.push(
                Frame::named(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "thinking_delta", "thinking": piece}}),
                )
                .content(),
            );
        }
        frames.push(Frame::named(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "signature_delta", "signature": signature_of(t)}}),
        ));
        frames.push(Frame::named("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    if !reply.text.is_empty() {
        frames.push(Frame::named(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}),
        ));
        frames.push(ping.clone());
        for piece in text_chunks(&reply.text) {
            frames.push(
                Frame::named(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": piece}}),
                )
                .content(),
            );
        }
        frames.push(Frame::named("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    for (i, c) in reply.tool_calls.iter().enumerate() {
        frames.push(Frame::named(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": tool_id(&seed, i), "name": c.name, "input": {}}}),
        ));
        if index == 0 {
            frames.push(ping.clone());
        }
        let delta = |p: &str| {
            Frame::named(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": p}}),
            )
        };
        frames.push(delta(""));
        for frag in arg_fragments(&c.arguments) {
            frames.push(delta(&frag).content());
        }
        frames.push(Frame::named("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    if index == 0 {
        frames.push(ping);
    }
    frames.push(Frame::named(
        "message_delta",
        &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(&reply), "stop_sequence": reply.stop_sequence},
            "usage": {"output_tokens": u.completion}}),
    ));
    frames.push(Frame::named("message_stop", &json!({"type": "message_stop"})));
    let mut err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    echo_key_into(ctx, &mut err, "/error/message");
    let err = Frame::named("error", &err);
    stream_response(ctx, Framing::Sse, frames, err, kind, answer_headers(ctx))
}

/// What the mock "thinks" before an answer: a sentence about what it will do.
fn thought_of(reply: &Reply) -> String {
    match reply.tool_calls.first() {
        Some(c) => format!("The user needs {}; I will call it.", c.name),
        None => "The user asked something; I will answer it.".to_string(),
    }
}

/// A thinking block's signature: what lets Anthropic (and this mock) tell its own thinking, unchanged.
fn signature_of(thinking: &str) -> String {
    format!("mocksig_{}", &crate::common::sha256_hex(thinking.as_bytes())[..32])
}

/// With `thinking` on: every thinking block sent back must carry its own signature, and a last assistant
/// turn that called tools (whose results this request answers) must start with its thinking. Whether
/// thinking is on is the answer.
fn check_thinking(body: &Value) -> Result<bool, ApiError> {
    let on = body.pointer("/thinking/type").and_then(Value::as_str).is_some_and(|t| t == "enabled" || t == "adaptive");
    let msgs = body.get("messages").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    for (i, m) in msgs.iter().enumerate() {
        for (j, b) in m.get("content").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if b.get("type").and_then(Value::as_str) != Some("thinking") {
                continue;
            }
            let text = b.get("thinking").and_then(Value::as_str).unwrap_or("");
            if b.get("signature").and_then(Value::as_str) != Some(signature_of(text).as_str()) {
                return Err(ApiError::invalid(format!("messages.{i}.content.{j}: Invalid `signature` in `thinking` block")));
            }
        }
    }
    if !on {
        return Ok(false);
    }
    let Some(last) = msgs.iter().rposition(|m| m.get("role").and_then(Value::as_str) == Some("assistant")) else { return Ok(true) };
    let blocks = msgs[last].get("content").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let calls_tools = blocks.iter().any(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"));
    let first = blocks.first().and_then(|b| b.get("type")).and_then(Value::as_str).unwrap_or("text");
    if calls_tools && last + 1 < msgs.len() && first != "thinking" && first != "redacted_thinking" {
        return Err(ApiError::invalid(format!(
            "messages.{last}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`."
        )));
    }
    Ok(true)
}

fn count_tokens(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let Some(body) = ctx.body.as_ref() else {
        return error(ctx, ApiError::invalid("There was an error parsing the body of your request: it is not valid JSON"));
    };
    match parse_messages(body, false) {
        Ok((conv, _)) => json_ok(ctx, kind, &headers(ctx), &json!({"input_tokens": prompt_tokens(&conv)})),
        Err(e) => error(ctx, e),
    }
}

/// "claude-sonnet-4-6" -> "Claude Sonnet 4.6".
fn display_name(id: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut version: Vec<&str> = Vec::new();
    for part in id.split('-') {
        if part.chars().all(|c| c.is_ascii_digit()) {
            if part.len() < 4 {
                version.push(part);
            }
        } else {
            let mut c = part.chars();
            if let Some(first) = c.next() {
                words.push(first.to_uppercase().chain(c).collect());
            }
        }
    }
    if !version.is_empty() {
        words.push(version.join("."));
    }
    words.join(" ")
}

fn model_json(id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": display_name(id),
        "created_at": rfc3339(MODEL_CREATED)})
}

fn models(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let all = &ctx.handle.config().models;
    let limit = ctx.query_param("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(20).clamp(1, 1000);
    let start = match ctx.query_param("after_id") {
        Some(after) => all.iter().position(|m| *m == after).map_or(all.len(), |p| p + 1),
        None => 0,
    };
    let end = match ctx.query_param("before_id") {
        Some(before) => all.iter().position(|m| *m == before).unwrap_or(0),
        None => all.len(),
    };
    let (from, to) = if ctx.query_param("before_id").is_some() {
        (end.saturating_sub(limit).max(start), end)
    } else {
        (start, (start + limit).min(end))
    };
    let page: Vec<&String> = if from < to { all[from..to].iter().collect() } else { Vec::new() };
    let mut body = Map::new();
    body.insert("data".into(), Value::Array(page.iter().map(|m| model_json(m)).collect()));
    body.insert("has_more".into(), json!(if ctx.query_param("before_id").is_some() { from > start } else { to < end }));
    body.insert("first_id".into(), json!(page.first()));
    body.insert("last_id".into(), json!(page.last()));
    json_ok(ctx, kind, &headers(ctx), &Value::Object(body))
}

fn model(ctx: &Ctx, id: &str, kind: Option<FaultKind>) -> Response {
    if !ctx.handle.config().models.iter().any(|m| m == id) {
        return error(ctx, ApiError::ModelNotFound(id.to_string()));
    }
    json_ok(ctx, kind, &headers(ctx), &model_json(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"model": "claude-sonnet-4-6", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn requires_max_tokens() {
        let mut b = base();
        b.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(parse_messages(&b, true).err(), Some(ApiError::invalid("max_tokens: Field required")));
        assert!(parse_messages(&b, false).is_ok());
    }

    #[test]
    fn rejects_system_role_and_assistant_first() {
        let mut b = base();
        b["messages"] = json!([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]);
        assert!(parse_messages(&b, true).is_err());
        b["messages"] = json!([{"role": "assistant", "content": "x"}]);
        assert!(parse_messages(&b, true).is_err());
    }

    #[test]
    fn tool_result_must_match() {
        let mut b = base();
        b["messages"] = json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_b", "content": "x"}]}]);
        assert!(parse_messages(&b, true).is_err());
        b["messages"][2]["content"][0]["tool_use_id"] = json!("toolu_a");
        let (conv, _) = parse_messages(&b, true).unwrap();
        assert_eq!(conv.messages[2].tool_results, vec!["x".to_string()]);
    }

    #[test]
    fn images_and_temperature() {
        let mut b = base();
        b["messages"][0]["content"] = json!([{"type": "image", "source": {"type": "base64",
            "media_type": "image/png", "data": "data:image/png;base64,AAAA"}}]);
        assert!(parse_messages(&b, true).is_err());
        b["messages"][0]["content"][0]["source"]["media_type"] = json!("image/bmp");
        assert!(parse_messages(&b, true).is_err());
        let mut b = base();
        b["temperature"] = json!(1.5);
        assert!(parse_messages(&b, true).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(display_name("claude-sonnet-4-6"), "Claude Sonnet 4.6");
        assert_eq!(display_name("claude-haiku-4-5"), "Claude Haiku 4.5");
        assert_eq!(display_name("claude-sonnet-4-20250514"), "Claude Sonnet 4");
    }
}
