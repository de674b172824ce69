//! The Cohere flavour: `POST /v2/chat` (JSON and named-event SSE), `POST /v2/embed`, `GET /v1/models` and
//! `GET /v1/models/{name}`, with the v2 API's strict validation and its `{"message":…}` error bodies.
//!
//! Cohere's server rejects fields it does not know, so an OpenAI name that leaks through the gateway's
//! translation (`top_p`, `stop`, `n`, `stream_options`, a lower-case `tool_choice`) fails here as a 400, as
//! it would against the real API. It also holds the rules that tripped other clients: text content next
//! to tool calls is refused (the plan belongs in `tool_plan`), a tool result must answer a call of an
//! earlier assistant turn, `p` must lie in 0.01..=0.99, and `/v2/embed` needs `input_type` and
//! `embedding_types`.

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::behaviour::{self, arg_fragments, text_chunks, Conversation, Finish, Image, Message, Reply, Role, ToolCall, ToolChoice};
use crate::common::{
    b64_decode, b64_encode, check_key, context_numbers, derived_alnum, echo_key_into, embedding, json_response, json_type, percent_decode,
    random_hex, retry_headers, sniff_image, words, ApiError, Ctx,
};
use crate::faults::{gate, json_ok, stream_response, Frame, Framing};
use crate::FaultKind;

/// The tokens Cohere's chat template adds around a conversation, reported in `usage.tokens` on top of
/// the billed count (the real API's `tokens` also count the template; its `billed_units` do not).
const TEMPLATE_TOKENS: u64 = 7;
/// Context window named by the `[[context]]` directive (command-a's).
const CONTEXT_WINDOW: u64 = 256_000;
/// Embedding dimensions when the request names none (embed-v4.0's default is 1536; the mock keeps
/// vectors short).
const DEFAULT_DIMENSIONS: u64 = 8;
/// At most this many texts per `/v2/embed` call.
const MAX_TEXTS: usize = 96;

const CHAT_FIELDS: [&str; 21] = [
    "model",
    "messages",
    "tools",
    "strict_tools",
    "documents",
    "citation_options",
    "response_format",
    "safety_mode",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "k",
    "p",
    "logprobs",
    "tool_choice",
    "thinking",
    "priority",
    "stream",
];

const EMBED_FIELDS: [&str; 10] =
    ["model", "input_type", "texts", "images", "inputs", "max_tokens", "output_dimension", "embedding_types", "truncate", "priority"];

const INPUT_TYPES: [&str; 5] = ["search_document", "search_query", "classification", "clustering", "image"];
const EMBEDDING_TYPES: [&str; 6] = ["float", "int8", "uint8", "binary", "ubinary", "base64"];

enum Route {
    Chat,
    Embed,
    Models,
    Model(String),
    Unknown,
}

fn route(path: &str) -> Route {
    let p = path.trim_end_matches('/');
    match p {
        "/v2/chat" => Route::Chat,
        "/v2/embed" => Route::Embed,
        "/v1/models" => Route::Models,
        _ => match p.strip_prefix("/v1/models/") {
            Some(name) if !name.is_empty() && !name.contains('/') => Route::Model(percent_decode(name)),
            _ => Route::Unknown,
        },
    }
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    let route = route(&ctx.path);
    let want = match route {
        Route::Chat | Route::Embed => Method::POST,
        Route::Models | Route::Model(_) => Method::GET,
        Route::Unknown => return error(&ctx, ApiError::NoRoute),
    };
    if ctx.method != want {
        return error(&ctx, ApiError::MethodNotAllowed);
    }
    if let Err(e) = check_key(&ctx, true) {
        return error(&ctx, e);
    }
    let kind = match gate(&ctx).await {
        Ok(k) => k,
        Err(e) => return error(&ctx, e),
    };
    match route {
        Route::Chat => chat(&ctx, kind),
        Route::Embed => embed(&ctx, kind),
        Route::Models => models(&ctx, kind),
        Route::Model(name) => model(&ctx, &name, kind),
        Route::Unknown => error(&ctx, ApiError::NoRoute),
    }
}

/// Headers every Cohere response carries: a trace id to quote to support.
fn headers() -> Vec<(&'static str, String)> {
    vec![("x-debug-trace-id", random_hex(32))]
}

pub(crate) fn error(ctx: &Ctx, err: ApiError) -> Response {
    let model = ctx.model_or_empty();
    let (status, message): (u16, String) = match &err {
        ApiError::Invalid { message, .. } => (400, format!("invalid request: {message}")),
        ApiError::MissingKey => (401, "no api key supplied".into()),
        ApiError::BadKey | ApiError::Status(401) => (401, "invalid api token".into()),
        // Cohere bills through a payment method on the account; without one (or past its spend limit)
        // the API answers 402.
        ApiError::Quota | ApiError::Status(402) => {
            (402, "Please add or update your payment method at https://dashboard.cohere.com/billing to continue".into())
        }
        ApiError::Status(403) => (403, "forbidden: this api key does not have access to the requested resource".into()),
        ApiError::ModelNotFound(m) => (404, not_found_model(m)),
        ApiError::Status(404) => (404, not_found_model(model)),
        ApiError::NoRoute => (404, "404 page not found".into()),
        ApiError::MethodNotAllowed => (405, "method not allowed".into()),
        ApiError::TooLarge | ApiError::Status(413) => (413, "request entity too large".into()),
        ApiError::ContextLength { prompt_tokens, window } => {
            let (window, tokens) = context_numbers(*prompt_tokens, *window, CONTEXT_WINDOW);
            (
                400,
                format!(
                    "too many tokens: total number of tokens in the prompt cannot exceed {window} - received {tokens}. Try using a shorter prompt, or enabling prompt truncating. See https://docs.cohere.com/reference/chat for more details."
                ),
            )
        }
        ApiError::Status(422) => (422, "unprocessable entity".into()),
        ApiError::Status(429) => (429, "You have hit the rate limit for this API key. Please slow down your requests.".into()),
        ApiError::Status(498) => (498, "blocked input: please adjust your prompt and try again, as it may be a potential violation of our Usage Guidelines (https://docs.cohere.com/docs/usage-guidelines).".into()),
        ApiError::Status(499) => (499, "request cancelled by the client".into()),
        ApiError::Status(500) => (500, "internal server error, this has been reported to our developers".into()),
        ApiError::Status(501) => (501, "not implemented".into()),
        ApiError::Status(503) => (503, "service unavailable".into()),
        ApiError::Status(504) => (504, "gateway timeout".into()),
        ApiError::Status(s) => (*s, format!("request failed with status {s}")),
    };
    let mut body = json!({"id": uuid(), "message": message});
    echo_key_into(ctx, &mut body, "/message");
    let mut h = headers();
    retry_headers(ctx, &err, &mut h);
    json_response(status, &h, &body)
}

fn not_found_model(m: &str) -> String {
    format!("model '{m}' not found, make sure the correct model ID was used and that you have access to the model.")
}

/// A random UUID v4 in its text form (Cohere's response and generation ids).
fn uuid() -> String {
    let h = random_hex(32);
    format!("{}-{}-4{}-{}-{}", &h[..8], &h[8..12], &h[13..16], &h[16..20], &h[20..32])
}

fn unknown_field(name: &str) -> ApiError {
    ApiError::invalid(format!("json: unknown field \"{name}\""))
}

fn check_fields(obj: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(unknown_field(k)),
        None => Ok(()),
    }
}

fn number_in(obj: &Map<String, Value>, field: &str, lo: f64, hi: f64) -> Result<(), ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (lo..=hi).contains(&x) => Ok(()),
            Some(x) => Err(ApiError::invalid(format!("{field} must be between {lo} and {hi}, received {x}"))),
            None => Err(ApiError::invalid(format!("{field} must be a number, received {}", json_type(v)))),
        },
    }
}

fn string_list(v: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    let arr = v.as_array().ok_or_else(|| ApiError::invalid(format!("{field} must be a list of strings")))?;
    arr.iter()
        .map(|s| s.as_str().map(str::to_string).ok_or_else(|| ApiError::invalid(format!("{field} must be a list of strings"))))
        .collect()
}

/// The texts of a `content` that may be a string or a list of `text` items (plus `allowed_extra` item
/// types, which carry no text for the mock).
fn texts(v: &Value, path: &str, allowed_extra: &[&str]) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => {
            let mut out = Vec::new();
            for (j, it) in items.iter().enumerate() {
                match it.get("type").and_then(Value::as_str) {
                    Some("text") => match it.get("text").and_then(Value::as_str) {
                        Some(t) => out.push(t.to_string()),
                        None => return Err(ApiError::invalid(format!("{path}[{j}].text is required"))),
                    },
                    Some(t) if allowed_extra.contains(&t) => {}
                    Some(t) => return Err(ApiError::invalid(format!("{path}[{j}]: content type '{t}' is not supported here"))),
                    None => return Err(ApiError::invalid(format!("{path}[{j}].type is required"))),
                }
            }
            Ok(out)
        }
        other => Err(ApiError::invalid(format!("{path} must be a string or a list of content items, received {}", json_type(other)))),
    }
}

fn parse_image(part: &Value, path: &str) -> Result<Image, ApiError> {
    let url = part.get("image_url").and_then(|i| i.get("url")).and_then(Value::as_str);
    let Some(url) = url else { return Err(ApiError::invalid(format!("{path}.image_url.url is required"))) };
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(ApiError::invalid(format!("{path}.image_url.url: invalid data URI")));
        };
        let Some(mt) = meta.strip_suffix(";base64") else {
            return Err(ApiError::invalid(format!("{path}.image_url.url: data URIs must be base64 encoded")));
        };
        if !["image/jpeg", "image/png", "image/gif", "image/webp"].contains(&mt) {
            return Err(ApiError::invalid(format!("{path}.image_url.url: unsupported image type {mt}; use jpeg, png, gif or webp")));
        }
        let bytes = b64_decode(data).map_err(|_| ApiError::invalid(format!("{path}.image_url.url: invalid base64 image data")))?;
        let sniffed = sniff_image(&bytes);
        if sniffed != "application/octet-stream" && sniffed != mt {
            return Err(ApiError::invalid(format!("{path}.image_url.url: image data does not match its media type {mt}")));
        }
        return Ok(Image::Inline { media_type: mt.to_string(), data: bytes });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Image::Url(url.to_string()));
    }
    Err(ApiError::invalid(format!("{path}.image_url.url must be a data URI or an http(s) URL")))
}

/// Parses and validates a `/v2/chat` body. Returns the conversation and whether it asks for a stream.
fn parse_chat(body: &Value) -> Result<(Conversation, bool), ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::invalid("body must be a JSON object"))?;
    check_fields(obj, &CHAT_FIELDS)?;
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => return Err(ApiError::invalid("model is required")),
    }
    let msgs = match obj.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(ApiError::invalid("messages must contain at least one message")),
        _ => return Err(ApiError::invalid("messages is required")),
    };
    let mut conv = Conversation { n: 1, ..Conversation::default() };
    let mut call_ids: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| ApiError::invalid(format!("{path}.role is required")))?;
        let content = m.get("content").filter(|c| !c.is_null());
        match role {
            "system" => {
                let c = content.ok_or_else(|| ApiError::invalid(format!("{path}.content is required")))?;
                conv.system.extend(texts(c, &format!("{path}.content"), &[])?);
            }
            "user" => {
                let c = content.ok_or_else(|| ApiError::invalid(format!("{path}.content is required")))?;
                let mut msg = Message::new(Role::User);
                match c {
                    Value::String(s) => msg.texts.push(s.clone()),
                    Value::Array(parts) => {
                        for (j, p) in parts.iter().enumerate() {
                            let pp = format!("{path}.content[{j}]");
                            match p.get("type").and_then(Value::as_str) {
                                Some("text") => match p.get("text").and_then(Value::as_str) {
                                    Some(t) => msg.texts.push(t.to_string()),
                                    None => return Err(ApiError::invalid(format!("{pp}.text is required"))),
                                },
                                Some("image_url") => msg.images.push(parse_image(p, &pp)?),
                                Some(t) => {
                                    return Err(ApiError::invalid(format!(
                                        "{pp}: content type '{t}' is not supported, use 'text' or 'image_url'"
                                    )))
                                }
                                None => return Err(ApiError::invalid(format!("{pp}.type is required"))),
                            }
                        }
                    }
                    other => {
                        return Err(ApiError::invalid(format!("{path}.content must be a string or a list, received {}", json_type(other))))
                    }
                }
                conv.messages.push(msg);
            }
            "assistant" => {
                let mut msg = Message::new(Role::Assistant);
                if let Some(c) = content {
                    msg.texts = texts(c, &format!("{path}.content"), &["thinking"])?;
                }
                let calls = m.get("tool_calls").filter(|c| !c.is_null());
                if let Some(calls) = calls {
                    let calls = calls.as_array().ok_or_else(|| ApiError::invalid(format!("{path}.tool_calls must be a list")))?;
                    if !calls.is_empty() && msg.texts.iter().any(|t| !t.is_empty()) {
                        return Err(ApiError::invalid(format!(
                            "text content is not allowed when tool_calls are provided. If you wish to pass a tool plan, use 'tool_plan': '{path}.content[0]'"
                        )));
                    }
                    for (k, c) in calls.iter().enumerate() {
                        let cp = format!("{path}.tool_calls[{k}]");
                        let id = c.get("id").and_then(Value::as_str).ok_or_else(|| ApiError::invalid(format!("{cp}.id is required")))?;
                        let f = c.get("function").ok_or_else(|| ApiError::invalid(format!("{cp}.function is required")))?;
                        let name = f
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| ApiError::invalid(format!("{cp}.function.name is required")))?;
                        let args = match f.get("arguments") {
                            Some(Value::String(a)) => a.clone(),
                            _ => return Err(ApiError::invalid(format!("{cp}.function.arguments must be a string"))),
                        };
                        if serde_json::from_str::<Value>(&args).map_or(true, |v| !v.is_object()) {
                            return Err(ApiError::invalid(format!("{cp}.function.arguments must be a JSON object encoded as a string")));
                        }
                        call_ids.push(id.to_string());
                        msg.tool_calls.push(ToolCall { name: name.to_string(), arguments: args });
                    }
                }
                match m.get("tool_plan") {
                    None | Some(Value::Null) | Some(Value::String(_)) => {}
                    Some(_) => return Err(ApiError::invalid(format!("{path}.tool_plan must be a string"))),
                }
                if msg.texts.is_empty() && msg.tool_calls.is_empty() {
                    return Err(ApiError::invalid(format!("{path}: an assistant message needs content or tool_calls")));
                }
                conv.messages.push(msg);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::invalid(format!("{path}.tool_call_id is required")))?;
                if !call_ids.iter().any(|c| c == id) {
                    return Err(ApiError::invalid(format!(
                        "{path}.tool_call_id '{id}' does not match any tool call of an earlier assistant message"
                    )));
                }
                let c = content.ok_or_else(|| ApiError::invalid(format!("{path}.content is required")))?;
                let mut msg = Message::new(Role::Tool);
                msg.tool_results.push(texts(c, &format!("{path}.content"), &["document"])?.join(" "));
                conv.messages.push(msg);
            }
            other => return Err(ApiError::invalid(format!("{path}.role '{other}' is not one of system, user, assistant, tool"))),
        }
    }
    if let Some(docs) = obj.get("documents").filter(|d| !d.is_null()) {
        let docs = docs.as_array().ok_or_else(|| ApiError::invalid("documents must be a list"))?;
        let mut notes = Vec::new();
        for (j, d) in docs.iter().enumerate() {
            notes.push(match d {
                Value::String(s) => Image::TextDocument { title: None, text: s.clone() },
                Value::Object(o) => match o.get("data") {
                    Some(Value::String(s)) => Image::TextDocument { title: None, text: s.clone() },
                    Some(Value::Object(data)) => Image::TextDocument {
                        title: data.get("title").and_then(Value::as_str).map(str::to_string),
                        text: data.get("text").or_else(|| data.get("snippet")).and_then(Value::as_str).unwrap_or_default().to_string(),
                    },
                    _ => return Err(ApiError::invalid(format!("documents[{j}].data is required"))),
                },
                _ => return Err(ApiError::invalid(format!("documents[{j}] must be a string or an object"))),
            });
        }
        // Documents ground the whole request; the mock notes them on the last user turn's answer.
        if let Some(last) = conv.messages.iter_mut().rev().find(|m| m.role == Role::User) {
            last.images.extend(notes);
        }
    }
    number_in(obj, "temperature", 0.0, f64::MAX)?;
    number_in(obj, "p", 0.01, 0.99)?;
    number_in(obj, "k", 0.0, 500.0)?;
    number_in(obj, "frequency_penalty", 0.0, 1.0)?;
    number_in(obj, "presence_penalty", 0.0, 1.0)?;
    match obj.get("max_tokens") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => conv.max_tokens = Some(n),
            _ => return Err(ApiError::invalid("max_tokens must be a positive integer")),
        },
    }
    if let Some(s) = obj.get("stop_sequences").filter(|v| !v.is_null()) {
        conv.stop = string_list(s, "stop_sequences")?;
        if conv.stop.len() > 5 {
            return Err(ApiError::invalid("stop_sequences can contain at most 5 sequences"));
        }
    }
    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        let tools = tools.as_array().ok_or_else(|| ApiError::invalid("tools must be a list"))?;
        for (j, t) in tools.iter().enumerate() {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::invalid(format!("tools[{j}].type must be 'function'")));
            }
            let f = t.get("function").ok_or_else(|| ApiError::invalid(format!("tools[{j}].function is required")))?;
            let name =
                f.get("name").and_then(Value::as_str).ok_or_else(|| ApiError::invalid(format!("tools[{j}].function.name is required")))?;
            if !f.get("parameters").is_some_and(Value::is_object) {
                return Err(ApiError::invalid(format!("tools[{j}].function.parameters is required")));
            }
            conv.tools.push(name.to_string());
        }
    }
    match obj.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "REQUIRED" || s == "NONE" => {
            if conv.tools.is_empty() {
                return Err(ApiError::invalid("tool_choice can only be specified together with tools"));
            }
            conv.tool_choice = if s == "REQUIRED" { ToolChoice::Required } else { ToolChoice::None };
        }
        Some(other) => return Err(ApiError::invalid(format!("tool_choice must be one of REQUIRED, NONE; received {other}"))),
    }
    if let Some(f) = obj.get("response_format").filter(|v| !v.is_null()) {
        match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                if !conv.tools.is_empty() {
                    return Err(ApiError::invalid("response_format is not supported together with tools"));
                }
                conv.json_mode = true;
            }
            _ => return Err(ApiError::invalid("response_format.type must be one of text, json_object")),
        }
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("stream must be a boolean")),
    };
    Ok((conv, stream))
}

fn finish_reason(r: &Reply) -> &'static str {
    match r.finish {
        Finish::Stop if r.stop_sequence.is_some() => "STOP_SEQUENCE",
        // Cohere has no content-filter finish: a filtered reply is simply empty.
        Finish::Stop | Finish::Filter => "COMPLETE",
        Finish::Length => "MAX_TOKENS",
        Finish::ToolCalls => "TOOL_CALL",
    }
}

/// Cohere's tool-call ids: the tool's name and a suffix derived from the request (so a streamed and a
/// non-streamed request for the same conversation get the same ids).
fn tool_id(seed: &[u8], name: &str, i: usize) -> String {
    format!("{name}_{}", derived_alnum(seed, i, 12).to_ascii_lowercase())
}

/// What the model "plans" before its calls (Cohere's models write one).
fn tool_plan(calls: &[ToolCall]) -> String {
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    format!("I will call {}.", names.join(", "))
}

fn usage_json(reply: &Reply) -> Value {
    let u = reply.usage;
    let mut v = json!({"billed_units": {"input_tokens": u.prompt, "output_tokens": u.completion},
        "tokens": {"input_tokens": u.prompt + TEMPLATE_TOKENS, "output_tokens": u.completion}});
    if u.cached > 0 {
        v["cached_tokens"] = json!(u.cached);
    }
    v
}

fn chat(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let Some(body) = ctx.body.as_ref() else {
        return error(ctx, ApiError::invalid("the request body is not valid JSON"));
    };
    let (conv, stream) = match parse_chat(body) {
        Ok(p) => p,
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
    let id = uuid();
    let seed = ctx.seed();
    let calls: Vec<Value> = reply
        .tool_calls
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"id": tool_id(&seed, &c.name, i), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect();
    if !stream {
        let mut message = json!({"role": "assistant"});
        if calls.is_empty() {
            message["content"] = json!([{"type": "text", "text": reply.text}]);
        } else {
            message["tool_plan"] = json!(tool_plan(&reply.tool_calls));
            message["tool_calls"] = Value::Array(calls);
        }
        let body = json!({"id": id, "message": message, "finish_reason": finish_reason(&reply), "usage": usage_json(&reply)});
        return json_ok(ctx, kind, &headers(), &body);
    }
    let mut frames = vec![Frame::named(
        "message-start",
        &json!({"id": id, "type": "message-start", "delta": {"message": {"role": "assistant", "content": [],
            "tool_plan": "", "tool_calls": [], "citations": []}}}),
    )];
    if calls.is_empty() {
        if !reply.text.is_empty() {
            frames.push(Frame::named(
                "content-start",
                &json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}),
            ));
            for piece in text_chunks(&reply.text) {
                frames.push(
                    Frame::named(
                        "content-delta",
                        &json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": piece}}}}),
                    )
                    .content(),
                );
            }
            frames.push(Frame::named("content-end", &json!({"type": "content-end", "index": 0})));
        }
    } else {
        let plan = tool_plan(&reply.tool_calls);
        for piece in text_chunks(&plan) {
            frames.push(
                Frame::named("tool-plan-delta", &json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}})).content(),
            );
        }
        for (i, (c, call)) in reply.tool_calls.iter().zip(&calls).enumerate() {
            frames.push(Frame::named(
                "tool-call-start",
                &json!({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": {"id": call["id"], "type": "function",
                    "function": {"name": c.name, "arguments": ""}}}}}),
            ));
            for frag in arg_fragments(&c.arguments) {
                frames.push(
                    Frame::named(
                        "tool-call-delta",
                        &json!({"type": "tool-call-delta", "index": i, "delta": {"message": {"tool_calls": {"function": {"arguments": frag}}}}}),
                    )
                    .content(),
                );
            }
            frames.push(Frame::named("tool-call-end", &json!({"type": "tool-call-end", "index": i})));
        }
    }
    frames.push(Frame::named(
        "message-end",
        &json!({"type": "message-end", "delta": {"finish_reason": finish_reason(&reply), "usage": usage_json(&reply)}}),
    ));
    // Cohere reports a generation that failed after the stream began in its last event.
    let mut err = json!({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal server error, this has been reported to our developers"}});
    echo_key_into(ctx, &mut err, "/delta/error");
    let err = Frame::named("message-end", &err);
    stream_response(ctx, Framing::Sse, frames, err, kind, headers())
}

fn embed(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let Some(obj) = ctx.body.as_ref().and_then(Value::as_object) else {
        return error(ctx, ApiError::invalid("the request body is not valid JSON"));
    };
    let parsed = (|| -> Result<(Vec<String>, bool, usize), ApiError> {
        check_fields(obj, &EMBED_FIELDS)?;
        match obj.get("model") {
            Some(Value::String(m)) if !m.is_empty() => {}
            _ => return Err(ApiError::invalid("model is required")),
        }
        match obj.get("input_type").and_then(Value::as_str) {
            Some(t) if INPUT_TYPES.contains(&t) => {}
            Some(t) => return Err(ApiError::invalid(format!("input_type '{t}' is not one of {}", INPUT_TYPES.join(", ")))),
            None => return Err(ApiError::invalid("input_type is required for embed models v3 and higher")),
        }
        let types = match obj.get("embedding_types") {
            Some(v @ Value::Array(_)) => string_list(v, "embedding_types")?,
            _ => return Err(ApiError::invalid("embedding_types is required")),
        };
        if types.is_empty() || types.iter().any(|t| !EMBEDDING_TYPES.contains(&t.as_str())) {
            return Err(ApiError::invalid(format!("embedding_types must be a non-empty list of {}", EMBEDDING_TYPES.join(", "))));
        }
        let base64 = match types.as_slice() {
            [t] if t == "float" => false,
            [t] if t == "base64" => true,
            _ => return Err(ApiError::invalid("the mock serves one embedding type per request, float or base64")),
        };
        let texts = match obj.get("texts") {
            Some(v) => string_list(v, "texts")?,
            None => return Err(ApiError::invalid("one of texts, images or inputs is required")),
        };
        if texts.is_empty() || texts.len() > MAX_TEXTS {
            return Err(ApiError::invalid(format!("texts must contain between 1 and {MAX_TEXTS} texts")));
        }
        let dims = match obj.get("output_dimension") {
            None | Some(Value::Null) => DEFAULT_DIMENSIONS,
            Some(v) => match v.as_u64() {
                Some(d @ (256 | 512 | 1024 | 1536)) => d,
                _ => return Err(ApiError::invalid("output_dimension must be one of 256, 512, 1024, 1536")),
            },
        };
        Ok((texts, base64, usize::try_from(dims).unwrap_or(8)))
    })();
    let (texts, base64, dims) = match parsed {
        Ok(p) => p,
        Err(e) => return error(ctx, e),
    };
    let model = ctx.model_or_empty().to_string();
    if !ctx.model_known(&model) {
        return error(ctx, ApiError::ModelNotFound(model));
    }
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) {
        return error(ctx, ApiError::Status(500));
    }
    let vectors: Vec<Value> = texts
        .iter()
        .map(|t| {
            let v = embedding(t, dims);
            if base64 {
                json!(b64_encode(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()))
            } else {
                json!(v)
            }
        })
        .collect();
    let tokens: u64 = texts.iter().map(|t| words(t)).sum();
    let key = if base64 { "base64" } else { "float" };
    let body = json!({"id": uuid(), "embeddings": {key: vectors}, "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type"});
    json_ok(ctx, kind, &headers(), &body)
}

fn model_json(name: &str) -> Value {
    let embed = name.starts_with("embed");
    let endpoints = if embed { json!(["embed"]) } else { json!(["generate", "chat", "summarize"]) };
    let defaults = if embed { json!(["embed"]) } else { json!(["chat"]) };
    json!({"name": name, "endpoints": endpoints, "finetuned": false,
        "context_length": if embed { 128_000 } else { CONTEXT_WINDOW },
        "tokenizer_url": format!("https://storage.googleapis.com/cohere-public/tokenizers/{name}.json"),
        "default_endpoints": defaults})
}

/// `GET /v1/models`: the configured models, filtered by `endpoint`, paged by `page_size` / `page_token`
/// (the token is the offset of the next page, base64).
fn models(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let all: Vec<Value> = ctx.handle.config().models.iter().map(|m| model_json(m)).collect();
    let filtered: Vec<Value> = match ctx.query_param("endpoint") {
        Some(e) => all.into_iter().filter(|m| m["endpoints"].as_array().is_some_and(|a| a.iter().any(|x| x == e.as_str()))).collect(),
        None => all,
    };
    let size = ctx.query_param("page_size").and_then(|s| s.parse::<usize>().ok()).unwrap_or(20).clamp(1, 1000);
    let start = ctx
        .query_param("page_token")
        .and_then(|t| b64_decode(&t).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0)
        .min(filtered.len());
    let end = (start + size).min(filtered.len());
    let mut body = json!({"models": filtered[start..end]});
    if end < filtered.len() {
        body["next_page_token"] = json!(b64_encode(end.to_string().as_bytes()));
    }
    json_ok(ctx, kind, &headers(), &body)
}

fn model(ctx: &Ctx, name: &str, kind: Option<FaultKind>) -> Response {
    if !ctx.handle.config().models.iter().any(|m| m == name) {
        return error(ctx, ApiError::ModelNotFound(name.to_string()));
    }
    json_ok(ctx, kind, &headers(), &model_json(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn refused(b: &Value) -> String {
        match parse_chat(b) {
            Err(ApiError::Invalid { message, .. }) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn openai_names_are_unknown_fields() {
        for field in ["top_p", "stop", "n", "stream_options", "max_completion_tokens", "user", "parallel_tool_calls"] {
            let mut b = base();
            b[field] = json!(1);
            assert_eq!(refused(&b), format!("json: unknown field \"{field}\""));
        }
        let mut b = base();
        b["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        b["tool_choice"] = json!("required");
        assert!(refused(&b).contains("REQUIRED, NONE"));
        b["tool_choice"] = json!("REQUIRED");
        assert_eq!(parse_chat(&b).unwrap().0.tool_choice, ToolChoice::Required);
    }

    #[test]
    fn tool_plans_and_results() {
        let mut b = base();
        b["messages"] = json!([{"role": "user", "content": "x"},
            {"role": "assistant", "content": "I will check.", "tool_calls": [{"id": "f_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]);
        assert!(refused(&b).starts_with("text content is not allowed when tool_calls are provided"));
        b["messages"][1] = json!({"role": "assistant", "tool_plan": "I will check.",
            "tool_calls": [{"id": "f_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
        b["messages"].as_array_mut().unwrap().push(json!({"role": "tool", "tool_call_id": "f_2", "content": "r"}));
        assert!(refused(&b).contains("does not match"));
        b["messages"][2]["tool_call_id"] = json!("f_1");
        let (conv, _) = parse_chat(&b).unwrap();
        assert_eq!(conv.messages[2].tool_results, vec!["r".to_string()]);
        b["messages"][1]["tool_calls"][0]["function"]["arguments"] = json!({"a": 1});
        assert!(refused(&b).contains("must be a string"));
    }

    #[test]
    fn ranges_documents_and_images() {
        let mut b = base();
        b["p"] = json!(1.0);
        assert!(refused(&b).contains("p must be between"));
        let mut b = base();
        b["messages"][0]["content"] = json!([{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]);
        assert!(refused(&b).contains("unsupported image type"));
        let mut b = base();
        b["documents"] = json!([{"data": {"title": "t", "text": "abc"}}, "plain"]);
        let (conv, _) = parse_chat(&b).unwrap();
        assert_eq!(conv.messages[0].images.len(), 2);
        let r = behaviour::decide(&conv, None).unwrap();
        assert!(r.text.starts_with("echo: hi [document t 3 bytes sha256="), "{}", r.text);
    }

    #[test]
    fn ids_are_uuids() {
        let u = uuid();
        assert_eq!((u.len(), u.matches('-').count(), &u[14..15]), (36, 4, "4"));
    }
}
