//! The Anthropic Messages API as the gateway's client-facing shape (`/anthropic/v1/messages`): a Messages
//! request in, the canonical [`ChatRequest`] out; the canonical answer (a [`ChatResponse`] or a stream of
//! [`ChatChunk`]s) back as a Messages response or named-SSE stream; errors in Anthropic's error shape.
//!
//! It exists so that Anthropic clients (the SDKs, Claude Code) can use the gateway as their base URL whatever
//! provider serves the model: an Anthropic upstream, an OpenAI-compatible one or Ollama. The outbound
//! Anthropic codec (`providers::anthropic`) is the mirror image; the two are kept apart because the
//! inbound side must accept everything a client may send and refuse clearly what no upstream could honour,
//! while the outbound side must send only what Anthropic accepts.
//!
//! The choices where the two shapes do not map one to one (docs/providers.md repeats them for users):
//! - `system` (a string or text blocks; `cache_control` tolerated) becomes one system message. Every
//!   `cache_control` marker (system, blocks, tools) is accepted and not forwarded: the canonical request has
//!   no place for it.
//! - A user turn's `tool_result` blocks become `tool` messages, in order, before the rest of the turn; a
//!   result with `is_error: true` reaches the upstream as its text prefixed with `Error: ` (the canonical
//!   request has no error flag, and a model reads the prefix the same way).
//! - `document` blocks become canonical `file` parts: base64 sources keep their media type, `text` sources
//!   become `text/plain` files; URL, `content` and `file` sources are refused (no upstream but Anthropic's
//!   own could resolve them). `image` blocks take base64 and URL sources.
//! - `thinking` is kept as the canonical `thinking` field: the Anthropic codec sends it as is, the Ollama
//!   codec turns it into `think`, OpenAI itself is not sent it (Chat Completions has no switch for it),
//!   other OpenAI-compatible servers get it as sent. Signed thinking blocks in the history (and
//!   `redacted_thinking`) are kept whole as the canonical `thinking_blocks` of their message: the Anthropic
//!   codecs send them back first in the turn (Anthropic insists on it when thinking is on with tools), every
//!   other codec leaves them out; unsigned ones are dropped. Thinking in the answer comes back as
//!   `thinking` blocks only when the request enabled thinking, with Anthropic's signatures when the
//!   upstream gave them (`signature_delta` in streams) and empty signatures otherwise.
//! - `output_config.format` (and the beta `output_format`) of type `json_schema` becomes the canonical
//!   `response_format` json_schema. `output_config.effort`, `service_tier` and `speed` are hints and are
//!   dropped; fields tied to Anthropic's own services (`container`, `mcp_servers`, `context_management`,
//!   `inference_geo`) and unknown fields are refused with a 400, as Anthropic refuses unknown fields.
//! - `top_k` is passed on as the canonical `top_k` (Anthropic and vLLM take it).
//! - The answer's `stop_reason`: `max_tokens` when the output was cut, `tool_use` whenever the answer calls
//!   a tool (whatever the upstream called its finish), `refusal` for a content filter, `stop_sequence` when
//!   the upstream says which sequence matched (Anthropic, vLLM), `end_turn` otherwise.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::sse::write_named_frame;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FileData, FinishReason, FunctionCall, FunctionDef, ImageUrl,
    JsonSchemaFormat, Message, ResponseFormat, Role, Stop, Tool, ToolCall, ToolChoice, Usage, THINKING_BLOCKS_FIELD,
};

/// The field OpenAI-shaped reasoning text travels in (canonical messages and deltas).
const REASONING_FIELD: &str = "reasoning_content";
/// The image types Anthropic accepts in a base64 source.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];
/// Anthropic's default page of a model list, and its largest.
const DEFAULT_MODEL_PAGE: usize = 20;
const MAX_MODEL_PAGE: usize = 1000;

/// A request the route refuses, with the path of the offending field in Anthropic's dotted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InboundError {
    pub message: String,
    pub param: Option<String>,
}

impl InboundError {
    fn at(path: &str, message: impl std::fmt::Display) -> Self {
        InboundError { message: format!("{path}: {message}"), param: Some(path.to_string()) }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------------------

/// A `POST /v1/messages` (or `/v1/messages/count_tokens`) body. Content stays JSON until [`to_chat`] walks
/// it, so every mistake is reported at its exact path.
#[derive(Debug, Clone, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    /// Required for messages, not for token counting (checked by [`to_chat`]).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub system: Option<Value>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub tools: Option<Vec<InTool>>,
    #[serde(default)]
    pub tool_choice: Option<InToolChoice>,
    #[serde(default)]
    pub thinking: Option<Value>,
    #[serde(default)]
    pub output_config: Option<OutputConfig>,
    /// The structured-outputs beta's name for `output_config.format`.
    #[serde(default)]
    pub output_format: Option<OutputFormat>,
    /// Gateway extension, as on `/v1/chat/completions`: `provider/model` targets to try after the model.
    #[serde(default)]
    pub fallbacks: Option<Vec<String>>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InTool {
    pub name: String,
    /// Absent or `custom` for a client tool; anything else is one of Anthropic's hosted tools.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct OutputConfig {
    #[serde(default)]
    pub format: Option<OutputFormat>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutputFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub schema: Option<Value>,
}

/// What the answer's translation needs to know about the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inbound {
    /// The model as the caller named it.
    pub model: String,
    /// The request enabled thinking: reasoning text comes back as `thinking` blocks.
    pub thinking: bool,
    /// The request's stop sequences, to recognise the one an upstream names.
    pub stop_sequences: Vec<String>,
}

/// Top-level fields that are hints only: accepted and dropped.
const IGNORED_FIELDS: [&str; 3] = ["service_tier", "speed", "cache_control"];
/// Top-level fields tied to Anthropic's own services, which no canonical request can carry.
const REFUSED_FIELDS: [&str; 4] = ["container", "mcp_servers", "context_management", "inference_geo"];

/// Whether the request is a message (which needs `max_tokens`) or a token count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Messages,
    CountTokens,
}

/// Translates a Messages request into the canonical request, or says which field no upstream could honour.
pub fn to_chat(req: MessagesRequest, purpose: Purpose) -> Result<(ChatRequest, Inbound), InboundError> {
    for key in req.rest.keys() {
        if IGNORED_FIELDS.contains(&key.as_str()) {
            continue;
        }
        if REFUSED_FIELDS.contains(&key.as_str()) {
            return Err(InboundError::at(key, "not supported by the gateway's Anthropic route"));
        }
        return Err(InboundError::at(key, "Extra inputs are not permitted"));
    }
    if req.model.trim().is_empty() {
        return Err(InboundError::at("model", "must not be empty"));
    }
    let max_tokens = match (req.max_tokens, purpose) {
        (None, Purpose::Messages) => return Err(InboundError::at("max_tokens", "Field required")),
        (Some(0), _) => return Err(InboundError::at("max_tokens", "Input should be greater than or equal to 1")),
        (m, _) => m,
    };
    if req.messages.is_empty() {
        return Err(InboundError::at("messages", "at least one message is required"));
    }
    if let Some(t) = req.temperature {
        if !(0.0..=1.0).contains(&t) {
            return Err(InboundError::at("temperature", format!("Input should be between 0 and 1, got {t}")));
        }
    }
    if let Some(p) = req.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(InboundError::at("top_p", format!("Input should be between 0 and 1, got {p}")));
        }
    }

    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    if let Some(system) = req.system {
        if let Some(content) = system_content(system)? {
            messages.push(message(Role::System, content));
        }
    }
    for (i, m) in req.messages.into_iter().enumerate() {
        match m.role.as_str() {
            "user" => user_turn(i, m.content, &mut messages)?,
            "assistant" => assistant_turn(i, m.content, &mut messages)?,
            other => {
                return Err(InboundError::at(
                    &format!("messages.{i}.role"),
                    format!("Input should be 'user' or 'assistant', got '{other}'"),
                ))
            }
        }
    }

    let thinking = match &req.thinking {
        None | Some(Value::Null) => None,
        Some(t) => match t.get("type").and_then(Value::as_str) {
            Some("enabled" | "adaptive" | "disabled") => Some(t.clone()),
            _ => return Err(InboundError::at("thinking.type", "Input should be 'enabled', 'adaptive' or 'disabled'")),
        },
    };
    let thinking_on = thinking.as_ref().and_then(|t| t.get("type")).and_then(Value::as_str).is_some_and(|t| t != "disabled");

    let tools = match req.tools {
        Some(tools) if !tools.is_empty() => Some(tools.into_iter().enumerate().map(|(k, t)| tool(k, t)).collect::<Result<Vec<_>, _>>()?),
        _ => None,
    };
    let (tool_choice, parallel_tool_calls) = match req.tool_choice {
        None => (None, None),
        Some(tc) => {
            let choice = match tc.kind.as_str() {
                "auto" => ToolChoice::Auto,
                "any" => ToolChoice::Required,
                "none" => ToolChoice::None,
                "tool" => match tc.name {
                    Some(n) if !n.is_empty() => ToolChoice::Function(n),
                    _ => return Err(InboundError::at("tool_choice.name", "Field required")),
                },
                other => {
                    return Err(InboundError::at(
                        "tool_choice.type",
                        format!("Input should be 'auto', 'any', 'tool' or 'none', got '{other}'"),
                    ))
                }
            };
            (Some(choice), tc.disable_parallel_tool_use.filter(|d| *d).map(|_| false))
        }
    };

    let format = match (req.output_config.and_then(|c| c.format), req.output_format) {
        (Some(f), _) => Some(("output_config.format", f)),
        (None, Some(f)) => Some(("output_format", f)),
        (None, None) => None,
    };
    let response_format = match format {
        None => None,
        Some((path, f)) => {
            if f.kind != "json_schema" {
                return Err(InboundError::at(&format!("{path}.type"), format!("Input should be 'json_schema', got '{}'", f.kind)));
            }
            let Some(schema) = f.schema.filter(Value::is_object) else {
                return Err(InboundError::at(&format!("{path}.schema"), "Field required (a JSON schema object)"));
            };
            Some(ResponseFormat {
                kind: "json_schema".into(),
                json_schema: Some(JsonSchemaFormat { name: "output".into(), description: None, schema: Some(schema), strict: None }),
            })
        }
    };

    let mut extra = Map::new();
    if let Some(k) = req.top_k {
        extra.insert("top_k".into(), k.into());
    }
    if let Some(t) = thinking {
        extra.insert("thinking".into(), t);
    }
    let stop_sequences = req.stop_sequences.unwrap_or_default();
    let inbound = Inbound { model: req.model.clone(), thinking: thinking_on, stop_sequences: stop_sequences.clone() };
    let chat = ChatRequest {
        model: req.model,
        messages,
        stream: req.stream,
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: (!stop_sequences.is_empty()).then_some(Stop::Many(stop_sequences)),
        tools,
        tool_choice,
        parallel_tool_calls,
        response_format,
        user: req.metadata.and_then(|m| m.user_id).filter(|u| !u.is_empty()),
        fallbacks: req.fallbacks,
        extra,
        ..ChatRequest::default()
    };
    Ok((chat, inbound))
}

fn message(role: Role, content: Content) -> Message {
    Message { role, content: Some(content), name: None, tool_calls: None, tool_call_id: None, refusal: None, extra: Map::new() }
}

/// One part becomes plain text, several stay parts.
fn content_of(mut parts: Vec<ContentPart>) -> Content {
    if parts.len() == 1 {
        if let Some(ContentPart::Text { .. }) = parts.first() {
            if let Some(ContentPart::Text { text }) = parts.pop() {
                return Content::Text(text);
            }
        }
    }
    Content::Parts(parts)
}

fn take_str(v: &mut Value, key: &str) -> Option<String> {
    match v.get_mut(key) {
        Some(Value::String(s)) => Some(std::mem::take(s)),
        _ => None,
    }
}

fn required_str(v: &mut Value, key: &str, path: &str) -> Result<String, InboundError> {
    match v.get_mut(key) {
        Some(Value::String(s)) => Ok(std::mem::take(s)),
        Some(other) => Err(InboundError::at(&format!("{path}.{key}"), format!("Input should be a valid string, got {}", json_kind(other)))),
        None => Err(InboundError::at(&format!("{path}.{key}"), "Field required")),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn blocks(content: Value, path: &str) -> Result<Vec<Value>, InboundError> {
    match content {
        Value::String(s) => Ok(vec![serde_json::json!({"type": "text", "text": s})]),
        Value::Array(a) => Ok(a),
        other => {
            Err(InboundError::at(path, format!("Input should be a valid string or list of content blocks, got {}", json_kind(&other))))
        }
    }
}

fn block_type(b: &Value, path: &str) -> Result<String, InboundError> {
    match b.get("type") {
        Some(Value::String(t)) => Ok(t.clone()),
        Some(_) => Err(InboundError::at(&format!("{path}.type"), "Input should be a valid string")),
        None if b.is_object() => Err(InboundError::at(&format!("{path}.type"), "Field required")),
        None => Err(InboundError::at(path, "Input should be a valid content block object")),
    }
}

fn system_content(system: Value) -> Result<Option<Content>, InboundError> {
    let mut parts = Vec::new();
    for (j, mut b) in blocks(system, "system")?.into_iter().enumerate() {
        let path = format!("system.{j}");
        match block_type(&b, &path)?.as_str() {
            "text" => parts.push(ContentPart::Text { text: required_str(&mut b, "text", &path)? }),
            other => return Err(InboundError::at(&format!("{path}.type"), format!("system blocks must be 'text', got '{other}'"))),
        }
    }
    parts.retain(|p| !matches!(p, ContentPart::Text { text } if text.is_empty()));
    Ok((!parts.is_empty()).then(|| content_of(parts)))
}

fn user_turn(i: usize, content: Value, out: &mut Vec<Message>) -> Result<(), InboundError> {
    let base = format!("messages.{i}.content");
    let mut parts = Vec::new();
    for (j, mut b) in blocks(content, &base)?.into_iter().enumerate() {
        let path = format!("{base}.{j}");
        match block_type(&b, &path)?.as_str() {
            "text" => parts.push(ContentPart::Text { text: required_str(&mut b, "text", &path)? }),
            "image" => parts.push(image_part(&mut b, &path)?),
            "document" => parts.push(document_part(&mut b, &path)?),
            "tool_result" => out.push(tool_result(&mut b, &path)?),
            "tool_use" | "thinking" | "redacted_thinking" => {
                return Err(InboundError::at(&path, "this block type can only be in `assistant` messages"));
            }
            other => return Err(unsupported_block(&path, other)),
        }
    }
    if !parts.is_empty() {
        out.push(message(Role::User, content_of(parts)));
    }
    Ok(())
}

fn unsupported_block(path: &str, kind: &str) -> InboundError {
    InboundError::at(
        &format!("{path}.type"),
        format!(
            "block type '{kind}' is not supported by the gateway's Anthropic route (text, image, document, tool_use, tool_result, thinking)"
        ),
    )
}

fn image_part(b: &mut Value, path: &str) -> Result<ContentPart, InboundError> {
    let spath = format!("{path}.source");
    let Some(src) = b.get_mut("source") else {
        return Err(InboundError::at(&spath, "Field required"));
    };
    match block_type(src, &spath)?.as_str() {
        "base64" => {
            let media = required_str(src, "media_type", &spath)?;
            if !IMAGE_TYPES.contains(&media.as_str()) {
                return Err(InboundError::at(
                    &format!("{spath}.media_type"),
                    "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
                ));
            }
            let data = required_str(src, "data", &spath)?;
            Ok(ContentPart::ImageUrl { image_url: ImageUrl { url: format!("data:{media};base64,{data}"), detail: None } })
        }
        "url" => {
            let url = required_str(src, "url", &spath)?;
            if !crate::image::is_http_url(&url) {
                return Err(InboundError::at(&format!("{spath}.url"), "Input should be a valid http(s) URL"));
            }
            Ok(ContentPart::ImageUrl { image_url: ImageUrl { url, detail: None } })
        }
        other => Err(InboundError::at(
            &format!("{spath}.type"),
            format!("image sources of type '{other}' are not supported by the gateway (base64 and url only)"),
        )),
    }
}

fn document_part(b: &mut Value, path: &str) -> Result<ContentPart, InboundError> {
    let spath = format!("{path}.source");
    let filename = take_str(b, "title").filter(|t| !t.is_empty());
    let Some(src) = b.get_mut("source") else {
        return Err(InboundError::at(&spath, "Field required"));
    };
    let file_data = match block_type(src, &spath)?.as_str() {
        "base64" => {
            let media = required_str(src, "media_type", &spath)?;
            let data = required_str(src, "data", &spath)?;
            format!("data:{media};base64,{data}")
        }
        "text" => {
            let data = required_str(src, "data", &spath)?;
            let media = take_str(src, "media_type").unwrap_or_else(|| "text/plain".into());
            crate::image::to_data_url(&media, data.as_bytes())
        }
        other => {
            return Err(InboundError::at(
                &format!("{spath}.type"),
                format!("document sources of type '{other}' are not supported by the gateway (base64 and text only)"),
            ))
        }
    };
    Ok(ContentPart::File { file: FileData { file_data: Some(file_data), file_id: None, filename } })
}

fn tool_result(b: &mut Value, path: &str) -> Result<Message, InboundError> {
    let id = required_str(b, "tool_use_id", path)?;
    let is_error = match b.get("is_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(e)) => *e,
        Some(_) => return Err(InboundError::at(&format!("{path}.is_error"), "Input should be a valid boolean")),
    };
    let cpath = format!("{path}.content");
    let mut parts = Vec::new();
    match b.get_mut("content").map(Value::take) {
        None | Some(Value::Null) => {}
        Some(content) => {
            for (j, mut c) in blocks(content, &cpath)?.into_iter().enumerate() {
                let p = format!("{cpath}.{j}");
                match block_type(&c, &p)?.as_str() {
                    "text" => parts.push(ContentPart::Text { text: required_str(&mut c, "text", &p)? }),
                    "image" => parts.push(image_part(&mut c, &p)?),
                    "document" => parts.push(document_part(&mut c, &p)?),
                    other => return Err(unsupported_block(&p, other)),
                }
            }
        }
    }
    if is_error {
        match parts.iter_mut().find_map(|p| match p {
            ContentPart::Text { text } => Some(text),
            _ => None,
        }) {
            Some(text) => text.insert_str(0, "Error: "),
            None => parts.insert(0, ContentPart::Text { text: "Error".into() }),
        }
    }
    let content = if parts.is_empty() { Content::Text(String::new()) } else { content_of(parts) };
    let mut m = message(Role::Tool, content);
    m.tool_call_id = Some(id);
    Ok(m)
}

fn assistant_turn(i: usize, content: Value, out: &mut Vec<Message>) -> Result<(), InboundError> {
    let base = format!("messages.{i}.content");
    let mut texts: Vec<ContentPart> = Vec::new();
    let mut calls = Vec::new();
    let mut signed = Vec::new();
    for (j, mut b) in blocks(content, &base)?.into_iter().enumerate() {
        let path = format!("{base}.{j}");
        match block_type(&b, &path)?.as_str() {
            "text" => {
                let text = required_str(&mut b, "text", &path)?;
                if !text.is_empty() {
                    texts.push(ContentPart::Text { text });
                }
            }
            "tool_use" => {
                let id = required_str(&mut b, "id", &path)?;
                let name = required_str(&mut b, "name", &path)?;
                let arguments = match b.get("input") {
                    Some(v @ Value::Object(_)) => v.to_string(),
                    Some(_) => return Err(InboundError::at(&format!("{path}.input"), "Input should be a valid dictionary")),
                    None => return Err(InboundError::at(&format!("{path}.input"), "Field required")),
                };
                calls.push(ToolCall { id, kind: "function".into(), function: FunctionCall { name, arguments } });
            }
            // Signed reasoning only Anthropic can check: kept whole for the Anthropic codecs, left out by
            // every other one. Unsigned thinking is nothing Anthropic would take back, so it is dropped.
            "thinking" => {
                if b.get("signature").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                    signed.push(b);
                }
            }
            "redacted_thinking" => signed.push(b),
            "image" | "document" | "tool_result" => {
                return Err(InboundError::at(&path, "this block type can only be in `user` messages"));
            }
            other => return Err(unsupported_block(&path, other)),
        }
    }
    if texts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let mut extra = Map::new();
    if !signed.is_empty() {
        extra.insert(THINKING_BLOCKS_FIELD.into(), Value::Array(signed));
    }
    let mut m = Message {
        role: Role::Assistant,
        content: None,
        name: None,
        tool_calls: (!calls.is_empty()).then_some(calls),
        tool_call_id: None,
        refusal: None,
        extra,
    };
    if !texts.is_empty() {
        m.content = Some(content_of(texts));
    }
    out.push(m);
    Ok(())
}

fn tool(k: usize, t: InTool) -> Result<Tool, InboundError> {
    let path = format!("tools.{k}");
    if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
        return Err(InboundError::at(
            &format!("{path}.type"),
            format!("'{kind}' is one of Anthropic's hosted tools, which the gateway cannot offer (client tools only)"),
        ));
    }
    if t.name.is_empty() {
        return Err(InboundError::at(&format!("{path}.name"), "must not be empty"));
    }
    let Some(schema) = t.input_schema.filter(Value::is_object) else {
        return Err(InboundError::at(&format!("{path}.input_schema"), "Field required (a JSON schema object)"));
    };
    Ok(Tool {
        kind: "function".into(),
        function: FunctionDef { name: t.name, description: t.description, parameters: Some(schema), strict: t.strict },
    })
}

// ---------------------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct OutMessage<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<OutBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: OutUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Thinking { thinking: &'a str, signature: &'a str },
    RedactedThinking { data: &'a str },
    Text { text: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: ToolInput<'a> },
}

/// A tool's input as an object: the upstream's argument text when it is one (no re-encoding).
enum ToolInput<'a> {
    Raw(&'a RawValue),
    Empty,
}

impl Serialize for ToolInput<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolInput::Raw(r) => r.serialize(s),
            ToolInput::Empty => Map::new().serialize(s),
        }
    }
}

/// Argument text that is a JSON object is used as is; anything else (a truncated call) is `{}`, since
/// Anthropic's `input` is always an object.
fn tool_input(arguments: &str) -> ToolInput<'_> {
    match serde_json::from_str::<&RawValue>(arguments) {
        Ok(raw) if raw.get().trim_start().starts_with('{') => ToolInput::Raw(raw),
        _ => ToolInput::Empty,
    }
}

#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OutUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

/// OpenAI's `prompt_tokens` includes cached input, Anthropic's `input_tokens` does not: cache reads and
/// writes are taken back out (the Anthropic codec added them in).
fn usage_of(u: &Usage) -> OutUsage {
    let read = u.cached_tokens().unwrap_or(0);
    let write = u.cache_write_tokens();
    OutUsage {
        input_tokens: u.prompt_tokens.saturating_sub(read).saturating_sub(write),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: write,
        cache_read_input_tokens: read,
    }
}

/// Anthropic's `stop_reason` for a canonical finish. A cut-off answer is `max_tokens` even if it was in a
/// tool call (the call is incomplete); any other answer with tool calls is `tool_use`, whatever the
/// upstream said (Ollama says `stop`), because clients such as Claude Code run tools only on `tool_use`.
fn stop_reason(finish: Option<&FinishReason>, has_tool_calls: bool, stop_sequence: Option<&str>) -> &'static str {
    match finish {
        Some(FinishReason::Length) => "max_tokens",
        _ if has_tool_calls => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
        _ if stop_sequence.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

/// The stop sequence the upstream says it stopped at: the Anthropic codec's `stop_sequence`, or vLLM's
/// `stop_reason` when it is one of the request's sequences (vLLM also puts token ids there).
fn matched_stop<'a>(extra: &'a Map<String, Value>, inb: &Inbound) -> Option<&'a str> {
    if let Some(s) = extra.get("stop_sequence").and_then(Value::as_str) {
        return Some(s);
    }
    extra.get("stop_reason").and_then(Value::as_str).filter(|s| inb.stop_sequences.iter().any(|q| q == s))
}

/// `msg_…`: the upstream's own id when it is an Anthropic one, else ours with that prefix.
fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        return id.to_string();
    }
    let bare = id.strip_prefix("chatcmpl-").unwrap_or(id);
    let clean: String = bare.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    format!("msg_{clean}")
}

/// The Messages response body for a complete canonical answer (its first choice).
pub fn render_message(resp: &ChatResponse, inb: &Inbound) -> Vec<u8> {
    let choice = resp.choices.first();
    let msg = choice.map(|c| &c.message);
    let mut content = Vec::new();
    if inb.thinking {
        let signed = msg.and_then(|m| m.extra.get(THINKING_BLOCKS_FIELD)).and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        for b in signed {
            let field = |name: &str| b.get(name).and_then(Value::as_str);
            match (field("type"), field("thinking"), field("signature"), field("data")) {
                (Some("thinking"), Some(thinking), Some(signature), _) => content.push(OutBlock::Thinking { thinking, signature }),
                (Some("redacted_thinking"), _, _, Some(data)) => content.push(OutBlock::RedactedThinking { data }),
                _ => {}
            }
        }
        // Another provider's reasoning has no signature; it is shown as thinking all the same.
        if content.is_empty() {
            if let Some(r) = msg.and_then(|m| m.extra.get(REASONING_FIELD)).and_then(Value::as_str).filter(|r| !r.is_empty()) {
                content.push(OutBlock::Thinking { thinking: r, signature: "" });
            }
        }
    }
    if let Some(t) = msg.and_then(|m| m.content.as_deref()).filter(|t| !t.is_empty()) {
        content.push(OutBlock::Text { text: t });
    }
    let calls = msg.and_then(|m| m.tool_calls.as_deref()).unwrap_or(&[]);
    for c in calls {
        content.push(OutBlock::ToolUse { id: &c.id, name: &c.function.name, input: tool_input(&c.function.arguments) });
    }
    let stop_sequence = choice.and_then(|c| matched_stop(&c.extra, inb));
    let body = OutMessage {
        id: message_id(&resp.id),
        kind: "message",
        role: "assistant",
        model: if resp.model.is_empty() { &inb.model } else { &resp.model },
        content,
        stop_reason: stop_reason(choice.and_then(|c| c.finish_reason.as_ref()), !calls.is_empty(), stop_sequence),
        stop_sequence,
        usage: resp.usage.as_ref().map(usage_of).unwrap_or_default(),
    };
    // Plain strings, numbers and validated raw JSON: serializing cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call's block, by its canonical tool-call index.
    Tool(u32),
}

#[derive(Serialize)]
struct BlockDelta<D: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: D,
}

// The variants are Anthropic's own delta type names.
#[allow(clippy::enum_variant_names)]
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaBody<'a> {
    TextDelta { text: &'a str },
    ThinkingDelta { thinking: &'a str },
    SignatureDelta { signature: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

/// Encodes canonical chunks as an Anthropic named-SSE stream for one client: `message_start` at the first
/// chunk, then per content block `content_block_start`, deltas and `content_block_stop` (text, thinking
/// and each tool call in turn), and at the end `message_delta` (stop reason and usage, which canonical
/// streams report last) and `message_stop`. Failures after the start become an `error` event.
#[derive(Debug)]
pub struct AnthropicStreamEncoder {
    inb: Inbound,
    /// The id used when the stream fails before any chunk named one.
    fallback_id: String,
    started: bool,
    /// The next content block's index.
    next_index: u32,
    open: Option<(Open, u32)>,
    /// Canonical tool-call index → its block index.
    tools: Vec<(u32, u32)>,
    finish: Option<FinishReason>,
    stop_sequence: Option<String>,
    usage: Option<Usage>,
    finished: bool,
}

impl AnthropicStreamEncoder {
    /// `fallback_id` names the message when the stream ends before a chunk gave an id (the request id).
    pub fn new(inb: Inbound, fallback_id: &str) -> Self {
        AnthropicStreamEncoder {
            inb,
            fallback_id: message_id(fallback_id),
            started: false,
            next_index: 0,
            open: None,
            tools: Vec::new(),
            finish: None,
            stop_sequence: None,
            usage: None,
            finished: false,
        }
    }

    /// The usage the upstream reported so far.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = if id.is_empty() { self.fallback_id.clone() } else { message_id(id) };
        let model = if model.is_empty() { self.inb.model.as_str() } else { model };
        let input = self.usage.as_ref().map(usage_of).unwrap_or_default();
        let start = serde_json::json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input.input_tokens, "output_tokens": 0,
                "cache_creation_input_tokens": input.cache_creation_input_tokens,
                "cache_read_input_tokens": input.cache_read_input_tokens}}});
        write_named_frame(out, "message_start", start.to_string().as_bytes());
        write_named_frame(out, "ping", br#"{"type":"ping"}"#);
    }

    /// Opens a block of this kind unless it is the one open; returns its index.
    fn ensure(&mut self, kind: Open, tool: Option<(&str, &str)>, out: &mut Vec<u8>) -> u32 {
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        let block = match (kind, tool) {
            (Open::Text, _) => serde_json::json!({"type": "text", "text": ""}),
            (Open::Thinking, _) => serde_json::json!({"type": "thinking", "thinking": "", "signature": ""}),
            (Open::Tool(_), Some((id, name))) => serde_json::json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            (Open::Tool(_), None) => serde_json::json!({"type": "tool_use", "id": "", "name": "", "input": {}}),
        };
        let frame = serde_json::json!({"type": "content_block_start", "index": index, "content_block": block});
        write_named_frame(out, "content_block_start", frame.to_string().as_bytes());
        self.open = Some((kind, index));
        index
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            write_named_frame(out, "content_block_stop", format!(r#"{{"type":"content_block_stop","index":{index}}}"#).as_bytes());
        }
    }

    fn delta(out: &mut Vec<u8>, index: u32, delta: DeltaBody<'_>) {
        if let Ok(json) = serde_json::to_vec(&BlockDelta { kind: "content_block_delta", index, delta }) {
            write_named_frame(out, "content_block_delta", &json);
        }
    }

    /// Signed thinking from an Anthropic upstream: a signature closes the thinking block it signs (one
    /// opened for it if the text went out in none); a redacted block is a block of its own.
    fn signed(&mut self, b: &Value, out: &mut Vec<u8>) {
        let field = |name: &str| b.get(name).and_then(Value::as_str);
        match (field("type"), field("signature"), field("data")) {
            (Some("thinking"), Some(signature), _) if !signature.is_empty() => {
                let index = self.ensure(Open::Thinking, None, out);
                Self::delta(out, index, DeltaBody::SignatureDelta { signature });
                // The next thinking is another block, as it was upstream.
                self.close(out);
            }
            (Some("redacted_thinking"), _, Some(data)) => {
                self.close(out);
                let index = self.next_index;
                self.next_index += 1;
                let block = serde_json::json!({"type": "redacted_thinking", "data": data});
                let frame = serde_json::json!({"type": "content_block_start", "index": index, "content_block": block});
                write_named_frame(out, "content_block_start", frame.to_string().as_bytes());
                write_named_frame(out, "content_block_stop", format!(r#"{{"type":"content_block_stop","index":{index}}}"#).as_bytes());
            }
            _ => {}
        }
    }

    /// Appends the frames for one canonical chunk.
    pub fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        self.start(&chunk.id, &chunk.model, out);
        // One choice is all an Anthropic message has.
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else { return };
        let d = choice.delta;
        if self.inb.thinking {
            if let Some(r) = d.extra.get(REASONING_FIELD).and_then(Value::as_str).filter(|r| !r.is_empty()) {
                let index = self.ensure(Open::Thinking, None, out);
                Self::delta(out, index, DeltaBody::ThinkingDelta { thinking: r });
            }
            for b in d.extra.get(THINKING_BLOCKS_FIELD).and_then(Value::as_array).into_iter().flatten() {
                self.signed(b, out);
            }
        }
        if let Some(text) = d.content.as_deref().filter(|t| !t.is_empty()) {
            let index = self.ensure(Open::Text, None, out);
            Self::delta(out, index, DeltaBody::TextDelta { text });
        }
        for call in d.tool_calls.into_iter().flatten() {
            let known = self.tools.iter().find(|(t, _)| *t == call.index).map(|(_, b)| *b);
            let (name, arguments) = match call.function {
                Some(f) => (f.name, f.arguments),
                None => (None, None),
            };
            let index = match known {
                Some(b) => b,
                None => {
                    let id = call.id.unwrap_or_else(|| format!("toolu_{}_{}", self.fallback_id.trim_start_matches("msg_"), call.index));
                    let b = self.ensure(Open::Tool(call.index), Some((&id, name.as_deref().unwrap_or(""))), out);
                    self.tools.push((call.index, b));
                    b
                }
            };
            if let Some(a) = arguments.as_deref().filter(|a| !a.is_empty()) {
                Self::delta(out, index, DeltaBody::InputJsonDelta { partial_json: a });
            }
        }
        if let Some(f) = choice.finish_reason {
            self.finish = Some(f);
            if let Some(s) = matched_stop(&choice.extra, &self.inb) {
                self.stop_sequence = Some(s.to_string());
            }
        }
    }

    /// The stream ended well: the last block closed, `message_delta` with the stop reason and the
    /// usage, `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let fallback = self.fallback_id.clone();
        self.start(&fallback, "", out);
        self.close(out);
        let stop = stop_reason(self.finish.as_ref(), !self.tools.is_empty(), self.stop_sequence.as_deref());
        let stop_sequence = if stop == "stop_sequence" { self.stop_sequence.as_deref() } else { None };
        let u = self.usage.as_ref().map(usage_of).unwrap_or_default();
        let frame = serde_json::json!({"type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": stop_sequence},
            "usage": {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                "cache_creation_input_tokens": u.cache_creation_input_tokens,
                "cache_read_input_tokens": u.cache_read_input_tokens}});
        write_named_frame(out, "message_delta", frame.to_string().as_bytes());
        write_named_frame(out, "message_stop", br#"{"type":"message_stop"}"#);
    }

    /// The stream failed after it started: an `error` event, which the SDKs raise on. `status` picks the
    /// error type (see [`error_type`]).
    pub fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        write_named_frame(out, "error", &error_json(error_type(status), message, None));
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors, token counts and models
// ---------------------------------------------------------------------------------------------------------

/// Anthropic's error `type` for an HTTP status (the SDKs pick their exception by status; the type is
/// what people and logs read).
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type","message"},"request_id"}`, Anthropic's error body.
pub fn error_json(kind: &str, message: &str, request_id: Option<&str>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Inner<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        error: Inner<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
    }
    serde_json::to_vec(&Body { kind: "error", error: Inner { kind, message }, request_id }).unwrap_or_default()
}

/// `POST /v1/messages/count_tokens`'s answer.
pub fn count_tokens_json(input_tokens: u64) -> Vec<u8> {
    format!(r#"{{"input_tokens":{input_tokens}}}"#).into_bytes()
}

/// One model of the list: its id and creation time (Unix seconds, 0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelEntry<'a> {
    pub id: &'a str,
    pub created: i64,
}

#[derive(Serialize)]
struct ModelJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    created_at: String,
}

fn model_json(m: ModelEntry<'_>) -> ModelJson<'_> {
    ModelJson { kind: "model", id: m.id, display_name: m.id, created_at: rfc3339(m.created) }
}

/// `GET /v1/models/{id}`'s answer.
pub fn render_model(m: ModelEntry<'_>) -> Vec<u8> {
    serde_json::to_vec(&model_json(m)).unwrap_or_default()
}

/// The paging of `GET /v1/models`: `limit` (1 to 1000, default 20), `after_id`, `before_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPage {
    pub limit: Option<String>,
    pub after_id: Option<String>,
    pub before_id: Option<String>,
}

/// `GET /v1/models` in Anthropic's list shape (`data`, `has_more`, `first_id`, `last_id`), one page of
/// `models` in their order.
pub fn render_models(models: &[ModelEntry<'_>], page: &ModelPage) -> Result<Vec<u8>, InboundError> {
    let limit = match page.limit.as_deref() {
        None => DEFAULT_MODEL_PAGE,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_MODEL_PAGE).contains(&n) => n,
            _ => return Err(InboundError::at("limit", format!("Input should be an integer from 1 to {MAX_MODEL_PAGE}, got '{l}'"))),
        },
    };
    let position = |id: &str, what: &str| {
        models.iter().position(|m| m.id == id).ok_or_else(|| InboundError::at(what, format!("no model with id '{id}' in the list")))
    };
    let (from, to, has_more) = match (&page.after_id, &page.before_id) {
        (Some(_), Some(_)) => return Err(InboundError::at("before_id", "cannot be combined with after_id")),
        (None, Some(before)) => {
            let end = position(before, "before_id")?;
            let start = end.saturating_sub(limit);
            (start, end, start > 0)
        }
        (after, None) => {
            let start = match after {
                Some(a) => position(a, "after_id")? + 1,
                None => 0,
            };
            let end = (start + limit).min(models.len());
            (start, end, end < models.len())
        }
    };
    #[derive(Serialize)]
    struct List<'a> {
        data: Vec<ModelJson<'a>>,
        has_more: bool,
        first_id: Option<&'a str>,
        last_id: Option<&'a str>,
    }
    let slice = models.get(from..to).unwrap_or(&[]);
    let list = List {
        data: slice.iter().map(|m| model_json(*m)).collect(),
        has_more,
        first_id: slice.first().map(|m| m.id),
        last_id: slice.last().map(|m| m.id),
    };
    Ok(serde_json::to_vec(&list).unwrap_or_default())
}

/// Unix seconds as an RFC 3339 UTC time (`2025-05-14T00:00:00Z`).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};
    use serde_json::json;

    fn parse(v: Value) -> Result<(ChatRequest, Inbound), InboundError> {
        to_chat(serde_json::from_value(v).unwrap(), Purpose::Messages)
    }

    fn ok(v: Value) -> ChatRequest {
        parse(v).unwrap().0
    }

    fn err_param(v: Value) -> String {
        parse(v).unwrap_err().param.unwrap()
    }

    fn base() -> Value {
        json!({"model": "openai/gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(mut b: Value, key: &str, v: Value) -> Value {
        b[key] = v;
        b
    }

    #[test]
    fn plain_request_maps_every_scalar() {
        let r = ok(json!({"model": "anthropic/claude-sonnet-4-6", "max_tokens": 256,
            "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3, "top_p": 0.9, "top_k": 7,
            "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}, "stream": true, "service_tier": "auto",
            "fallbacks": ["openai/gpt-4o-mini"]}));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"model": "anthropic/claude-sonnet-4-6", "max_tokens": 256, "stream": true, "temperature": 0.3,
                "top_p": 0.9, "top_k": 7, "stop": ["END"], "user": "u-1",
                "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]})
        );
        assert_eq!(r.fallbacks.as_deref(), Some(&["openai/gpt-4o-mini".to_string()][..]));
    }

    #[test]
    fn required_fields_and_ranges() {
        let mut b = base();
        b.as_object_mut().unwrap().remove("max_tokens");
        assert_eq!(err_param(b.clone()), "max_tokens");
        assert!(to_chat(serde_json::from_value(b).unwrap(), Purpose::CountTokens).is_ok());
        assert_eq!(err_param(with(base(), "max_tokens", json!(0))), "max_tokens");
        assert_eq!(err_param(with(base(), "temperature", json!(1.5))), "temperature");
        assert_eq!(err_param(with(base(), "messages", json!([]))), "messages");
        assert_eq!(err_param(with(base(), "model", json!(" "))), "model");
        assert_eq!(err_param(with(base(), "container", json!("c"))), "container");
        let e = parse(with(base(), "frobnicate", json!(1))).unwrap_err();
        assert_eq!(e.message, "frobnicate: Extra inputs are not permitted");
        assert_eq!(err_param(with(base(), "messages", json!([{"role": "system", "content": "x"}]))), "messages.0.role");
    }

    #[test]
    fn images_documents_and_block_errors() {
        let r = ok(with(
            base(),
            "messages",
            json!([{"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}}]}]),
        ));
        let Some(Content::Parts(parts)) = &r.messages[0].content else { panic!("{r:?}") };
        assert_eq!(parts.len(), 5);
        assert_eq!(
            parts[1],
            ContentPart::ImageUrl { image_url: ImageUrl { url: "data:image/png;base64,iVBORw0KGgo=".into(), detail: None } }
        );
        assert_eq!(parts[2], ContentPart::ImageUrl { image_url: ImageUrl { url: "https://example.com/a.png".into(), detail: None } });
        let ContentPart::File { file } = &parts[3] else { panic!() };
        assert_eq!((file.file_data.as_deref(), file.filename.as_deref()), (Some("data:application/pdf;base64,JVBERi0="), Some("r.pdf")));
        let ContentPart::File { file } = &parts[4] else { panic!() };
        assert_eq!(file.inline(), Some(("text/plain", "aGVsbG8=")));

        let bad = |block: Value| err_param(with(base(), "messages", json!([{"role": "user", "content": [block]}])));
        assert_eq!(
            bad(json!({"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}})),
            "messages.0.content.0.source.media_type"
        );
        assert_eq!(bad(json!({"type": "image", "source": {"type": "file", "file_id": "f"}})), "messages.0.content.0.source.type");
        assert_eq!(
            bad(json!({"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}})),
            "messages.0.content.0.source.type"
        );
        assert_eq!(bad(json!({"type": "text"})), "messages.0.content.0.text");
        assert_eq!(bad(json!({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}})), "messages.0.content.0.type");
        assert_eq!(bad(json!({"type": "tool_use", "id": "t", "name": "f", "input": {}})), "messages.0.content.0");
        assert_eq!(bad(json!({"text": "no type"})), "messages.0.content.0.type");
        assert_eq!(err_param(with(base(), "messages", json!([{"role": "user", "content": 5}]))), "messages.0.content");
    }

    #[test]
    fn tool_round_trip_becomes_canonical_tool_messages() {
        let r = ok(json!({"model": "m", "max_tokens": 10,
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "cache_control": {"type": "ephemeral"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "boom"}], "is_error": true},
                    {"type": "text", "text": "and now?"}]}]}));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "Checking.", "thinking_blocks": [{"type": "thinking", "thinking": "hm", "signature": "sig"}], "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
                {"role": "user", "content": "and now?"}])
        );
        assert_eq!(v["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(v["tools"][0]["function"]["parameters"]["properties"]["city"]["type"], "string");
        assert_eq!((r.tool_choice, r.parallel_tool_calls), (Some(ToolChoice::Required), Some(false)));

        for (tc, want) in [
            (json!({"type": "auto"}), ToolChoice::Auto),
            (json!({"type": "none"}), ToolChoice::None),
            (json!({"type": "tool", "name": "f"}), ToolChoice::Function("f".into())),
        ] {
            assert_eq!(ok(with(base(), "tool_choice", tc)).tool_choice, Some(want));
        }
        assert_eq!(err_param(with(base(), "tool_choice", json!({"type": "tool"}))), "tool_choice.name");
        assert_eq!(err_param(with(base(), "tools", json!([{"type": "web_search_20250305", "name": "web_search"}]))), "tools.0.type");
        assert_eq!(err_param(with(base(), "tools", json!([{"name": "f"}]))), "tools.0.input_schema");
        let bad_input = json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "s"}]}]);
        assert_eq!(err_param(with(base(), "messages", bad_input)), "messages.1.content.0.input");
    }

    #[test]
    fn thinking_and_output_format() {
        let (r, inb) = parse(with(base(), "thinking", json!({"type": "enabled", "budget_tokens": 2048}))).unwrap();
        assert_eq!(r.extra["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
        assert!(inb.thinking);
        let (_, inb) = parse(with(base(), "thinking", json!({"type": "disabled"}))).unwrap();
        assert!(!inb.thinking);
        assert_eq!(err_param(with(base(), "thinking", json!({"type": "sometimes"}))), "thinking.type");

        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
        for key in ["output_config", "output_format"] {
            let fmt = json!({"type": "json_schema", "schema": schema});
            let v = if key == "output_config" { json!({"format": fmt, "effort": "high"}) } else { fmt };
            let r = ok(with(base(), key, v));
            let rf = r.response_format.unwrap();
            assert_eq!(rf.kind, "json_schema");
            assert_eq!(rf.json_schema.unwrap().schema, Some(schema.clone()));
        }
        assert_eq!(err_param(with(base(), "output_format", json!({"type": "json_schema"}))), "output_format.schema");
        assert_eq!(err_param(with(base(), "output_config", json!({"format": {"type": "text"}}))), "output_config.format.type");
    }

    fn response(content: Option<&str>, calls: Vec<(&str, &str, &str)>, finish: FinishReason, usage: Usage) -> ChatResponse {
        serde_json::from_value(json!({"id": "chatcmpl-abc123", "model": "gpt-4o-mini", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": content,
                "tool_calls": if calls.is_empty() { Value::Null } else { calls.iter().map(|(id, n, a)|
                    json!({"id": id, "type": "function", "function": {"name": n, "arguments": a}})).collect::<Vec<_>>().into() }},
            "finish_reason": finish.as_str()}], "usage": usage}))
        .unwrap()
    }

    fn rendered(r: &ChatResponse, inb: &Inbound) -> Value {
        serde_json::from_slice(&render_message(r, inb)).unwrap()
    }

    #[test]
    fn response_shape_and_usage() {
        let inb = Inbound { model: "openai/gpt-4o-mini".into(), ..Inbound::default() };
        let r = response(Some("Hello"), vec![], FinishReason::Stop, Usage::new(12, 3).with_cached(4));
        assert_eq!(
            rendered(&r, &inb),
            json!({"id": "msg_abc123", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
                "content": [{"type": "text", "text": "Hello"}], "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 8, "output_tokens": 3, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}})
        );
    }

    #[test]
    fn stop_reason_is_exact() {
        let inb = Inbound { stop_sequences: vec!["END".into()], ..Inbound::default() };
        let u = Usage::new(1, 1);
        let calls = vec![("call_1", "get_weather", r#"{"city":"Paris"}"#)];
        // Tool calls are `tool_use` whatever the upstream's finish said (Ollama says `stop`).
        for finish in [FinishReason::ToolCalls, FinishReason::Stop] {
            let v = rendered(&response(None, calls.clone(), finish, u.clone()), &inb);
            assert_eq!(v["stop_reason"], "tool_use");
            assert_eq!(v["content"], json!([{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]));
        }
        assert_eq!(rendered(&response(Some("a"), vec![], FinishReason::Length, u.clone()), &inb)["stop_reason"], "max_tokens");
        let cut = rendered(&response(None, vec![("c", "f", r#"{"ci"#)], FinishReason::Length, u.clone()), &inb);
        assert_eq!((cut["stop_reason"].as_str(), &cut["content"][0]["input"]), (Some("max_tokens"), &json!({})));
        assert_eq!(rendered(&response(None, vec![], FinishReason::ContentFilter, u.clone()), &inb)["stop_reason"], "refusal");
        let mut r = response(Some("a"), vec![], FinishReason::Stop, u.clone());
        r.choices[0].extra.insert("stop_sequence".into(), json!("END"));
        let v = rendered(&r, &inb);
        assert_eq!((v["stop_reason"].as_str(), v["stop_sequence"].as_str()), (Some("stop_sequence"), Some("END")));
        // vLLM's `stop_reason` counts only when it is one of the request's sequences.
        let mut r = response(Some("a"), vec![], FinishReason::Stop, u.clone());
        r.choices[0].extra.insert("stop_reason".into(), json!(128001));
        assert_eq!(rendered(&r, &inb)["stop_reason"], "end_turn");
        r.choices[0].extra.insert("stop_reason".into(), json!("END"));
        assert_eq!(rendered(&r, &inb)["stop_reason"], "stop_sequence");
    }

    #[test]
    fn thinking_blocks_only_when_asked() {
        let mut r = response(Some("42"), vec![], FinishReason::Stop, Usage::new(1, 1));
        r.choices[0].message.extra.insert("reasoning_content".into(), json!("let me think"));
        let off = rendered(&r, &Inbound::default());
        assert_eq!(off["content"].as_array().unwrap().len(), 1);
        let on = rendered(&r, &Inbound { thinking: true, ..Inbound::default() });
        assert_eq!(on["content"][0], json!({"type": "thinking", "thinking": "let me think", "signature": ""}));
    }

    fn chunk(delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
        let mut c = ChatChunk::new("chatcmpl-s1", 1, "gpt-4o-mini");
        c.choices.push(ChunkChoice { delta, finish_reason: finish, ..ChunkChoice::default() });
        c
    }

    fn text(t: &str) -> ChatChunk {
        chunk(Delta { content: Some(t.into()), ..Delta::default() }, None)
    }

    fn tool_delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ChatChunk {
        chunk(
            Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index,
                    id: id.map(str::to_string),
                    kind: id.map(|_| "function".to_string()),
                    function: Some(FunctionCallDelta { name: name.map(str::to_string), arguments: Some(args.into()) }),
                }]),
                ..Delta::default()
            },
            None,
        )
    }

    fn usage_chunk(u: Usage) -> ChatChunk {
        let mut c = ChatChunk::new("chatcmpl-s1", 1, "gpt-4o-mini");
        c.usage = Some(u);
        c
    }

    /// (event name, data) of every frame.
    fn frames(bytes: &[u8]) -> Vec<(String, Value)> {
        let s = std::str::from_utf8(bytes).unwrap();
        s.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (ev, data) = f.split_once('\n').unwrap();
                let ev = ev.strip_prefix("event: ").unwrap().to_string();
                let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], ev.as_str(), "each frame's data names its event");
                (ev, data)
            })
            .collect()
    }

    fn names(f: &[(String, Value)]) -> Vec<&str> {
        f.iter().map(|(e, _)| e.as_str()).collect()
    }

    #[test]
    fn text_stream_event_order_and_usage() {
        let mut e = AnthropicStreamEncoder::new(Inbound { model: "m".into(), ..Inbound::default() }, "gw-req-1");
        let mut out = Vec::new();
        e.encode(chunk(Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() }, None), &mut out);
        e.encode(text("Hel"), &mut out);
        e.encode(text("lo"), &mut out);
        e.encode(chunk(Delta::default(), Some(FinishReason::Stop)), &mut out);
        e.encode(usage_chunk(Usage::new(9, 2)), &mut out);
        e.finish(&mut out);
        e.finish(&mut out);
        let f = frames(&out);
        assert_eq!(
            names(&f),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(f[0].1["message"]["id"], "msg_s1");
        assert_eq!(f[0].1["message"]["model"], "gpt-4o-mini");
        assert_eq!(f[2].1, json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}));
        assert_eq!(f[4].1, json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}));
        assert_eq!(f[6].1["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
        assert_eq!(f[6].1["usage"]["input_tokens"], 9);
        assert_eq!(f[6].1["usage"]["output_tokens"], 2);
    }

    #[test]
    fn tool_stream_blocks_and_stop_reason() {
        let mut e = AnthropicStreamEncoder::new(Inbound::default(), "r");
        let mut out = Vec::new();
        e.encode(text("Checking."), &mut out);
        e.encode(tool_delta(0, Some("call_a"), Some("get_weather"), ""), &mut out);
        e.encode(tool_delta(0, None, None, "{\"city\":"), &mut out);
        e.encode(tool_delta(0, None, None, "\"Paris\"}"), &mut out);
        e.encode(tool_delta(1, Some("call_b"), Some("get_time"), "{}"), &mut out);
        // Ollama-style: the finish says `stop` although tools were called.
        e.encode(chunk(Delta::default(), Some(FinishReason::Stop)), &mut out);
        e.finish(&mut out);
        let f = frames(&out);
        assert_eq!(
            names(&f),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(f[5].1["content_block"], json!({"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}));
        assert_eq!(f[5].1["index"], 1);
        let args: String = f
            .iter()
            .filter(|(_, d)| d["index"] == 1 && d["delta"]["type"] == "input_json_delta")
            .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "Paris"}));
        assert_eq!(f[9].1["content_block"]["name"], "get_time");
        assert_eq!(f[9].1["index"], 2);
        assert_eq!(f[12].1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn stream_failure_and_empty_stream() {
        let mut e = AnthropicStreamEncoder::new(Inbound::default(), "req-9");
        let mut out = Vec::new();
        e.encode(text("par"), &mut out);
        e.fail(529, "upstream overloaded", &mut out);
        e.finish(&mut out);
        let f = frames(&out);
        assert_eq!(f.last().unwrap().1, json!({"type": "error", "error": {"type": "overloaded_error", "message": "upstream overloaded"}}));
        assert!(!names(&f).contains(&"message_stop"));

        let mut e = AnthropicStreamEncoder::new(Inbound::default(), "req-9");
        let mut out = Vec::new();
        e.finish(&mut out);
        let f = frames(&out);
        assert_eq!(names(&f), ["message_start", "ping", "message_delta", "message_stop"]);
        assert_eq!(f[0].1["message"]["id"], "msg_req-9");
    }

    #[test]
    fn signed_thinking_goes_back_to_the_client_as_anthropic_sent_it() {
        let inb = Inbound { thinking: true, ..Inbound::default() };
        let mut r = response(Some("Sunny."), vec![], FinishReason::Stop, Usage::new(1, 1));
        r.choices[0].message.extra.insert("reasoning_content".into(), json!("t"));
        r.choices[0].message.extra.insert(
            THINKING_BLOCKS_FIELD.into(),
            json!([{"type": "thinking", "thinking": "t", "signature": "sig-1"}, {"type": "redacted_thinking", "data": "opaque"}]),
        );
        assert_eq!(
            rendered(&r, &inb)["content"],
            json!([{"type": "thinking", "thinking": "t", "signature": "sig-1"}, {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Sunny."}])
        );

        let mut e = AnthropicStreamEncoder::new(inb, "r");
        let mut out = Vec::new();
        let mut d = Delta::default();
        d.extra.insert("reasoning_content".into(), json!("hmm"));
        e.encode(chunk(d, None), &mut out);
        let mut d = Delta::default();
        d.extra.insert(THINKING_BLOCKS_FIELD.into(), json!([{"type": "thinking", "thinking": "", "signature": "sig-2"}]));
        e.encode(chunk(d, None), &mut out);
        let mut d = Delta::default();
        d.extra.insert(THINKING_BLOCKS_FIELD.into(), json!([{"type": "redacted_thinking", "data": "opaque"}]));
        e.encode(chunk(d, None), &mut out);
        e.encode(text("answer"), &mut out);
        e.encode(chunk(Delta::default(), Some(FinishReason::Stop)), &mut out);
        e.finish(&mut out);
        let f: Vec<(String, Value)> = frames(&out).into_iter().filter(|(n, _)| n != "ping").collect();
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..9],
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_stop",
                "content_block_start",
                "content_block_delta"
            ]
        );
        assert_eq!(f[3].1["delta"], json!({"type": "signature_delta", "signature": "sig-2"}));
        assert_eq!(f[5].1["content_block"], json!({"type": "redacted_thinking", "data": "opaque"}));
        assert_eq!((f[5].1["index"].as_u64(), f[7].1["index"].as_u64()), (Some(1), Some(2)));
        assert_eq!(f[7].1["content_block"]["type"], "text");
    }

    #[test]
    fn thinking_stream_and_stop_sequence() {
        let mut e = AnthropicStreamEncoder::new(Inbound { thinking: true, stop_sequences: vec!["###".into()], ..Inbound::default() }, "r");
        let mut out = Vec::new();
        let mut d = Delta::default();
        d.extra.insert("reasoning_content".into(), json!("hmm"));
        e.encode(chunk(d, None), &mut out);
        e.encode(text("answer"), &mut out);
        let mut fin = chunk(Delta::default(), Some(FinishReason::Stop));
        fin.choices[0].extra.insert("stop_sequence".into(), json!("###"));
        e.encode(fin, &mut out);
        e.finish(&mut out);
        let f = frames(&out);
        assert_eq!(f[2].1["content_block"]["type"], "thinking");
        assert_eq!(f[3].1["delta"], json!({"type": "thinking_delta", "thinking": "hmm"}));
        assert_eq!(f[5].1["content_block"]["type"], "text");
        let md = &f.iter().find(|(n, _)| n == "message_delta").unwrap().1;
        assert_eq!(md["delta"], json!({"stop_reason": "stop_sequence", "stop_sequence": "###"}));
    }

    #[test]
    fn errors_and_token_counts() {
        assert_eq!(
            serde_json::from_slice::<Value>(&error_json(error_type(404), "model: x", Some("req_1"))).unwrap(),
            json!({"type": "error", "error": {"type": "not_found_error", "message": "model: x"}, "request_id": "req_1"})
        );
        for (s, t) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (402, "billing_error"),
            (403, "permission_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
            (422, "invalid_request_error"),
        ] {
            assert_eq!(error_type(s), t, "{s}");
        }
        assert_eq!(count_tokens_json(17), br#"{"input_tokens":17}"#);
    }

    #[test]
    fn model_list_pages() {
        let ids = ["a/1", "a/2", "b/3"];
        let models: Vec<ModelEntry> = ids.iter().map(|id| ModelEntry { id, created: 1_747_180_800 }).collect();
        let list = |p: ModelPage| serde_json::from_slice::<Value>(&render_models(&models, &p).unwrap()).unwrap();
        let all = list(ModelPage::default());
        assert_eq!(all["data"][0], json!({"type": "model", "id": "a/1", "display_name": "a/1", "created_at": "2025-05-14T00:00:00Z"}));
        assert_eq!((all["has_more"].as_bool(), all["first_id"].as_str(), all["last_id"].as_str()), (Some(false), Some("a/1"), Some("b/3")));
        let p1 = list(ModelPage { limit: Some("2".into()), ..ModelPage::default() });
        assert_eq!((p1["data"].as_array().unwrap().len(), p1["has_more"].as_bool()), (2, Some(true)));
        let p2 = list(ModelPage { limit: Some("2".into()), after_id: Some("a/2".into()), ..ModelPage::default() });
        assert_eq!((p2["first_id"].as_str(), p2["has_more"].as_bool()), (Some("b/3"), Some(false)));
        let p0 = list(ModelPage { limit: Some("1".into()), before_id: Some("a/2".into()), ..ModelPage::default() });
        assert_eq!((p0["first_id"].as_str(), p0["has_more"].as_bool()), (Some("a/1"), Some(false)));
        assert!(render_models(&models, &ModelPage { limit: Some("0".into()), ..ModelPage::default() }).is_err());
        assert!(render_models(&models, &ModelPage { after_id: Some("zz".into()), ..ModelPage::default() }).is_err());
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }
}
