//! The Ollama flavour (native API): `POST /api/chat` (NDJSON stream by default, or one JSON object),
//! `POST /api/embed` (and the legacy `/api/embeddings`), `GET /api/tags`, `GET /api/version` and `GET /`.
//! Ollama differs from the OpenAI shape in the ways gateways trip over: string-only `content`, raw base64
//! `images` (no `data:` prefix, no URLs), tool arguments as JSON objects, `stream` defaulting to true and
//! `{"error":"..."}` bodies, so this mock rejects the same inputs a real server does.

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use crate::behaviour::{self, text_chunks, Conversation, Finish, Image, Message, Reply, Role, ToolCall};
use crate::common::{
    b64_decode, bytes_response, check_key, context_numbers, echo_key_into, embedding, json_response, json_type, retry_headers, rfc3339_now,
    sha256_hex, sniff_image, words, ApiError, Ctx,
};
use crate::faults::{gate, json_ok, stream_response, Frame, Framing};
use crate::FaultKind;

const VERSION: &str = "0.12.6";

enum Route {
    Root,
    Chat,
    Embed,
    Embeddings,
    Tags,
    Version,
    Unknown,
}

fn route(path: &str) -> Route {
    match path.trim_end_matches('/') {
        "" => Route::Root,
        "/api/chat" => Route::Chat,
        "/api/embed" => Route::Embed,
        "/api/embeddings" => Route::Embeddings,
        "/api/tags" => Route::Tags,
        "/api/version" => Route::Version,
        _ => Route::Unknown,
    }
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    let route = route(&ctx.path);
    let ok_method = match route {
        Route::Chat | Route::Embed | Route::Embeddings => ctx.method == Method::POST,
        Route::Tags | Route::Version => ctx.method == Method::GET,
        Route::Root => ctx.method == Method::GET || ctx.method == Method::HEAD,
        Route::Unknown => return error(&ctx, ApiError::NoRoute),
    };
    if !ok_method {
        return error(&ctx, ApiError::MethodNotAllowed);
    }
    if let Err(e) = check_key(&ctx, false) {
        return error(&ctx, e);
    }
    let kind = match gate(&ctx).await {
        Ok(k) => k,
        Err(e) => return error(&ctx, e),
    };
    match route {
        Route::Root => bytes_response(200, "text/plain; charset=utf-8", &[], Body::from("Ollama is running")),
        Route::Chat => chat(&ctx, kind),
        Route::Embed => embed(&ctx, kind, false),
        Route::Embeddings => embed(&ctx, kind, true),
        Route::Tags => tags(&ctx, kind),
        Route::Version => json_ok(&ctx, kind, &[], &json!({ "version": VERSION })),
        Route::Unknown => error(&ctx, ApiError::NoRoute),
    }
}

pub(crate) fn error(ctx: &Ctx, err: ApiError) -> Response {
    let status = err.status();
    let model = ctx.model_or_empty();
    let message = match &err {
        ApiError::NoRoute => return bytes_response(404, "text/plain", &[], Body::from("404 page not found")),
        ApiError::MethodNotAllowed => return bytes_response(405, "text/plain", &[], Body::from("405 method not allowed")),
        ApiError::Invalid { message, .. } => message.clone(),
        ApiError::MissingKey | ApiError::BadKey | ApiError::Status(401) => "unauthorized".into(),
        ApiError::ModelNotFound(m) => model_not_found(&ctx.path, m),
        ApiError::Status(404) => model_not_found(&ctx.path, model),
        ApiError::ContextLength { prompt_tokens, window } => {
            let (window, tokens) = context_numbers(*prompt_tokens, *window, 4_096);
            format!("the input length ({tokens} tokens) exceeds the context length ({window} tokens)")
        }
        // Ollama Cloud's answer when an account's plan usage is used up (observed wording).
        ApiError::Quota => {
            "you (switchyard-mock) have reached your weekly usage limit, upgrade for higher limits: https://ollama.com/upgrade".into()
        }
        ApiError::TooLarge | ApiError::Status(413) => "request body too large".into(),
        ApiError::Status(400) => "invalid request".into(),
        ApiError::Status(429) => "too many requests, please retry later".into(),
        ApiError::Status(500) => "an error was encountered while running the model".into(),
        ApiError::Status(502) => "the model's upstream is unreachable".into(),
        ApiError::Status(503) => "server busy, please try again. maximum pending requests exceeded".into(),
        ApiError::Status(s) => format!("request failed with status {s}"),
    };
    let mut h = Vec::new();
    retry_headers(ctx, &err, &mut h);
    let mut body = json!({ "error": message });
    echo_key_into(ctx, &mut body, "/error");
    json_response(status, &h, &body)
}

/// Ollama's words for a model it has not pulled, which differ by route (server/routes.go): `/api/chat`
/// looks the model up itself and answers `model 'x' not found`; `/api/embed` (and the legacy
/// `/api/embeddings`) finds out when scheduling a runner and answers with Go's `%q` quoting and a hint,
/// `model "x" not found, try pulling it first`. Both are 404s, both echo the name as the request gave it.
fn model_not_found(path: &str, model: &str) -> String {
    if path.trim_end_matches('/') == "/api/chat" {
        format!("model '{model}' not found")
    } else {
        // Go's %q and a JSON string agree on the quoting of every name a model can have.
        format!("model {} not found, try pulling it first", serde_json::Value::from(model))
    }
}

fn with_tag(m: &str) -> String {
    if m.contains(':') {
        m.to_string()
    } else {
        format!("{m}:latest")
    }
}

fn model_known(ctx: &Ctx, m: &str) -> bool {
    let models = &ctx.handle.config().models;
    let want = with_tag(m);
    models.is_empty() || models.iter().any(|c| with_tag(c) == want)
}

/// The checked model of a request (`model`, or the legacy `name`).
fn request_model(ctx: &Ctx) -> Result<String, ApiError> {
    let Some(body) = ctx.body.as_ref().filter(|b| b.is_object()) else {
        return Err(ApiError::invalid("invalid request body: expected a JSON object"));
    };
    let model = ctx.model.clone().or_else(|| body.get("name").and_then(Value::as_str).map(str::to_string)).unwrap_or_default();
    if model.is_empty() {
        return Err(ApiError::invalid("model is required"));
    }
    if !model_known(ctx, &model) {
        return Err(ApiError::ModelNotFound(model));
    }
    Ok(model)
}

/// Like Go's base64 decoder: the error names the first illegal byte.
fn decode_image(s: &str) -> Result<Vec<u8>, ApiError> {
    let illegal = s.bytes().position(|b| !(b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='));
    if let Some(at) = illegal {
        return Err(ApiError::invalid(format!("illegal base64 data at input byte {at}")));
    }
    b64_decode(s).map_err(|_| ApiError::invalid(format!("illegal base64 data at input byte {}", s.len())))
}

/// Parses and validates an `/api/chat` body. Returns the conversation, stream flag and whether
/// `messages` was empty (a load request).
fn parse_chat(body: &Value) -> Result<(Conversation, bool, bool), ApiError> {
    let mut conv = Conversation { n: 1, ..Conversation::default() };
    let msgs: &[Value] = match body.get("messages") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "json: cannot unmarshal {} into Go struct field ChatRequest.messages of type []api.Message",
                json_type(other)
            )))
        }
    };
    for m in msgs {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            Some(other) => return Err(ApiError::invalid(format!("invalid role: {other}"))),
            None => return Err(ApiError::invalid("invalid message: role is required")),
        };
        let content = match m.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "json: cannot unmarshal {} into Go struct field Message.messages.content of type string",
                    json_type(other)
                )))
            }
        };
        let mut msg = Message::new(role);
        match m.get("images") {
            None | Some(Value::Null) => {}
            Some(Value::Array(imgs)) => {
                for img in imgs {
                    let s = img.as_str().ok_or_else(|| {
                        ApiError::invalid(format!(
                            "json: cannot unmarshal {} into Go struct field Message.messages.images of type api.ImageData",
                            json_type(img)
                        ))
                    })?;
                    let data = decode_image(s)?;
                    msg.images.push(Image::Inline { media_type: sniff_image(&data).to_string(), data });
                }
            }
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "json: cannot unmarshal {} into Go struct field Message.messages.images of type []api.ImageData",
                    json_type(other)
                )))
            }
        }
        if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
            let calls = calls.as_array().ok_or_else(|| {
                ApiError::invalid("json: cannot unmarshal into Go struct field Message.messages.tool_calls of type []api.ToolCall")
            })?;
            for c in calls {
                let f = c.get("function").unwrap_or(&Value::Null);
                let args = f.get("arguments").unwrap_or(&Value::Null);
                if !(args.is_object() || args.is_null()) {
                    return Err(ApiError::invalid(format!(
                        "json: cannot unmarshal {} into Go struct field ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments",
                        json_type(args)
                    )));
                }
                msg.tool_calls.push(ToolCall {
                    name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                    arguments: if args.is_null() { "{}".to_string() } else { args.to_string() },
                });
            }
        }
        match role {
            Role::System => conv.system.push(content),
            Role::Tool => {
                msg.tool_results.push(content);
                conv.messages.push(msg);
            }
            Role::User | Role::Assistant => {
                if !content.is_empty() || msg.images.is_empty() {
                    msg.texts.push(content);
                }
                conv.messages.push(msg);
            }
        }
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        let tools = tools
            .as_array()
            .ok_or_else(|| ApiError::invalid("json: cannot unmarshal into Go struct field ChatRequest.tools of type api.Tools"))?;
        for t in tools {
            if let Some(n) = t.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
                conv.tools.push(n.to_string());
            }
        }
    }
    match body.get("format") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) if s == "json" => conv.json_mode = true,
        Some(Value::Object(_)) => conv.json_mode = true,
        Some(other) => return Err(ApiError::invalid(format!("invalid format: {other}; expected \"json\" or a valid JSON schema"))),
    }
    if let Some(opts) = body.get("options").filter(|v| !v.is_null()) {
        if let Some(n) = opts.get("num_predict").and_then(Value::as_i64) {
            if n >= 1 {
                conv.max_tokens = u64::try_from(n).ok();
            }
        }
        match opts.get("stop") {
            Some(Value::String(s)) => conv.stop.push(s.clone()),
            Some(Value::Array(a)) => conv.stop.extend(a.iter().filter_map(Value::as_str).map(str::to_string)),
            _ => {}
        }
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "json: cannot unmarshal {} into Go struct field ChatRequest.stream of type bool",
                json_type(other)
            )))
        }
    };
    Ok((conv, stream, msgs.is_empty()))
}

fn done_reason(r: &Reply) -> &'static str {
    match r.finish {
        Finish::Length => "length",
        Finish::Stop | Finish::ToolCalls | Finish::Filter => "stop",
    }
}

/// The final (`done: true`) object's counters and durations (nanoseconds, made up but plausible).
fn final_fields(v: &mut Value, reason: &str, prompt: u64, completion: u64) {
    let prompt_ns = 1_000_000 + prompt * 200_000;
    let eval_ns = 1_000_000 + completion * 10_000_000;
    let load_ns = 1_500_000;
    v["done_reason"] = json!(reason);
    v["done"] = json!(true);
    v["total_duration"] = json!(load_ns + prompt_ns + eval_ns);
    v["load_duration"] = json!(load_ns);
    v["prompt_eval_count"] = json!(prompt);
    v["prompt_eval_duration"] = json!(prompt_ns);
    v["eval_count"] = json!(completion);
    v["eval_duration"] = json!(eval_ns);
}

fn tool_calls_json(calls: &[ToolCall]) -> Value {
    Value::Array(
        calls
            .iter()
            .map(|c| {
                let args = serde_json::from_str::<Value>(&c.arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
                json!({"function": {"name": c.name, "arguments": args}})
            })
            .collect(),
    )
}

fn chat(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let model = match request_model(ctx) {
        Ok(m) => m,
        Err(e) => return error(ctx, e),
    };
    let body = ctx.body.clone().unwrap_or(Value::Null);
    let (conv, stream, load) = match parse_chat(&body) {
        Ok(p) => p,
        Err(e) => return error(ctx, e),
    };
    if load {
        let v = json!({"model": model, "created_at": rfc3339_now(),
            "message": {"role": "assistant", "content": ""}, "done_reason": "load", "done": true});
        return json_ok(ctx, kind, &[], &v);
    }
    let reply = match behaviour::decide(&conv, ctx.knobs.context_window) {
        Ok(r) => r,
        Err(e) => return error(ctx, e),
    };
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) && !stream {
        return error(ctx, ApiError::Status(500));
    }
    let u = reply.usage;
    if !stream {
        let mut message = json!({"role": "assistant", "content": reply.text});
        if !reply.tool_calls.is_empty() {
            message["tool_calls"] = tool_calls_json(&reply.tool_calls);
        }
        let mut v = json!({"model": model, "created_at": rfc3339_now(), "message": message});
        final_fields(&mut v, done_reason(&reply), u.prompt, u.completion);
        return json_ok(ctx, kind, &[], &v);
    }
    let line = |message: Value| json!({"model": model, "created_at": rfc3339_now(), "message": message, "done": false});
    let mut frames = Vec::new();
    if reply.tool_calls.is_empty() {
        for piece in text_chunks(&reply.text) {
            frames.push(Frame::data(&line(json!({"role": "assistant", "content": piece}))).content());
        }
    } else {
        frames.push(
            Frame::data(&line(json!({"role": "assistant", "content": "",
                "tool_calls": tool_calls_json(&reply.tool_calls)})))
            .content(),
        );
    }
    let mut last = json!({"model": model, "created_at": rfc3339_now(),
        "message": {"role": "assistant", "content": ""}});
    final_fields(&mut last, done_reason(&reply), u.prompt, u.completion);
    frames.push(Frame::data(&last));
    let mut err = json!({"error": "an error was encountered while running the model: unexpected EOF"});
    echo_key_into(ctx, &mut err, "/error");
    let err = Frame::data(&err);
    stream_response(ctx, Framing::Ndjson, frames, err, kind, Vec::new())
}

fn embed(ctx: &Ctx, kind: Option<FaultKind>, legacy: bool) -> Response {
    let model = match request_model(ctx) {
        Ok(m) => m,
        Err(e) => return error(ctx, e),
    };
    let body = ctx.body.clone().unwrap_or(Value::Null);
    let dims = body.get("dimensions").and_then(Value::as_u64).filter(|d| *d >= 1).map_or(8, |d| usize::try_from(d.min(8192)).unwrap_or(8));
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) {
        return error(ctx, ApiError::Status(500));
    }
    if legacy {
        let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
        return json_ok(ctx, kind, &[], &json!({ "embedding": embedding(prompt, dims) }));
    }
    let inputs: Vec<String> = match body.get("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for item in a {
                match item.as_str() {
                    Some(s) => out.push(s.to_string()),
                    None => return error(ctx, ApiError::invalid(format!("invalid input type: {}", json_type(item)))),
                }
            }
            out
        }
        Some(other) => return error(ctx, ApiError::invalid(format!("invalid input type: {}", json_type(other)))),
    };
    let prompt: u64 = inputs.iter().map(|s| words(s)).sum();
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|s| embedding(s, dims)).collect();
    json_ok(
        ctx,
        kind,
        &[],
        &json!({"model": model, "embeddings": embeddings, "total_duration": 14_143_917u64,
            "load_duration": 1_019_500u64, "prompt_eval_count": prompt}),
    )
}

fn tags(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let models: Vec<Value> = ctx
        .handle
        .config()
        .models
        .iter()
        .map(|m| {
            let name = with_tag(m);
            let family: String = name.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            json!({"name": name, "model": name, "modified_at": "2025-01-01T00:00:00Z",
                "size": 2_019_393_189u64, "digest": sha256_hex(name.as_bytes()),
                "details": {"parent_model": "", "format": "gguf", "family": family,
                    "families": [family], "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M"}})
        })
        .collect();
    json_ok(ctx, kind, &[], &json!({ "models": models }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_errors_name_the_byte() {
        assert_eq!(decode_image("data:image/png;base64,AAAA").err(), Some(ApiError::invalid("illegal base64 data at input byte 4")));
        assert_eq!(decode_image("YWJj").unwrap(), b"abc");
    }

    #[test]
    fn content_must_be_a_string() {
        let b = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]});
        assert!(parse_chat(&b).is_err());
        let b = json!({"model": "m", "messages": [{"role": "assistant", "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]});
        assert!(parse_chat(&b).is_err());
    }

    #[test]
    fn stream_defaults_true() {
        let b = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let (_, stream, load) = parse_chat(&b).unwrap();
        assert!(stream);
        assert!(!load);
    }

    #[test]
    fn tags() {
        assert_eq!(with_tag("llama3.2"), "llama3.2:latest");
        assert_eq!(with_tag("llama3.2:1b"), "llama3.2:1b");
    }
}
