//! The OpenAI Responses API (`POST /v1/responses`) as a client-facing shape over every provider.
//!
//! Why it exists: the OpenAI SDK's `client.responses.create`, the Agents SDK and LangChain's Responses mode
//! speak this API, not Chat Completions. Rather than a codec per provider for it, a Responses request is
//! translated here to the canonical (Chat Completions-shaped) request, the engine serves that as any chat
//! request (routing, fallbacks, keys, budgets), and the canonical answer (or stream of chunks) is translated
//! back into a Response object (or the Responses event stream). So whatever serves the model, OpenAI,
//! Anthropic, Ollama or any other provider, the caller sees the Responses API.
//!
//! Decisions, also written down in `docs/compatibility.md`:
//! - **Stateless**: the gateway keeps no responses. `store` is accepted (true, false or absent) and nothing
//!   is persisted; the Response says `store: false`. `previous_response_id`, `conversation` and
//!   `item_reference` inputs need stored state and get a 400 in OpenAI's shape; callers send the whole
//!   conversation in `input`, which is what the Agents SDK and LangChain do by default.
//! - **Tools**: function tools only (the flat `{type:function,name,parameters,strict}` shape). Hosted
//!   tools (web search, file search, code interpreter, MCP, computer use, ...) run inside OpenAI, which no
//!   other provider has: a 400 naming the tool.
//! - **Reasoning**: `reasoning.effort` becomes Chat Completions' `reasoning_effort` (honoured where the
//!   provider has it, as on chat); `summary` is accepted and not produced. A model's thinking text, when
//!   the provider returns it, comes back as a `reasoning` output item with `reasoning_text` content.
//!   `reasoning` input items (a previous turn's thinking) are not sent back to the model.
//! - Output order is reasoning, then the assistant message, then function calls, as OpenAI orders them.
//!
//! Everything here is pure: ids and times are given by the caller.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::outbound::ErrorBody;
use crate::sse::write_named_frame;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Extra, FileData, FinishReason, FunctionCall, FunctionDef, ImageUrl,
    JsonSchemaFormat, Message, ResponseFormat, ResponseMessage, Role, StreamOptions, Tool, ToolCall, ToolChoice, Usage,
};

/// The key reasoning text travels under on the canonical side (as the codecs put it).
const REASONING_KEY: &str = "reasoning_content";

/// A Responses request the gateway cannot take, in OpenAI's error terms (always a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub message: String,
    /// The offending field's path, as OpenAI names it (`input[2].content[0].image_url`).
    pub param: Option<String>,
    /// A stable machine code.
    pub code: &'static str,
}

impl RequestError {
    fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        RequestError { message: message.into(), param: Some(param.into()), code: "invalid_request" }
    }

    fn unsupported(message: impl Into<String>, param: impl Into<String>) -> Self {
        RequestError { message: message.into(), param: Some(param.into()), code: "unsupported_parameter" }
    }
}

/// `POST /v1/responses` body. Fields the translation reads are typed; the item lists stay JSON so that a
/// wrong item is reported at its own path. Unknown top-level fields go to the canonical request's `extra`
/// (and so reach OpenAI-compatible upstreams), as they do on Chat Completions.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub text: Option<TextConfig>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub reasoning: Option<Reasoning>,
    /// Accepted and not honoured: the gateway keeps no responses (see the module doc).
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(default)]
    pub prompt: Option<Value>,
    /// Extra output to include (`reasoning.encrypted_content`, logprobs, ...): accepted, nothing added.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// `auto` or `disabled`: accepted; the gateway never drops input items (`disabled` behaviour).
    #[serde(default)]
    pub truncation: Option<String>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Bounds hosted-tool calls, of which the gateway has none: accepted.
    #[serde(default)]
    pub max_tool_calls: Option<u32>,
    /// `include_obfuscation`: accepted; the gateway adds no obfuscation padding.
    #[serde(default)]
    pub stream_options: Option<Value>,
    /// Gateway extension: ordered `provider/model` targets to try after the primary.
    #[serde(default)]
    pub fallbacks: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct TextConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Reasoning {
    #[serde(default)]
    pub effort: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default, skip_serializing)]
    pub generate_summary: Option<String>,
    #[serde(flatten, skip_serializing)]
    pub extra: Extra,
}

/// What a Response object repeats from its request, kept from translation to rendering (one per request).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseShell {
    id: String,
    created_at: i64,
    /// The model the caller asked for, until the upstream names the one that answered.
    model: String,
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    metadata: Map<String, Value>,
    parallel_tool_calls: bool,
    reasoning: Value,
    temperature: Option<f64>,
    top_p: Option<f64>,
    text: Value,
    tool_choice: Value,
    tools: Vec<Value>,
    user: Option<String>,
}

impl ResponseShell {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The id items of this response are named after (`msg_<base>_0`, `fc_<base>_1`, ...).
    fn base(&self) -> &str {
        self.id.strip_prefix("resp_").unwrap_or(&self.id)
    }

    fn item_id(&self, prefix: &str, index: usize) -> String {
        format!("{prefix}_{}_{index}", self.base())
    }
}

/// A Response id from a random seed of the caller's (alphanumerics are kept, anything else dropped).
pub fn response_id(seed: &str) -> String {
    let tail: String = seed.rsplit('-').next().unwrap_or(seed).chars().filter(char::is_ascii_alphanumeric).collect();
    format!("resp_{tail}")
}

// ---------------------------------------------------------------------------------------------------------
// Request: Responses → canonical chat
// ---------------------------------------------------------------------------------------------------------

/// Translates a Responses request into the canonical chat request and the shell its answer is rendered in.
/// `id` is the Response's id (see [`response_id`]), `created_at` Unix seconds.
pub fn to_chat(req: ResponsesRequest, id: String, created_at: i64) -> Result<(ChatRequest, ResponseShell), RequestError> {
    refuse_stateful(&req)?;
    if req.top_logprobs.is_some_and(|n| n > 0) {
        return Err(RequestError::unsupported(
            "top_logprobs is not supported on the gateway's Responses route; use /v1/chat/completions with logprobs",
            "top_logprobs",
        ));
    }
    let mut messages = Vec::new();
    if let Some(i) = req.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(Message::text(Role::System, i));
    }
    match &req.input {
        None | Some(Value::Null) => {
            return Err(RequestError::invalid("input is required: a string or a list of input items", "input"));
        }
        Some(Value::String(s)) => messages.push(Message::text(Role::User, s.clone())),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                push_item(&mut messages, item, i)?;
            }
        }
        Some(_) => return Err(RequestError::invalid("input must be a string or a list of input items", "input")),
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(RequestError::invalid("input must hold at least one message or item", "input"));
    }

    let mut tool_names = Vec::new();
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        let tool = function_tool(t, i)?;
        tool_names.push(tool.function.name.clone());
        tools.push(tool);
    }
    let (tool_choice, allowed) = match &req.tool_choice {
        None | Some(Value::Null) => (None, None),
        Some(v) => tool_choice(v, &tool_names)?,
    };
    if let Some(allowed) = &allowed {
        tools.retain(|t| allowed.contains(&t.function.name));
    }

    let mut extra = req.extra;
    let response_format = match req.text.as_ref().and_then(|t| t.format.as_ref()) {
        None | Some(Value::Null) => None,
        Some(f) => text_format(f)?,
    };
    if let Some(v) = req.text.as_ref().and_then(|t| t.verbosity.as_deref()) {
        extra.insert("verbosity".into(), Value::String(v.to_string()));
    }
    if let Some(effort) = req.reasoning.as_ref().and_then(|r| r.effort.as_deref()) {
        extra.insert("reasoning_effort".into(), Value::String(effort.to_string()));
    }
    if req.background == Some(true) {
        return Err(RequestError::unsupported(
            "background responses need stored state, which this gateway does not keep; send the request without background",
            "background",
        ));
    }

    let stream = req.stream.unwrap_or(false);
    let chat = ChatRequest {
        model: req.model.clone(),
        messages,
        stream: stream.then_some(true),
        // The stream encoder needs the usage for `response.completed`, whatever the caller asked.
        stream_options: stream.then(|| StreamOptions { include_usage: Some(true), extra: Extra::new() }),
        max_completion_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        response_format,
        user: req.user.clone(),
        fallbacks: req.fallbacks,
        extra,
        ..ChatRequest::default()
    };
    let shell = ResponseShell {
        id,
        created_at,
        model: req.model,
        instructions: req.instructions,
        max_output_tokens: req.max_output_tokens,
        metadata: req.metadata.unwrap_or_default(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        reasoning: req.reasoning.map_or(Value::Null, |r| serde_json::to_value(r).unwrap_or(Value::Null)),
        temperature: req.temperature,
        top_p: req.top_p,
        text: req
            .text
            .and_then(|t| serde_json::to_value(t).ok())
            .filter(|t| t.get("format").is_some())
            .unwrap_or_else(|| serde_json::json!({"format": {"type": "text"}})),
        tool_choice: req.tool_choice.filter(|v| !v.is_null()).unwrap_or_else(|| Value::String("auto".into())),
        tools: req.tools.unwrap_or_default(),
        user: req.user,
    };
    Ok((chat, shell))
}

/// The fields that only a gateway keeping responses could honour.
fn refuse_stateful(req: &ResponsesRequest) -> Result<(), RequestError> {
    if let Some(prev) = req.previous_response_id.as_deref().filter(|p| !p.is_empty()) {
        return Err(RequestError {
            message: format!(
                "Previous response with id '{prev}' not found: this gateway does not store responses. Send the whole \
                 conversation in `input` (earlier output items included) instead of previous_response_id."
            ),
            param: Some("previous_response_id".into()),
            code: "previous_response_not_found",
        });
    }
    if req.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        return Err(RequestError::unsupported(
            "conversations are stored state, which this gateway does not keep; send the whole conversation in `input`",
            "conversation",
        ));
    }
    if req.prompt.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(RequestError::unsupported(
            "stored prompt templates live in OpenAI's dashboard, which the gateway cannot read; send instructions and input instead",
            "prompt",
        ));
    }
    Ok(())
}

fn str_field<'a>(item: &'a Value, key: &str, at: &str) -> Result<&'a str, RequestError> {
    match item.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(RequestError::invalid(format!("{at}.{key} is required"), format!("{at}.{key}"))),
        Some(_) => Err(RequestError::invalid(format!("{at}.{key} must be a string"), format!("{at}.{key}"))),
    }
}

/// One input item, appended to the canonical conversation.
fn push_item(messages: &mut Vec<Message>, item: &Value, i: usize) -> Result<(), RequestError> {
    let at = format!("input[{i}]");
    if !item.is_object() {
        return Err(RequestError::invalid(format!("{at} must be an object (an input item)"), at));
    }
    // An easy input message may leave out its type.
    let kind = match item.get("type") {
        Some(Value::String(t)) => t.as_str(),
        None | Some(Value::Null) if item.get("role").is_some() => "message",
        _ => return Err(RequestError::invalid(format!("{at}.type is required"), format!("{at}.type"))),
    };
    match kind {
        "message" => push_message(messages, item, &at),
        "function_call" => {
            let call_id = str_field(item, "call_id", &at)?;
            let name = str_field(item, "name", &at)?;
            let arguments = match item.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => "{}".to_string(),
                // Lenient with clients that send the arguments as an object.
                Some(other) => other.to_string(),
            };
            let call =
                ToolCall { id: call_id.to_string(), kind: "function".into(), function: FunctionCall { name: name.to_string(), arguments } };
            // Calls of one turn follow its message (or each other): one assistant message holds them all.
            match messages.last_mut() {
                Some(m) if m.role == Role::Assistant => m.tool_calls.get_or_insert_with(Vec::new).push(call),
                _ => {
                    let mut m = Message::text(Role::Assistant, "");
                    m.content = None;
                    m.tool_calls = Some(vec![call]);
                    messages.push(m);
                }
            }
            Ok(())
        }
        "function_call_output" => {
            let call_id = str_field(item, "call_id", &at)?;
            let content = match item.get("output") {
                Some(Value::String(s)) => Content::Text(s.clone()),
                Some(Value::Array(parts)) => {
                    let mut out = Vec::with_capacity(parts.len());
                    for (j, p) in parts.iter().enumerate() {
                        out.push(input_part(p, &format!("{at}.output[{j}]"))?);
                    }
                    simplify(out)
                }
                None | Some(Value::Null) => return Err(RequestError::invalid(format!("{at}.output is required"), format!("{at}.output"))),
                Some(_) => {
                    return Err(RequestError::invalid(
                        format!("{at}.output must be a string or a list of content parts"),
                        format!("{at}.output"),
                    ))
                }
            };
            let mut m = Message::text(Role::Tool, "");
            m.content = Some(content);
            m.tool_call_id = Some(call_id.to_string());
            messages.push(m);
            Ok(())
        }
        // A previous turn's thinking: providers take none back from another model (encrypted content
        // least of all), so it is left out.
        "reasoning" => Ok(()),
        "item_reference" => Err(RequestError {
            message: format!("{at} is an item_reference: this gateway does not store responses, so send the item itself"),
            param: Some(at),
            code: "unsupported_parameter",
        }),
        other => Err(RequestError::unsupported(
            format!(
                "{at}.type \"{other}\" is not supported: the gateway's Responses route takes messages, function_call and \
                 function_call_output items (hosted tools run only inside OpenAI)"
            ),
            format!("{at}.type"),
        )),
    }
}

fn push_message(messages: &mut Vec<Message>, item: &Value, at: &str) -> Result<(), RequestError> {
    let role = match str_field(item, "role", at)? {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "developer" => Role::Developer,
        other => {
            return Err(RequestError::invalid(
                format!("{at}.role must be \"user\", \"assistant\", \"system\" or \"developer\", got \"{other}\""),
                format!("{at}.role"),
            ))
        }
    };
    let mut refusal = None;
    let content = match item.get("content") {
        Some(Value::String(s)) => Content::Text(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                if role == Role::Assistant && p.get("type").and_then(Value::as_str) == Some("refusal") {
                    refusal = Some(str_field(p, "refusal", &pat)?.to_string());
                    continue;
                }
                out.push(input_part(p, &pat)?);
            }
            if role == Role::Assistant {
                // An answer's output_text parts are pieces of one text (what the SDK's `output_text` joins).
                let mut text = String::new();
                for p in &out {
                    match p {
                        ContentPart::Text { text: t } => text.push_str(t),
                        _ => {
                            return Err(RequestError::invalid(
                                format!("{at}.content: an assistant message holds output_text and refusal parts only"),
                                format!("{at}.content"),
                            ))
                        }
                    }
                }
                Content::Text(text)
            } else {
                simplify(out)
            }
        }
        None | Some(Value::Null) => return Err(RequestError::invalid(format!("{at}.content is required"), format!("{at}.content"))),
        Some(_) => {
            return Err(RequestError::invalid(format!("{at}.content must be a string or a list of content parts"), format!("{at}.content")))
        }
    };
    let mut m = Message::text(role, "");
    m.content = Some(content);
    m.refusal = refusal;
    messages.push(m);
    Ok(())
}

/// A lone text part becomes plain text, which every codec takes; anything else stays a list of parts.
fn simplify(mut parts: Vec<ContentPart>) -> Content {
    if parts.len() == 1 && matches!(parts[0], ContentPart::Text { .. }) {
        if let Some(ContentPart::Text { text }) = parts.pop() {
            return Content::Text(text);
        }
    }
    Content::Parts(parts)
}

/// One content part of an input message or a function call's output.
fn input_part(p: &Value, at: &str) -> Result<ContentPart, RequestError> {
    let kind = match p.get("type") {
        Some(Value::String(t)) => t.as_str(),
        _ => return Err(RequestError::invalid(format!("{at}.type is required"), format!("{at}.type"))),
    };
    match kind {
        "input_text" | "output_text" | "text" => Ok(ContentPart::Text { text: str_field(p, "text", at)?.to_string() }),
        "input_image" => {
            let detail = p.get("detail").and_then(Value::as_str).map(str::to_string);
            match p.get("image_url") {
                Some(Value::String(url)) => Ok(ContentPart::ImageUrl { image_url: ImageUrl { url: url.clone(), detail } }),
                Some(Value::Null) | None if p.get("file_id").is_some_and(|f| !f.is_null()) => Err(RequestError::unsupported(
                    format!(
                        "{at}.file_id names a file in OpenAI's Files API, which the gateway cannot read for every provider; send \
                         image_url (an https URL or a data: URL) instead"
                    ),
                    format!("{at}.file_id"),
                )),
                _ => Err(RequestError::invalid(
                    format!("{at}.image_url is required (an https URL or a base64 data: URL)"),
                    format!("{at}.image_url"),
                )),
            }
        }
        "input_file" => input_file(p, at),
        "input_audio" => match p.get("input_audio") {
            // The same part as on Chat Completions.
            Some(a @ Value::Object(_)) => Ok(ContentPart::Other(serde_json::json!({"type": "input_audio", "input_audio": a}))),
            _ => Err(RequestError::invalid(format!("{at}.input_audio is required"), format!("{at}.input_audio"))),
        },
        other => Err(RequestError::unsupported(
            format!("{at}.type \"{other}\" is not a content part the gateway takes (input_text, input_image, input_file)"),
            format!("{at}.type"),
        )),
    }
}

fn input_file(p: &Value, at: &str) -> Result<ContentPart, RequestError> {
    if p.get("file_url").is_some_and(|u| !u.is_null()) {
        return Err(RequestError::unsupported(
            format!("{at}.file_url is fetched by OpenAI only; send the file inline as file_data (a base64 data: URL)"),
            format!("{at}.file_url"),
        ));
    }
    let text = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    let (file_data, file_id, filename) = (text("file_data"), text("file_id"), text("filename"));
    if file_data.is_none() && file_id.is_none() {
        return Err(RequestError::invalid(format!("{at} needs file_data (a base64 data: URL) or file_id"), format!("{at}.file_data")));
    }
    Ok(ContentPart::File { file: FileData { file_data, file_id, filename } })
}

/// A flat function tool; any other tool type is one only OpenAI runs.
fn function_tool(t: &Value, i: usize) -> Result<Tool, RequestError> {
    let at = format!("tools[{i}]");
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(RequestError::unsupported(
                format!(
                    "{at}.type \"{other}\" is a hosted tool that only OpenAI runs; the gateway's Responses route takes \
                     function tools ({{\"type\":\"function\",\"name\":…,\"parameters\":…}})"
                ),
                format!("{at}.type"),
            ))
        }
        None => return Err(RequestError::invalid(format!("{at}.type is required"), format!("{at}.type"))),
    }
    let name = str_field(t, "name", &at)?;
    let parameters = match t.get("parameters") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p.clone()),
        Some(_) => return Err(RequestError::invalid(format!("{at}.parameters must be a JSON Schema object"), format!("{at}.parameters"))),
    };
    Ok(Tool {
        kind: "function".into(),
        function: FunctionDef {
            name: name.to_string(),
            description: t.get("description").and_then(Value::as_str).map(str::to_string),
            parameters,
            strict: t.get("strict").and_then(Value::as_bool),
        },
    })
}

/// `tool_choice`, and the tool names an `allowed_tools` choice restricts the request to.
fn tool_choice(v: &Value, names: &[String]) -> Result<(Option<ToolChoice>, Option<Vec<String>>), RequestError> {
    let known = |n: &str, param: &str| {
        if names.iter().any(|t| t == n) {
            Ok(())
        } else {
            Err(RequestError::invalid(format!("tool_choice names the function \"{n}\", which is not in tools"), param))
        }
    };
    match v {
        Value::String(s) => match s.as_str() {
            "none" => Ok((Some(ToolChoice::None), None)),
            "auto" => Ok((Some(ToolChoice::Auto), None)),
            "required" => Ok((Some(ToolChoice::Required), None)),
            other => Err(RequestError::invalid(
                format!("tool_choice must be \"none\", \"auto\", \"required\" or an object, got \"{other}\""),
                "tool_choice",
            )),
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = str_field(v, "name", "tool_choice")?;
                known(name, "tool_choice.name")?;
                Ok((Some(ToolChoice::Function(name.to_string())), None))
            }
            Some("allowed_tools") => {
                let mode = match o.get("mode").and_then(Value::as_str) {
                    Some("auto") => ToolChoice::Auto,
                    Some("required") => ToolChoice::Required,
                    _ => return Err(RequestError::invalid("tool_choice.mode must be \"auto\" or \"required\"", "tool_choice.mode")),
                };
                let Some(Value::Array(list)) = o.get("tools") else {
                    return Err(RequestError::invalid("tool_choice.tools must be a list of tools", "tool_choice.tools"));
                };
                let mut allowed = Vec::with_capacity(list.len());
                for (i, t) in list.iter().enumerate() {
                    let at = format!("tool_choice.tools[{i}]");
                    if t.get("type").and_then(Value::as_str) != Some("function") {
                        return Err(RequestError::unsupported(format!("{at}: only function tools can be allowed"), at));
                    }
                    let name = str_field(t, "name", &at)?;
                    known(name, &format!("{at}.name"))?;
                    allowed.push(name.to_string());
                }
                Ok((Some(mode), Some(allowed)))
            }
            Some(other) => Err(RequestError::unsupported(
                format!("tool_choice type \"{other}\" names a hosted tool that only OpenAI runs; use a function"),
                "tool_choice.type",
            )),
            None => Err(RequestError::invalid("tool_choice.type is required", "tool_choice.type")),
        },
        _ => Err(RequestError::invalid("tool_choice must be a string or an object", "tool_choice")),
    }
}

/// `text.format` → the canonical `response_format` (`text` needs none).
fn text_format(f: &Value) -> Result<Option<ResponseFormat>, RequestError> {
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat { kind: "json_object".into(), json_schema: None })),
        Some("json_schema") => {
            let name = str_field(f, "name", "text.format")?;
            let schema = match f.get("schema") {
                Some(s @ Value::Object(_)) => s.clone(),
                _ => return Err(RequestError::invalid("text.format.schema is required (a JSON Schema object)", "text.format.schema")),
            };
            Ok(Some(ResponseFormat {
                kind: "json_schema".into(),
                json_schema: Some(JsonSchemaFormat {
                    name: name.to_string(),
                    description: f.get("description").and_then(Value::as_str).map(str::to_string),
                    schema: Some(schema),
                    strict: f.get("strict").and_then(Value::as_bool),
                }),
            }))
        }
        Some(other) => Err(RequestError::invalid(
            format!("text.format.type must be \"text\", \"json_object\" or \"json_schema\", got \"{other}\""),
            "text.format.type",
        )),
        None => Err(RequestError::invalid("text.format.type is required", "text.format.type")),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Response: canonical chat → Response object
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum ItemStatus {
    InProgress,
    Completed,
    Incomplete,
}

/// One output item, as the SDK's `ResponseOutputItem` union has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Item {
    Reasoning { id: String, summary: Vec<Value>, content: Vec<Part>, status: ItemStatus },
    Message { id: String, status: ItemStatus, role: &'static str, content: Vec<Part> },
    FunctionCall { id: String, call_id: String, name: String, arguments: String, status: ItemStatus },
}

impl Item {
    fn set_status(&mut self, s: ItemStatus) {
        match self {
            Item::Reasoning { status, .. } | Item::Message { status, .. } | Item::FunctionCall { status, .. } => *status = s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part {
    OutputText { text: String, annotations: Vec<Value>, logprobs: Vec<Value> },
    Refusal { refusal: String },
    ReasoningText { text: String },
}

impl Part {
    fn output_text(text: String) -> Self {
        Part::OutputText { text, annotations: Vec::new(), logprobs: Vec::new() }
    }

    fn text_mut(&mut self) -> &mut String {
        match self {
            Part::OutputText { text, .. } | Part::ReasoningText { text } => text,
            Part::Refusal { refusal } => refusal,
        }
    }
}

#[derive(Serialize)]
struct ResponseUsage {
    input_tokens: u64,
    input_tokens_details: InputDetails,
    output_tokens: u64,
    output_tokens_details: OutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct InputDetails {
    cached_tokens: u64,
    cache_write_tokens: u64,
}

#[derive(Serialize)]
struct OutputDetails {
    reasoning_tokens: u64,
}

impl From<&Usage> for ResponseUsage {
    fn from(u: &Usage) -> Self {
        let cache_write = u.cache_write_tokens();
        let reasoning = u.completion_tokens_details.as_ref().and_then(|d| d.get("reasoning_tokens")).and_then(Value::as_u64).unwrap_or(0);
        ResponseUsage {
            input_tokens: u.prompt_tokens,
            input_tokens_details: InputDetails { cached_tokens: u.cached_tokens().unwrap_or(0), cache_write_tokens: cache_write },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutputDetails { reasoning_tokens: reasoning },
            total_tokens: u.total_tokens,
        }
    }
}

#[derive(Serialize)]
struct Incomplete {
    reason: &'static str,
}

#[derive(Serialize)]
struct ResponseErrorObject<'a> {
    code: &'static str,
    message: &'a str,
}

/// The Response object: every field the SDK's `Response` requires, and the request's settings repeated.
#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: i64,
    status: &'static str,
    background: bool,
    error: Option<ResponseErrorObject<'a>>,
    incomplete_details: Option<Incomplete>,
    instructions: Option<&'a str>,
    max_output_tokens: Option<u32>,
    max_tool_calls: Option<u32>,
    model: &'a str,
    output: &'a [Item],
    parallel_tool_calls: bool,
    previous_response_id: Option<&'a str>,
    reasoning: &'a Value,
    store: bool,
    temperature: Option<f64>,
    text: &'a Value,
    tool_choice: &'a Value,
    tools: &'a [Value],
    top_p: Option<f64>,
    truncation: &'static str,
    usage: Option<ResponseUsage>,
    user: Option<&'a str>,
    metadata: &'a Map<String, Value>,
}

/// Where a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    InProgress,
    Completed,
    /// Cut short: `max_output_tokens` or `content_filter`.
    Incomplete(&'static str),
    Failed,
}

impl End {
    fn of(finish: Option<&FinishReason>) -> Self {
        match finish {
            Some(FinishReason::Length) => End::Incomplete("max_output_tokens"),
            Some(FinishReason::ContentFilter) => End::Incomplete("content_filter"),
            _ => End::Completed,
        }
    }

    fn status(self) -> &'static str {
        match self {
            End::InProgress => "in_progress",
            End::Completed => "completed",
            End::Incomplete(_) => "incomplete",
            End::Failed => "failed",
        }
    }

    fn item_status(self) -> ItemStatus {
        match self {
            End::Completed => ItemStatus::Completed,
            End::InProgress => ItemStatus::InProgress,
            End::Incomplete(_) | End::Failed => ItemStatus::Incomplete,
        }
    }
}

impl ResponseShell {
    fn object<'a>(
        &'a self,
        model: &'a str,
        output: &'a [Item],
        end: End,
        usage: Option<&Usage>,
        error: Option<ResponseErrorObject<'a>>,
    ) -> ResponseObject<'a> {
        ResponseObject {
            id: &self.id,
            object: "response",
            created_at: self.created_at,
            status: end.status(),
            background: false,
            error,
            incomplete_details: match end {
                End::Incomplete(reason) => Some(Incomplete { reason }),
                _ => None,
            },
            instructions: self.instructions.as_deref(),
            max_output_tokens: self.max_output_tokens,
            max_tool_calls: None,
            model,
            output,
            parallel_tool_calls: self.parallel_tool_calls,
            previous_response_id: None,
            reasoning: &self.reasoning,
            store: false,
            temperature: self.temperature,
            text: &self.text,
            tool_choice: &self.tool_choice,
            tools: &self.tools,
            top_p: self.top_p,
            truncation: "disabled",
            usage: usage.map(ResponseUsage::from),
            user: self.user.as_deref(),
            metadata: &self.metadata,
        }
    }

    /// The Response object for a complete chat answer (its first choice: the Responses API has no `n`).
    pub fn render(&self, resp: &ChatResponse) -> Vec<u8> {
        let choice = resp.choices.first();
        let end = End::of(choice.and_then(|c| c.finish_reason.as_ref()));
        let output = match choice {
            Some(c) => self.items(&c.message, end.item_status()),
            None => Vec::new(),
        };
        // Serializing owned strings and JSON values cannot fail.
        serde_json::to_vec(&self.object(&resp.model, &output, end, resp.usage.as_ref(), None)).unwrap_or_default()
    }

    fn items(&self, m: &ResponseMessage, status: ItemStatus) -> Vec<Item> {
        let mut out = Vec::new();
        if let Some(r) = m.extra.get(REASONING_KEY).and_then(Value::as_str).filter(|r| !r.is_empty()) {
            out.push(Item::Reasoning {
                id: self.item_id("rs", out.len()),
                summary: Vec::new(),
                content: vec![Part::ReasoningText { text: r.to_string() }],
                status: ItemStatus::Completed,
            });
        }
        let mut parts = Vec::new();
        if let Some(text) = &m.content {
            // A message that only calls tools has no text; an empty answer is still an answer.
            if !text.is_empty() || m.tool_calls.is_none() {
                parts.push(Part::output_text(text.clone()));
            }
        }
        if let Some(r) = m.refusal.as_ref().filter(|r| !r.is_empty()) {
            parts.push(Part::Refusal { refusal: r.clone() });
        }
        if !parts.is_empty() {
            out.push(Item::Message { id: self.item_id("msg", out.len()), status, role: "assistant", content: parts });
        }
        for c in m.tool_calls.iter().flatten() {
            out.push(Item::FunctionCall {
                id: self.item_id("fc", out.len()),
                call_id: c.id.clone(),
                name: c.function.name.clone(),
                arguments: c.function.arguments.clone(),
                status: ItemStatus::Completed,
            });
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------------------
// Streaming: canonical chunks → the Responses event stream
// ---------------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Lifecycle<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    response: ResponseObject<'a>,
}

#[derive(Serialize)]
struct ItemEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    output_index: usize,
    item: &'a Item,
}

#[derive(Serialize)]
struct PartEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    part: &'a Part,
}

/// `response.output_text.delta` / `.done`, `response.refusal.*`, `response.reasoning_text.*`: the text
/// goes under `delta` for deltas and under the part's own key for `.done`.
#[derive(Serialize)]
struct TextEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    content_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<&'a [Value]>,
}

#[derive(Serialize)]
struct ArgsEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    code: Option<&'a str>,
    message: &'a str,
    param: Option<&'a str>,
}

/// The open message item: its index in the output, and where its text and refusal parts are.
#[derive(Debug, Default)]
struct OpenMessage {
    index: usize,
    text: Option<usize>,
    refusal: Option<usize>,
}

/// Encodes one stream of canonical chunks as the Responses event stream for one client: `response.created`
/// and `response.in_progress` at the first chunk, each output item opened (`output_item.added`, then
/// `content_part.added` for text), its deltas, and closed (`.done` events, `output_item.done`) when the
/// next kind of item begins or the stream ends; then `response.completed` (or `response.incomplete`) with
/// the whole Response. A failure becomes an `error` event and `response.failed`. Every event carries the
/// next `sequence_number`, from 0.
#[derive(Debug)]
pub struct ResponsesStreamEncoder {
    shell: ResponseShell,
    seq: u64,
    started: bool,
    finished: bool,
    model: Option<String>,
    items: Vec<Item>,
    reasoning: Option<usize>,
    message: Option<OpenMessage>,
    /// Open function calls: the chunk's tool-call index and the item's index in the output.
    calls: Vec<(u32, usize)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl ResponsesStreamEncoder {
    pub fn new(shell: ResponseShell) -> Self {
        ResponsesStreamEncoder {
            shell,
            seq: 0,
            started: false,
            finished: false,
            model: None,
            items: Vec::new(),
            reasoning: None,
            message: None,
            calls: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    /// The usage the upstream reported so far.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn frame<T: Serialize>(out: &mut Vec<u8>, kind: &str, event: &T) {
        if let Ok(json) = serde_json::to_vec(event) {
            write_named_frame(out, kind, &json);
        }
    }

    fn lifecycle(&mut self, kind: &'static str, end: End, error: Option<ResponseErrorObject<'_>>, out: &mut Vec<u8>) {
        let sequence_number = self.next_seq();
        let model = self.model.as_deref().unwrap_or(&self.shell.model);
        // Items still open when a response fails or is cut are shown as they stand.
        let output: &[Item] = if end == End::InProgress { &[] } else { &self.items };
        let usage = if matches!(end, End::InProgress) { None } else { self.usage.as_ref() };
        let response = self.shell.object(model, output, end, usage, error);
        Self::frame(out, kind, &Lifecycle { kind, sequence_number, response });
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.lifecycle("response.created", End::InProgress, None, out);
        self.lifecycle("response.in_progress", End::InProgress, None, out);
    }

    fn item_event(&mut self, kind: &'static str, index: usize, out: &mut Vec<u8>) {
        let sequence_number = self.next_seq();
        Self::frame(out, kind, &ItemEvent { kind, sequence_number, output_index: index, item: &self.items[index] });
    }

    fn part_event(&mut self, kind: &'static str, index: usize, content_index: usize, out: &mut Vec<u8>) {
        let sequence_number = self.next_seq();
        let (Item::Message { id, content, .. } | Item::Reasoning { id, content, .. }) = &self.items[index] else { return };
        let Some(part) = content.get(content_index) else { return };
        Self::frame(out, kind, &PartEvent { kind, sequence_number, item_id: id, output_index: index, content_index, part });
    }

    /// Opens an item (closing the open items of other kinds first, so items end in output order).
    fn open(&mut self, item: Item, out: &mut Vec<u8>) -> usize {
        let index = self.items.len();
        self.items.push(item);
        self.item_event("response.output_item.added", index, out);
        index
    }

    fn open_part(&mut self, index: usize, part: Part, out: &mut Vec<u8>) -> usize {
        let content_index = match &mut self.items[index] {
            Item::Message { content, .. } | Item::Reasoning { content, .. } => {
                content.push(part);
                content.len() - 1
            }
            Item::FunctionCall { .. } => return 0,
        };
        self.part_event("response.content_part.added", index, content_index, out);
        content_index
    }

    fn text_delta(&mut self, kind: &'static str, index: usize, content_index: usize, delta: &str, out: &mut Vec<u8>) {
        let sequence_number = self.next_seq();
        let (Item::Message { id, content, .. } | Item::Reasoning { id, content, .. }) = &mut self.items[index] else { return };
        if let Some(p) = content.get_mut(content_index) {
            p.text_mut().push_str(delta);
        }
        let logprobs = (kind == "response.output_text.delta").then_some(&[][..]);
        let ev = TextEvent {
            kind,
            sequence_number,
            item_id: id,
            output_index: index,
            content_index,
            delta: Some(delta),
            text: None,
            refusal: None,
            logprobs,
        };
        Self::frame(out, kind, &ev);
    }

    fn text_done(&mut self, index: usize, content_index: usize, out: &mut Vec<u8>) {
        let sequence_number = self.next_seq();
        let (Item::Message { id, content, .. } | Item::Reasoning { id, content, .. }) = &self.items[index] else { return };
        let Some(part) = content.get(content_index) else { return };
        let (kind, text, refusal, logprobs) = match part {
            Part::OutputText { text, .. } => ("response.output_text.done", Some(text.as_str()), None, Some(&[][..])),
            Part::Refusal { refusal } => ("response.refusal.done", None, Some(refusal.as_str()), None),
            Part::ReasoningText { text } => ("response.reasoning_text.done", Some(text.as_str()), None, None),
        };
        let ev = TextEvent { kind, sequence_number, item_id: id, output_index: index, content_index, delta: None, text, refusal, logprobs };
        Self::frame(out, kind, &ev);
        self.part_event("response.content_part.done", index, content_index, out);
    }

    fn close_reasoning(&mut self, out: &mut Vec<u8>) {
        if let Some(index) = self.reasoning.take() {
            self.text_done(index, 0, out);
            self.items[index].set_status(ItemStatus::Completed);
            self.item_event("response.output_item.done", index, out);
        }
    }

    fn close_message(&mut self, status: ItemStatus, out: &mut Vec<u8>) {
        if let Some(m) = self.message.take() {
            let mut parts: Vec<usize> = m.text.into_iter().chain(m.refusal).collect();
            parts.sort_unstable();
            for p in parts {
                self.text_done(m.index, p, out);
            }
            self.items[m.index].set_status(status);
            self.item_event("response.output_item.done", m.index, out);
        }
    }

    fn close_calls(&mut self, out: &mut Vec<u8>) {
        for (_, index) in std::mem::take(&mut self.calls) {
            let sequence_number = self.next_seq();
            if let Item::FunctionCall { id, name, arguments, .. } = &self.items[index] {
                let kind = "response.function_call_arguments.done";
                let ev = ArgsEvent {
                    kind,
                    sequence_number,
                    item_id: id,
                    output_index: index,
                    delta: None,
                    arguments: Some(arguments),
                    name: Some(name),
                };
                Self::frame(out, kind, &ev);
            }
            self.items[index].set_status(ItemStatus::Completed);
            self.item_event("response.output_item.done", index, out);
        }
    }

    fn message_index(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(m) = &self.message {
            return m.index;
        }
        self.close_reasoning(out);
        self.close_calls(out);
        let id = self.shell.item_id("msg", self.items.len());
        let index = self.open(Item::Message { id, status: ItemStatus::InProgress, role: "assistant", content: Vec::new() }, out);
        self.message = Some(OpenMessage { index, ..OpenMessage::default() });
        index
    }

    fn on_text(&mut self, delta: &str, out: &mut Vec<u8>) {
        let index = self.message_index(out);
        let part = match self.message.as_ref().and_then(|m| m.text) {
            Some(p) => p,
            None => {
                let p = self.open_part(index, Part::output_text(String::new()), out);
                if let Some(m) = &mut self.message {
                    m.text = Some(p);
                }
                p
            }
        };
        self.text_delta("response.output_text.delta", index, part, delta, out);
    }

    fn on_refusal(&mut self, delta: &str, out: &mut Vec<u8>) {
        let index = self.message_index(out);
        let part = match self.message.as_ref().and_then(|m| m.refusal) {
            Some(p) => p,
            None => {
                let p = self.open_part(index, Part::Refusal { refusal: String::new() }, out);
                if let Some(m) = &mut self.message {
                    m.refusal = Some(p);
                }
                p
            }
        };
        self.text_delta("response.refusal.delta", index, part, delta, out);
    }

    fn on_reasoning(&mut self, delta: &str, out: &mut Vec<u8>) {
        let index = match self.reasoning {
            Some(i) => i,
            None => {
                self.close_message(ItemStatus::Completed, out);
                self.close_calls(out);
                let id = self.shell.item_id("rs", self.items.len());
                let i = self.open(Item::Reasoning { id, summary: Vec::new(), content: Vec::new(), status: ItemStatus::InProgress }, out);
                self.open_part(i, Part::ReasoningText { text: String::new() }, out);
                self.reasoning = Some(i);
                i
            }
        };
        self.text_delta("response.reasoning_text.delta", index, 0, delta, out);
    }

    fn on_tool_call(&mut self, d: &crate::types::ToolCallDelta, out: &mut Vec<u8>) {
        let open = self.calls.iter().find(|(i, _)| *i == d.index).map(|(_, at)| *at);
        let index = match open {
            Some(at) => at,
            None => {
                self.close_reasoning(out);
                self.close_message(ItemStatus::Completed, out);
                let f = d.function.as_ref();
                let id = self.shell.item_id("fc", self.items.len());
                let item = Item::FunctionCall {
                    id,
                    call_id: d.id.clone().unwrap_or_default(),
                    name: f.and_then(|f| f.name.clone()).unwrap_or_default(),
                    arguments: String::new(),
                    status: ItemStatus::InProgress,
                };
                let at = self.open(item, out);
                self.calls.push((d.index, at));
                // The first fragment's arguments, if any, follow as a delta.
                if let Some(args) = f.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
                    self.args_delta(at, args, out);
                }
                return;
            }
        };
        if let Some(args) = d.function.as_ref().and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
            self.args_delta(index, args, out);
        }
    }

    fn args_delta(&mut self, index: usize, delta: &str, out: &mut Vec<u8>) {
        let sequence_number = self.next_seq();
        if let Item::FunctionCall { id, arguments, .. } = &mut self.items[index] {
            arguments.push_str(delta);
            let kind = "response.function_call_arguments.delta";
            let ev = ArgsEvent { kind, sequence_number, item_id: id, output_index: index, delta: Some(delta), arguments: None, name: None };
            Self::frame(out, kind, &ev);
        }
    }

    /// Appends the events one canonical chunk makes.
    pub fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        if self.model.is_none() && !chunk.model.is_empty() {
            self.model = Some(chunk.model);
        }
        // The Responses API has no `n`: the first choice is the answer.
        let Some(choice) = chunk.choices.into_iter().find(|c| c.index == 0) else {
            return;
        };
        self.start(out);
        let delta = choice.delta;
        if let Some(r) = delta.extra.get(REASONING_KEY).and_then(Value::as_str).filter(|r| !r.is_empty()) {
            self.on_reasoning(r, out);
        }
        if let Some(t) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            self.on_text(t, out);
        }
        if let Some(r) = delta.refusal.as_deref().filter(|r| !r.is_empty()) {
            self.on_refusal(r, out);
        }
        for d in delta.tool_calls.iter().flatten() {
            self.on_tool_call(d, out);
        }
        if choice.finish_reason.is_some() {
            self.finish = choice.finish_reason;
        }
    }

    /// The stream ended well: every open item is closed, then `response.completed` (or
    /// `response.incomplete` when the answer was cut by `max_output_tokens` or a content filter).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.start(out);
        self.finished = true;
        let end = End::of(self.finish.as_ref());
        self.close_reasoning(out);
        self.close_message(end.item_status(), out);
        self.close_calls(out);
        let kind = if matches!(end, End::Incomplete(_)) { "response.incomplete" } else { "response.completed" };
        self.lifecycle(kind, end, None, out);
    }

    /// The stream failed: an `error` event, then `response.failed` with what was produced so far (its open
    /// items `incomplete`). If nothing was sent yet the stream still begins with `response.created`, which
    /// the SDK's stream helper requires first.
    pub fn fail(&mut self, err: &ErrorBody<'_>, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.start(out);
        self.finished = true;
        let sequence_number = self.next_seq();
        Self::frame(out, "error", &ErrorEvent { kind: "error", sequence_number, code: err.code, message: err.message, param: err.param });
        for item in &mut self.items {
            if matches!(
                item,
                Item::Reasoning { status: ItemStatus::InProgress, .. }
                    | Item::Message { status: ItemStatus::InProgress, .. }
                    | Item::FunctionCall { status: ItemStatus::InProgress, .. }
            ) {
                item.set_status(ItemStatus::Incomplete);
            }
        }
        // The Response's error code is one of OpenAI's set; the gateway's own code went in the error event.
        let limited = err.code.is_some_and(|c| c.contains("rate_limit")) || err.kind.contains("rate_limit");
        let code = if limited { "rate_limit_exceeded" } else { "server_error" };
        self.lifecycle("response.failed", End::Failed, Some(ResponseErrorObject { code, message: err.message }), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::StreamDecoder;
    use crate::spec::{ProviderKind, ResponseCtx, StreamEvent};
    use serde_json::json;

    const ID: &str = "resp_abc123";

    fn translate(body: Value) -> Result<(ChatRequest, ResponseShell), RequestError> {
        let req: ResponsesRequest = serde_json::from_value(body).unwrap();
        to_chat(req, ID.into(), 1_700_000_000)
    }

    fn chat_json(body: Value) -> Value {
        serde_json::to_value(translate(body).unwrap().0).unwrap()
    }

    fn err(body: Value) -> RequestError {
        translate(body).unwrap_err()
    }

    #[test]
    fn a_string_input_is_one_user_message_and_instructions_the_system_prompt() {
        let c = chat_json(json!({"model": "m", "input": "hello", "instructions": "be brief", "max_output_tokens": 20,
            "temperature": 0.5, "top_p": 0.9, "user": "u1", "fallbacks": ["b/x"], "service_tier": "flex"}));
        assert_eq!(c["messages"], json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]));
        assert_eq!((c["max_completion_tokens"].clone(), c["temperature"].clone(), c["top_p"].clone()), (json!(20), json!(0.5), json!(0.9)));
        assert_eq!(c["user"], "u1");
        // Unknown fields pass through as on chat; the gateway's own never go upstream.
        assert_eq!(c["service_tier"], "flex");
        assert!(c.get("fallbacks").is_none() && c.get("stream").is_none() && c.get("store").is_none());
        let (chat, _) = translate(json!({"model": "m", "input": "hi", "fallbacks": ["b/x"]})).unwrap();
        assert_eq!(chat.fallbacks, Some(vec!["b/x".to_string()]));
    }

    #[test]
    fn an_agent_turn_becomes_the_canonical_conversation() {
        let body: Value = serde_json::from_str(include_str!("../../tests/fixtures/responses/request_agent_turn.json")).unwrap();
        let (chat, shell) = translate(body).unwrap();
        let c = serde_json::to_value(&chat).unwrap();
        assert_eq!(
            c["messages"],
            json!([
                {"role": "system", "content": "You are a travel assistant. Use get_weather for current conditions."},
                {"role": "user", "content": "What's the weather in Paris? Here is the map."},
                {"role": "user", "content": [{"type": "text", "text": "The map:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}}]},
                // The reasoning item is left out; the assistant's text and its call are one message.
                {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "call_Xy12", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "content": "{\"temp_c\":18,\"sky\":\"sunny\"}", "tool_call_id": "call_Xy12"}
            ])
        );
        assert_eq!(c["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(c["tools"][0]["function"]["strict"], true);
        assert_eq!(c["tools"][0]["function"]["parameters"]["required"], json!(["city"]));
        assert_eq!((c["tool_choice"].clone(), c["parallel_tool_calls"].clone()), (json!("auto"), json!(false)));
        assert_eq!((c["reasoning_effort"].clone(), c["verbosity"].clone()), (json!("low"), json!("low")));
        assert_eq!(c["stream"], true);
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
        for gone in ["include", "store", "metadata", "reasoning", "text", "input", "instructions"] {
            assert!(c.get(gone).is_none(), "{gone} must not reach the canonical request");
        }
        assert!(chat.response_format.is_none(), "text.format text needs no response_format");
        assert_eq!(shell.metadata.get("session"), Some(&json!("s-42")));
    }

    #[test]
    fn calls_without_a_preceding_answer_open_an_assistant_message_and_outputs_may_be_parts() {
        let c = chat_json(json!({"model": "m", "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": {"x": 1}},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "one"}]},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"},
                {"type": "input_image", "image_url": "https://x/y.png"}]}
        ]}));
        let m = &c["messages"];
        assert_eq!(m[1]["role"], "assistant");
        assert!(m[1].get("content").is_none());
        assert_eq!(m[1]["tool_calls"][1]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(m[2], json!({"role": "tool", "content": "one", "tool_call_id": "c1"}));
        assert_eq!(m[3]["content"][1]["image_url"]["url"], "https://x/y.png");
    }

    #[test]
    fn file_parts_and_refusals() {
        let c = chat_json(json!({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "developer", "content": [{"type": "input_text", "text": "rules"}]}
        ]}));
        assert_eq!(
            c["messages"][0]["content"][0],
            json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}})
        );
        assert_eq!((c["messages"][1]["content"].clone(), c["messages"][1]["refusal"].clone()), (json!(""), json!("no")));
        assert_eq!(c["messages"][2], json!({"role": "developer", "content": "rules"}));
    }

    #[test]
    fn text_format_and_tool_choice_forms() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        let c = chat_json(json!({"model": "m", "input": "x",
            "text": {"format": {"type": "json_schema", "name": "num", "schema": schema, "strict": true}}}));
        assert_eq!(c["response_format"], json!({"type": "json_schema", "json_schema": {"name": "num", "schema": schema, "strict": true}}));
        let c = chat_json(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}));
        assert_eq!(c["response_format"], json!({"type": "json_object"}));

        let tools = json!([{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]);
        let c = chat_json(json!({"model": "m", "input": "x", "tools": tools, "tool_choice": {"type": "function", "name": "b"}}));
        assert_eq!(c["tool_choice"], json!({"type": "function", "function": {"name": "b"}}));
        let c = chat_json(json!({"model": "m", "input": "x", "tools": tools,
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"}]}}));
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(c["tools"].as_array().map(Vec::len), Some(1), "allowed_tools narrows the tools");
        let e = err(json!({"model": "m", "input": "x", "tools": tools, "tool_choice": {"type": "function", "name": "zz"}}));
        assert_eq!(e.param.as_deref(), Some("tool_choice.name"));
    }

    #[test]
    fn what_the_gateway_cannot_honour_is_a_400_naming_the_field() {
        let cases = [
            (json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}), "previous_response_id", "previous_response_not_found"),
            (json!({"model": "m", "input": "x", "conversation": "conv_1"}), "conversation", "unsupported_parameter"),
            (json!({"model": "m", "input": "x", "background": true}), "background", "unsupported_parameter"),
            (json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}), "tools[0].type", "unsupported_parameter"),
            (json!({"model": "m", "input": "x", "tool_choice": {"type": "file_search"}}), "tool_choice.type", "unsupported_parameter"),
            (json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}), "input[0]", "unsupported_parameter"),
            (json!({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]}), "input[0].type", "unsupported_parameter"),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}),
                "input[0].content[0].file_id",
                "unsupported_parameter",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]}),
                "input[0].content[0].file_url",
                "unsupported_parameter",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
                "input[0].content[0].text",
                "invalid_request",
            ),
            (json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}), "input[0].role", "invalid_request"),
            (json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}), "input[0].call_id", "invalid_request"),
            (
                json!({"model": "m", "input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}),
                "input[0].name",
                "invalid_request",
            ),
            (json!({"model": "m", "input": []}), "input", "invalid_request"),
            (json!({"model": "m"}), "input", "invalid_request"),
            (json!({"model": "m", "input": 3}), "input", "invalid_request"),
            (
                json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}),
                "text.format.schema",
                "invalid_request",
            ),
            (json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}), "text.format.type", "invalid_request"),
            (
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": "no"}]}),
                "tools[0].parameters",
                "invalid_request",
            ),
            (json!({"model": "m", "input": "x", "top_logprobs": 3}), "top_logprobs", "unsupported_parameter"),
        ];
        for (body, param, code) in cases {
            let e = err(body.clone());
            assert_eq!((e.param.as_deref(), e.code), (Some(param), code), "{body}: {e}");
            assert!(!e.message.is_empty());
        }
        assert!(err(json!({"model": "m", "input": "x", "previous_response_id": "resp_9"})).message.contains("resp_9"));
        // A null where a value is optional is no value.
        assert!(translate(json!({"model": "m", "input": "x", "previous_response_id": null, "conversation": null, "prompt": null})).is_ok());
    }

    fn shell(body: Value) -> ResponseShell {
        translate(body).unwrap().1
    }

    fn chat_response(message: Value, finish: &str, usage: Value) -> ChatResponse {
        serde_json::from_value(json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "gpt-x",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}))
        .unwrap()
    }

    #[test]
    fn a_text_answer_renders_as_a_completed_response() {
        let s = shell(json!({"model": "openai/gpt-x", "input": "hi", "metadata": {"k": "v"}, "instructions": "brief"}));
        let u = json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10, "prompt_tokens_details": {"cached_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 1}});
        let r: Value =
            serde_json::from_slice(&s.render(&chat_response(json!({"role": "assistant", "content": "echo: hi"}), "stop", u))).unwrap();
        assert_eq!((r["id"].clone(), r["object"].clone(), r["created_at"].clone()), (json!(ID), json!("response"), json!(1_700_000_000)));
        assert_eq!((r["status"].clone(), r["model"].clone(), r["error"].clone()), (json!("completed"), json!("gpt-x"), Value::Null));
        assert_eq!(r["incomplete_details"], Value::Null);
        assert_eq!(
            r["output"],
            json!([{"type": "message", "id": "msg_abc123_0", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "echo: hi", "annotations": [], "logprobs": []}]}])
        );
        assert_eq!(
            r["usage"],
            json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0}, "output_tokens": 3,
                "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 10})
        );
        assert_eq!(
            (r["metadata"].clone(), r["instructions"].clone(), r["store"].clone()),
            (json!({"k": "v"}), json!("brief"), json!(false))
        );
        assert_eq!(
            (r["tool_choice"].clone(), r["tools"].clone(), r["parallel_tool_calls"].clone()),
            (json!("auto"), json!([]), json!(true))
        );
        assert_eq!(r["text"], json!({"format": {"type": "text"}}));
    }

    #[test]
    fn calls_reasoning_and_a_cut_answer() {
        let s = shell(json!({"model": "m", "input": "hi", "max_output_tokens": 16}));
        let msg = json!({"role": "assistant", "content": null, "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                           {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]});
        let r: Value = serde_json::from_slice(&s.render(&chat_response(msg, "tool_calls", json!(null)))).unwrap();
        let out = r["output"].as_array().unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0],
            json!({"type": "reasoning", "id": "rs_abc123_0", "summary": [], "status": "completed",
            "content": [{"type": "reasoning_text", "text": "think"}]})
        );
        assert_eq!(
            out[1],
            json!({"type": "function_call", "id": "fc_abc123_1", "call_id": "call_1", "name": "f",
            "arguments": "{\"a\":1}", "status": "completed"})
        );
        assert_eq!(out[2]["call_id"], "call_2");
        assert_eq!((r["status"].clone(), r["usage"].clone()), (json!("completed"), Value::Null));

        let r: Value =
            serde_json::from_slice(&s.render(&chat_response(json!({"role": "assistant", "content": "a b"}), "length", json!(null))))
                .unwrap();
        assert_eq!((r["status"].clone(), r["incomplete_details"].clone()), (json!("incomplete"), json!({"reason": "max_output_tokens"})));
        assert_eq!(r["output"][0]["status"], "incomplete");
        assert_eq!(r["max_output_tokens"], 16);
    }

    // ---- streams ----

    /// The frames of an encoded stream: (event name, data).
    fn frames(bytes: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.ends_with("\n\n") && !text.contains("[DONE]"), "a Responses stream has no [DONE]: {text}");
        text.split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (ev, data) = f.split_once('\n').unwrap();
                let ev = ev.strip_prefix("event: ").unwrap().to_string();
                let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], json!(ev), "the event name repeats the data's type");
                (ev, data)
            })
            .collect()
    }

    /// Replays the events as the SDK's `ResponseStreamState` does and checks what it checks: `response.created`
    /// first, sequence numbers in order, content only for an item already added, no output index added
    /// twice, every added item done before `response.completed`, deltas adding up to the `.done` texts and
    /// the final Response holding exactly the items that were done. Returns the final Response.
    fn replay(events: &[(String, Value)]) -> Value {
        assert_eq!(events[0].0, "response.created");
        assert_eq!(events[0].1["response"]["output"], json!([]));
        let mut added: std::collections::BTreeMap<u64, Value> = Default::default();
        let mut done: std::collections::BTreeMap<u64, Value> = Default::default();
        let mut last = None;
        for (n, (ev, d)) in events.iter().enumerate() {
            assert_eq!(d["sequence_number"], json!(n), "sequence numbers count from 0 without gaps");
            let idx = d["output_index"].as_u64();
            match ev.as_str() {
                "response.output_item.added" => {
                    assert!(added.insert(idx.unwrap(), d["item"].clone()).is_none(), "output index added twice");
                }
                "response.content_part.added" => {
                    let item = added.get_mut(&idx.unwrap()).expect("a part for an item not added");
                    item["content"].as_array_mut().unwrap().push(d["part"].clone());
                    assert_eq!(d["item_id"], item["id"]);
                }
                "response.output_text.delta" | "response.reasoning_text.delta" | "response.refusal.delta" => {
                    let item = added.get_mut(&idx.unwrap()).expect("a delta for an item not added");
                    let part = &mut item["content"][d["content_index"].as_u64().unwrap() as usize];
                    let key = if ev == "response.refusal.delta" { "refusal" } else { "text" };
                    let text = format!("{}{}", part[key].as_str().unwrap(), d["delta"].as_str().unwrap());
                    part[key] = json!(text);
                }
                "response.output_text.done" | "response.reasoning_text.done" => {
                    let item = &added[&idx.unwrap()];
                    assert_eq!(item["content"][d["content_index"].as_u64().unwrap() as usize]["text"], d["text"]);
                }
                "response.function_call_arguments.delta" => {
                    let item = added.get_mut(&idx.unwrap()).expect("arguments for an item not added");
                    assert_eq!(item["type"], "function_call");
                    let args = format!("{}{}", item["arguments"].as_str().unwrap(), d["delta"].as_str().unwrap());
                    item["arguments"] = json!(args);
                }
                "response.function_call_arguments.done" => assert_eq!(added[&idx.unwrap()]["arguments"], d["arguments"]),
                "response.output_item.done" => {
                    let i = idx.unwrap();
                    assert_eq!(added[&i]["id"], d["item"]["id"]);
                    assert_eq!(added[&i]["content"], d["item"]["content"], "the done item holds what the deltas built");
                    assert!(done.insert(i, d["item"].clone()).is_none());
                }
                "response.completed" | "response.incomplete" => {
                    assert_eq!(added.len(), done.len(), "every added item is done before the end");
                    assert_eq!(d["response"]["output"], json!(done.values().cloned().collect::<Vec<_>>()));
                    last = Some(d["response"].clone());
                }
                "response.failed" => last = Some(d["response"].clone()),
                _ => {}
            }
        }
        last.expect("the stream has a final lifecycle event")
    }

    fn decode(kind: ProviderKind, body: &[u8]) -> Vec<ChatChunk> {
        let ctx = ResponseCtx { id: "chatcmpl-gw", created: 1, model: "fallback" };
        let mut d = StreamDecoder::new(kind, ctx);
        let mut out = Vec::new();
        d.feed(body, &mut out).unwrap();
        d.finish(&mut out).unwrap();
        out.into_iter()
            .filter_map(|e| match e {
                StreamEvent::Chunk(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn encode_all(s: ResponseShell, chunks: Vec<ChatChunk>) -> Vec<(String, Value)> {
        let mut e = ResponsesStreamEncoder::new(s);
        let mut out = Vec::new();
        for c in chunks {
            e.encode(c, &mut out);
        }
        e.finish(&mut out);
        e.finish(&mut out);
        assert!(e.is_finished());
        frames(&out)
    }

    #[test]
    fn an_upstream_text_stream_becomes_the_full_event_sequence() {
        let chunks = decode(ProviderKind::Anthropic, include_bytes!("../../tests/fixtures/anthropic/stream_text.sse"));
        let events = encode_all(shell(json!({"model": "anthropic/claude", "input": "hi", "stream": true})), chunks);
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).filter(|e| *e != "response.output_text.delta").collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        assert!(events.iter().filter(|(e, _)| e == "response.output_text.delta").count() > 1);
        let r = replay(&events);
        assert_eq!(r["status"], "completed");
        assert!(r["usage"]["input_tokens"].as_u64().unwrap() > 0 && r["usage"]["output_tokens"].as_u64().unwrap() > 0);
        assert_eq!(r["model"], events[0].1["response"]["model"], "one model name throughout");
        assert_eq!(events[2].1["item"]["status"], "in_progress");
    }

    #[test]
    fn parallel_streamed_calls_become_function_call_items() {
        let chunks = decode(ProviderKind::OpenAi, include_bytes!("../../tests/fixtures/openai/stream_tools.sse"));
        let events = encode_all(shell(json!({"model": "openai/gpt-4o", "input": "hi", "stream": true})), chunks);
        let r = replay(&events);
        let out = r["output"].as_array().unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0]["call_id"].clone(), out[0]["name"].clone()), (json!("call_4XzlQ1"), json!("get_weather")));
        assert_eq!(out[0]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(out[1]["call_id"], "call_9QpLm2");
        let done: Vec<&Value> = events.iter().filter(|(e, _)| e == "response.function_call_arguments.done").map(|(_, d)| d).collect();
        assert_eq!(done.len(), 2);
        assert_eq!(done[0]["name"], "get_weather");
    }

    fn chunk(delta: Value, finish: Option<&str>) -> ChatChunk {
        serde_json::from_value(json!({"id": "c", "model": "gpt-x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
            .unwrap()
    }

    #[test]
    fn reasoning_then_text_then_a_call_close_in_order_and_a_cut_stream_is_incomplete() {
        let chunks = vec![
            chunk(json!({"reasoning_content": "hmm "}), None),
            chunk(json!({"reasoning_content": "ok"}), None),
            chunk(json!({"content": "Sure: "}), None),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": "{\"x\""}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}), None),
            chunk(json!({}), Some("length")),
        ];
        let events = encode_all(shell(json!({"model": "m", "input": "hi", "stream": true})), chunks);
        let r = replay(&events);
        assert_eq!(events.last().unwrap().0, "response.incomplete");
        assert_eq!((r["status"].clone(), r["incomplete_details"].clone()), (json!("incomplete"), json!({"reason": "max_output_tokens"})));
        let out = r["output"].as_array().unwrap();
        assert_eq!(out.iter().map(|i| i["type"].as_str().unwrap()).collect::<Vec<_>>(), ["reasoning", "message", "function_call"]);
        assert_eq!(out[0]["content"][0]["text"], "hmm ok");
        assert_eq!(out[1]["content"][0]["text"], "Sure: ");
        assert_eq!(out[2]["arguments"], "{\"x\":1}");
    }

    #[test]
    fn a_stream_that_fails_ends_with_an_error_event_and_response_failed() {
        let err = ErrorBody { message: "upstream reset", kind: "upstream_error", param: None, code: Some("stream_interrupted") };
        let mut e = ResponsesStreamEncoder::new(shell(json!({"model": "m", "input": "hi", "stream": true})));
        let mut out = Vec::new();
        e.encode(chunk(json!({"content": "partial"}), None), &mut out);
        e.fail(&err, &mut out);
        e.finish(&mut out);
        let events = frames(&out);
        let r = replay(&events);
        let n = events.len();
        assert_eq!(
            events[n - 2].1,
            json!({"type": "error", "sequence_number": n - 2, "code": "stream_interrupted",
            "message": "upstream reset", "param": null})
        );
        assert_eq!(events[n - 1].0, "response.failed");
        assert_eq!(
            (r["status"].clone(), r["error"].clone()),
            (json!("failed"), json!({"code": "server_error", "message": "upstream reset"}))
        );
        assert_eq!(r["output"][0]["status"], "incomplete");
        assert_eq!(r["output"][0]["content"][0]["text"], "partial");

        // Failing before anything was sent still opens with response.created, as the SDK requires.
        let limited = ErrorBody { message: "slow down", kind: "rate_limit_error", param: None, code: Some("rate_limited") };
        let mut e = ResponsesStreamEncoder::new(shell(json!({"model": "openai/m", "input": "hi", "stream": true})));
        let mut out = Vec::new();
        e.fail(&limited, &mut out);
        let events = frames(&out);
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(names, ["response.created", "response.in_progress", "error", "response.failed"]);
        assert_eq!(events[3].1["response"]["error"]["code"], "rate_limit_exceeded");
        assert_eq!(events[0].1["response"]["model"], "openai/m", "the asked-for model until an upstream names one");
    }

    #[test]
    fn an_empty_stream_still_completes() {
        let events = encode_all(shell(json!({"model": "m", "input": "hi"})), Vec::new());
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(names, ["response.created", "response.in_progress", "response.completed"]);
        assert_eq!(replay(&events)["output"], json!([]));
    }

    #[test]
    fn response_ids_come_from_the_seed() {
        assert_eq!(response_id("chatcmpl-Ab12cd"), "resp_Ab12cd");
        assert_eq!(response_id("x_y"), "resp_xy");
    }
}
