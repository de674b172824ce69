//! Ollama native API codec: `/api/chat`, `/api/embed` and `/api/tags`.
//!
//! Ollama also serves an OpenAI-compatible `/v1`, but the native API is the one every Ollama build has, the
//! one that takes `keep_alive`, `think` and the full `options` block, and the one ollama.com's hosted API
//! speaks. This module maps the canonical (OpenAI-shaped) types onto it and back.
//!
//! Where the two shapes disagree, the choices are:
//! - Content is a plain string: text parts are joined with `\n`, images move to `images` as bare base64.
//!   Ollama cannot fetch URLs; the engine inlines them first, and a URL that still arrives here is refused.
//! - Sampling parameters live under `options` (`max_tokens` becomes `num_predict`). Parameters the caller
//!   did not set are left out, so the model's own Modelfile defaults apply rather than OpenAI's.
//! - Ollama has no `tool_choice`: `none` sends no tools, a named function sends only that tool (which
//!   narrows the choice but cannot force a call), and `required` is refused because it cannot be honoured.
//! - Tool-call arguments are JSON objects on Ollama's wire and JSON strings on OpenAI's. Tool results are
//!   matched by `tool_name`, which we recover from the assistant message that made the call.
//! - Ollama gives tool calls no id (newer builds sometimes do); we synthesize stable ones from the
//!   response id, so the same response always yields the same ids.
//! - Thinking text (`message.thinking`) is returned as `reasoning_content`, the field most OpenAI-shaped
//!   clients read reasoning from, and an assistant message's `reasoning_content` is sent back as `thinking`.
//! - `n`, `logprobs`, `user`, `parallel_tool_calls` and other fields Ollama has no equivalent for are
//!   dropped, except `n > 1`, which would silently return fewer choices than asked and is refused.
//!
//! The native stream is NDJSON ending with a `done: true` line, not SSE; the decoder turns it into the
//! canonical chunk sequence (role chunk, deltas, finish chunk, usage chunk, done).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{UpstreamError, WireError};
use crate::image::{is_http_url, parse_data_url};
use crate::spec::{Endpoint, ResponseCtx, StreamEvent, WireRequest};
use crate::sse::NdjsonParser;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta, EmbeddingInput, EmbeddingsRequest,
    EmbeddingsResponse, Extra, FinishReason, FunctionCall, FunctionCallDelta, Message, ResponseMessage, Role, Tool, ToolCall,
    ToolCallDelta, ToolChoice, Usage,
};

/// The key reasoning text travels under on the OpenAI side.
const REASONING_KEY: &str = "reasoning_content";

/// Top-level request fields that are Ollama options: sampling knobs OpenAI-style clients send for vLLM, and
/// the context size, which Ollama users expect to set per request.
const TOP_LEVEL_OPTIONS: [&str; 3] = ["top_k", "min_p", "num_ctx"];

// ---------------------------------------------------------------------------------------------------------
// Chat request
// ---------------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    // Always present: Ollama streams when the field is missing, which a non-streaming caller cannot read.
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Format<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    options: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    think: Option<Cow<'a, Value>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Format<'a> {
    Json(&'static str),
    Schema(&'a Value),
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    // Builds that know tool-call ids use it to pair results; older builds ignore unknown fields.
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    function: OutFunctionCall<'a>,
}

#[derive(Serialize)]
struct OutFunctionCall<'a> {
    name: &'a str,
    arguments: &'a RawValue,
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunctionDef<'a>,
}

#[derive(Serialize)]
struct OutFunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'a Value>,
}

pub fn build_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(WireError::unsupported("ollama returns one choice per request; n must be 1", Some("n")));
    }
    let body = ChatBody {
        model,
        messages: map_messages(&req.messages)?,
        stream: req.is_stream(),
        tools: map_tools(req.tools.as_deref(), req.tool_choice.as_ref())?,
        format: map_format(req)?,
        options: map_options(req)?,
        keep_alive: req.extra.get("keep_alive").filter(|v| !v.is_null()),
        think: map_think(req)?,
    };
    let body = serde_json::to_vec(&body).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))?;
    Ok(authorized(WireRequest::post_json(format!("{}/api/chat", ep.base_url), body), ep))
}

/// Local servers take no key; ollama.com's hosted API takes a bearer key.
fn authorized(mut r: WireRequest, ep: &Endpoint<'_>) -> WireRequest {
    if let Some(k) = ep.api_key() {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    r.with_extra_headers(ep)
}

fn map_messages(messages: &[Message]) -> Result<Vec<OutMessage<'_>>, WireError> {
    // Tool results name their call by id, Ollama by function name: remember each call's name as we pass it.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let (content, images) = flatten_content(i, m.content.as_ref())?;
        let mut om = OutMessage {
            role: role_name(m.role),
            content,
            thinking: None,
            images,
            tool_calls: Vec::new(),
            tool_name: None,
            tool_call_id: None,
        };
        match m.role {
            Role::Assistant => {
                om.thinking = m.extra.get(REASONING_KEY).and_then(Value::as_str).filter(|t| !t.is_empty());
                for (k, call) in m.tool_calls.iter().flatten().enumerate() {
                    call_names.insert(call.id.as_str(), call.function.name.as_str());
                    om.tool_calls.push(OutToolCall {
                        id: &call.id,
                        function: OutFunctionCall {
                            name: &call.function.name,
                            arguments: arguments_object(&call.function.arguments, i, k)?,
                        },
                    });
                }
            }
            Role::Tool | Role::Function => {
                om.tool_call_id = m.tool_call_id.as_deref();
                om.tool_name = m.tool_call_id.as_deref().and_then(|id| call_names.get(id).copied()).or(m.name.as_deref());
            }
            Role::System | Role::Developer | Role::User => {}
        }
        out.push(om);
    }
    Ok(out)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System | Role::Developer => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool | Role::Function => "tool",
    }
}

/// Splits OpenAI content into Ollama's string `content` and bare-base64 `images`.
fn flatten_content(i: usize, content: Option<&Content>) -> Result<(Cow<'_, str>, Vec<&str>), WireError> {
    let parts = match content {
        None => return Ok((Cow::Borrowed(""), Vec::new())),
        Some(Content::Text(t)) => return Ok((Cow::Borrowed(t.as_str()), Vec::new())),
        Some(Content::Parts(parts)) => parts,
    };
    let mut texts: Vec<&str> = Vec::new();
    let mut images = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        match part {
            ContentPart::Text { text } => texts.push(text),
            ContentPart::ImageUrl { image_url } => {
                let param = format!("messages[{i}].content[{j}]");
                if let Some(d) = parse_data_url(&image_url.url) {
                    images.push(d.base64);
                } else if is_http_url(&image_url.url) {
                    return Err(WireError::unsupported("ollama cannot fetch image URLs; the gateway must inline it first", Some(&param)));
                } else {
                    return Err(WireError::unsupported("ollama takes images only as base64 data: URLs", Some(&param)));
                }
            }
            ContentPart::File { .. } => {
                return Err(WireError::unsupported(
                    "ollama does not accept \"file\" content parts (documents): send the text, or route to a provider that reads files",
                    Some(&format!("messages[{i}].content[{j}]")),
                ));
            }
            ContentPart::Other(v) => {
                let kind = v.get("type").and_then(Value::as_str).unwrap_or("unknown");
                return Err(WireError::unsupported(
                    format!("ollama does not accept \"{kind}\" content parts"),
                    Some(&format!("messages[{i}].content[{j}]")),
                ));
            }
        }
    }
    let content = match texts.as_slice() {
        [one] => Cow::Borrowed(*one),
        many => Cow::Owned(many.join("\n")),
    };
    Ok((content, images))
}

/// Checks that an OpenAI arguments string is a JSON object and borrows it, so it is embedded without a
/// parse-and-reserialize round trip.
fn arguments_object(args: &str, i: usize, k: usize) -> Result<&RawValue, WireError> {
    let text = if args.trim().is_empty() { "{}" } else { args };
    let invalid = || {
        WireError::unsupported(
            "tool call arguments must be a JSON object",
            Some(&format!("messages[{i}].tool_calls[{k}].function.arguments")),
        )
    };
    let raw: &RawValue = serde_json::from_str(text).map_err(|_| invalid())?;
    if raw.get().starts_with('{') {
        Ok(raw)
    } else {
        Err(invalid())
    }
}

fn map_tools<'a>(tools: Option<&'a [Tool]>, choice: Option<&ToolChoice>) -> Result<Vec<OutTool<'a>>, WireError> {
    let tools = tools.unwrap_or_default();
    let selected: Vec<(usize, &Tool)> = match choice {
        None | Some(ToolChoice::Auto) => tools.iter().enumerate().collect(),
        Some(ToolChoice::None) => Vec::new(),
        Some(ToolChoice::Required) => {
            return Err(WireError::unsupported(
                "ollama cannot force a tool call; use tool_choice \"auto\" or name one function",
                Some("tool_choice"),
            ))
        }
        Some(ToolChoice::Function(name)) => {
            let found: Vec<_> = tools.iter().enumerate().filter(|(_, t)| &t.function.name == name).collect();
            if found.is_empty() {
                return Err(WireError::unsupported(
                    format!("tool_choice names function \"{name}\", which is not in tools"),
                    Some("tool_choice"),
                ));
            }
            found
        }
    };
    selected
        .into_iter()
        .map(|(i, t)| {
            if t.kind != "function" {
                return Err(WireError::unsupported(
                    format!("ollama supports only function tools, not \"{}\"", t.kind),
                    Some(&format!("tools[{i}].type")),
                ));
            }
            Ok(OutTool {
                kind: "function",
                function: OutFunctionDef {
                    name: &t.function.name,
                    description: t.function.description.as_deref(),
                    parameters: t.function.parameters.as_ref(),
                },
            })
        })
        .collect()
}

fn map_format(req: &ChatRequest) -> Result<Option<Format<'_>>, WireError> {
    let Some(rf) = &req.response_format else {
        return Ok(None);
    };
    match rf.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(Format::Json("json"))),
        "json_schema" => Ok(Some(match rf.json_schema.as_ref().and_then(|s| s.schema.as_ref()) {
            Some(schema) => Format::Schema(schema),
            // A schema format without a schema still asks for JSON.
            None => Format::Json("json"),
        })),
        other => {
            Err(WireError::unsupported(format!("response_format type \"{other}\" is not supported by ollama"), Some("response_format")))
        }
    }
}

fn map_options(req: &ChatRequest) -> Result<Map<String, Value>, WireError> {
    let mut o = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.to_string(), v);
        }
    };
    put("temperature", req.temperature.map(Value::from));
    put("top_p", req.top_p.map(Value::from));
    put("num_predict", req.max_output_tokens().map(Value::from));
    put("stop", req.stop.as_ref().map(|s| s.to_vec()).filter(|s| !s.is_empty()).map(Value::from));
    put("seed", req.seed.map(Value::from));
    put("presence_penalty", req.presence_penalty.map(Value::from));
    put("frequency_penalty", req.frequency_penalty.map(Value::from));
    for key in TOP_LEVEL_OPTIONS {
        put(key, req.extra.get(key).filter(|v| !v.is_null()).cloned());
    }
    // The caller's own `options` block is the most specific statement, so it wins over mapped fields.
    match req.extra.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(extra)) => {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        Some(_) => return Err(WireError::unsupported("options must be an object", Some("options"))),
    }
    Ok(o)
}

/// `think` passes through; otherwise OpenAI's `reasoning_effort` becomes the level Ollama's `think` takes,
/// or Anthropic's `thinking` (from the `/anthropic` route) switches it on or off.
fn map_think(req: &ChatRequest) -> Result<Option<Cow<'_, Value>>, WireError> {
    if let Some(t) = req.extra.get("think").filter(|v| !v.is_null()) {
        return Ok(Some(Cow::Borrowed(t)));
    }
    if req.extra.get("reasoning_effort").is_none_or(Value::is_null) {
        if let Some(kind) = req.extra.get("thinking").and_then(|t| t.get("type")).and_then(Value::as_str) {
            return Ok(Some(Cow::Owned(Value::Bool(kind != "disabled"))));
        }
    }
    let Some(effort) = req.extra.get("reasoning_effort").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let level = match effort.as_str() {
        Some("none") => Value::Bool(false),
        // Ollama has no level below "low".
        Some("minimal") | Some("low") => Value::from("low"),
        Some(l @ ("medium" | "high")) => Value::from(l),
        _ => {
            return Err(WireError::unsupported(
                "reasoning_effort must be \"none\", \"minimal\", \"low\", \"medium\" or \"high\" for ollama",
                Some("reasoning_effort"),
            ))
        }
    };
    Ok(Some(Cow::Owned(level)))
}

// ---------------------------------------------------------------------------------------------------------
// Chat response (one object for `stream: false`, one line per object for streams)
// ---------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct OllamaChat {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<OllamaMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<Value>,
}

impl OllamaChat {
    fn is_error(&self) -> bool {
        self.error.as_ref().is_some_and(|e| !e.is_null())
    }

    fn usage(&self) -> Usage {
        Usage::new(self.prompt_eval_count.unwrap_or(0), self.eval_count.unwrap_or(0))
    }
}

#[derive(Deserialize, Default)]
struct OllamaMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<OllamaToolCall>>,
}

#[derive(Deserialize)]
struct OllamaToolCall {
    #[serde(default)]
    id: Option<String>,
    function: OllamaFunctionCall,
}

#[derive(Deserialize)]
struct OllamaFunctionCall {
    name: String,
    #[serde(default)]
    arguments: Option<Box<RawValue>>,
}

pub fn parse_chat(body: &[u8], ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    let resp: OllamaChat = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Err(error_in_body(body).unwrap_or_else(|| WireError::malformed("chat response", e))),
    };
    if resp.is_error() {
        return Err(WireError::Upstream(UpstreamError::from_body(0, body)));
    }
    let model = non_empty_or(resp.model.as_deref(), ctx.model).to_string();
    let usage = resp.usage();
    let msg = resp.message.unwrap_or_default();
    let calls = msg
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, c)| to_tool_call(c, ctx.id, i))
        .collect::<Result<Vec<_>, _>>()?;
    let finish = finish_reason(resp.done_reason.as_deref(), !calls.is_empty());
    let content = msg.content.unwrap_or_default();
    let mut message = ResponseMessage {
        content: if content.is_empty() && !calls.is_empty() { None } else { Some(content) },
        tool_calls: if calls.is_empty() { None } else { Some(calls) },
        ..ResponseMessage::default()
    };
    if let Some(t) = msg.thinking.filter(|t| !t.is_empty()) {
        message.extra.insert(REASONING_KEY.to_string(), Value::String(t));
    }
    Ok(ChatResponse {
        id: ctx.id.to_string(),
        object: "chat.completion".to_string(),
        created: ctx.created,
        model,
        choices: vec![Choice { index: 0, message, finish_reason: Some(finish), logprobs: None, extra: Extra::new() }],
        usage: Some(usage),
        system_fingerprint: None,
        extra: Extra::new(),
    })
}

fn non_empty_or<'a>(s: Option<&'a str>, fallback: &'a str) -> &'a str {
    s.filter(|s| !s.is_empty()).unwrap_or(fallback)
}

/// Ollama says `stop` even when the model stopped to call tools; OpenAI clients key on `tool_calls`.
/// `load` and `unload` are not generations at all and end as a plain stop.
fn finish_reason(done_reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match done_reason {
        Some("length") => FinishReason::Length,
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn to_tool_call(call: OllamaToolCall, seed: &str, index: usize) -> Result<ToolCall, WireError> {
    let id = match call.id.filter(|id| !id.is_empty()) {
        Some(id) => id,
        None => synth_call_id(seed, index),
    };
    let arguments = match call.function.arguments.as_deref() {
        None => "{}".to_string(),
        Some(raw) => arguments_string(raw)?,
    };
    Ok(ToolCall { id, kind: "function".to_string(), function: FunctionCall { name: call.function.name, arguments } })
}

/// OpenAI carries arguments as a compact JSON string. Ollama sends an object; a string (as a proxy might
/// send) is taken as already encoded.
fn arguments_string(raw: &RawValue) -> Result<String, WireError> {
    let text = raw.get();
    if text.starts_with('"') {
        return serde_json::from_str(text).map_err(|e| WireError::malformed("tool call arguments", e));
    }
    if text == "null" {
        return Ok("{}".to_string());
    }
    Ok(compact_json(text))
}

/// Drops insignificant whitespace while keeping key order and number spelling exactly as the model wrote
/// them (a parse-and-reserialize would sort keys).
fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// `call_` + 24 alphanumerics (OpenAI's look), derived from the response id and the call's position so
/// the stream and non-stream paths, and any retry of the same translation, agree.
fn synth_call_id(seed: &str, index: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // FNV-1a seeds a splitmix64 sequence: stable across runs and platforms, which is all ids need here.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain((index as u64).to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut id = String::with_capacity(29);
    id.push_str("call_");
    for _ in 0..24 {
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        id.push(ALPHABET[(z % ALPHABET.len() as u64) as usize] as char);
    }
    id
}

// ---------------------------------------------------------------------------------------------------------
// Stream decoder
// ---------------------------------------------------------------------------------------------------------

/// Turns Ollama's NDJSON stream into canonical chunks: a role chunk first, one chunk per line with
/// content, thinking or tool calls, then on `done: true` a finish chunk, a usage chunk and [`StreamEvent::Done`].
#[derive(Debug)]
pub struct StreamDecoder {
    ndjson: NdjsonParser,
    lines: Vec<Vec<u8>>,
    id: String,
    created: i64,
    model: String,
    started: bool,
    /// Tool calls emitted so far: the next call's OpenAI index, and whether the finish is `tool_calls`.
    tool_calls: usize,
    done: bool,
    /// An error line was reported; the stream is over and owes no `done` line.
    failed: bool,
}

impl StreamDecoder {
    pub fn new(ctx: ResponseCtx<'_>) -> Self {
        StreamDecoder {
            ndjson: NdjsonParser::new(),
            lines: Vec::new(),
            id: ctx.id.to_string(),
            created: ctx.created,
            model: ctx.model.to_string(),
            started: false,
            tool_calls: 0,
            done: false,
            failed: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.ndjson.feed(bytes, &mut self.lines)?;
        self.drain(out)
    }

    /// Bounds one NDJSON line (see [`crate::sse::DEFAULT_MAX_EVENT_BYTES`]).
    pub fn set_max_event_bytes(&mut self, max: usize) {
        self.ndjson.set_limit(max);
    }

    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.ndjson.finish(&mut self.lines)?;
        self.drain(out)?;
        if !self.done && !self.failed {
            return Err(WireError::malformed("stream", "the stream ended before its done:true line"));
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        for line in std::mem::take(&mut self.lines) {
            if self.done || self.failed {
                break;
            }
            self.line(&line, out)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        let obj: OllamaChat = serde_json::from_slice(line).map_err(|e| WireError::malformed("stream line", e))?;
        if obj.is_error() {
            let mut err = UpstreamError::from_body(0, line);
            err.status = infer_status(&err.message);
            self.failed = true;
            out.push(StreamEvent::Error(err));
            return Ok(());
        }
        let model = non_empty_or(obj.model.as_deref(), &self.model).to_string();
        if !self.started {
            self.started = true;
            let delta = Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() };
            out.push(StreamEvent::Chunk(self.chunk(&model, delta, None)));
        }
        let usage = obj.usage();
        let msg = obj.message.unwrap_or_default();
        let mut delta = Delta::default();
        if let Some(t) = msg.thinking.filter(|t| !t.is_empty()) {
            delta.extra.insert(REASONING_KEY.to_string(), Value::String(t));
        }
        delta.content = msg.content.filter(|c| !c.is_empty());
        if let Some(calls) = msg.tool_calls.filter(|c| !c.is_empty()) {
            let mut deltas = Vec::with_capacity(calls.len());
            for call in calls {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let c = to_tool_call(call, &self.id, index)?;
                deltas.push(ToolCallDelta {
                    index: index as u32,
                    id: Some(c.id),
                    kind: Some(c.kind),
                    function: Some(FunctionCallDelta { name: Some(c.function.name), arguments: Some(c.function.arguments) }),
                });
            }
            delta.tool_calls = Some(deltas);
        }
        if delta.content.is_some() || delta.tool_calls.is_some() || !delta.extra.is_empty() {
            out.push(StreamEvent::Chunk(self.chunk(&model, delta, None)));
        }
        if obj.done {
            self.done = true;
            let finish = finish_reason(obj.done_reason.as_deref(), self.tool_calls > 0);
            out.push(StreamEvent::Chunk(self.chunk(&model, Delta::default(), Some(finish))));
            let mut u = ChatChunk::new(&self.id, self.created, &model);
            u.usage = Some(usage);
            out.push(StreamEvent::Chunk(u));
            out.push(StreamEvent::Done);
        }
        Ok(())
    }

    fn chunk(&self, model: &str, delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        let mut c = ChatChunk::new(&self.id, self.created, model);
        c.choices.push(ChunkChoice { index: 0, delta, finish_reason, ..ChunkChoice::default() });
        c
    }
}

/// Ollama's stream errors carry no status; the few messages that mean "try later" are worth a retryable one.
fn infer_status(message: &str) -> u16 {
    let m = message.to_ascii_lowercase();
    if m.contains("too many requests") || m.contains("rate limit") {
        429
    } else if m.contains("server busy") || m.contains("overloaded") {
        503
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------------------------------
// Embeddings and models
// ---------------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct EmbedBody<'a> {
    model: &'a str,
    input: &'a EmbeddingInput,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncate: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<&'a Value>,
}

pub fn build_embeddings(ep: &Endpoint<'_>, req: &EmbeddingsRequest, model: &str) -> Result<WireRequest, WireError> {
    if req.input.texts().is_none() {
        return Err(WireError::unsupported("ollama embeds text only, not token ids", Some("input")));
    }
    if let Some(f) = req.encoding_format.as_deref() {
        if f != "float" && f != "base64" {
            return Err(WireError::unsupported(
                format!("encoding_format must be \"float\" or \"base64\", got \"{f}\""),
                Some("encoding_format"),
            ));
        }
    }
    let extra = |k: &str| req.extra.get(k).filter(|v| !v.is_null());
    let body = EmbedBody {
        model,
        input: &req.input,
        dimensions: req.dimensions,
        truncate: extra("truncate"),
        keep_alive: extra("keep_alive"),
        options: extra("options"),
    };
    let body = serde_json::to_vec(&body).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))?;
    Ok(authorized(WireRequest::post_json(format!("{}/api/embed", ep.base_url), body), ep))
}

#[derive(Deserialize)]
struct EmbedResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    embeddings: Vec<Vec<f64>>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
}

/// Parses `/api/embed` into OpenAI's shape with float vectors.
///
/// Ollama always answers floats; a caller that asked for `encoding_format: "base64"` needs
/// [`parse_embeddings_as`], since this signature does not see the request.
pub fn parse_embeddings(body: &[u8], ctx: ResponseCtx<'_>) -> Result<EmbeddingsResponse, WireError> {
    parse_embeddings_as(body, ctx, None)
}

/// Parses `/api/embed`; with `encoding_format` `"base64"` each vector becomes base64 of its little-endian
/// f32 bytes, as OpenAI sends it, so SDKs that default to base64 decode it unchanged.
pub fn parse_embeddings_as(body: &[u8], ctx: ResponseCtx<'_>, encoding_format: Option<&str>) -> Result<EmbeddingsResponse, WireError> {
    if let Some(e) = error_in_body(body) {
        return Err(e);
    }
    let r: EmbedResponse = serde_json::from_slice(body).map_err(|e| WireError::malformed("embeddings response", e))?;
    let tokens = r.prompt_eval_count.unwrap_or(0);
    let model = non_empty_or(r.model.as_deref(), ctx.model).to_string();
    Ok(EmbeddingsResponse::from_vectors(r.embeddings, &model, tokens, encoding_format == Some("base64")))
}

/// A 2xx body that is `{"error":…}` is the upstream refusing, not a malformed answer.
fn error_in_body(body: &[u8]) -> Option<WireError> {
    #[derive(Deserialize)]
    struct MaybeError {
        #[serde(default)]
        error: Option<Value>,
    }
    let e: MaybeError = serde_json::from_slice(body).ok()?;
    e.error.filter(|e| !e.is_null())?;
    Some(WireError::Upstream(UpstreamError::from_body(0, body)))
}

pub fn build_list_models(ep: &Endpoint<'_>) -> WireRequest {
    authorized(WireRequest::get(format!("{}/api/tags", ep.base_url)), ep)
}

/// Names from `/api/tags` (`llama3.2:latest`), which is what `/api/chat` takes as `model`.
pub fn parse_models(body: &[u8]) -> Result<Vec<String>, WireError> {
    #[derive(Deserialize)]
    struct Tags {
        #[serde(default)]
        models: Option<Vec<Tag>>,
    }
    #[derive(Deserialize)]
    struct Tag {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        model: Option<String>,
    }
    let tags: Tags = serde_json::from_slice(body).map_err(|e| WireError::malformed("model list", e))?;
    Ok(tags
        .models
        .unwrap_or_default()
        .into_iter()
        .filter_map(|t| t.name.filter(|n| !n.is_empty()).or(t.model).filter(|n| !n.is_empty()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Method, ProviderKind, ProviderOptions};
    use base64::Engine as _;

    const CHAT_TEXT: &str = include_str!("../../tests/fixtures/ollama/chat_text.json");
    const CHAT_TOOLS: &str = include_str!("../../tests/fixtures/ollama/chat_tool_calls.json");
    const STREAM_TEXT: &str = include_str!("../../tests/fixtures/ollama/stream_text.ndjson");
    const STREAM_TOOLS: &str = include_str!("../../tests/fixtures/ollama/stream_tool_calls.ndjson");
    const EMBED: &str = include_str!("../../tests/fixtures/ollama/embed.json");
    const TAGS: &str = include_str!("../../tests/fixtures/ollama/tags.json");

    fn ep<'a>(opts: &'a ProviderOptions, key: Option<&'a str>) -> Endpoint<'a> {
        Endpoint {
            kind: ProviderKind::Ollama,
            base_url: "http://127.0.0.1:11434",
            auth: key.map_or(crate::spec::Auth::None, crate::spec::Auth::Key),
            options: opts,
        }
    }

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx { id: "chatcmpl-gw1", created: 1_700_000_000, model: "fallback-model" }
    }

    fn req(json: &str) -> ChatRequest {
        serde_json::from_str(json).unwrap()
    }

    fn build(json: &str) -> Result<Value, WireError> {
        let opts = ProviderOptions::default();
        let r = build_chat(&ep(&opts, None), &req(json), "llama3.2")?;
        Ok(serde_json::from_slice(&r.body).unwrap())
    }

    fn unsupported_param(e: WireError) -> Option<String> {
        match e {
            WireError::Unsupported { param, .. } => param,
            other => panic!("expected unsupported, got {other:?}"),
        }
    }

    // ----- request -----

    #[test]
    fn request_url_headers_and_stream_flag_always_present() {
        let mut opts = ProviderOptions::default();
        opts.extra_headers.push(("x-team".into(), "a".into()));
        let r = req(r#"{"model":"ollama/llama3.2","messages":[{"role":"user","content":"hi"}]}"#);
        let local = build_chat(&ep(&opts, None), &r, "llama3.2").unwrap();
        assert_eq!((local.method, local.url.as_str()), (Method::Post, "http://127.0.0.1:11434/api/chat"));
        assert!(local.headers.iter().all(|(k, _)| k != "authorization"));
        assert!(local.headers.contains(&("x-team".into(), "a".into())));
        let b: Value = serde_json::from_slice(&local.body).unwrap();
        assert_eq!(b["stream"], false);
        assert_eq!(b["model"], "llama3.2");
        assert!(b.get("options").is_none() && b.get("tools").is_none() && b.get("format").is_none());

        let hosted = build_chat(&ep(&opts, Some("ok-key")), &r, "gpt-oss:120b").unwrap();
        assert!(hosted.headers.contains(&("authorization".into(), "Bearer ok-key".into())));

        let b = build(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#).unwrap();
        assert_eq!(b["stream"], true);
    }

    #[test]
    fn system_developer_and_text_parts() {
        let b = build(
            r#"{"model":"m","messages":[
                {"role":"system","content":"Be terse."},
                {"role":"developer","content":[{"type":"text","text":"Rule 1"},{"type":"text","text":"Rule 2"}]},
                {"role":"user","content":"hi","name":"bob"}]}"#,
        )
        .unwrap();
        assert_eq!(
            b["messages"],
            serde_json::json!([
                {"role":"system","content":"Be terse."},
                {"role":"system","content":"Rule 1\nRule 2"},
                {"role":"user","content":"hi"}
            ])
        );
    }

    #[test]
    fn data_url_images_become_bare_base64() {
        let b = build(
            r#"{"model":"m","messages":[{"role":"user","content":[
                {"type":"text","text":"What is this?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"high"}},
                {"type":"image_url","image_url":"data:image/jpeg;base64,/9j/4AAQ"}]}]}"#,
        )
        .unwrap();
        assert_eq!(b["messages"][0]["content"], "What is this?");
        assert_eq!(b["messages"][0]["images"], serde_json::json!(["iVBORw0KGgo=", "/9j/4AAQ"]));
    }

    #[test]
    fn image_urls_and_other_parts_are_refused_with_their_path() {
        let e = build(
            r#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[
                {"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("inline"), "{e}");
        assert_eq!(unsupported_param(e).as_deref(), Some("messages[1].content[1]"));
        let e = build(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:text/plain,hi"}}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(unsupported_param(e).as_deref(), Some("messages[0].content[0]"));
        let e = build(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(unsupported_param(e).as_deref(), Some("messages[0].content[0]"));
    }

    #[test]
    fn tools_and_tool_round_trip() {
        let b = build(
            r#"{"model":"m","messages":[
                {"role":"user","content":"Weather in Toronto and Paris?"},
                {"role":"assistant","content":null,"reasoning_content":"two calls","tool_calls":[
                    {"id":"call_a","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Toronto\", \"b\": 1, \"a\": 2}"}},
                    {"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]},
                {"role":"tool","tool_call_id":"call_b","content":"12:00"},
                {"role":"tool","tool_call_id":"call_a","content":[{"type":"text","text":"11 degrees"}]},
                {"role":"tool","tool_call_id":"call_unknown","name":"fallback_name","content":"?"},
                {"role":"tool","tool_call_id":"call_unknown2","content":"?"}],
              "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","strict":true,
                 "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]}"#,
        )
        .unwrap();
        assert_eq!(
            b["tools"],
            serde_json::json!([{"type":"function","function":{"name":"get_weather","description":"Weather",
                "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}])
        );
        let m = &b["messages"];
        assert_eq!(m[1]["role"], "assistant");
        assert_eq!(m[1]["content"], "");
        assert_eq!(m[1]["thinking"], "two calls");
        assert_eq!(
            m[1]["tool_calls"],
            serde_json::json!([
                {"id":"call_a","function":{"name":"get_weather","arguments":{"city":"Toronto","b":1,"a":2}}},
                {"id":"call_b","function":{"name":"get_time","arguments":{}}}
            ])
        );
        assert_eq!(m[2], serde_json::json!({"role":"tool","content":"12:00","tool_name":"get_time","tool_call_id":"call_b"}));
        assert_eq!(m[3], serde_json::json!({"role":"tool","content":"11 degrees","tool_name":"get_weather","tool_call_id":"call_a"}));
        assert_eq!(m[4]["tool_name"], "fallback_name");
        assert!(m[5].get("tool_name").is_none());
        let padded = r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":" {\"a\":1}\n"}}]}]}"#;
        assert_eq!(build(padded).unwrap()["messages"][0]["tool_calls"][0]["function"]["arguments"], serde_json::json!({"a":1}));
        // Arguments are embedded as the caller wrote them, key order included.
        let opts = ProviderOptions::default();
        let raw = build_chat(
            &ep(&opts, None),
            &req(r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"z\":1,\"a\":2}"}}]}]}"#),
            "m",
        )
        .unwrap();
        assert!(String::from_utf8(raw.body).unwrap().contains(r#""arguments":{"z":1,"a":2}"#));
    }

    #[test]
    fn bad_tool_arguments_are_refused() {
        for args in [r#"{broken"#, r#"[1,2]"#, r#""text""#] {
            let body = serde_json::json!({"model":"m","messages":[
                {"role":"user","content":"x"},
                {"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":args}}]}]});
            let e = build(&body.to_string()).unwrap_err();
            assert_eq!(unsupported_param(e).as_deref(), Some("messages[1].tool_calls[0].function.arguments"), "{args}");
        }
    }

    #[test]
    fn tool_choice_mapping() {
        let base = r#""model":"m","messages":[{"role":"user","content":"x"}],"tools":[
            {"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"b"}}]"#;
        let b = build(&format!(r#"{{{base},"tool_choice":"none"}}"#)).unwrap();
        assert!(b.get("tools").is_none());
        let b = build(&format!(r#"{{{base},"tool_choice":"auto"}}"#)).unwrap();
        assert_eq!(b["tools"].as_array().unwrap().len(), 2);
        let b = build(&format!(r#"{{{base},"tool_choice":{{"type":"function","function":{{"name":"b"}}}}}}"#)).unwrap();
        assert_eq!(b["tools"], serde_json::json!([{"type":"function","function":{"name":"b"}}]));
        let e = build(&format!(r#"{{{base},"tool_choice":{{"type":"function","function":{{"name":"zz"}}}}}}"#)).unwrap_err();
        assert_eq!(unsupported_param(e).as_deref(), Some("tool_choice"));
        let e = build(&format!(r#"{{{base},"tool_choice":"required"}}"#)).unwrap_err();
        assert_eq!(unsupported_param(e).as_deref(), Some("tool_choice"));
        let e = build(r#"{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":"a"}},{"type":"custom","function":{"name":"c"}}]}"#)
            .unwrap_err();
        assert_eq!(unsupported_param(e).as_deref(), Some("tools[1].type"));
    }

    #[test]
    fn options_mapping_and_overrides() {
        let b = build(
            r#"{"model":"m","messages":[],"temperature":0.2,"top_p":0.9,"max_tokens":100,"max_completion_tokens":256,
                "stop":"\n\n","seed":42,"presence_penalty":0.5,"frequency_penalty":0.25,"top_k":40,
                "options":{"num_ctx":8192,"temperature":0.7},"keep_alive":"5m","think":true,
                "user":"u","logprobs":true,"parallel_tool_calls":false}"#,
        )
        .unwrap();
        assert_eq!(
            b["options"],
            serde_json::json!({"temperature":0.7,"top_p":0.9,"num_predict":256,"stop":["\n\n"],"seed":42,
                "presence_penalty":0.5,"frequency_penalty":0.25,"top_k":40,"num_ctx":8192})
        );
        assert_eq!((&b["keep_alive"], &b["think"]), (&Value::from("5m"), &Value::Bool(true)));
        for dropped in ["user", "logprobs", "parallel_tool_calls", "top_k", "max_tokens", "temperature", "n"] {
            assert!(b.get(dropped).is_none(), "{dropped} leaked to the top level");
        }
        let b = build(r#"{"model":"m","messages":[],"max_tokens":100,"stop":["a","b"],"keep_alive":0}"#).unwrap();
        assert_eq!(b["options"], serde_json::json!({"num_predict":100,"stop":["a","b"]}));
        assert_eq!(b["keep_alive"], 0);
        let e = build(r#"{"model":"m","messages":[],"options":[1]}"#).unwrap_err();
        assert_eq!(unsupported_param(e).as_deref(), Some("options"));
    }

    #[test]
    fn reasoning_effort_becomes_think() {
        let think =
            |effort: &str| build(&format!(r#"{{"model":"m","messages":[],"reasoning_effort":"{effort}"}}"#)).map(|b| b["think"].clone());
        assert_eq!(think("none").unwrap(), Value::Bool(false));
        assert_eq!(think("minimal").unwrap(), "low");
        assert_eq!(think("high").unwrap(), "high");
        assert_eq!(unsupported_param(think("extreme").unwrap_err()).as_deref(), Some("reasoning_effort"));
        let b = build(r#"{"model":"m","messages":[],"reasoning_effort":"high","think":"low"}"#).unwrap();
        assert_eq!(b["think"], "low");
    }

    #[test]
    fn anthropic_thinking_switches_think() {
        let think = |t: &str| build(&format!(r#"{{"model":"m","messages":[],"thinking":{t}}}"#)).unwrap()["think"].clone();
        assert_eq!(think(r#"{"type":"enabled","budget_tokens":1024}"#), true);
        assert_eq!(think(r#"{"type":"disabled"}"#), false);
        let both = build(r#"{"model":"m","messages":[],"thinking":{"type":"enabled"},"reasoning_effort":"low"}"#).unwrap();
        assert_eq!(both["think"], "low");
    }

    #[test]
    fn response_format_mapping() {
        let fmt = |rf: &str| build(&format!(r#"{{"model":"m","messages":[],"response_format":{rf}}}"#));
        assert_eq!(fmt(r#"{"type":"json_object"}"#).unwrap()["format"], "json");
        let schema = serde_json::json!({"type":"object","properties":{"age":{"type":"integer"}},"required":["age"]});
        let b = fmt(&format!(r#"{{"type":"json_schema","json_schema":{{"name":"p","strict":true,"schema":{schema}}}}}"#)).unwrap();
        assert_eq!(b["format"], schema);
        assert_eq!(fmt(r#"{"type":"json_schema","json_schema":{"name":"p"}}"#).unwrap()["format"], "json");
        assert!(fmt(r#"{"type":"text"}"#).unwrap().get("format").is_none());
        assert_eq!(unsupported_param(fmt(r#"{"type":"grammar"}"#).unwrap_err()).as_deref(), Some("response_format"));
    }

    #[test]
    fn n_above_one_is_refused() {
        let e = build(r#"{"model":"m","messages":[],"n":2}"#).unwrap_err();
        assert_eq!(unsupported_param(e).as_deref(), Some("n"));
        assert!(build(r#"{"model":"m","messages":[],"n":1}"#).is_ok());
    }

    // ----- response -----

    #[test]
    fn parses_text_response_with_usage() {
        let r = parse_chat(CHAT_TEXT.as_bytes(), ctx()).unwrap();
        assert_eq!(
            (r.id.as_str(), r.created, r.model.as_str(), r.object.as_str()),
            ("chatcmpl-gw1", 1_700_000_000, "llama3.2", "chat.completion")
        );
        let c = &r.choices[0];
        assert_eq!(c.message.content.as_deref(), Some("Hello! How can I help?"));
        assert_eq!(c.message.role, Role::Assistant);
        assert!(c.message.tool_calls.is_none() && c.message.extra.is_empty());
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (26, 8, 34));
    }

    #[test]
    fn parses_tool_calls_with_synthesized_ids_and_thinking() {
        let r = parse_chat(CHAT_TOOLS.as_bytes(), ctx()).unwrap();
        let m = &r.choices[0].message;
        assert_eq!(m.content, None);
        assert_eq!(m.extra.get(REASONING_KEY), Some(&Value::from("The user wants weather for two cities.")));
        let calls = m.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].function.arguments, r#"{"city":"Toronto","unit":"celsius"}"#);
        assert_eq!(calls[1].function.arguments, r#"{"city":"Paris"}"#);
        assert_eq!(calls[0].kind, "function");
        for c in calls {
            assert!(c.id.starts_with("call_") && c.id.len() == 29 && c.id[5..].bytes().all(|b| b.is_ascii_alphanumeric()), "{}", c.id);
        }
        assert_ne!(calls[0].id, calls[1].id);
        // Same response id, same ids: a retried translation agrees with the first.
        assert_eq!(parse_chat(CHAT_TOOLS.as_bytes(), ctx()).unwrap().choices[0].message.tool_calls.as_ref().unwrap()[0].id, calls[0].id);
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(r.usage.unwrap().total_tokens, 161);
    }

    #[test]
    fn upstream_tool_call_ids_and_string_arguments_are_kept() {
        let body = br#"{"model":"m","message":{"role":"assistant","content":"ok","tool_calls":[
            {"id":"call_x","function":{"name":"f","arguments":"{\"a\":1}"}},{"function":{"name":"g"}}]},"done":true,"done_reason":"stop"}"#;
        let r = parse_chat(body, ctx()).unwrap();
        let calls = r.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!((calls[0].id.as_str(), calls[0].function.arguments.as_str()), ("call_x", r#"{"a":1}"#));
        assert_eq!(calls[1].function.arguments, "{}");
        assert_eq!(r.choices[0].message.content.as_deref(), Some("ok"));
    }

    #[test]
    fn finish_reasons_and_missing_fields() {
        let r = parse_chat(br#"{"message":{"role":"assistant","content":"cut"},"done":true,"done_reason":"length","eval_count":5}"#, ctx())
            .unwrap();
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(r.model, "fallback-model");
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (0, 5, 5));
        let r =
            parse_chat(br#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"load"}"#, ctx()).unwrap();
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(r.choices[0].message.content.as_deref(), Some(""));
    }

    #[test]
    fn error_bodies_and_garbage() {
        let e = parse_chat(br#"{"error":"model \"nope\" not found, try pulling it first"}"#, ctx()).unwrap_err();
        assert!(matches!(e, WireError::Upstream(ref u) if u.status == 0 && u.message.starts_with("model \"nope\"")), "{e:?}");
        assert!(matches!(parse_chat(b"{nope", ctx()), Err(WireError::Malformed { .. })));
        assert!(matches!(parse_chat(br#"{"message":"x"}"#, ctx()), Err(WireError::Malformed { .. })));
    }

    // ----- stream -----

    fn decode(input: &str, piece: usize) -> Result<Vec<StreamEvent>, WireError> {
        let mut d = StreamDecoder::new(ctx());
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(piece.max(1)) {
            d.feed(c, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    fn chunks(events: &[StreamEvent]) -> Vec<&ChatChunk> {
        events.iter().filter_map(|e| if let StreamEvent::Chunk(c) = e { Some(c) } else { None }).collect()
    }

    #[test]
    fn stream_text_is_identical_in_any_piece_size() {
        let whole = decode(STREAM_TEXT, STREAM_TEXT.len()).unwrap();
        for piece in [1, 5] {
            assert_eq!(decode(STREAM_TEXT, piece).unwrap(), whole, "piece {piece}");
        }
        assert_eq!(whole.len(), 7, "{whole:?}");
        assert_eq!(whole.last(), Some(&StreamEvent::Done));
        let c = chunks(&whole);
        for ch in &c {
            assert_eq!(
                (ch.id.as_str(), ch.created, ch.model.as_str(), ch.object.as_str()),
                ("chatcmpl-gw1", 1_700_000_000, "llama3.2", "chat.completion.chunk")
            );
        }
        let d0 = &c[0].choices[0].delta;
        assert_eq!((d0.role, d0.content.as_deref()), (Some(Role::Assistant), Some("")));
        let text: String = c[1..4].iter().map(|ch| ch.choices[0].delta.content.clone().unwrap()).collect();
        assert_eq!(text, "The sky é blue.");
        assert_eq!(c[4].choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(c[4].choices[0].delta, Delta::default());
        assert!(c[5].choices.is_empty());
        let u = c[5].usage.as_ref().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (26, 3, 29));
        // The encoded chunks are what an OpenAI client expects.
        let json = serde_json::to_value(c[4]).unwrap();
        assert_eq!(json["choices"][0], serde_json::json!({"index":0,"delta":{},"finish_reason":"stop"}));
    }

    #[test]
    fn stream_tool_calls_get_running_indices_and_tool_calls_finish() {
        let whole = decode(STREAM_TOOLS, STREAM_TOOLS.len()).unwrap();
        for piece in [1, 5] {
            assert_eq!(decode(STREAM_TOOLS, piece).unwrap(), whole, "piece {piece}");
        }
        let c = chunks(&whole);
        assert_eq!(c[1].choices[0].delta.extra.get(REASONING_KEY), Some(&Value::from("Need weather")));
        assert!(c[1].choices[0].delta.content.is_none());
        let t0 = &c[2].choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!(t0.index, 0);
        assert_eq!(t0.kind.as_deref(), Some("function"));
        // The stream and non-stream paths synthesize the same id for the same position.
        assert_eq!(t0.id.as_deref(), Some(synth_call_id("chatcmpl-gw1", 0).as_str()));
        let f0 = t0.function.as_ref().unwrap();
        assert_eq!((f0.name.as_deref(), f0.arguments.as_deref()), (Some("get_weather"), Some(r#"{"city":"Toronto"}"#)));
        let t1 = &c[3].choices[0].delta.tool_calls.as_ref().unwrap()[0];
        assert_eq!((t1.index, t1.id.as_deref()), (1, Some("call_up1")));
        assert_eq!(c[4].choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c[5].usage.as_ref().unwrap().total_tokens, 120);
        assert_eq!(whole.last(), Some(&StreamEvent::Done));
    }

    #[test]
    fn stream_content_on_the_done_line_and_length() {
        let input = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"all at once\"},\"done\":true,\"done_reason\":\"length\",\"eval_count\":3}";
        let ev = decode(input, 7).unwrap();
        let c = chunks(&ev);
        assert_eq!(c.len(), 4);
        assert_eq!(c[1].choices[0].delta.content.as_deref(), Some("all at once"));
        assert_eq!(c[2].choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(ev.last(), Some(&StreamEvent::Done));
    }

    #[test]
    fn stream_error_line() {
        let input = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n{\"error\":\"an error was encountered while running the model: unexpected EOF\"}\n";
        for piece in [1, 5, input.len()] {
            let ev = decode(input, piece).unwrap();
            assert_eq!(ev.len(), 3, "{ev:?}");
            let StreamEvent::Error(e) = &ev[2] else { panic!("{ev:?}") };
            assert_eq!(e.status, 0);
            assert!(e.message.contains("unexpected EOF"));
        }
        let ev = decode("{\"error\":\"server busy, please try again\"}", 4).unwrap();
        assert!(matches!(&ev[..], [StreamEvent::Error(e)] if e.status == 503));
    }

    #[test]
    fn truncated_and_malformed_streams_fail() {
        let truncated: String = STREAM_TEXT.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(matches!(decode(&truncated, 5), Err(WireError::Malformed { what: "stream", .. })));
        assert!(matches!(decode("", 5), Err(WireError::Malformed { what: "stream", .. })));
        assert!(matches!(decode("{\"model\":\"m\",\"done\":fal\n", 5), Err(WireError::Malformed { .. })));
        // Without a trailing newline the done line still completes the stream at finish().
        let last_unterminated = STREAM_TEXT.trim_end();
        assert_eq!(decode(last_unterminated, 3).unwrap(), decode(STREAM_TEXT, 3).unwrap());
    }

    // ----- embeddings and models -----

    #[test]
    fn embeddings_request() {
        let opts = ProviderOptions::default();
        let r: EmbeddingsRequest = serde_json::from_str(
            r#"{"model":"ollama/all-minilm","input":["a","b"],"dimensions":384,"truncate":false,"encoding_format":"base64","user":"u"}"#,
        )
        .unwrap();
        let w = build_embeddings(&ep(&opts, None), &r, "all-minilm").unwrap();
        assert_eq!(w.url, "http://127.0.0.1:11434/api/embed");
        let b: Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(b, serde_json::json!({"model":"all-minilm","input":["a","b"],"dimensions":384,"truncate":false}));
        let r: EmbeddingsRequest = serde_json::from_str(r#"{"model":"m","input":"one"}"#).unwrap();
        let b: Value = serde_json::from_slice(&build_embeddings(&ep(&opts, Some("k")), &r, "m").unwrap().body).unwrap();
        assert_eq!(b, serde_json::json!({"model":"m","input":"one"}));
        for tokens in [r#"[1,2,3]"#, r#"[[1,2],[3]]"#] {
            let r: EmbeddingsRequest = serde_json::from_str(&format!(r#"{{"model":"m","input":{tokens}}}"#)).unwrap();
            assert_eq!(unsupported_param(build_embeddings(&ep(&opts, None), &r, "m").unwrap_err()).as_deref(), Some("input"));
        }
        let r: EmbeddingsRequest = serde_json::from_str(r#"{"model":"m","input":"x","encoding_format":"int8"}"#).unwrap();
        assert_eq!(unsupported_param(build_embeddings(&ep(&opts, None), &r, "m").unwrap_err()).as_deref(), Some("encoding_format"));
    }

    #[test]
    fn embeddings_response_floats_and_base64() {
        let r = parse_embeddings(EMBED.as_bytes(), ctx()).unwrap();
        assert_eq!((r.object.as_str(), r.model.as_str()), ("list", "all-minilm"));
        assert_eq!((r.usage.prompt_tokens, r.usage.total_tokens), (8, 8));
        assert_eq!(r.data.len(), 2);
        assert_eq!((r.data[1].index, r.data[1].object.as_str()), (1, "embedding"));
        assert_eq!(r.data[0].embedding, serde_json::json!([0.010071029, -0.0017594862, 0.05007221]));

        let b = parse_embeddings_as(EMBED.as_bytes(), ctx(), Some("base64")).unwrap();
        let s = b.data[1].embedding.as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(floats, vec![-0.009876_f32, 0.5, -1.25]);
        assert_eq!(crate::types::floats_to_base64(&[1.0]), "AACAPw==");

        let e = parse_embeddings(br#"{"error":"this model does not support embeddings"}"#, ctx()).unwrap_err();
        assert!(matches!(e, WireError::Upstream(ref u) if u.message.contains("does not support")));
        assert!(matches!(parse_embeddings(br#"{"embeddings":"x"}"#, ctx()), Err(WireError::Malformed { .. })));
        let r = parse_embeddings(br#"{"embeddings":[[1]]}"#, ctx()).unwrap();
        assert_eq!((r.model.as_str(), r.usage.total_tokens), ("fallback-model", 0));
    }

    #[test]
    fn models_list() {
        let opts = ProviderOptions::default();
        let w = build_list_models(&ep(&opts, Some("k")));
        assert_eq!((w.method, w.url.as_str()), (Method::Get, "http://127.0.0.1:11434/api/tags"));
        assert!(w.headers.contains(&("authorization".into(), "Bearer k".into())));
        assert_eq!(parse_models(TAGS.as_bytes()).unwrap(), vec!["llama3.2:latest", "all-minilm:latest"]);
        assert_eq!(parse_models(br#"{"models":[]}"#).unwrap(), Vec::<String>::new());
        assert_eq!(parse_models(br#"{"models":null}"#).unwrap(), Vec::<String>::new());
        assert_eq!(parse_models(br#"{"models":[{"model":"only-model:1b"}]}"#).unwrap(), vec!["only-model:1b"]);
        assert!(parse_models(b"not json").is_err());
    }

    #[test]
    fn compacts_without_reordering() {
        assert_eq!(compact_json("{ \"b\" : [1, 2],\n \"a\": \"x y \\\" z\" }"), r#"{"b":[1,2],"a":"x y \" z"}"#);
    }
}
