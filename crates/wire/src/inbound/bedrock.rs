//! The Bedrock Runtime API as callers speak it (`boto3.client("bedrock-runtime", endpoint_url=<gateway>/bedrock)`):
//! a Converse request onto the canonical chat request, the canonical answer back as a Converse response,
//! a stream as ConverseStream's binary event-stream frames, and InvokeModel embedding bodies (Titan's
//! `inputText`, Cohere's `texts`) onto the canonical embeddings request and back.
//!
//! Why a drop-in route: code written against Bedrock (boto3, the AWS SDKs, LangChain's `ChatBedrockConverse`)
//! can then reach any provider the gateway serves, with the gateway's routing, keys and budgets, by
//! changing its endpoint URL only. The model id in the path is the Switchyard model name
//! (`openai/gpt-4o-mini`, a route's alias, or `bedrock/anthropic.claude-…` for Bedrock itself).
//!
//! What maps, and what does not:
//! - `system` text blocks become one system message each, first; `messages` keep their order. A user
//!   turn's `toolResult` blocks become `tool` messages (before the rest of the turn, as OpenAI wants
//!   them right after the calls); their `text` and `json` content is joined as the result text.
//! - `image` blocks (bytes, which JSON carries as base64) become data-URL image parts; `document` blocks
//!   file parts with the document's name and a data URL of its bytes. An S3 location is refused (the
//!   gateway holds no AWS credentials of the caller's).
//! - `toolUse` blocks in assistant turns become tool calls (`input` as the JSON arguments text);
//!   `reasoningContent` in history is dropped (providers take no reasoning back in OpenAI's shape);
//!   `cachePoint` and `guardContent` markers are dropped.
//! - `inferenceConfig` maps to `max_tokens`, `temperature`, `top_p`, `stop`; `toolConfig` to `tools`
//!   and `tool_choice` (`auto` → `auto`, `any` → `required`, `tool` → that function). Of
//!   `additionalModelRequestFields` only `top_k` has a canonical home; the rest is dropped, as are
//!   `guardrailConfig`, `promptVariables` and `requestMetadata` (nothing of Bedrock's runs them here).
//! - Answers: `stopReason` from the finish reason (`stop` → `end_turn`, `length` → `max_tokens`,
//!   `tool_calls` → `tool_use`, `content_filter` → `content_filtered`); usage with cache reads apart
//!   from `inputTokens`, as Bedrock counts them; `metrics.latencyMs` is 0 (the gateway's own timing is in
//!   its `x-switchyard-*` headers and request log, not invented here).
//! - Errors: AWS's shape, the status with `x-amzn-errortype: <Shape>` and `{"message": …}` (see
//!   [`error_shape`]); in a stream, an exception frame of the matching stream exception.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::eventstream::Message as Frame;
use crate::types::{ChatChunk, ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, FinishReason, Usage};

/// A request the gateway cannot take, with the JSON path of the offending member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundError {
    pub message: String,
    pub param: Option<String>,
}

impl InboundError {
    fn at(path: &str, message: impl std::fmt::Display) -> Self {
        InboundError { message: format!("{path}: {message}"), param: Some(path.to_string()) }
    }
}

/// The operations of `/model/{modelId}/{operation}` the route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Converse,
    ConverseStream,
    Invoke,
}

/// `(model, operation)` of a path under the route's prefix: `model/{modelId}/{operation}`, the model id
/// percent-decoded (boto3 sends `openai/gpt-4o` as `openai%2Fgpt-4o`; an unencoded `/` is taken too).
pub fn parse_path(rest: &str) -> Option<(String, Operation)> {
    let rest = rest.strip_prefix('/').unwrap_or(rest).strip_prefix("model/")?;
    let (model, op) = rest.rsplit_once('/')?;
    let op = match op {
        "converse" => Operation::Converse,
        "converse-stream" => Operation::ConverseStream,
        "invoke" => Operation::Invoke,
        _ => return None,
    };
    let model = percent_decode(model)?;
    (!model.is_empty()).then_some((model, op))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------------------------------------
// Converse request → canonical
// ---------------------------------------------------------------------------------------------------------

fn obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, InboundError> {
    v.as_object().ok_or_else(|| InboundError::at(path, "expected an object"))
}

fn arr<'a>(v: &'a Value, path: &str) -> Result<&'a [Value], InboundError> {
    v.as_array().map(Vec::as_slice).ok_or_else(|| InboundError::at(path, "expected a list"))
}

fn text<'a>(v: &'a Value, path: &str) -> Result<&'a str, InboundError> {
    v.as_str().ok_or_else(|| InboundError::at(path, "expected a string"))
}

/// The one member of a union object (a content block, a tool choice).
fn member<'a>(v: &'a Value, path: &str) -> Result<(&'a str, &'a Value), InboundError> {
    let o = obj(v, path)?;
    let mut it = o.iter();
    match (it.next(), it.next()) {
        (Some((k, v)), None) => Ok((k.as_str(), v)),
        _ => Err(InboundError::at(path, "a union must set exactly one member")),
    }
}

/// The bytes of a `source`: base64 text, as JSON carries a blob.
fn source_bytes<'a>(v: &'a Value, path: &str) -> Result<&'a str, InboundError> {
    let (kind, inner) = member(v, path)?;
    match kind {
        "bytes" => {
            let b64 = text(inner, &format!("{path}.bytes"))?;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| InboundError::at(&format!("{path}.bytes"), format!("not base64: {e}")))?;
            Ok(b64)
        }
        "s3Location" => Err(InboundError::at(path, "s3Location sources are not supported by this gateway; send the bytes")),
        other => Err(InboundError::at(path, format!("unknown source \"{other}\""))),
    }
}

fn image_mime(format: &str) -> Option<&'static str> {
    Some(match format {
        "png" => "image/png",
        "jpeg" | "jpg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => return None,
    })
}

fn document_mime(format: &str) -> Option<&'static str> {
    Some(match format {
        "pdf" => "application/pdf",
        "csv" => "text/csv",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "html" => "text/html",
        "txt" => "text/plain",
        "md" => "text/markdown",
        _ => return None,
    })
}

/// A tool result's content blocks as one text: texts as they are, JSON encoded.
fn tool_result_text(v: &Value, path: &str) -> Result<String, InboundError> {
    let mut out = String::new();
    for (j, b) in arr(v, path)?.iter().enumerate() {
        let p = format!("{path}[{j}]");
        let (kind, inner) = member(b, &p)?;
        let piece = match kind {
            "text" => text(inner, &format!("{p}.text"))?.to_string(),
            "json" => inner.to_string(),
            other => return Err(InboundError::at(&p, format!("tool result content \"{other}\" is not supported; send text or json"))),
        };
        if !out.is_empty() && !piece.is_empty() {
            out.push('\n');
        }
        out.push_str(&piece);
    }
    Ok(out)
}

/// One Converse message as canonical (OpenAI-shaped) messages.
fn convert_message(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), InboundError> {
    let path = format!("messages[{i}]");
    let o = obj(m, &path)?;
    let role = text(o.get("role").unwrap_or(&Value::Null), &format!("{path}.role"))?;
    if role != "user" && role != "assistant" {
        return Err(InboundError::at(&format!("{path}.role"), format!("must be user or assistant, got \"{role}\"")));
    }
    let blocks = arr(o.get("content").unwrap_or(&Value::Null), &format!("{path}.content"))?;
    let mut parts: Vec<Value> = Vec::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut results: Vec<Value> = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let p = format!("{path}.content[{j}]");
        let (kind, inner) = member(b, &p)?;
        match (kind, role) {
            ("text", _) => parts.push(json!({"type": "text", "text": text(inner, &format!("{p}.text"))?})),
            ("image", "user") => {
                let format = text(inner.get("format").unwrap_or(&Value::Null), &format!("{p}.image.format"))?;
                let mime = image_mime(format)
                    .ok_or_else(|| InboundError::at(&format!("{p}.image.format"), format!("\"{format}\" is not png, jpeg, gif or webp")))?;
                let b64 = source_bytes(inner.get("source").unwrap_or(&Value::Null), &format!("{p}.image.source"))?;
                parts.push(json!({"type": "image_url", "image_url": {"url": format!("data:{mime};base64,{b64}")}}));
            }
            ("document", "user") => {
                let format = text(inner.get("format").unwrap_or(&Value::Null), &format!("{p}.document.format"))?;
                let mime = document_mime(format)
                    .ok_or_else(|| InboundError::at(&format!("{p}.document.format"), format!("\"{format}\" is not a document format")))?;
                let name = inner.get("name").and_then(Value::as_str).unwrap_or("document");
                let b64 = source_bytes(inner.get("source").unwrap_or(&Value::Null), &format!("{p}.document.source"))?;
                parts.push(json!({"type": "file", "file": {"filename": format!("{name}.{format}"), "file_data": format!("data:{mime};base64,{b64}")}}));
            }
            ("toolUse", "assistant") => {
                let id = text(inner.get("toolUseId").unwrap_or(&Value::Null), &format!("{p}.toolUse.toolUseId"))?;
                let name = text(inner.get("name").unwrap_or(&Value::Null), &format!("{p}.toolUse.name"))?;
                let input = inner.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}));
            }
            ("toolResult", "user") => {
                let id = text(inner.get("toolUseId").unwrap_or(&Value::Null), &format!("{p}.toolResult.toolUseId"))?;
                let mut content = tool_result_text(inner.get("content").unwrap_or(&json!([])), &format!("{p}.toolResult.content"))?;
                if inner.get("status").and_then(Value::as_str) == Some("error") && !content.starts_with("Error") {
                    content = format!("Error: {content}");
                }
                results.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            ("reasoningContent" | "cachePoint" | "guardContent", _) => {}
            (other, _) => return Err(InboundError::at(&p, format!("a \"{other}\" block is not supported in a {role} message"))),
        }
    }
    out.extend(results);
    if role == "assistant" {
        if !parts.is_empty() || !calls.is_empty() {
            let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
            let mut msg = json!({"role": "assistant", "content": if texts.is_empty() { Value::Null } else { json!(texts.concat()) }});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            out.push(msg);
        }
    } else if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn convert_tools(cfg: &Value, req: &mut Map<String, Value>) -> Result<(), InboundError> {
    let mut tools = Vec::new();
    for (i, t) in arr(cfg.get("tools").unwrap_or(&json!([])), "toolConfig.tools")?.iter().enumerate() {
        let p = format!("toolConfig.tools[{i}]");
        let (kind, spec) = member(t, &p)?;
        match kind {
            "toolSpec" => {
                let name = text(spec.get("name").unwrap_or(&Value::Null), &format!("{p}.toolSpec.name"))?;
                let schema = spec.pointer("/inputSchema/json").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                let mut f = json!({"name": name, "parameters": schema});
                if let Some(d) = spec.get("description").and_then(Value::as_str) {
                    f["description"] = json!(d);
                }
                tools.push(json!({"type": "function", "function": f}));
            }
            // A cache marker between tools.
            "cachePoint" => {}
            other => return Err(InboundError::at(&p, format!("tool \"{other}\" is not supported; send a toolSpec"))),
        }
    }
    if tools.is_empty() {
        return Ok(());
    }
    req.insert("tools".into(), Value::Array(tools));
    if let Some(choice) = cfg.get("toolChoice") {
        let (kind, inner) = member(choice, "toolConfig.toolChoice")?;
        let c = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "tool" => {
                let name = text(inner.get("name").unwrap_or(&Value::Null), "toolConfig.toolChoice.tool.name")?;
                json!({"type": "function", "function": {"name": name}})
            }
            other => return Err(InboundError::at("toolConfig.toolChoice", format!("unknown choice \"{other}\""))),
        };
        req.insert("tool_choice".into(), c);
    }
    Ok(())
}

/// A Converse (or ConverseStream, `stream`) body for `model` as the canonical chat request. A stream asks
/// for usage, which its closing `metadata` event carries.
pub fn to_chat(model: &str, body: &Value, stream: bool) -> Result<ChatRequest, InboundError> {
    let o = obj(body, "body")?;
    let mut messages: Vec<Value> = Vec::new();
    if let Some(system) = o.get("system") {
        for (i, b) in arr(system, "system")?.iter().enumerate() {
            let p = format!("system[{i}]");
            match member(b, &p)? {
                ("text", t) => messages.push(json!({"role": "system", "content": text(t, &format!("{p}.text"))?})),
                ("cachePoint" | "guardContent", _) => {}
                (other, _) => return Err(InboundError::at(&p, format!("a \"{other}\" system block is not supported"))),
            }
        }
    }
    let turns = arr(o.get("messages").unwrap_or(&Value::Null), "messages")?;
    for (i, m) in turns.iter().enumerate() {
        convert_message(m, i, &mut messages)?;
    }
    let mut req = Map::new();
    req.insert("model".into(), json!(model));
    req.insert("messages".into(), Value::Array(messages));
    if stream {
        req.insert("stream".into(), json!(true));
        req.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(cfg) = o.get("inferenceConfig") {
        let c = obj(cfg, "inferenceConfig")?;
        for (from, to) in [("maxTokens", "max_tokens"), ("temperature", "temperature"), ("topP", "top_p"), ("stopSequences", "stop")] {
            if let Some(v) = c.get(from).filter(|v| !v.is_null()) {
                req.insert(to.into(), v.clone());
            }
        }
    }
    if let Some(cfg) = o.get("toolConfig") {
        convert_tools(cfg, &mut req)?;
    }
    if let Some(top_k) = o.get("additionalModelRequestFields").and_then(|a| a.get("top_k")).filter(|v| v.is_number()) {
        req.insert("top_k".into(), top_k.clone());
    }
    serde_json::from_value(Value::Object(req)).map_err(|e| InboundError { message: format!("invalid request: {e}"), param: None })
}

// ---------------------------------------------------------------------------------------------------------
// Canonical answer → Converse response
// ---------------------------------------------------------------------------------------------------------

/// Converse's `stopReason` for a finish reason.
pub fn stop_reason(f: Option<&FinishReason>) -> &'static str {
    match f {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls | FinishReason::FunctionCall) => "tool_use",
        Some(FinishReason::ContentFilter) => "content_filtered",
        Some(FinishReason::Stop | FinishReason::Other(_)) | None => "end_turn",
    }
}

/// Converse's `usage`: cache reads and writes apart from `inputTokens`.
fn usage_json(u: Option<&Usage>) -> Value {
    let Some(u) = u else { return json!({"inputTokens": 0, "outputTokens": 0, "totalTokens": 0}) };
    let cached = u.cached_tokens().unwrap_or(0).min(u.prompt_tokens);
    let written = u.extra.get("cache_write_tokens").and_then(Value::as_u64).unwrap_or(0).min(u.prompt_tokens - cached);
    let mut v = json!({
        "inputTokens": u.prompt_tokens - cached - written,
        "outputTokens": u.completion_tokens,
        "totalTokens": u.prompt_tokens + u.completion_tokens,
    });
    if cached > 0 || written > 0 {
        v["cacheReadInputTokens"] = json!(cached);
        v["cacheWriteInputTokens"] = json!(written);
    }
    v
}

/// A tool call's arguments as Converse's `input` document (an object; `{}` for anything else).
fn tool_input(arguments: &str) -> Value {
    serde_json::from_str::<Value>(arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}))
}

/// The Converse response for a canonical answer (its first choice: Converse has one).
pub fn render_response(resp: &ChatResponse) -> Vec<u8> {
    let choice = resp.choices.first();
    let mut content = Vec::new();
    if let Some(m) = choice.map(|c| &c.message) {
        if let Some(r) = m.extra.get("reasoning_content").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            content.push(json!({"reasoningContent": {"reasoningText": {"text": r}}}));
        }
        if let Some(t) = m.content.as_deref().filter(|t| !t.is_empty()) {
            content.push(json!({"text": t}));
        }
        for c in m.tool_calls.iter().flatten() {
            content.push(json!({"toolUse": {"toolUseId": c.id, "name": c.function.name, "input": tool_input(&c.function.arguments)}}));
        }
    }
    let body = json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(choice.and_then(|c| c.finish_reason.as_ref())),
        "usage": usage_json(resp.usage.as_ref()),
        "metrics": {"latencyMs": 0},
    });
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// Canonical stream → ConverseStream event-stream frames
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Reasoning,
    /// A tool call, by its canonical index.
    Tool(u32),
}

/// ConverseStream's events for a canonical chunk stream: `messageStart`, per content block its deltas
/// (tool blocks opened by `contentBlockStart` with the id and name) and `contentBlockStop`, then
/// `messageStop` and `metadata` with the usage. Text blocks have no start event, as Bedrock sends them.
#[derive(Debug, Default)]
pub struct BedrockStreamEncoder {
    started: bool,
    open: Option<(Open, u32)>,
    next_block: u32,
    /// Block index of each canonical tool call index seen.
    tools: Vec<(u32, u32)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

fn frame(event: &str, body: &Value, out: &mut Vec<u8>) {
    // Short header names and a JSON payload: within every limit of the format, so encoding cannot fail.
    let _ = Frame::event(event, body.to_string().into_bytes()).encode(out);
}

impl BedrockStreamEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            frame("messageStart", &json!({"role": "assistant"}), out);
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            frame("contentBlockStop", &json!({"contentBlockIndex": index}), out);
        }
    }

    /// The block for `kind`, opening it (and closing the one before) when it is not the open one.
    fn block(&mut self, kind: Open, out: &mut Vec<u8>) -> u32 {
        match self.open {
            Some((k, index)) if k == kind => index,
            _ => {
                self.close(out);
                let index = self.next_block;
                self.next_block += 1;
                self.open = Some((kind, index));
                index
            }
        }
    }

    pub fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
        self.start(out);
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        // Converse has one choice; others (n > 1) have no place in its stream.
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else { return };
        if let Some(r) = choice.delta.extra.get("reasoning_content").and_then(Value::as_str).filter(|r| !r.is_empty()) {
            let index = self.block(Open::Reasoning, out);
            frame("contentBlockDelta", &json!({"contentBlockIndex": index, "delta": {"reasoningContent": {"text": r}}}), out);
        }
        if let Some(t) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.block(Open::Text, out);
            frame("contentBlockDelta", &json!({"contentBlockIndex": index, "delta": {"text": t}}), out);
        }
        for call in choice.delta.tool_calls.into_iter().flatten() {
            let known = self.tools.iter().find(|(t, _)| *t == call.index).map(|(_, b)| *b);
            let function = call.function.unwrap_or_default();
            let index = match known {
                Some(b) => b,
                None => {
                    let b = self.block(Open::Tool(call.index), out);
                    self.tools.push((call.index, b));
                    let start = json!({"toolUse": {"toolUseId": call.id.unwrap_or_default(), "name": function.name.unwrap_or_default()}});
                    frame("contentBlockStart", &json!({"contentBlockIndex": b, "start": start}), out);
                    b
                }
            };
            if let Some(args) = function.arguments.filter(|a| !a.is_empty()) {
                frame("contentBlockDelta", &json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": args}}}), out);
            }
        }
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
    }

    /// The stream ended well: the open block's stop, `messageStop` and `metadata`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        frame("messageStop", &json!({"stopReason": stop_reason(self.finish.as_ref())}), out);
        frame("metadata", &json!({"usage": usage_json(self.usage.as_ref()), "metrics": {"latencyMs": 0}}), out);
    }

    /// The stream failed: an exception frame of ConverseStream's kind for `status`.
    pub fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        let kind = stream_exception(status);
        let _ = Frame::exception(kind, json!({"message": message}).to_string().into_bytes()).encode(out);
    }
}

/// ConverseStream's exception member for a status.
pub fn stream_exception(status: u16) -> &'static str {
    match status {
        400 | 404 | 413 | 422 => "validationException",
        429 => "throttlingException",
        503 => "serviceUnavailableException",
        424 => "modelStreamErrorException",
        _ => "internalServerException",
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/// The AWS error shape a status stands for, as Bedrock Runtime names them.
pub fn error_shape(status: u16) -> &'static str {
    match status {
        400 | 402 | 413 | 415 | 422 => "ValidationException",
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 | 504 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// AWS's error body: `{"message": …}` (the shape travels in `x-amzn-errortype`).
pub fn error_json(message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"message": message})).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// InvokeModel embeddings
// ---------------------------------------------------------------------------------------------------------

/// Which InvokeModel embedding body the caller sent, so the answer comes back in the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedShape {
    /// Titan text embeddings: `{"inputText": "…"}` → `{"embedding": […], "inputTextTokenCount": n}`.
    Titan,
    /// Cohere embed: `{"texts": […], "input_type": …}` → `{"embeddings": [[…]], "texts": […], …}`.
    Cohere,
}

/// An InvokeModel body for an embedding model as the canonical embeddings request.
pub fn to_embeddings(model: &str, body: &Value) -> Result<(EmbeddingsRequest, EmbedShape), InboundError> {
    let o = obj(body, "body")?;
    let (input, shape) = if let Some(t) = o.get("inputText") {
        (json!(text(t, "inputText")?), EmbedShape::Titan)
    } else if let Some(ts) = o.get("texts") {
        let texts: Result<Vec<&str>, InboundError> =
            arr(ts, "texts")?.iter().enumerate().map(|(i, t)| text(t, &format!("texts[{i}]"))).collect();
        (json!(texts?), EmbedShape::Cohere)
    } else {
        return Err(InboundError {
            message: "InvokeModel on this gateway serves embeddings only: send Titan's {\"inputText\": …} or Cohere's {\"texts\": […]}; use Converse for chat".into(),
            param: None,
        });
    };
    let mut req = json!({"model": model, "input": input});
    if let Some(d) = o.get("dimensions").filter(|d| d.is_u64()) {
        req["dimensions"] = d.clone();
    }
    let r = serde_json::from_value(req).map_err(|e| InboundError { message: format!("invalid request: {e}"), param: None })?;
    Ok((r, shape))
}

/// The canonical embeddings answer in the caller's InvokeModel shape.
pub fn render_embeddings(resp: &EmbeddingsResponse, shape: EmbedShape, texts: &[String]) -> Vec<u8> {
    let vectors: Vec<&Value> = resp.data.iter().map(|d| &d.embedding).collect();
    let body = match shape {
        EmbedShape::Titan => json!({
            "embedding": vectors.first().copied().cloned().unwrap_or_else(|| json!([])),
            "inputTextTokenCount": resp.usage.prompt_tokens,
        }),
        EmbedShape::Cohere => json!({
            "embeddings": vectors,
            "id": format!("emb-{}", resp.usage.prompt_tokens),
            "response_type": "embeddings_floats",
            "texts": texts,
        }),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::eventstream::Decoder;
    use crate::types::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};

    #[test]
    fn paths_decode_the_model() {
        assert_eq!(parse_path("/model/openai%2Fgpt-4o-mini/converse"), Some(("openai/gpt-4o-mini".into(), Operation::Converse)));
        assert_eq!(parse_path("model/openai/gpt-4o/converse-stream"), Some(("openai/gpt-4o".into(), Operation::ConverseStream)));
        assert_eq!(
            parse_path("/model/bedrock%2Famazon.titan-embed-text-v2%3A0/invoke"),
            Some(("bedrock/amazon.titan-embed-text-v2:0".into(), Operation::Invoke))
        );
        for bad in ["/model//converse", "/model/x/other", "/models/x/converse", "/model/%zz/converse", "/model/x"] {
            assert_eq!(parse_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn converse_maps_onto_the_canonical_request() {
        let body = json!({
            "system": [{"text": "be terse"}, {"cachePoint": {"type": "default"}}],
            "messages": [
                {"role": "user", "content": [{"text": "weather?"}, {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]},
                {"role": "assistant", "content": [{"text": "checking"}, {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"c": 18}}]}}, {"text": "and now?"}]}
            ],
            "inferenceConfig": {"maxTokens": 50, "temperature": 0.5, "topP": 0.9, "stopSequences": ["zzz"]},
            "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "w", "inputSchema": {"json": {"type": "object"}}}}],
                           "toolChoice": {"any": {}}},
            "additionalModelRequestFields": {"top_k": 3, "other": 1}
        });
        let r = to_chat("openai/gpt-4o", &body, true).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["model"], "openai/gpt-4o");
        assert_eq!(v["messages"][0], json!({"role": "system", "content": "be terse"}));
        assert_eq!(v["messages"][1]["content"][1]["image_url"]["url"], "data:image/png;base64,iVBORw0KGgo=");
        assert_eq!(v["messages"][2]["content"], "checking");
        assert_eq!(v["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(v["messages"][3], json!({"role": "tool", "tool_call_id": "t1", "content": "{\"c\":18}"}));
        assert_eq!(v["messages"][4]["content"][0]["text"], "and now?");
        assert_eq!((v["max_tokens"].clone(), v["top_p"].clone(), v["stop"].clone()), (json!(50), json!(0.9), json!(["zzz"])));
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["tools"][0]["function"]["parameters"], json!({"type": "object"}));
        assert_eq!(v["top_k"], 3);
        assert!(v.get("other").is_none());
        assert!(r.is_stream() && r.include_usage());
    }

    #[test]
    fn converse_refusals_name_the_member() {
        let bad = |body: Value| to_chat("m", &body, false).unwrap_err();
        let e = bad(json!({"messages": [{"role": "system", "content": []}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = bad(json!({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
        let e = bad(json!({"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"s3Location": {}}}}]}]}));
        assert!(e.message.contains("s3Location"), "{e:?}");
        let e = bad(json!({"messages": [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AA=="}}}]}]}));
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].image.format"));
        assert!(bad(json!({})).message.contains("messages"));
    }

    #[test]
    fn answers_render_as_converse() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": "c", "model": "m", "created": 1,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "hi",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 4}}
        }))
        .unwrap();
        let v: Value = serde_json::from_slice(&render_response(&resp)).unwrap();
        assert_eq!(
            v["output"]["message"]["content"],
            json!([{"text": "hi"}, {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}])
        );
        assert_eq!(v["stopReason"], "tool_use");
        assert_eq!(
            v["usage"],
            json!({"inputTokens": 6, "outputTokens": 3, "totalTokens": 13, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 0})
        );
        assert_eq!(stop_reason(Some(&FinishReason::Length)), "max_tokens");
        assert_eq!(stop_reason(Some(&FinishReason::ContentFilter)), "content_filtered");
        assert_eq!(stop_reason(None), "end_turn");
    }

    fn chunk(delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
        let mut c = ChatChunk::new("c", 1, "m");
        c.choices.push(ChunkChoice { index: 0, delta, finish_reason: finish, ..ChunkChoice::default() });
        c
    }

    #[test]
    fn streams_encode_as_event_stream_frames() {
        let mut enc = BedrockStreamEncoder::new();
        let mut out = Vec::new();
        enc.encode(chunk(Delta { content: Some("Hel".into()), ..Delta::default() }, None), &mut out);
        enc.encode(chunk(Delta { content: Some("lo".into()), ..Delta::default() }, None), &mut out);
        let call = |id: Option<&str>, name: Option<&str>, args: &str| ToolCallDelta {
            index: 0,
            id: id.map(str::to_string),
            kind: None,
            function: Some(FunctionCallDelta { name: name.map(str::to_string), arguments: Some(args.into()) }),
        };
        enc.encode(chunk(Delta { tool_calls: Some(vec![call(Some("t1"), Some("f"), "{\"a\"")]), ..Delta::default() }, None), &mut out);
        enc.encode(
            chunk(Delta { tool_calls: Some(vec![call(None, None, ":1}")]), ..Delta::default() }, Some(FinishReason::ToolCalls)),
            &mut out,
        );
        let mut last = ChatChunk::new("c", 1, "m");
        last.usage = Some(Usage::new(5, 2));
        enc.encode(last, &mut out);
        enc.finish(&mut out);
        let mut msgs = Vec::new();
        let mut d = Decoder::new();
        d.feed(&out, &mut msgs).unwrap();
        d.finish().unwrap();
        let events: Vec<(String, Value)> =
            msgs.iter().map(|m| (m.header_str(":event-type").unwrap().to_string(), serde_json::from_slice(&m.payload).unwrap())).collect();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "messageStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "contentBlockStart",
                "contentBlockDelta",
                "contentBlockDelta",
                "contentBlockStop",
                "messageStop",
                "metadata"
            ]
        );
        assert_eq!(events[4].1, json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}));
        assert_eq!(events[6].1, json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": ":1}"}}}));
        assert_eq!(events[8].1, json!({"stopReason": "tool_use"}));
        assert_eq!(events[9].1["usage"], json!({"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}));
        assert!(msgs.iter().all(|m| m.header_str(":message-type") == Some("event")));

        let mut out = Vec::new();
        BedrockStreamEncoder::new().fail(429, "slow down", &mut out);
        let mut msgs = Vec::new();
        Decoder::new().feed(&out, &mut msgs).unwrap();
        assert_eq!(msgs[0].header_str(":message-type"), Some("exception"));
        assert_eq!(msgs[0].header_str(":exception-type"), Some("throttlingException"));
    }

    #[test]
    fn embeddings_keep_the_callers_shape() {
        let (r, shape) = to_embeddings("m", &json!({"inputText": "hi", "dimensions": 256})).unwrap();
        assert_eq!((shape, r.dimensions), (EmbedShape::Titan, Some(256)));
        let (r, shape) = to_embeddings("m", &json!({"texts": ["a", "b"], "input_type": "search_query"})).unwrap();
        assert_eq!(shape, EmbedShape::Cohere);
        assert_eq!(r.input.texts().unwrap(), ["a", "b"]);
        assert!(to_embeddings("m", &json!({"prompt": "x"})).is_err());
        let resp: EmbeddingsResponse = serde_json::from_value(json!({"data": [{"index": 0, "embedding": [0.5]}], "model": "m",
            "usage": {"prompt_tokens": 1, "total_tokens": 1}}))
        .unwrap();
        let v: Value = serde_json::from_slice(&render_embeddings(&resp, EmbedShape::Titan, &[])).unwrap();
        assert_eq!(v, json!({"embedding": [0.5], "inputTextTokenCount": 1}));
        assert_eq!(error_shape(429), "ThrottlingException");
        assert_eq!(error_shape(400), "ValidationException");
    }
}
