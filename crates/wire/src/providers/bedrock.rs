//! AWS Bedrock Runtime codec: canonical (OpenAI-shaped) chat requests to the Converse API
//! (`POST {base}/model/{modelId}/converse`, and `/converse-stream` for streams, whose answer is the AWS
//! event-stream binary framing), Titan and Cohere embeddings through InvokeModel, and Bedrock's
//! responses, errors and stream events back to canonical types.
//!
//! Converse is one API over every model family Bedrock hosts, so this one module serves Claude, Llama,
//! Mistral, Nova and the rest; what differs per model (extra parameters) travels in
//! `additionalModelRequestFields`. The model id (or inference-profile id, or ARN) is a path segment,
//! percent-encoded whole (`:` → `%3A`, `/` → `%2F`), and signed double-encoded (see [`crate::sigv4`]).
//! Authentication: a Bedrock API key is `Authorization: Bearer` (added here); AWS credentials are signed
//! after the build by `codec::authorize`, which must see the final body.
//!
//! Where the two APIs cannot be mapped one to one, the choices are:
//! - System and developer messages, wherever they appear, are hoisted in order into `system` (text
//!   blocks). Tool results become `toolResult` blocks in a user turn; turns of the same role are merged;
//!   empty texts and messages left empty are dropped (Converse rejects blank text blocks).
//! - Images go only as bytes (`accepts_image_urls` is false, so the engine fetches http(s) URLs under its
//!   SSRF guard and inlines them first); png, jpeg, gif and webp. `file` parts with `file_data` become
//!   `document` blocks (pdf, csv, doc, docx, xls, xlsx, html, txt, md), named from the filename in the
//!   characters Bedrock allows; a `file_id` is refused (Bedrock has no files API).
//! - Tool-call ids from other providers are made to fit Bedrock's `[a-zA-Z0-9_.:-]{1,64}` the same way on
//!   the call and its result. A conversation that holds tool calls but no `tools` gets minimal specs
//!   for the tools it names, since Converse refuses `toolUse` blocks without a `toolConfig`.
//! - `tool_choice`: `auto` → `{"auto":{}}`, `required` → `{"any":{}}`, a function → `{"tool":{"name"}}`.
//!   Converse has no `none`: the tools are left out, unless the history uses them (then they are sent
//!   with no choice, and the model may still call one). `parallel_tool_calls` has no knob and is ignored.
//! - `response_format` `json_object` / `json_schema`: Converse has no JSON mode on every model, so it is
//!   emulated with a tool named [`JSON_TOOL`] whose input schema is the caller's schema (any object for
//!   `json_object`) and a `toolChoice` that forces it (`any` when the caller has tools of its own, so they
//!   stay callable). The forced call's input becomes the message content and the finish reason `stop`,
//!   streams included (its `toolUse` input deltas become content deltas). Because the tool's name marks
//!   it, the response side needs no memory of the request.
//! - Refused with [`WireError::Unsupported`] (a 400 for the caller): `temperature` or `top_p` outside 0..=1,
//!   `n > 1`, content parts Converse cannot take, tool-call arguments that are not a JSON object.
//! - Passed in `additionalModelRequestFields`: the caller's `top_k` and `thinking` (Claude's reasoning),
//!   and the keys of a caller-sent `additionalModelRequestFields` object. A caller's `guardrailConfig` and
//!   `performanceConfig` go through as they are. Dropped silently: `seed`, penalties, `user`, `logprobs`.
//! - Usage: `prompt_tokens` is `inputTokens` plus cache reads and writes (Bedrock, like Anthropic, counts
//!   cached input apart), cache reads are `cached_tokens`, cache writes `cache_write_tokens`.
//! - Stop reasons: `end_turn`/`stop_sequence` → `stop`, `max_tokens`/`model_context_window_exceeded` →
//!   `length`, `tool_use` → `tool_calls`, `guardrail_intervened`/`content_filtered` → `content_filter`;
//!   anything else (`malformed_model_output`, `malformed_tool_use`) is kept as Bedrock's word.
//! - Reasoning (`reasoningContent`) comes back as `reasoning_content`, as in the Anthropic codec.
//! - Errors: the shape name (`x-amzn-ErrorType`, else the body's `__type`, else the status's usual shape)
//!   is the error's kind and code; in-stream `:message-type: exception` frames become in-stream errors
//!   with the status their shape stands for.
//!
//! Embeddings go through InvokeModel with the model's own body: Titan text embeddings take one
//! `inputText` per request (so a list of inputs is one request each), Cohere takes up to 96 `texts` with
//! an `input_type` (`search_document` unless the caller sends one).

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{UpstreamError, WireError};
use crate::eventstream::{self, EventStreamError};
use crate::image::{is_http_url, parse_data_url};
use crate::sigv4::uri_encode;
use crate::spec::{Endpoint, ResponseCtx, StreamEvent, WireRequest};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta, EmbeddingsRequest, EmbeddingsResponse, Extra,
    FinishReason, FunctionCall, FunctionCallDelta, Message, ResponseMessage, Role, ToolCall, ToolCallDelta, ToolChoice, Usage,
};

/// SigV4 signing name of Bedrock Runtime (its endpoint prefix is `bedrock-runtime`).
pub const SERVICE: &str = "bedrock";
/// The tool that carries `response_format` emulation. Its calls are the answer's content, never tool calls.
pub const JSON_TOOL: &str = "switchyard_json_output";
/// Cohere's per-request limit on texts.
const COHERE_MAX_TEXTS: usize = 96;
/// The field OpenAI-compatible reasoning servers use for a model's thinking text.
const REASONING_FIELD: &str = "reasoning_content";

/// The model id as one path segment: everything but unreserved characters percent-encoded, as botocore
/// sends it (`anthropic.claude-3-5-haiku-20241022-v1:0` → `…v1%3A0`, an ARN's `/` → `%2F`).
pub fn model_segment(model: &str) -> String {
    uri_encode(model)
}

// ---------------------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseBody<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock<'a>>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    inference_config: InferenceConfig<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    additional_model_request_fields: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guardrail_config: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    performance_config: Option<&'a Value>,
}

#[derive(Serialize)]
struct SystemBlock<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// A content block: a union object with exactly one key.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'a> {
    Text(&'a str),
    Image(ImageBlock<'a>),
    Document(DocumentBlock<'a>),
    ToolUse(ToolUseBlock<'a>),
    ToolResult(ToolResultBlock<'a>),
}

#[derive(Serialize)]
struct ImageBlock<'a> {
    format: &'static str,
    source: BytesSource<'a>,
}

/// A blob, which JSON carries as base64: the caller's base64 text is passed as it is.
#[derive(Serialize)]
struct BytesSource<'a> {
    bytes: &'a str,
}

#[derive(Serialize)]
struct DocumentBlock<'a> {
    format: &'static str,
    name: String,
    source: BytesSource<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseBlock<'a> {
    tool_use_id: Cow<'a, str>,
    name: &'a str,
    input: Cow<'a, RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResultBlock<'a> {
    tool_use_id: Cow<'a, str>,
    content: Vec<Block<'a>>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none() && self.temperature.is_none() && self.top_p.is_none() && self.stop_sequences.is_empty()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    tools: Vec<ToolEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceBody<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolEntry<'a> {
    tool_spec: ToolSpec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: InputSchema<'a>,
}

#[derive(Serialize)]
struct InputSchema<'a> {
    json: Cow<'a, Value>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolChoiceBody<'a> {
    Auto(Empty),
    Any(Empty),
    Tool(NamedTool<'a>),
}

#[derive(Serialize)]
struct NamedTool<'a> {
    name: &'a str,
}

pub fn build_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    check_unsupported(req)?;
    let conv = convert_messages(&req.messages)?;
    let tool_config = convert_tools(req, &conv.tools_used)?;
    let mut additional = Map::new();
    for field in ["top_k", "thinking"] {
        if let Some(v) = req.extra.get(field).filter(|v| !v.is_null()) {
            additional.insert(field.to_string(), v.clone());
        }
    }
    match req.extra.get("additionalModelRequestFields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => additional.extend(o.iter().map(|(k, v)| (k.clone(), v.clone()))),
        Some(_) => {
            return Err(WireError::unsupported("additionalModelRequestFields must be a JSON object", Some("additionalModelRequestFields")))
        }
    }
    let body = ConverseBody {
        system: conv.system,
        messages: conv.turns,
        inference_config: InferenceConfig {
            max_tokens: req.max_output_tokens().or(ep.options.default_max_tokens),
            temperature: req.temperature,
            top_p: req.top_p,
            stop_sequences: req.stop.as_ref().map_or_else(Vec::new, |s| match s {
                crate::types::Stop::One(one) => vec![one.as_str()],
                crate::types::Stop::Many(many) => many.iter().map(String::as_str).collect(),
            }),
        },
        tool_config,
        additional_model_request_fields: additional,
        guardrail_config: req.extra.get("guardrailConfig").filter(|v| v.is_object()),
        performance_config: req.extra.get("performanceConfig").filter(|v| v.is_object()),
    };
    let body = serde_json::to_vec(&body).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))?;
    let op = if req.is_stream() { "converse-stream" } else { "converse" };
    let url = format!("{}/model/{}/{op}", ep.base_url, model_segment(model));
    Ok(with_auth(WireRequest::post_json(url, body), ep))
}

/// A Bedrock API key goes as a Bearer token; AWS credentials are signed later (`codec::authorize`).
fn with_auth(mut r: WireRequest, ep: &Endpoint<'_>) -> WireRequest {
    if let Some(k) = ep.api_key() {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    r.with_extra_headers(ep)
}

fn check_unsupported(req: &ChatRequest) -> Result<(), WireError> {
    for (name, v) in [("temperature", req.temperature), ("top_p", req.top_p)] {
        if let Some(t) = v.filter(|t| !(0.0..=1.0).contains(t)) {
            return Err(WireError::unsupported(format!("{name} {t} is outside bedrock's range of 0 to 1"), Some(name)));
        }
    }
    if let Some(n) = req.n.filter(|&n| n > 1) {
        return Err(WireError::unsupported(
            format!("n = {n} is not supported by bedrock, which returns one choice per request"),
            Some("n"),
        ));
    }
    if let Some(f) = &req.response_format {
        if !matches!(f.kind.as_str(), "text" | "json_object" | "json_schema") {
            return Err(WireError::unsupported(format!("response_format \"{}\" is not supported", f.kind), Some("response_format.type")));
        }
    }
    if req.tools.iter().flatten().any(|t| t.function.name == JSON_TOOL) {
        return Err(WireError::unsupported(format!("the tool name \"{JSON_TOOL}\" is reserved by the gateway"), Some("tools")));
    }
    Ok(())
}

struct Converted<'a> {
    system: Vec<SystemBlock<'a>>,
    turns: Vec<Turn<'a>>,
    /// Names of the tools the history calls (for a `toolConfig` when the request has no `tools`).
    tools_used: BTreeSet<&'a str>,
}

fn convert_messages(messages: &[Message]) -> Result<Converted<'_>, WireError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    let mut tools_used = BTreeSet::new();
    let mut doc_names = DocNames::default();
    for (i, m) in messages.iter().enumerate() {
        let mut blocks = Vec::new();
        let role = match m.role {
            Role::System | Role::Developer => {
                for text in texts_only(m.content.as_ref(), i, "system")? {
                    system.push(SystemBlock { text });
                }
                continue;
            }
            Role::User => {
                push_content(m.content.as_ref(), i, true, &mut doc_names, &mut blocks)?;
                "user"
            }
            Role::Assistant => {
                for text in texts_only(m.content.as_ref(), i, "assistant")? {
                    blocks.push(Block::Text(text));
                }
                for (k, call) in m.tool_calls.iter().flatten().enumerate() {
                    let input = tool_input(&call.function.arguments).ok_or_else(|| {
                        WireError::unsupported(
                            format!("tool call arguments for \"{}\" must be a JSON object", call.function.name),
                            Some(&format!("messages[{i}].tool_calls[{k}].function.arguments")),
                        )
                    })?;
                    tools_used.insert(call.function.name.as_str());
                    blocks.push(Block::ToolUse(ToolUseBlock { tool_use_id: tool_id(&call.id), name: &call.function.name, input }));
                }
                "assistant"
            }
            Role::Tool => {
                let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.is_empty()) else {
                    return Err(WireError::unsupported(
                        "a tool message needs the tool_call_id of the call it answers",
                        Some(&format!("messages[{i}].tool_call_id")),
                    ));
                };
                let mut content = Vec::new();
                push_content(m.content.as_ref(), i, true, &mut doc_names, &mut content)?;
                blocks.push(Block::ToolResult(ToolResultBlock { tool_use_id: tool_id(id), content }));
                "user"
            }
            Role::Function => return Err(WireError::function_role("bedrock", i)),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn { role, content: blocks }),
        }
    }
    Ok(Converted { system, turns, tools_used })
}

/// The non-empty texts of a message whose role takes text only.
fn texts_only<'a>(content: Option<&'a Content>, i: usize, role: &str) -> Result<Vec<&'a str>, WireError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(if t.is_empty() { Vec::new() } else { vec![t.as_str()] }),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, p)| match p {
                ContentPart::Text { text } if text.is_empty() => None,
                ContentPart::Text { text } => Some(Ok(text.as_str())),
                other => Some(Err(WireError::unsupported(
                    format!("bedrock accepts only text in {role} messages, got a \"{}\" part", part_type(other)),
                    Some(&format!("messages[{i}].content[{j}]")),
                ))),
            })
            .collect(),
    }
}

fn part_type(p: &ContentPart) -> &str {
    match p {
        ContentPart::Text { .. } => "text",
        ContentPart::ImageUrl { .. } => "image_url",
        ContentPart::File { .. } => "file",
        ContentPart::Other(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
    }
}

fn push_content<'a>(
    content: Option<&'a Content>,
    i: usize,
    media: bool,
    names: &mut DocNames,
    out: &mut Vec<Block<'a>>,
) -> Result<(), WireError> {
    match content {
        None => {}
        Some(Content::Text(t)) if t.is_empty() => {}
        Some(Content::Text(t)) => out.push(Block::Text(t)),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let param = || format!("messages[{i}].content[{j}]");
                match part {
                    ContentPart::Text { text } => {
                        if !text.is_empty() {
                            out.push(Block::Text(text));
                        }
                    }
                    ContentPart::ImageUrl { image_url } if media => out.push(image_block(&image_url.url, &param())?),
                    ContentPart::File { file } if media => out.push(document_block(
                        file.file_data.as_deref(),
                        file.file_id.as_deref(),
                        file.filename.as_deref(),
                        names,
                        &param(),
                    )?),
                    other => {
                        return Err(WireError::unsupported(
                            format!("content part type \"{}\" is not supported by bedrock", part_type(other)),
                            Some(&param()),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

fn image_block<'a>(url: &'a str, param: &str) -> Result<Block<'a>, WireError> {
    if let Some(d) = parse_data_url(url) {
        let format = match d.media_type.to_ascii_lowercase().as_str() {
            "image/png" => "png",
            "image/jpeg" | "image/jpg" => "jpeg",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => {
                return Err(WireError::unsupported(
                    format!("image media type \"{}\" is not supported by bedrock (png, jpeg, gif or webp only)", d.media_type),
                    Some(param),
                ))
            }
        };
        return Ok(Block::Image(ImageBlock { format, source: BytesSource { bytes: d.base64 } }));
    }
    let why = if is_http_url(url) {
        "bedrock takes images as bytes only; this http(s) URL should have been fetched by the gateway"
    } else {
        "bedrock takes images as base64 data: URLs only"
    };
    Err(WireError::unsupported(why, Some(param)))
}

/// Document names in one request must differ; a repeated name gets ` (2)`, ` (3)`, ...
#[derive(Default)]
struct DocNames(BTreeSet<String>);

impl DocNames {
    fn unique(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut n = 2;
        while self.0.contains(&name) {
            name = format!("{base} ({n})");
            n += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

fn document_block<'a>(
    file_data: Option<&'a str>,
    file_id: Option<&str>,
    filename: Option<&str>,
    names: &mut DocNames,
    param: &str,
) -> Result<Block<'a>, WireError> {
    let Some(data) = file_data else {
        let why = if file_id.is_some() {
            "bedrock cannot read uploaded files by file_id; send the file inline as file_data"
        } else {
            "a file part needs file_data (a base64 data: URL)"
        };
        return Err(WireError::unsupported(why, Some(param)));
    };
    let Some(d) = parse_data_url(data) else {
        return Err(WireError::unsupported("file_data must be a base64 data: URL", Some(param)));
    };
    let ext = filename.and_then(|f| f.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase());
    let format = match (d.media_type.to_ascii_lowercase().as_str(), ext.as_deref()) {
        ("application/pdf", _) | (_, Some("pdf")) => "pdf",
        ("text/csv", _) | (_, Some("csv")) => "csv",
        ("application/msword", _) | (_, Some("doc")) => "doc",
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", _) | (_, Some("docx")) => "docx",
        ("application/vnd.ms-excel", _) | (_, Some("xls")) => "xls",
        ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", _) | (_, Some("xlsx")) => "xlsx",
        ("text/html", _) | (_, Some("html" | "htm")) => "html",
        ("text/markdown", _) | (_, Some("md" | "markdown")) => "md",
        ("text/plain", _) | (_, Some("txt")) => "txt",
        (other, _) => {
            return Err(WireError::unsupported(
                format!("file type \"{other}\" is not supported by bedrock (pdf, csv, doc, docx, xls, xlsx, html, txt or md)"),
                Some(param),
            ))
        }
    };
    let stem = filename.map(|f| f.rsplit_once('.').map_or(f, |(s, _)| s)).unwrap_or("");
    Ok(Block::Document(DocumentBlock { format, name: names.unique(document_name(stem)), source: BytesSource { bytes: d.base64 } }))
}

/// A name in the characters Bedrock allows (letters, digits, single spaces, hyphens, parentheses, square
/// brackets), at most 200 of them; `document` when nothing is left.
fn document_name(stem: &str) -> String {
    let mut out = String::new();
    for c in stem.chars() {
        let c = if c.is_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') { c } else { ' ' };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
        if out.chars().count() >= 190 {
            break;
        }
    }
    let out = out.trim_end().to_string();
    if out.is_empty() {
        "document".to_string()
    } else {
        out
    }
}

/// OpenAI carries arguments as a JSON string, Converse as an object: the caller's text is reused as is.
/// Empty arguments mean a call without parameters.
fn tool_input(arguments: &str) -> Option<Cow<'_, RawValue>> {
    if arguments.trim().is_empty() {
        return serde_json::from_str::<&RawValue>("{}").ok().map(Cow::Borrowed);
    }
    let raw: &RawValue = serde_json::from_str(arguments).ok()?;
    raw.get().trim_start().starts_with('{').then_some(Cow::Borrowed(raw))
}

/// Bedrock's tool-use ids are `[a-zA-Z0-9_.:-]{1,64}`; ids minted elsewhere are made to fit, the same way
/// on a call and on its result so they still match.
fn tool_id(id: &str) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
    if id.len() <= 64 && id.chars().all(allowed) {
        return Cow::Borrowed(id);
    }
    Cow::Owned(id.chars().map(|c| if allowed(c) { c } else { '_' }).take(64).collect())
}

fn convert_tools<'a>(req: &'a ChatRequest, used: &BTreeSet<&'a str>) -> Result<Option<ToolConfig<'a>>, WireError> {
    let mut tools: Vec<ToolEntry<'a>> = Vec::new();
    for (k, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(WireError::unsupported(
                format!("tool type \"{}\" is not supported by bedrock", t.kind),
                Some(&format!("tools[{k}].type")),
            ));
        }
        let f = &t.function;
        tools.push(ToolEntry {
            tool_spec: ToolSpec {
                name: &f.name,
                description: f.description.as_deref().filter(|d| !d.is_empty()),
                input_schema: InputSchema {
                    json: match &f.parameters {
                        Some(p) if !p.is_null() => Cow::Borrowed(p),
                        _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
                    },
                },
            },
        });
    }
    let caller_tools = !tools.is_empty();
    let json = json_format(req);
    let mut choice = match (&req.tool_choice, caller_tools) {
        (Some(ToolChoice::Required | ToolChoice::Function(_)), false) => {
            return Err(WireError::unsupported("tool_choice requires a tool call but the request has no tools", Some("tool_choice")))
        }
        (Some(ToolChoice::Function(name)), true) => {
            if !tools.iter().any(|t| t.tool_spec.name == name) {
                return Err(WireError::unsupported(format!("tool_choice names \"{name}\", which is not in tools"), Some("tool_choice")));
            }
            Some(ToolChoiceBody::Tool(NamedTool { name }))
        }
        (Some(ToolChoice::Required), true) => Some(ToolChoiceBody::Any(Empty {})),
        (Some(ToolChoice::Auto), true) => Some(ToolChoiceBody::Auto(Empty {})),
        (Some(ToolChoice::None), true) => {
            if used.is_empty() && json.is_none() {
                return Ok(None);
            }
            None
        }
        (None | Some(ToolChoice::Auto | ToolChoice::None), _) => None,
    };
    if let Some(spec) = json {
        tools.push(ToolEntry { tool_spec: spec });
        // The caller's own forced choice stands; otherwise some tool must be called, and with no tools of
        // the caller's, that is the JSON tool.
        if !matches!(choice, Some(ToolChoiceBody::Tool(_))) {
            choice = Some(if caller_tools && req.tool_choice != Some(ToolChoice::None) {
                ToolChoiceBody::Any(Empty {})
            } else {
                ToolChoiceBody::Tool(NamedTool { name: JSON_TOOL })
            });
        }
        if req.tool_choice == Some(ToolChoice::None) {
            tools.retain(|t| t.tool_spec.name == JSON_TOOL || used.contains(t.tool_spec.name));
        }
    }
    // Converse refuses toolUse/toolResult blocks without a toolConfig naming their tools.
    for name in used {
        if !tools.iter().any(|t| t.tool_spec.name == *name) {
            tools.push(ToolEntry {
                tool_spec: ToolSpec {
                    name,
                    description: None,
                    input_schema: InputSchema { json: Cow::Owned(serde_json::json!({"type": "object"})) },
                },
            });
        }
    }
    if tools.is_empty() {
        return Ok(None);
    }
    Ok(Some(ToolConfig { tools, tool_choice: choice }))
}

/// The tool that emulates `response_format`, if the request asks for JSON.
fn json_format(req: &ChatRequest) -> Option<ToolSpec<'_>> {
    let f = req.response_format.as_ref()?;
    match f.kind.as_str() {
        "json_object" => Some(ToolSpec {
            name: JSON_TOOL,
            description: Some("Reply with your whole answer as the JSON object this tool takes."),
            input_schema: InputSchema { json: Cow::Owned(serde_json::json!({"type": "object"})) },
        }),
        "json_schema" => {
            let s = f.json_schema.as_ref();
            Some(ToolSpec {
                name: JSON_TOOL,
                description: Some(
                    s.and_then(|s| s.description.as_deref())
                        .unwrap_or("Reply with your whole answer as the JSON object this tool takes, following its schema."),
                ),
                input_schema: InputSchema {
                    json: match s.and_then(|s| s.schema.as_ref()) {
                        Some(schema) if schema.is_object() => Cow::Borrowed(schema),
                        _ => Cow::Owned(serde_json::json!({"type": "object"})),
                    },
                },
            })
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Response and errors
// ---------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    #[serde(default)]
    output: Option<Output>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<ApiUsage>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutMessage>,
}

#[derive(Deserialize)]
struct OutMessage {
    #[serde(default)]
    content: Vec<OutBlock>,
}

/// A union block; members we do not translate (citations, guard content, images) are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<OutToolUse>,
    #[serde(default)]
    reasoning_content: Option<OutReasoning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutReasoning {
    #[serde(default)]
    reasoning_text: Option<ReasoningText>,
}

#[derive(Deserialize)]
struct ReasoningText {
    #[serde(default)]
    text: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct ApiUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_write_input_tokens: Option<u64>,
}

impl ApiUsage {
    fn to_usage(self) -> Usage {
        let read = self.cache_read_input_tokens;
        let write = self.cache_write_input_tokens.unwrap_or(0);
        let prompt = self.input_tokens.saturating_add(read.unwrap_or(0)).saturating_add(write);
        let mut usage = Usage::new(prompt, self.output_tokens);
        if let Some(read) = read {
            usage = usage.with_cached(read);
        }
        usage.with_cache_writes(write)
    }
}

fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

fn arguments_text(input: Option<Value>) -> String {
    match input {
        None | Some(Value::Null) => "{}".to_string(),
        Some(v) => v.to_string(),
    }
}

pub fn parse_chat(body: &[u8], ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    let r: ConverseResponse = serde_json::from_slice(body).map_err(|e| WireError::malformed("chat response", e))?;
    let Some(output) = r.output else {
        // A 2xx without `output` is an error body from something in between (`{"message":…}`).
        let e = parse_error(0, None, body);
        return Err(if e.kind.is_some() || !e.message.starts_with("upstream returned") {
            WireError::Upstream(e)
        } else {
            WireError::malformed("chat response", "no \"output\" in the converse response")
        });
    };
    let mut content: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    // The forced JSON call's input; when there is one it is the answer, and text the model wrote around
    // the call is not part of the JSON.
    let mut json_answer: Option<String> = None;
    for block in output.message.map(|m| m.content).unwrap_or_default() {
        if let Some(t) = block.text {
            content.get_or_insert_with(String::new).push_str(&t);
        }
        if let Some(u) = block.tool_use {
            if u.name == JSON_TOOL {
                json_answer.get_or_insert_with(|| arguments_text(u.input));
            } else {
                calls.push(ToolCall {
                    id: u.tool_use_id,
                    kind: "function".into(),
                    function: FunctionCall { name: u.name, arguments: arguments_text(u.input) },
                });
            }
        }
        if let Some(text) = block.reasoning_content.and_then(|r| r.reasoning_text).map(|t| t.text) {
            reasoning.get_or_insert_with(String::new).push_str(&text);
        }
    }
    let finish = r.stop_reason.as_deref().map(|s| match finish_reason(s) {
        FinishReason::ToolCalls if calls.is_empty() && json_answer.is_some() => FinishReason::Stop,
        f => f,
    });
    let mut extra = Extra::new();
    if let Some(r) = reasoning {
        extra.insert(REASONING_FIELD.into(), Value::String(r));
    }
    if json_answer.is_some() {
        content = json_answer;
    }
    Ok(ChatResponse {
        id: ctx.id.to_string(),
        object: "chat.completion".into(),
        created: ctx.created,
        model: ctx.model.to_string(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content,
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
                extra,
            },
            finish_reason: finish,
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: r.usage.map(ApiUsage::to_usage),
        system_fingerprint: None,
        extra: Extra::new(),
    })
}

/// The shape an HTTP status stands for when the answer names none.
fn shape_of_status(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        500 => "InternalServerException",
        503 => "ServiceUnavailableException",
        _ => return None,
    })
}

/// The status of an error shape, for errors that arrive without one (inside a stream).
pub fn status_of_shape(shape: &str) -> u16 {
    match shape {
        "ValidationException" | "ServiceQuotaExceededException" => 400,
        "AccessDeniedException" | "UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException" => 403,
        "ResourceNotFoundException" => 404,
        "ModelTimeoutException" => 408,
        "ModelErrorException" | "ModelStreamErrorException" => 424,
        "ThrottlingException" | "ModelNotReadyException" => 429,
        "InternalServerException" => 500,
        "ServiceUnavailableException" => 503,
        _ => 0,
    }
}

/// The shape name of an `x-amzn-ErrorType` value (`ThrottlingException:http://internal.amazon.com/…`)
/// or a body's `__type` (`com.amazon.coral.service#UnrecognizedClientException`).
fn shape_name(raw: &str) -> &str {
    let s = raw.split(':').next().unwrap_or(raw);
    s.rsplit('#').next().unwrap_or(s).trim()
}

/// Reads a Bedrock error: `error_type` is the `x-amzn-ErrorType` header, when the caller has it; the body
/// is `{"message":…}` (`Message` from some AWS front ends, plus `__type` from others). Anything else (a
/// proxy's HTML) goes through the generic reader, with the status's usual shape.
pub fn parse_error(status: u16, error_type: Option<&str>, body: &[u8]) -> UpstreamError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let from_body = v.as_ref().and_then(|v| v.get("__type").or_else(|| v.get("code"))).and_then(Value::as_str);
    let shape = error_type.or(from_body).map(shape_name).filter(|s| !s.is_empty()).map(str::to_string);
    let message = v.as_ref().and_then(|v| v.get("message").or_else(|| v.get("Message"))).and_then(Value::as_str).map(str::to_string);
    let mut e = match message {
        Some(m) => UpstreamError { status, message: m, ..Default::default() },
        None => UpstreamError::from_body(status, body),
    };
    if e.message.is_empty() {
        e.message = format!("upstream returned status {status}");
    }
    let shape = shape.or_else(|| shape_of_status(status).map(str::to_string));
    e.kind = shape.clone();
    e.code = shape;
    e
}

// ---------------------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStartEvent {
    content_block_index: u64,
    #[serde(default)]
    start: BlockStart,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    tool_use: Option<ToolStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolStart {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDeltaEvent {
    content_block_index: u64,
    #[serde(default)]
    delta: BlockDelta,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolDelta>,
    #[serde(default)]
    reasoning_content: Option<ReasoningDelta>,
}

#[derive(Deserialize)]
struct ToolDelta {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
struct ReasoningDelta {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStopEvent {
    content_block_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStopEvent {
    stop_reason: String,
}

#[derive(Deserialize)]
struct MetadataEvent {
    #[serde(default)]
    usage: Option<ApiUsage>,
}

#[derive(Debug)]
struct ToolSlot {
    block: u64,
    /// `None` for the JSON tool, whose input is content.
    index: Option<u32>,
    has_arguments: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    /// `messageStop` arrived; `metadata` (usage) comes next.
    Stopped,
    Done,
    Failed,
}

/// Turns ConverseStream's event-stream messages into canonical chunks: a role chunk at `messageStart`,
/// content, reasoning and tool-call fragments per block, a finish chunk at `messageStop`, and at
/// `metadata` (which Bedrock sends after `messageStop`) a usage-only chunk followed by
/// [`StreamEvent::Done`].
#[derive(Debug)]
pub struct StreamDecoder {
    frames: eventstream::Decoder,
    messages: Vec<eventstream::Message>,
    id: String,
    model: String,
    created: i64,
    tools: Vec<ToolSlot>,
    calls: u32,
    state: StreamState,
}

impl StreamDecoder {
    pub fn new(ctx: ResponseCtx<'_>) -> Self {
        StreamDecoder {
            frames: eventstream::Decoder::new(),
            messages: Vec::new(),
            id: ctx.id.to_string(),
            model: ctx.model.to_string(),
            created: ctx.created,
            tools: Vec::new(),
            calls: 0,
            state: StreamState::Open,
        }
    }

    /// Bounds one event-stream message.
    pub fn set_max_event_bytes(&mut self, max: usize) {
        self.frames.set_max_message_bytes(max);
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        let framed = self.frames.feed(bytes, &mut self.messages);
        // The messages completed before a broken frame are events like any other and go out before the
        // error, so what the caller gets does not depend on where the network split the bytes (found by
        // the stream_bedrock fuzz target: fed whole, an event ahead of a bad CRC was lost).
        let mut messages = std::mem::take(&mut self.messages);
        let result = messages.drain(..).try_for_each(|m| self.on_message(&m, out));
        self.messages = messages;
        result?;
        framed.map_err(frame_error)
    }

    /// A stream that ended after an exception is complete (it was reported), and so is one that ended
    /// after `messageStop` without `metadata` (its usage is unknown); one that ended before was cut off.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.frames.finish().map_err(frame_error)?;
        match self.state {
            StreamState::Open => Err(WireError::malformed("stream", "the bedrock stream ended before messageStop")),
            StreamState::Stopped => {
                self.state = StreamState::Done;
                out.push(StreamEvent::Done);
                Ok(())
            }
            StreamState::Done | StreamState::Failed => Ok(()),
        }
    }

    fn on_message(&mut self, m: &eventstream::Message, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        if matches!(self.state, StreamState::Done | StreamState::Failed) {
            return Ok(());
        }
        match m.header_str(":message-type") {
            Some("event") => {}
            Some("exception") => {
                let shape = upper_first(m.header_str(":exception-type").unwrap_or("InternalServerException"));
                let mut e = parse_error(status_of_shape(&shape), Some(&shape), &m.payload);
                if let Some(original) = serde_json::from_slice::<Value>(&m.payload).ok().and_then(|v| v.get("originalMessage").cloned()) {
                    if let Some(o) = original.as_str() {
                        e.message = format!("{} ({o})", e.message);
                    }
                }
                self.state = StreamState::Failed;
                out.push(StreamEvent::Error(e));
                return Ok(());
            }
            Some("error") => {
                let code = m.header_str(":error-code").unwrap_or("InternalFailure");
                let message = m.header_str(":error-message").unwrap_or("the stream failed").to_string();
                self.state = StreamState::Failed;
                out.push(StreamEvent::Error(UpstreamError {
                    status: status_of_shape(code),
                    message,
                    kind: Some(code.to_string()),
                    code: Some(code.to_string()),
                    param: None,
                }));
                return Ok(());
            }
            other => {
                return Err(WireError::malformed("stream event", format!("unknown :message-type {other:?}")));
            }
        }
        let payload = &m.payload;
        let parse_err = |e: serde_json::Error| WireError::malformed("stream event", e);
        match m.header_str(":event-type").unwrap_or("") {
            "messageStart" => {
                let delta = Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() };
                out.push(self.chunk(delta, None));
            }
            "contentBlockStart" => {
                let ev: BlockStartEvent = serde_json::from_slice(payload).map_err(parse_err)?;
                if let Some(t) = ev.start.tool_use {
                    if t.name == JSON_TOOL {
                        self.tools.push(ToolSlot { block: ev.content_block_index, index: None, has_arguments: false });
                    } else {
                        let index = self.calls;
                        self.calls += 1;
                        self.tools.push(ToolSlot { block: ev.content_block_index, index: Some(index), has_arguments: false });
                        let call = ToolCallDelta {
                            index,
                            id: Some(t.tool_use_id),
                            kind: Some("function".into()),
                            function: Some(FunctionCallDelta { name: Some(t.name), arguments: Some(String::new()) }),
                        };
                        out.push(self.tool_chunk(call));
                    }
                }
            }
            "contentBlockDelta" => {
                let ev: BlockDeltaEvent = serde_json::from_slice(payload).map_err(parse_err)?;
                if let Some(text) = ev.delta.text.filter(|t| !t.is_empty()) {
                    out.push(self.chunk(Delta { content: Some(text), ..Delta::default() }, None));
                }
                if let Some(input) = ev.delta.tool_use.map(|t| t.input).filter(|i| !i.is_empty()) {
                    self.arguments(ev.content_block_index, input, out);
                }
                if let Some(text) = ev.delta.reasoning_content.and_then(|r| r.text).filter(|t| !t.is_empty()) {
                    let mut delta = Delta::default();
                    delta.extra.insert(REASONING_FIELD.into(), Value::String(text));
                    out.push(self.chunk(delta, None));
                }
            }
            "contentBlockStop" => {
                let ev: BlockStopEvent = serde_json::from_slice(payload).map_err(parse_err)?;
                // Clients parse the concatenated arguments as JSON, and "" is not JSON.
                if self.tools.iter().any(|t| t.block == ev.content_block_index && !t.has_arguments) {
                    self.arguments(ev.content_block_index, "{}".into(), out);
                }
            }
            "messageStop" => {
                let ev: MessageStopEvent = serde_json::from_slice(payload).map_err(parse_err)?;
                let finish = match finish_reason(&ev.stop_reason) {
                    FinishReason::ToolCalls if self.calls == 0 && !self.tools.is_empty() => FinishReason::Stop,
                    f => f,
                };
                self.state = StreamState::Stopped;
                out.push(self.chunk(Delta::default(), Some(finish)));
            }
            "metadata" => {
                let ev: MetadataEvent = serde_json::from_slice(payload).map_err(parse_err)?;
                if let Some(u) = ev.usage {
                    let mut c = ChatChunk::new(&self.id, self.created, &self.model);
                    c.usage = Some(u.to_usage());
                    out.push(StreamEvent::Chunk(c));
                }
                if self.state == StreamState::Stopped {
                    self.state = StreamState::Done;
                    out.push(StreamEvent::Done);
                }
            }
            // Events added after this was written.
            _ => {}
        }
        Ok(())
    }

    /// Argument text for the tool in content block `block` (the JSON tool's is content).
    fn arguments(&mut self, block: u64, text: String, out: &mut Vec<StreamEvent>) {
        let Some(slot) = self.tools.iter_mut().find(|t| t.block == block) else { return };
        slot.has_arguments = true;
        match slot.index {
            None => {
                let c = self.chunk(Delta { content: Some(text), ..Delta::default() }, None);
                out.push(c);
            }
            Some(index) => {
                let call =
                    ToolCallDelta { index, id: None, kind: None, function: Some(FunctionCallDelta { name: None, arguments: Some(text) }) };
                let c = self.tool_chunk(call);
                out.push(c);
            }
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<FinishReason>) -> StreamEvent {
        let mut c = ChatChunk::new(&self.id, self.created, &self.model);
        c.choices.push(ChunkChoice { index: 0, delta, finish_reason: finish, logprobs: None, extra: Extra::new() });
        StreamEvent::Chunk(c)
    }

    fn tool_chunk(&self, call: ToolCallDelta) -> StreamEvent {
        self.chunk(Delta { tool_calls: Some(vec![call]), ..Delta::default() }, None)
    }
}

/// `throttlingException` → `ThrottlingException`: a stream's member name to the error's shape name.
fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn frame_error(e: EventStreamError) -> WireError {
    match e {
        EventStreamError::TooLong { limit, .. } => WireError::TooLong { what: "an event-stream message", limit },
        other => WireError::malformed("event stream", other),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Embeddings (InvokeModel)
// ---------------------------------------------------------------------------------------------------------

/// Which InvokeModel body an embedding model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbedFamily {
    Titan,
    Cohere,
}

fn embed_family(model: &str) -> Result<EmbedFamily, WireError> {
    let m = model.to_ascii_lowercase();
    if m.contains("titan-embed") {
        Ok(EmbedFamily::Titan)
    } else if m.contains("cohere.embed") {
        Ok(EmbedFamily::Cohere)
    } else {
        Err(WireError::unsupported(
            format!(
                "bedrock embeddings are supported for Titan (amazon.titan-embed-*) and Cohere (cohere.embed-*) models, not \"{model}\""
            ),
            Some("model"),
        ))
    }
}

/// The InvokeModel requests for an embeddings request: one per text for Titan, one per 96 texts for Cohere.
pub fn build_embeddings(ep: &Endpoint<'_>, req: &EmbeddingsRequest, model: &str) -> Result<Vec<WireRequest>, WireError> {
    let family = embed_family(model)?;
    let Some(texts) = req.input.texts() else {
        return Err(WireError::unsupported("bedrock embeddings take text input, not token ids", Some("input")));
    };
    if texts.is_empty() {
        return Err(WireError::unsupported("input must hold at least one text", Some("input")));
    }
    let url = format!("{}/model/{}/invoke", ep.base_url, model_segment(model));
    let bodies: Vec<Value> = match family {
        EmbedFamily::Titan => texts
            .iter()
            .map(|t| {
                let mut body = serde_json::json!({"inputText": t});
                if let Some(d) = req.dimensions {
                    body["dimensions"] = d.into();
                }
                if let Some(n) = req.extra.get("normalize").filter(|v| v.is_boolean()) {
                    body["normalize"] = n.clone();
                }
                body
            })
            .collect(),
        EmbedFamily::Cohere => {
            let input_type = req.extra.get("input_type").and_then(Value::as_str).unwrap_or("search_document");
            texts
                .chunks(COHERE_MAX_TEXTS)
                .map(|chunk| {
                    let mut body = serde_json::json!({"texts": chunk, "input_type": input_type});
                    if let Some(t) = req.extra.get("truncate").filter(|v| v.is_string()) {
                        body["truncate"] = t.clone();
                    }
                    body
                })
                .collect()
        }
    };
    bodies
        .into_iter()
        .map(|b| {
            let body = serde_json::to_vec(&b).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))?;
            Ok(with_auth(WireRequest::post_json(url.clone(), body).header("accept", "application/json"), ep))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TitanResponse {
    embedding: Vec<f64>,
    #[serde(default)]
    input_text_token_count: u64,
}

#[derive(Deserialize)]
struct CohereResponse {
    embeddings: CohereEmbeddings,
}

/// `embeddings` is a list of vectors, or by type (`{"float":[…]}`) when `embedding_types` was sent.
#[derive(Deserialize)]
#[serde(untagged)]
enum CohereEmbeddings {
    Floats(Vec<Vec<f64>>),
    ByType { float: Vec<Vec<f64>> },
}

/// Joins the answers to [`build_embeddings`]' requests (in their order) into one embeddings response.
pub fn parse_embeddings(
    model: &str,
    bodies: &[&[u8]],
    ctx: ResponseCtx<'_>,
    encoding_format: Option<&str>,
) -> Result<EmbeddingsResponse, WireError> {
    let family = embed_family(model)?;
    let mut vectors: Vec<Vec<f64>> = Vec::new();
    let mut tokens = 0u64;
    for body in bodies {
        match family {
            EmbedFamily::Titan => {
                let r: TitanResponse = serde_json::from_slice(body).map_err(|e| WireError::malformed("embeddings response", e))?;
                tokens += r.input_text_token_count;
                vectors.push(r.embedding);
            }
            EmbedFamily::Cohere => {
                let r: CohereResponse = serde_json::from_slice(body).map_err(|e| WireError::malformed("embeddings response", e))?;
                match r.embeddings {
                    CohereEmbeddings::Floats(v) | CohereEmbeddings::ByType { float: v } => vectors.extend(v),
                }
            }
        }
    }
    Ok(EmbeddingsResponse::from_vectors(vectors, ctx.model, tokens, encoding_format == Some("base64")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Auth, ProviderKind, ProviderOptions};
    use base64::Engine as _;
    use serde_json::json;

    const STREAM_TEXT: &[u8] = include_bytes!("../../tests/fixtures/bedrock/stream_text.bin");
    const STREAM_TOOLS: &[u8] = include_bytes!("../../tests/fixtures/bedrock/stream_tools.bin");
    const STREAM_THROTTLED: &[u8] = include_bytes!("../../tests/fixtures/bedrock/stream_throttled.bin");
    const MODEL: &str = "eu.anthropic.claude-3-5-haiku-20241022-v1:0";

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx { id: "chatcmpl-gw", created: 1_700_000_000, model: MODEL }
    }

    fn build_with(opts: &ProviderOptions, key: Option<&str>, body: Value) -> Result<WireRequest, WireError> {
        let ep = Endpoint {
            kind: ProviderKind::Bedrock,
            base_url: "https://bedrock-runtime.eu-central-1.amazonaws.com",
            auth: key.map_or(Auth::None, Auth::Key),
            options: opts,
        };
        let req: ChatRequest = serde_json::from_value(body).unwrap();
        build_chat(&ep, &req, MODEL)
    }

    fn build(body: Value) -> Result<Value, WireError> {
        let w = build_with(&ProviderOptions::default(), None, body)?;
        Ok(serde_json::from_slice(&w.body).unwrap())
    }

    fn header<'a>(w: &'a WireRequest, name: &str) -> Option<&'a str> {
        w.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn urls_carry_the_model_id_encoded_and_the_operation() {
        let w = build_with(
            &ProviderOptions::default(),
            Some("ABSKbedrockkey"),
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert_eq!(
            w.url,
            "https://bedrock-runtime.eu-central-1.amazonaws.com/model/eu.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
        );
        assert_eq!(header(&w, "authorization"), Some("Bearer ABSKbedrockkey"));
        assert_eq!(header(&w, "content-type"), Some("application/json"));
        let w = build_with(
            &ProviderOptions::default(),
            None,
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        assert!(w.url.ends_with("/converse-stream"));
        assert_eq!(header(&w, "authorization"), None, "AWS credentials are signed later, by codec::authorize");
        assert_eq!(
            model_segment("arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-3-5-haiku-20241022-v1:0"),
            "arn%3Aaws%3Abedrock%3Aeu-central-1%3A123456789012%3Ainference-profile%2Feu.anthropic.claude-3-5-haiku-20241022-v1%3A0"
        );
    }

    #[test]
    fn conversation_maps_to_converse() {
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==";
        let b = build(json!({"model": "m", "max_tokens": 256, "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n"], "top_k": 50,
            "seed": 7, "user": "u1", "presence_penalty": 0.5,
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "user", "content": "And tomorrow?"},
                {"role": "developer", "content": "Answer in French."}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "now"}}],
            "tool_choice": "auto"}))
        .unwrap();
        assert_eq!(
            b,
            json!({
                "system": [{"text": "Be terse."}, {"text": "Answer in French."}],
                "messages": [
                    {"role": "user", "content": [{"text": "What is in this picture?"}, {"image": {"format": "png", "source": {"bytes": png}}}]},
                    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}}]},
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}}, {"text": "And tomorrow?"}]}],
                "inferenceConfig": {"maxTokens": 256, "temperature": 0.2, "topP": 0.9, "stopSequences": ["\n\n"]},
                "toolConfig": {"tools": [
                    {"toolSpec": {"name": "get_weather", "description": "Weather by city", "inputSchema": {"json":
                        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}},
                    {"toolSpec": {"name": "now", "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
                    "toolChoice": {"auto": {}}},
                "additionalModelRequestFields": {"top_k": 50}
            })
        );
    }

    #[test]
    fn tool_choices() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let choice = |c: Value| build(json!({"model": "m", "messages": msgs, "tools": tools, "tool_choice": c}));
        assert_eq!(choice(json!("required")).unwrap()["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "f"}})).unwrap()["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        assert!(choice(json!({"type": "function", "function": {"name": "g"}})).is_err());
        // No `none` in Converse: the tools are left out.
        assert!(choice(json!("none")).unwrap().get("toolConfig").is_none());
        let none = build(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"}));
        assert!(matches!(none, Err(WireError::Unsupported { .. })));
        // A history with tool calls but no tools still gets a toolConfig naming them.
        let b = build(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "functions.lookup:0", "type": "function", "function": {"name": "lookup", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "functions.lookup:0", "content": [{"type": "text", "text": "found"}]}]}))
        .unwrap();
        assert_eq!(b["toolConfig"], json!({"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}}]}));
        assert_eq!(b["messages"][1]["content"][0]["toolUse"]["input"], json!({}));
        assert_eq!(b["messages"][1]["content"][0]["toolUse"]["toolUseId"], "functions.lookup:0");
        let long = "x".repeat(80) + "/é";
        let b = build(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": long, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": long, "content": "ok"}]}))
        .unwrap();
        let id = b["messages"][1]["content"][0]["toolUse"]["toolUseId"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 64);
        assert_eq!(b["messages"][2]["content"][0]["toolResult"]["toolUseId"], id.as_str());
    }

    #[test]
    fn json_mode_is_a_forced_tool() {
        let msgs = json!([{"role": "user", "content": "give me a city"}]);
        let b = build(json!({"model": "m", "messages": msgs, "response_format": {"type": "json_object"}})).unwrap();
        assert_eq!(b["toolConfig"]["toolChoice"], json!({"tool": {"name": JSON_TOOL}}));
        assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["name"], JSON_TOOL);
        assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"], json!({"json": {"type": "object"}}));
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let b = build(json!({"model": "m", "messages": msgs,
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}}))
        .unwrap();
        assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"], schema);
        // With the caller's own tools, some tool must be called, so both stay callable.
        let b = build(json!({"model": "m", "messages": msgs, "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "f"}}]}))
        .unwrap();
        assert_eq!(b["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(b["toolConfig"]["tools"].as_array().unwrap().len(), 2);
        let text = build(json!({"model": "m", "messages": msgs, "response_format": {"type": "text"}})).unwrap();
        assert!(text.get("toolConfig").is_none());
        let reserved = build(json!({"model": "m", "messages": msgs, "tools": [{"type": "function", "function": {"name": JSON_TOOL}}]}));
        assert!(matches!(reserved, Err(WireError::Unsupported { .. })));
    }

    #[test]
    fn files_become_documents() {
        let pdf = "JVBERi0xLjQK";
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Summarise"},
            {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{pdf}"), "filename": "Q3 report_final.v2.pdf"}},
            {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8=", "filename": "Q3 report_final.v2.txt"}},
            {"type": "file", "file": {"file_data": "data:application/octet-stream;base64,aGVsbG8=", "filename": "notes.md"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA"}}]}]}))
        .unwrap();
        let c = &b["messages"][0]["content"];
        assert_eq!(c[1], json!({"document": {"format": "pdf", "name": "Q3 report final v2", "source": {"bytes": pdf}}}));
        assert_eq!(c[2]["document"]["name"], "Q3 report final v2 (2)");
        assert_eq!(c[2]["document"]["format"], "txt");
        assert_eq!(c[3]["document"]["format"], "md");
        assert_eq!(c[4]["document"]["name"], "document");
        for bad in [
            json!({"type": "file", "file": {"file_id": "file-abc"}}),
            json!({"type": "file", "file": {"file_data": "data:application/zip;base64,UEsD", "filename": "a.zip"}}),
            json!({"type": "file", "file": {"file_data": "https://x/y.pdf"}}),
            json!({"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}),
        ] {
            let r = build(json!({"model": "m", "messages": [{"role": "user", "content": [bad]}]}));
            let Err(WireError::Unsupported { param, .. }) = r else { panic!("{r:?}") };
            assert_eq!(param.as_deref(), Some("messages[0].content[0]"));
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let cases = [
            (json!({"model": "m", "messages": user, "temperature": 1.5}), "temperature"),
            (json!({"model": "m", "messages": user, "top_p": -0.1}), "top_p"),
            (json!({"model": "m", "messages": user, "n": 2}), "n"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id"),
            (json!({"model": "m", "messages": user, "additionalModelRequestFields": [1]}), "additionalModelRequestFields"),
        ];
        for (body, want) in cases {
            let r = build(body.clone());
            let Err(WireError::Unsupported { param, .. }) = r else { panic!("{body}: {r:?}") };
            assert_eq!(param.as_deref(), Some(want), "{body}");
        }
    }

    #[test]
    fn passthrough_fields_and_defaults() {
        let opts = ProviderOptions { default_max_tokens: Some(1000), ..ProviderOptions::default() };
        let w = build_with(
            &opts,
            None,
            json!({"model": "m", "messages": [{"role": "user", "content": ""}, {"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "additionalModelRequestFields": {"anthropic_beta": ["x"]},
            "guardrailConfig": {"guardrailIdentifier": "g1", "guardrailVersion": "1"}}),
        )
        .unwrap();
        let b: Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(b["inferenceConfig"], json!({"maxTokens": 1000}));
        assert_eq!(
            b["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}, "anthropic_beta": ["x"]})
        );
        assert_eq!(b["guardrailConfig"]["guardrailIdentifier"], "g1");
        assert_eq!(b["messages"], json!([{"role": "user", "content": [{"text": "hi"}]}]), "empty texts are dropped");
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
        assert_eq!(b, json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}));
    }

    // ----- responses -----

    #[test]
    fn parses_text_and_tool_responses() {
        let r = parse_chat(include_bytes!("../../tests/fixtures/bedrock/response_text.json"), ctx()).unwrap();
        assert_eq!((r.id.as_str(), r.model.as_str(), r.created), ("chatcmpl-gw", MODEL, 1_700_000_000));
        assert_eq!(r.choices[0].message.content.as_deref(), Some("Hello, wörld!"));
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens()), (11, 6, 17, None));

        let r = parse_chat(include_bytes!("../../tests/fixtures/bedrock/response_tools.json"), ctx()).unwrap();
        let m = &r.choices[0].message;
        assert_eq!(m.content.as_deref(), Some("Checking both cities."));
        let calls = m.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id.as_str(), calls[0].function.name.as_str()), ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "get_weather"));
        assert_eq!(serde_json::from_str::<Value>(&calls[1].function.arguments).unwrap(), json!({"city": "Oslo"}));
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens()), (497, 89, 586, Some(120)));

        let r = parse_chat(include_bytes!("../../tests/fixtures/bedrock/response_reasoning.json"), ctx()).unwrap();
        assert_eq!(r.choices[0].message.extra.get("reasoning_content"), Some(&json!("The user wants a haiku.")));
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Length));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.total_tokens), (42, 82));
        assert_eq!(u.prompt_tokens_details.unwrap().extra.get("cache_write_tokens"), Some(&json!(30)));
    }

    #[test]
    fn stop_reasons() {
        for (b, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("guardrail_intervened", FinishReason::ContentFilter),
            ("content_filtered", FinishReason::ContentFilter),
            ("malformed_tool_use", FinishReason::Other("malformed_tool_use".into())),
        ] {
            assert_eq!(finish_reason(b), want, "{b}");
        }
    }

    #[test]
    fn json_tool_answers_are_content() {
        let body = json!({"output": {"message": {"role": "assistant", "content": [{"text": "Here you go:"},
            {"toolUse": {"toolUseId": "tooluse_1", "name": JSON_TOOL, "input": {"city": "Paris"}}}]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {"latencyMs": 1}});
        let r = parse_chat(body.to_string().as_bytes(), ctx()).unwrap();
        assert_eq!(r.choices[0].message.content.as_deref(), Some(r#"{"city":"Paris"}"#));
        assert!(r.choices[0].message.tool_calls.is_none());
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn bad_and_error_bodies() {
        assert!(matches!(parse_chat(b"{not json", ctx()), Err(WireError::Malformed { .. })));
        assert!(matches!(parse_chat(br#"{"stopReason":"end_turn"}"#, ctx()), Err(WireError::Malformed { .. })));
        let Err(WireError::Upstream(e)) = parse_chat(br#"{"message":"Too many requests","__type":"ThrottlingException"}"#, ctx()) else {
            panic!()
        };
        assert_eq!((e.message.as_str(), e.code.as_deref()), ("Too many requests", Some("ThrottlingException")));
    }

    #[test]
    fn error_shapes() {
        let e = parse_error(
            429,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(e.status, 429);
        assert_eq!((e.kind.as_deref(), e.code.as_deref()), (Some("ThrottlingException"), Some("ThrottlingException")));
        assert_eq!(e.message, "Too many requests, please wait before trying again.");
        let e = parse_error(400, Some("ServiceQuotaExceededException"), br#"{"message":"quota"}"#);
        assert_eq!(e.code.as_deref(), Some("ServiceQuotaExceededException"));
        // Without the header: the body's __type, else the status's usual shape.
        let e = parse_error(403, None, br#"{"Message":"The security token included in the request is invalid.","__type":"com.amazon.coral.service#UnrecognizedClientException"}"#);
        assert_eq!(
            (e.code.as_deref(), e.message.as_str()),
            (Some("UnrecognizedClientException"), "The security token included in the request is invalid.")
        );
        for (status, shape) in [
            (400, "ValidationException"),
            (404, "ResourceNotFoundException"),
            (408, "ModelTimeoutException"),
            (424, "ModelErrorException"),
            (500, "InternalServerException"),
            (503, "ServiceUnavailableException"),
        ] {
            assert_eq!(parse_error(status, None, br#"{"message":"x"}"#).code.as_deref(), Some(shape));
            assert_eq!(status_of_shape(shape), status);
        }
        let e = parse_error(502, None, b"<html>Bad Gateway</html>");
        assert_eq!((e.message.as_str(), e.code), ("<html>Bad Gateway</html>", None));
        assert_eq!(parse_error(500, None, b"").message, "upstream returned status 500");
    }

    // ----- stream -----

    fn decode(input: &[u8], piece: usize) -> Result<Vec<StreamEvent>, WireError> {
        let mut d = StreamDecoder::new(ctx());
        let mut out = Vec::new();
        for c in input.chunks(piece.max(1)) {
            d.feed(c, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    fn decode_every_way(input: &[u8]) -> Vec<StreamEvent> {
        let whole = decode(input, input.len()).unwrap();
        for piece in [1, 7, 100] {
            assert_eq!(decode(input, piece).unwrap(), whole, "piece size {piece}");
        }
        whole
    }

    fn chunks(events: &[StreamEvent]) -> Vec<&ChatChunk> {
        events.iter().filter_map(|e| if let StreamEvent::Chunk(c) = e { Some(c) } else { None }).collect()
    }

    fn stream_of(messages: &[eventstream::Message]) -> Vec<u8> {
        messages.iter().flat_map(|m| m.to_bytes().unwrap()).collect()
    }

    fn event(kind: &str, body: Value) -> eventstream::Message {
        eventstream::Message::event(kind, body.to_string().into_bytes())
    }

    #[test]
    fn text_stream() {
        let ev = decode_every_way(STREAM_TEXT);
        let cs = chunks(&ev);
        assert_eq!(ev.len(), 6, "{ev:#?}");
        assert!(cs.iter().all(|c| c.id == "chatcmpl-gw" && c.model == MODEL && c.created == 1_700_000_000));
        assert_eq!(cs[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(cs[1].choices[0].delta.content.as_deref(), Some("Hello"));
        assert_eq!(cs[2].choices[0].delta.content.as_deref(), Some(", wörld!"));
        assert_eq!(cs[3].choices[0].finish_reason, Some(FinishReason::Stop));
        let u = cs[4].usage.as_ref().unwrap();
        assert!(cs[4].choices.is_empty());
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (11, 6, 17));
        assert_eq!(ev[5], StreamEvent::Done);
    }

    #[test]
    fn tool_stream_with_parallel_calls() {
        let ev = decode_every_way(STREAM_TOOLS);
        let cs = chunks(&ev);
        assert_eq!(ev.last(), Some(&StreamEvent::Done));
        assert_eq!(cs[1].choices[0].delta.content.as_deref(), Some("Checking both cities."));
        let calls: Vec<&ToolCallDelta> = cs.iter().filter_map(|c| c.choices.first()?.delta.tool_calls.as_ref()).flatten().collect();
        assert_eq!(calls.len(), 5, "two starts and three non-empty fragments: {calls:#?}");
        assert_eq!(calls[0].id.as_deref(), Some("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"));
        assert_eq!(calls[0].function.as_ref().unwrap().name.as_deref(), Some("get_weather"));
        assert_eq!(calls[3].index, 1);
        for (i, want) in [(0, json!({"city": "Paris"})), (1, json!({"city": "Oslo"}))] {
            let args: String = calls.iter().filter(|c| c.index == i).filter_map(|c| c.function.as_ref()?.arguments.clone()).collect();
            assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), want);
        }
        let finish: Vec<_> = cs.iter().filter_map(|c| c.choices.first()?.finish_reason.clone()).collect();
        assert_eq!(finish, vec![FinishReason::ToolCalls]);
        let u = cs.last().unwrap().usage.as_ref().unwrap();
        assert_eq!((u.prompt_tokens, u.total_tokens, u.cached_tokens()), (497, 586, Some(120)));
    }

    #[test]
    fn exceptions_become_in_stream_errors() {
        let ev = decode_every_way(STREAM_THROTTLED);
        assert_eq!(ev.len(), 3, "{ev:#?}");
        let StreamEvent::Error(e) = &ev[2] else { panic!("{ev:#?}") };
        assert_eq!((e.status, e.code.as_deref()), (429, Some("ThrottlingException")));
        assert_eq!(e.message, "Too many tokens, please wait before trying again.");
        let input = stream_of(&[
            event("messageStart", json!({"role": "assistant"})),
            eventstream::Message::exception(
                "modelStreamErrorException",
                json!({"message": "model failed", "originalStatusCode": 500, "originalMessage": "boom"}).to_string().into_bytes(),
            ),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "ignored"}})),
        ]);
        let ev = decode_every_way(&input);
        let StreamEvent::Error(e) = &ev[1] else { panic!("{ev:#?}") };
        assert_eq!((e.status, e.code.as_deref(), e.message.as_str()), (424, Some("ModelStreamErrorException"), "model failed (boom)"));
        assert_eq!(ev.len(), 2);
        let unmodeled = eventstream::Message {
            headers: vec![
                eventstream::Header::string(":message-type", "error"),
                eventstream::Header::string(":error-code", "InternalFailure"),
                eventstream::Header::string(":error-message", "An internal error occurred"),
            ],
            payload: Vec::new(),
        };
        let ev = decode_every_way(&stream_of(&[unmodeled]));
        assert!(matches!(&ev[0], StreamEvent::Error(e) if e.message == "An internal error occurred"));
    }

    #[test]
    fn json_tool_streams_as_content() {
        let input = stream_of(&[
            event("messageStart", json!({"role": "assistant"})),
            event("contentBlockStart", json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t1", "name": JSON_TOOL}}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"city\":"}}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": "\"Paris\"}"}}})),
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
            event("messageStop", json!({"stopReason": "tool_use"})),
            event("metadata", json!({"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}, "metrics": {"latencyMs": 5}})),
        ]);
        let ev = decode_every_way(&input);
        let cs = chunks(&ev);
        let text: String = cs.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        assert_eq!(text, r#"{"city":"Paris"}"#);
        assert!(cs.iter().all(|c| c.choices.iter().all(|ch| ch.delta.tool_calls.is_none())));
        let finish: Vec<_> = cs.iter().filter_map(|c| c.choices.first()?.finish_reason.clone()).collect();
        assert_eq!(finish, vec![FinishReason::Stop]);
    }

    #[test]
    fn reasoning_unknown_events_and_calls_without_arguments() {
        let input = stream_of(&[
            event("messageStart", json!({"role": "assistant"})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Let me think."}}})),
            event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig"}}})),
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
            event("brandNewEvent", json!({"whatever": [1]})),
            event("contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"citation": {"title": "x"}}})),
            event("contentBlockStart", json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t", "name": "now"}}})),
            event("contentBlockStop", json!({"contentBlockIndex": 2})),
            event("messageStop", json!({"stopReason": "tool_use"})),
        ]);
        // No metadata: the stream still ends well at its end, without usage.
        let ev = decode_every_way(&input);
        let cs = chunks(&ev);
        assert_eq!(cs[1].choices[0].delta.extra.get("reasoning_content"), Some(&json!("Let me think.")));
        let args: String = cs
            .iter()
            .filter_map(|c| c.choices.first()?.delta.tool_calls.as_ref())
            .flatten()
            .filter_map(|c| c.function.as_ref()?.arguments.clone())
            .collect();
        assert_eq!(args, "{}");
        assert_eq!(ev.last(), Some(&StreamEvent::Done));
        assert!(cs.iter().all(|c| c.usage.is_none()));
    }

    #[test]
    fn broken_streams_are_errors() {
        let cut = &STREAM_TEXT[..STREAM_TEXT.len() - 30];
        assert!(matches!(decode(cut, 7), Err(WireError::Malformed { what: "event stream", .. })));
        let before_stop: Vec<u8> = stream_of(&[event("messageStart", json!({"role": "assistant"}))]);
        assert!(matches!(decode(&before_stop, 7), Err(WireError::Malformed { what: "stream", .. })));
        assert!(matches!(decode(b"", 1), Err(WireError::Malformed { what: "stream", .. })));
        let mut corrupt = STREAM_TEXT.to_vec();
        corrupt[40] ^= 0x20;
        assert!(matches!(decode(&corrupt, 7), Err(WireError::Malformed { what: "event stream", .. })));
        let bad_json = stream_of(&[
            event("messageStart", json!({"role": "assistant"})),
            eventstream::Message::event("contentBlockDelta", b"{\"contentBlockIndex\":".to_vec()),
        ]);
        assert!(matches!(decode(&bad_json, 7), Err(WireError::Malformed { what: "stream event", .. })));
        let mut d = StreamDecoder::new(ctx());
        d.set_max_event_bytes(64);
        let err = d.feed(STREAM_TEXT, &mut Vec::new()).unwrap_err();
        assert_eq!(err, WireError::TooLong { what: "an event-stream message", limit: 64 });
    }

    // ----- embeddings -----

    fn embed_req(body: Value) -> EmbeddingsRequest {
        serde_json::from_value(body).unwrap()
    }

    fn ep(opts: &ProviderOptions) -> Endpoint<'_> {
        Endpoint {
            kind: ProviderKind::Bedrock,
            base_url: "https://bedrock-runtime.us-east-1.amazonaws.com",
            auth: Auth::None,
            options: opts,
        }
    }

    #[test]
    fn titan_embeds_one_text_per_request() {
        let opts = ProviderOptions::default();
        let req = embed_req(json!({"model": "m", "input": ["hello", "world"], "dimensions": 256}));
        let ws = build_embeddings(&ep(&opts), &req, "amazon.titan-embed-text-v2:0").unwrap();
        assert_eq!(ws.len(), 2);
        assert_eq!(ws[0].url, "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(serde_json::from_slice::<Value>(&ws[1].body).unwrap(), json!({"inputText": "world", "dimensions": 256}));
        let body = include_bytes!("../../tests/fixtures/bedrock/titan_embed.json");
        let r = parse_embeddings("amazon.titan-embed-text-v2:0", &[body, body], ctx(), None).unwrap();
        assert_eq!(r.data.len(), 2);
        assert_eq!(r.data[1].index, 1);
        assert_eq!(r.data[0].embedding, json!([0.0123, -0.0456, 0.0789, 0.1011]));
        assert_eq!((r.usage.prompt_tokens, r.model.as_str()), (14, MODEL));
        let b = parse_embeddings("amazon.titan-embed-text-v2:0", &[body], ctx(), Some("base64")).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(b.data[0].embedding.as_str().unwrap()).unwrap();
        assert_eq!(f32::from_le_bytes(bytes[..4].try_into().unwrap()), 0.0123_f32);
    }

    #[test]
    fn cohere_embeds_up_to_96_texts_per_request() {
        let opts = ProviderOptions::default();
        let texts: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
        let req = embed_req(json!({"model": "m", "input": texts, "input_type": "search_query"}));
        let ws = build_embeddings(&ep(&opts), &req, "cohere.embed-multilingual-v3").unwrap();
        assert_eq!(ws.len(), 2);
        let b0: Value = serde_json::from_slice(&ws[0].body).unwrap();
        assert_eq!((b0["texts"].as_array().unwrap().len(), b0["input_type"].as_str()), (96, Some("search_query")));
        let req = embed_req(json!({"model": "m", "input": "one"}));
        let b: Value = serde_json::from_slice(&build_embeddings(&ep(&opts), &req, "cohere.embed-english-v3").unwrap()[0].body).unwrap();
        assert_eq!(b, json!({"texts": ["one"], "input_type": "search_document"}));
        let r =
            parse_embeddings("cohere.embed-english-v3", &[include_bytes!("../../tests/fixtures/bedrock/cohere_embed.json")], ctx(), None)
                .unwrap();
        assert_eq!(r.data.len(), 2);
        assert_eq!(r.data[1].embedding, json!([0.044, 0.055, -0.066]));
        let by_type = br#"{"embeddings":{"float":[[1.0,2.0]]},"id":"x","response_type":"embeddings_by_type","texts":["a"]}"#;
        assert_eq!(parse_embeddings("cohere.embed-english-v3", &[by_type], ctx(), None).unwrap().data.len(), 1);
    }

    #[test]
    fn embedding_refusals() {
        let opts = ProviderOptions::default();
        let e = ep(&opts);
        assert!(build_embeddings(&e, &embed_req(json!({"model": "m", "input": "x"})), "anthropic.claude-3-haiku").is_err());
        assert!(build_embeddings(&e, &embed_req(json!({"model": "m", "input": [1, 2, 3]})), "amazon.titan-embed-text-v2:0").is_err());
        assert!(build_embeddings(&e, &embed_req(json!({"model": "m", "input": []})), "amazon.titan-embed-text-v2:0").is_err());
        assert!(matches!(parse_embeddings("amazon.titan-embed-text-v2:0", &[b"{}"], ctx(), None), Err(WireError::Malformed { .. })));
    }
}
