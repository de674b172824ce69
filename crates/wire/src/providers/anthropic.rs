//! Anthropic Messages API codec: canonical (OpenAI-shaped) chat requests to `POST /v1/messages`, and
//! Anthropic's responses, errors and named-SSE streams back to canonical types.
//!
//! Anthropic differs from OpenAI in structure, not only in names: the system prompt is a top-level field,
//! tool results are content blocks inside user turns, consecutive turns must not share a role,
//! `max_tokens` is mandatory, and a stream is a sequence of typed events keyed by content-block index.
//! This module owns every one of those differences so the engine only ever sees canonical types.
//!
//! Where the two APIs cannot be mapped one to one, the choices are:
//! - System and developer messages, wherever they appear, are hoisted in order into `system`: a plain
//!   string when there is one text, otherwise an array of text blocks. An array keeps the caller's texts
//!   exactly, where joining would invent a separator.
//! - Turns of the same role are merged (tool results become user turns, so a user message right after
//!   tool results joins them). Empty texts are dropped, and a message left with no content at all (an
//!   assistant message without text or tool calls, an empty user message) is dropped: Anthropic rejects
//!   empty content in every form.
//! - Refused with [`WireError::Unsupported`] (a 400 for the caller): `temperature` outside 0..=1 (clamping
//!   would silently change the meaning), `n > 1`, content parts Anthropic cannot take, and tool-call
//!   arguments that are not a JSON object.
//! - Structured output (`response_format` `json_schema` or `json_object`) is a forced tool call: a tool
//!   named [`STRUCTURED_OUTPUT_TOOL`] whose `input_schema` is the schema, chosen with `tool_choice` (alone:
//!   `tool`; beside the caller's tools: `any`, so the model may still call those). Its input comes back as
//!   the message content with finish `stop`, in streams too (its `input_json_delta`s become content
//!   deltas). This works on every Claude model; Anthropic's native `output_config.format` only on recent
//!   ones. The exception is a request with `thinking` on, which Anthropic refuses with a forced tool: its
//!   `json_schema` goes as `output_config.format` instead (and `json_object`, which has no schema, is
//!   refused).
//! - File parts (`{"type":"file"}`) become `document` blocks: PDFs as base64, `text/plain` as text
//!   sources; other media types and OpenAI `file_id`s are refused.
//! - A `stop_sequence` stop keeps the matched sequence as `stop_sequence` beside the finish reason (the
//!   choice's, or the finish chunk's): OpenAI's shape has no field for it, and the Anthropic route needs it.
//! - Dropped silently: `seed`, `presence_penalty`, `frequency_penalty` (hints Anthropic has no knob for;
//!   failing a request over them would break callers that send them by default), `stream_options`
//!   (Anthropic always reports usage), and unknown fields, which belong to OpenAI's API. The exceptions are
//!   Anthropic's own `top_k` and `thinking`, passed through, and `metadata.user_id`. Other `metadata`
//!   keys are OpenAI's stored-completion tags and Anthropic rejects unknown metadata fields.
//! - Thinking comes back as `reasoning_content` on the message (or on stream deltas), the field name
//!   OpenAI-compatible reasoning servers use. Its signed form ([`THINKING_BLOCKS_FIELD`]: the `thinking`
//!   blocks with their signatures, `redacted_thinking` blocks) comes back beside it (a stream sends each
//!   signature, and each redacted block, on a delta of its own), and an assistant message that carries it
//!   sends those blocks first in its turn: a request with thinking on must return them with its tool calls.
//!
//! Claude on Google Vertex AI speaks the same Messages body with three differences, all in
//! [`build_vertex_chat`]: the model is in the path (`…/publishers/anthropic/models/{model}:rawPredict`, or
//! `:streamRawPredict` for a stream) instead of the body, the API version is the body's
//! `anthropic_version` ([`VERTEX_VERSION`]) instead of a header, and the credential is a Google OAuth token.
//! Answers, streams and Claude's own errors are Anthropic's, so the parsers here serve both.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{UpstreamError, WireError};
use crate::image::{is_http_url, parse_data_url};
use crate::spec::{Auth, Endpoint, ResponseCtx, StreamEvent, WireRequest};
use crate::sse::{SseEvent, SseParser};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta, Extra, FileData, FinishReason, FunctionCall,
    FunctionCallDelta, Message, ResponseMessage, Role, Stop, ToolCall, ToolCallDelta, ToolChoice, Usage, THINKING_BLOCKS_FIELD,
};

pub const DEFAULT_VERSION: &str = "2023-06-01";
/// The tool that carries a structured answer (see the module docs). Callers may not define a tool of this
/// name, so a call to it is always ours.
pub const STRUCTURED_OUTPUT_TOOL: &str = "switchyard_structured_output";
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// The `anthropic_version` Vertex AI's Claude endpoints take in the body.
pub const VERTEX_VERSION: &str = "vertex-2023-10-16";

/// The field OpenAI-compatible reasoning servers use for a model's thinking text.
const REASONING_FIELD: &str = "reasoning_content";

// ---------------------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------------------

/// The `/v1/messages` body. Everything borrows from the canonical request, so large inputs (base64
/// images, long histories) are serialized straight from the caller's buffers.
#[derive(Serialize)]
struct MessagesBody<'a> {
    /// `None` on Vertex, where the model is in the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    /// Vertex only: the API version, which Anthropic's own API reads from a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    anthropic_version: Option<&'a str>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Blocks::is_empty")]
    system: Blocks<'a>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'a>>,
    stream: bool,
}

#[derive(Serialize)]
struct OutputConfig<'a> {
    format: OutputFormat<'a>,
}

#[derive(Serialize)]
struct OutputFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a Value,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Blocks<'a>,
}

/// A list of content blocks, written as a plain string when it is a single text (the common case, and
/// the form closest to what the caller sent).
#[derive(Default)]
struct Blocks<'a>(Vec<Block<'a>>);

impl Blocks<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Blocks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [Block::Text { text }] => s.serialize_str(text),
            blocks => blocks.serialize(s),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: Cow<'a, RawValue>,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "Blocks::is_empty")]
        content: Blocks<'a>,
    },
    Document {
        source: DocumentSource<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DocumentSource<'a> {
    Base64 { media_type: &'static str, data: &'a str },
    Text { media_type: &'static str, data: String },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'static str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct ToolDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    input_schema: Cow<'a, Value>,
}

#[derive(Serialize)]
struct ToolChoiceBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

pub fn build_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    let body = encode(&messages_body(ep, req, Some(model))?)?;
    let url = format!("{}/v1/messages", ep.base_url);
    Ok(with_auth(WireRequest::post_json(url, body), ep))
}

/// Claude on Vertex AI: `POST {base}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/
/// {model}:rawPredict` (`:streamRawPredict` for a stream), the body without `model` and with
/// `anthropic_version`, the OAuth token as Bearer. Claude has no Vertex "express mode": a project is needed.
pub fn build_vertex_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    let Some(project) = ep.options.project.as_deref() else {
        return Err(WireError::unsupported(
            format!("claude model \"{model}\" on vertex needs the provider's project (Anthropic's models have no express mode)"),
            Some("model"),
        ));
    };
    if model.is_empty() || model.contains(['/', '?', '#', ' ', '%']) || model.contains("..") {
        return Err(WireError::unsupported(format!("\"{model}\" is not a valid vertex model id"), Some("model")));
    }
    let region = ep.options.region.as_deref().unwrap_or("global");
    let mut body = messages_body(ep, req, None)?;
    body.anthropic_version = Some(ep.options.api_version.as_deref().unwrap_or(VERTEX_VERSION));
    let method = if req.is_stream() { "streamRawPredict" } else { "rawPredict" };
    let url = format!("{}/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:{method}", ep.base_url);
    let mut r = WireRequest::post_json(url, encode(&body)?);
    match ep.auth {
        Auth::Bearer(token) => r = r.header("authorization", format!("Bearer {token}")),
        Auth::Key(_) => {
            return Err(WireError::unsupported(
                format!(
                "claude model \"{model}\" on vertex needs Google OAuth credentials: express-mode API keys reach Google's own models only"
            ),
                Some("model"),
            ))
        }
        Auth::None | Auth::Aws(_) => {}
    }
    Ok(r.with_extra_headers(ep))
}

fn encode(body: &MessagesBody<'_>) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(body).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))
}

/// The Messages body both APIs take; `model` is `None` where the path names it.
fn messages_body<'a>(ep: &Endpoint<'_>, req: &'a ChatRequest, model: Option<&'a str>) -> Result<MessagesBody<'a>, WireError> {
    check_unsupported(req)?;
    let (system, messages) = convert_messages(&req.messages)?;
    let mut tools = convert_tools(req)?;
    let mut tool_choice = convert_tool_choice(req, !tools.is_empty())?;
    let thinking = passthrough(req, "thinking");
    let mut output_config = None;
    if let Some(structured) = structured_output(req)? {
        let thinking_on = thinking.and_then(|t| t.get("type")).and_then(Value::as_str).is_some_and(|t| t != "disabled");
        if thinking_on {
            let Structured { schema: Some(schema), .. } = structured else {
                return Err(WireError::unsupported(
                    "response_format json_object cannot be combined with thinking on anthropic (a forced tool call is refused with thinking, and native structured output needs a schema); send a json_schema",
                    Some("response_format"),
                ));
            };
            output_config = Some(OutputConfig { format: OutputFormat { kind: "json_schema", schema } });
        } else {
            tool_choice = Some(structured_choice(req, !tools.is_empty()));
            tools.push(ToolDef {
                name: STRUCTURED_OUTPUT_TOOL,
                description: Some(structured.description),
                input_schema: match structured.schema {
                    Some(s) => Cow::Borrowed(s),
                    None => Cow::Owned(serde_json::json!({"type": "object"})),
                },
            });
        }
    }
    let max_tokens = req.max_output_tokens().or(ep.options.default_max_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
    let user_id = req.user.as_deref().or_else(|| req.extra.get("metadata").and_then(|m| m.get("user_id")).and_then(Value::as_str));
    Ok(MessagesBody {
        model,
        anthropic_version: None,
        max_tokens,
        system,
        messages,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: passthrough(req, "top_k"),
        stop_sequences: req.stop.as_ref().map_or_else(Vec::new, |s| match s {
            Stop::One(one) => vec![one.as_str()],
            Stop::Many(many) => many.iter().map(String::as_str).collect(),
        }),
        metadata: user_id.map(|user_id| Metadata { user_id }),
        tools,
        tool_choice,
        thinking,
        output_config,
        stream: req.is_stream(),
    })
}

fn passthrough<'a>(req: &'a ChatRequest, field: &str) -> Option<&'a Value> {
    req.extra.get(field).filter(|v| !v.is_null())
}

fn with_auth(mut r: WireRequest, ep: &Endpoint<'_>) -> WireRequest {
    if let Some(k) = ep.api_key() {
        r = r.header("x-api-key", k);
    }
    let version = ep.options.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
    r.header("anthropic-version", version).with_extra_headers(ep)
}

fn check_unsupported(req: &ChatRequest) -> Result<(), WireError> {
    if let Some(t) = req.temperature {
        if !(0.0..=1.0).contains(&t) {
            return Err(WireError::unsupported(format!("temperature {t} is outside anthropic's range of 0 to 1"), Some("temperature")));
        }
    }
    if let Some(n) = req.n.filter(|&n| n > 1) {
        return Err(WireError::unsupported(
            format!("n = {n} is not supported by anthropic, which returns one choice per request"),
            Some("n"),
        ));
    }
    Ok(())
}

/// A structured-output request: the schema (none for `json_object`) and the tool description that asks
/// for it.
struct Structured<'a> {
    schema: Option<&'a Value>,
    description: Cow<'a, str>,
}

fn structured_output(req: &ChatRequest) -> Result<Option<Structured<'_>>, WireError> {
    let Some(f) = &req.response_format else { return Ok(None) };
    match f.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(Structured {
            schema: None,
            description: Cow::Borrowed("Give your answer by calling this tool: its input is your answer, as a JSON object."),
        })),
        "json_schema" => {
            let js = f.json_schema.as_ref();
            let schema = js.and_then(|j| j.schema.as_ref()).filter(|s| !s.is_null());
            if let Some(s) = schema {
                // A tool's input is an object; a schema for anything else cannot be one.
                let root = s.get("type").and_then(Value::as_str);
                if !s.is_object() || root.is_some_and(|t| t != "object") {
                    return Err(WireError::unsupported(
                        "anthropic takes a structured output schema whose root is an object",
                        Some("response_format.json_schema.schema"),
                    ));
                }
            }
            let name = js.map_or("answer", |j| j.name.as_str());
            let mut description =
                format!("Give your answer by calling this tool: its input is your answer, a JSON object matching the \"{name}\" schema.");
            if let Some(d) = js.and_then(|j| j.description.as_deref()).filter(|d| !d.is_empty()) {
                description.push(' ');
                description.push_str(d);
            }
            Ok(Some(Structured { schema, description: Cow::Owned(description) }))
        }
        other => Err(WireError::unsupported(format!("response_format \"{other}\" is not supported by anthropic"), Some("response_format"))),
    }
}

/// The `tool_choice` that makes the model answer through the structured-output tool: that tool alone
/// when the caller has no tools (or allows none of them), `any` beside the caller's tools unless the
/// caller named one of its own.
fn structured_choice<'a>(req: &'a ChatRequest, caller_tools: bool) -> ToolChoiceBody<'a> {
    let no_parallel = req.parallel_tool_calls == Some(false);
    let (kind, name) = match &req.tool_choice {
        _ if !caller_tools => ("tool", Some(STRUCTURED_OUTPUT_TOOL)),
        Some(ToolChoice::None) => ("tool", Some(STRUCTURED_OUTPUT_TOOL)),
        Some(ToolChoice::Function(n)) => ("tool", Some(n.as_str())),
        None | Some(ToolChoice::Auto | ToolChoice::Required) => ("any", None),
    };
    ToolChoiceBody { kind, name, disable_parallel_tool_use: no_parallel }
}

/// Splits the conversation into the hoisted system blocks and alternating user/assistant turns.
fn convert_messages(messages: &[Message]) -> Result<(Blocks<'_>, Vec<Turn<'_>>), WireError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let mut blocks = Vec::new();
        let role = match m.role {
            Role::System | Role::Developer => {
                push_content(m.content.as_ref(), i, Allowed::TextOnly("system"), &mut system)?;
                continue;
            }
            Role::User => {
                push_content(m.content.as_ref(), i, Allowed::TextAndImages, &mut blocks)?;
                "user"
            }
            Role::Assistant => {
                push_signed_thinking(m, i, &mut blocks)?;
                push_content(m.content.as_ref(), i, Allowed::TextOnly("assistant"), &mut blocks)?;
                push_tool_uses(m, i, &mut blocks)?;
                "assistant"
            }
            Role::Tool => {
                blocks.push(tool_result(m, i)?);
                "user"
            }
            Role::Function => return Err(WireError::function_role("anthropic", i)),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.0.extend(blocks),
            _ => turns.push(Turn { role, content: Blocks(blocks) }),
        }
    }
    Ok((Blocks(system), turns))
}

/// An assistant message's signed thinking ([`THINKING_BLOCKS_FIELD`]), first in its turn as Anthropic wants.
fn push_signed_thinking<'a>(m: &'a Message, i: usize, blocks: &mut Vec<Block<'a>>) -> Result<(), WireError> {
    let Some(list) = m.extra.get(THINKING_BLOCKS_FIELD).filter(|v| !v.is_null()) else { return Ok(()) };
    let at = |j: usize| format!("messages[{i}].{THINKING_BLOCKS_FIELD}[{j}]");
    let Some(list) = list.as_array() else {
        return Err(WireError::unsupported(
            "thinking_blocks must be a list of thinking or redacted_thinking blocks",
            Some(&format!("messages[{i}].{THINKING_BLOCKS_FIELD}")),
        ));
    };
    for (j, b) in list.iter().enumerate() {
        let field = |name: &str| b.get(name).and_then(Value::as_str);
        match field("type") {
            Some("thinking") => match (field("thinking"), field("signature")) {
                (Some(thinking), Some(signature)) if !signature.is_empty() => blocks.push(Block::Thinking { thinking, signature }),
                // Unsigned thinking (another provider's reasoning) is nothing Anthropic would accept back.
                (Some(_), _) => {}
                (None, _) => return Err(WireError::unsupported("a thinking block needs its thinking text", Some(&at(j)))),
            },
            Some("redacted_thinking") => match field("data") {
                Some(data) => blocks.push(Block::RedactedThinking { data }),
                None => return Err(WireError::unsupported("a redacted_thinking block needs its data", Some(&at(j)))),
            },
            _ => return Err(WireError::unsupported("expected a thinking or redacted_thinking block", Some(&at(j)))),
        }
    }
    Ok(())
}

/// Which content parts a role may carry on Anthropic's side.
#[derive(Clone, Copy)]
enum Allowed {
    TextAndImages,
    /// Text only; the role name is for the error message.
    TextOnly(&'static str),
}

fn push_content<'a>(content: Option<&'a Content>, i: usize, allowed: Allowed, out: &mut Vec<Block<'a>>) -> Result<(), WireError> {
    match content {
        None => {}
        Some(Content::Text(text)) => push_text(text, out),
        Some(Content::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                match (part, allowed) {
                    (ContentPart::Text { text }, _) => push_text(text, out),
                    (ContentPart::ImageUrl { image_url }, Allowed::TextAndImages) => {
                        out.push(image_block(&image_url.url, i, j)?);
                    }
                    (ContentPart::File { file }, Allowed::TextAndImages) => out.push(document_block(file, i, j)?),
                    (other, allowed) => return Err(unsupported_part(other, allowed, i, j)),
                }
            }
        }
    }
    Ok(())
}

/// Anthropic rejects empty text blocks, and an empty text carries nothing.
fn push_text<'a>(text: &'a str, out: &mut Vec<Block<'a>>) {
    if !text.is_empty() {
        out.push(Block::Text { text });
    }
}

fn unsupported_part(part: &ContentPart, allowed: Allowed, i: usize, j: usize) -> WireError {
    let kind = match part {
        ContentPart::Text { .. } => "text",
        ContentPart::ImageUrl { .. } => "image_url",
        ContentPart::File { .. } => "file",
        ContentPart::Other(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
    };
    let message = match allowed {
        Allowed::TextOnly(role) => {
            format!("anthropic accepts only text in {role} messages, got a \"{kind}\" part")
        }
        Allowed::TextAndImages => {
            format!("content part type \"{kind}\" is not supported by anthropic")
        }
    };
    WireError::unsupported(message, Some(&format!("messages[{i}].content[{j}]")))
}

/// The image types Anthropic accepts.
const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];

fn image_block(url: &str, i: usize, j: usize) -> Result<Block<'_>, WireError> {
    let param = || format!("messages[{i}].content[{j}]");
    if let Some(d) = parse_data_url(url) {
        // `image/jpg` is a common mislabel of JPEG; Anthropic only knows the registered name.
        let wanted = if d.media_type.eq_ignore_ascii_case("image/jpg") { "image/jpeg" } else { d.media_type };
        let Some(media_type) = IMAGE_TYPES.into_iter().find(|t| t.eq_ignore_ascii_case(wanted)) else {
            return Err(WireError::unsupported(
                format!("image media type \"{}\" is not supported by anthropic (jpeg, png, gif or webp only)", d.media_type),
                Some(&param()),
            ));
        };
        return Ok(Block::Image { source: ImageSource::Base64 { media_type, data: d.base64 } });
    }
    if is_http_url(url) {
        return Ok(Block::Image { source: ImageSource::Url { url } });
    }
    Err(WireError::unsupported("anthropic takes images as base64 data: URLs or http(s) URLs only", Some(&param())))
}

/// A file part as a `document` block: a PDF as base64, plain text as a text source.
fn document_block(file: &FileData, i: usize, j: usize) -> Result<Block<'_>, WireError> {
    let param = || format!("messages[{i}].content[{j}].file");
    let Some((media, data)) = file.inline() else {
        let why = if file.file_id.is_some() {
            "a file_id names a file in OpenAI's Files API, which anthropic cannot read; send the file inline as file_data"
        } else {
            "file_data must be a base64 data URL (data:<media type>;base64,...)"
        };
        return Err(WireError::unsupported(why, Some(&param())));
    };
    let title = file.filename.as_deref();
    let media = media.split(';').next().unwrap_or(media).trim();
    if media.eq_ignore_ascii_case("application/pdf") {
        return Ok(Block::Document { source: DocumentSource::Base64 { media_type: "application/pdf", data }, title });
    }
    if media.eq_ignore_ascii_case("text/plain") {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| WireError::unsupported(format!("file_data is not valid base64: {e}"), Some(&param())))?;
        let text = String::from_utf8(bytes).map_err(|_| WireError::unsupported("a text/plain file must be UTF-8", Some(&param())))?;
        return Ok(Block::Document { source: DocumentSource::Text { media_type: "text/plain", data: text }, title });
    }
    Err(WireError::unsupported(
        format!("file media type \"{media}\" is not supported by anthropic (application/pdf or text/plain)"),
        Some(&param()),
    ))
}

fn push_tool_uses<'a>(m: &'a Message, i: usize, out: &mut Vec<Block<'a>>) -> Result<(), WireError> {
    for (k, call) in m.tool_calls.iter().flatten().enumerate() {
        let input = tool_input(&call.function.arguments).ok_or_else(|| {
            WireError::unsupported(
                format!("tool call arguments for \"{}\" must be a JSON object", call.function.name),
                Some(&format!("messages[{i}].tool_calls[{k}].function.arguments")),
            )
        })?;
        out.push(Block::ToolUse { id: tool_id(&call.id), name: &call.function.name, input });
    }
    Ok(())
}

/// OpenAI carries arguments as a JSON string, Anthropic as an object; the caller's text is reused as is
/// (no re-encoding, key order kept). Empty arguments mean a call without parameters.
fn tool_input(arguments: &str) -> Option<Cow<'_, RawValue>> {
    if arguments.trim().is_empty() {
        return serde_json::from_str::<&RawValue>("{}").ok().map(Cow::Borrowed);
    }
    let raw: &RawValue = serde_json::from_str(arguments).ok()?;
    raw.get().trim_start().starts_with('{').then_some(Cow::Borrowed(raw))
}

/// Anthropic accepts only `[A-Za-z0-9_-]` in tool ids, while ids minted by other upstreams may hold
/// more (Kimi on vLLM: `functions.get_weather:0`) when a conversation moves between providers. The same
/// replacement applies to a call and its result, so they still match.
fn tool_id(id: &str) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.chars().all(allowed) {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(id.chars().map(|c| if allowed(c) { c } else { '_' }).collect())
    }
}

fn tool_result(m: &Message, i: usize) -> Result<Block<'_>, WireError> {
    let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.is_empty()) else {
        return Err(WireError::unsupported(
            "a tool message needs the tool_call_id of the call it answers",
            Some(&format!("messages[{i}].tool_call_id")),
        ));
    };
    let mut content = Vec::new();
    push_content(m.content.as_ref(), i, Allowed::TextAndImages, &mut content)?;
    Ok(Block::ToolResult { tool_use_id: tool_id(id), content: Blocks(content) })
}

fn convert_tools(req: &ChatRequest) -> Result<Vec<ToolDef<'_>>, WireError> {
    let Some(tools) = &req.tools else {
        return Ok(Vec::new());
    };
    tools
        .iter()
        .enumerate()
        .map(|(k, t)| {
            if t.kind != "function" {
                return Err(WireError::unsupported(
                    format!("tool type \"{}\" is not supported by anthropic", t.kind),
                    Some(&format!("tools[{k}].type")),
                ));
            }
            let f = &t.function;
            if f.name == STRUCTURED_OUTPUT_TOOL {
                return Err(WireError::unsupported(
                    format!("the tool name \"{STRUCTURED_OUTPUT_TOOL}\" is reserved by the gateway (it carries structured output)"),
                    Some(&format!("tools[{k}].function.name")),
                ));
            }
            Ok(ToolDef {
                name: &f.name,
                description: f.description.as_deref().map(Cow::Borrowed),
                // Anthropic requires a schema; a tool without parameters is an empty object.
                input_schema: match &f.parameters {
                    Some(p) if !p.is_null() => Cow::Borrowed(p),
                    _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
                },
            })
        })
        .collect()
}

fn convert_tool_choice(req: &ChatRequest, has_tools: bool) -> Result<Option<ToolChoiceBody<'_>>, WireError> {
    let no_parallel = req.parallel_tool_calls == Some(false);
    if !has_tools {
        // Forcing a tool call without tools is the caller's mistake (OpenAI refuses it too); `none` and
        // `auto` mean nothing without tools, so they are simply left out.
        return match &req.tool_choice {
            Some(ToolChoice::Required | ToolChoice::Function(_)) => {
                Err(WireError::unsupported("tool_choice requires a tool call but the request has no tools", Some("tool_choice")))
            }
            _ => Ok(None),
        };
    }
    let (kind, name) = match &req.tool_choice {
        None if !no_parallel => return Ok(None),
        None | Some(ToolChoice::Auto) => ("auto", None),
        Some(ToolChoice::Required) => ("any", None),
        Some(ToolChoice::Function(name)) => ("tool", Some(name.as_str())),
        Some(ToolChoice::None) => ("none", None),
    };
    Ok(Some(ToolChoiceBody { kind, name, disable_parallel_tool_use: no_parallel && kind != "none" }))
}

/// Anthropic pages its model list (20 per page by default); 1000 is its maximum page and covers the
/// whole catalogue in one request.
pub fn build_list_models(ep: &Endpoint<'_>) -> WireRequest {
    with_auth(WireRequest::get(format!("{}/v1/models?limit=1000", ep.base_url)), ep)
}

// ---------------------------------------------------------------------------------------------------------
// Response and errors
// ---------------------------------------------------------------------------------------------------------

/// A Messages API message: the non-streaming body, and `message_start.message` in a stream.
#[derive(Deserialize)]
struct ApiMessage {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<ApiBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
    #[serde(default)]
    usage: Option<ApiUsage>,
    #[serde(default)]
    error: Option<Value>,
}

/// The content blocks we translate; every other type (server tools, redacted thinking, blocks added
/// after this was written) is skipped.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ApiBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Option<Value>,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: String,
    },
    RedactedThinking {
        #[serde(default)]
        data: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ApiUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl ApiUsage {
    /// Stream usage is cumulative, so a later report never lowers a count; taking the larger value also
    /// keeps input counts when a later event leaves them out.
    fn absorb(&mut self, newer: ApiUsage) {
        fn max(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }
        self.input_tokens = max(self.input_tokens, newer.input_tokens);
        self.output_tokens = max(self.output_tokens, newer.output_tokens);
        self.cache_creation_input_tokens = max(self.cache_creation_input_tokens, newer.cache_creation_input_tokens);
        self.cache_read_input_tokens = max(self.cache_read_input_tokens, newer.cache_read_input_tokens);
    }

    /// Anthropic's `input_tokens` excludes cached input while OpenAI's `prompt_tokens` includes it, so
    /// cache reads and writes are added back. Cache writes (billed above the input price) are also
    /// reported as `cache_write_tokens`, the name newer OpenAI SDKs use.
    fn to_usage(&self) -> Usage {
        let read = self.cache_read_input_tokens;
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        let prompt = self.input_tokens.unwrap_or(0).saturating_add(read.unwrap_or(0)).saturating_add(write);
        let completion = self.output_tokens.unwrap_or(0);
        let mut usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
            ..Usage::default()
        };
        if let Some(read) = read {
            usage = usage.with_cached(read);
        }
        usage.with_cache_writes(write)
    }
}

fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        // `pause_turn`: a server tool paused a long turn; the text so far is a complete answer to show.
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

/// `{"stop_sequence": …}` when the model stopped at one of the request's stop sequences.
fn stop_sequence_extra(stop_reason: Option<&str>, sequence: Option<String>) -> Extra {
    let mut extra = Extra::new();
    if let (Some("stop_sequence"), Some(seq)) = (stop_reason, sequence) {
        extra.insert("stop_sequence".into(), Value::String(seq));
    }
    extra
}

/// The compact JSON text of a tool's input; a missing input is a call without parameters.
fn arguments_text(input: Option<Value>) -> String {
    match input {
        None | Some(Value::Null) => "{}".to_string(),
        Some(v) => v.to_string(),
    }
}

pub fn parse_chat(body: &[u8], ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    let msg: ApiMessage = serde_json::from_slice(body).map_err(|e| WireError::malformed("chat response", e))?;
    if msg.kind == "error" || msg.error.is_some() {
        let mut e = parse_error(0, body);
        e.status = e.kind.as_deref().map_or(0, status_of_error_type);
        return Err(WireError::Upstream(e));
    }
    let mut content: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    let mut structured = None;
    let mut signed = Vec::new();
    for block in msg.content {
        match block {
            // Anthropic splits one answer into several text blocks around citations; they read as one text.
            ApiBlock::Text { text } => content.get_or_insert_with(String::new).push_str(&text),
            // The structured answer replaces any text around it, which would break the JSON.
            ApiBlock::ToolUse { name, input, .. } if name == STRUCTURED_OUTPUT_TOOL => structured = Some(arguments_text(input)),
            ApiBlock::ToolUse { id, name, input } => {
                calls.push(ToolCall { id, kind: "function".to_string(), function: FunctionCall { name, arguments: arguments_text(input) } })
            }
            ApiBlock::Thinking { thinking, signature } => {
                reasoning.get_or_insert_with(String::new).push_str(&thinking);
                signed.push(serde_json::json!({"type": "thinking", "thinking": thinking, "signature": signature}));
            }
            ApiBlock::RedactedThinking { data } => signed.push(serde_json::json!({"type": "redacted_thinking", "data": data})),
            ApiBlock::Other => {}
        }
    }
    let answered = structured.is_some();
    if answered {
        content = structured;
    }
    let mut extra = Extra::new();
    if let Some(r) = reasoning {
        extra.insert(REASONING_FIELD.into(), Value::String(r));
    }
    if !signed.is_empty() {
        extra.insert(THINKING_BLOCKS_FIELD.into(), Value::Array(signed));
    }
    let mut finish = msg.stop_reason.as_deref().map(finish_reason);
    if finish == Some(FinishReason::ToolCalls) && answered && calls.is_empty() {
        finish = Some(FinishReason::Stop);
    }
    let choice_extra = stop_sequence_extra(msg.stop_reason.as_deref(), msg.stop_sequence);
    let message =
        ResponseMessage { role: Role::Assistant, content, tool_calls: (!calls.is_empty()).then_some(calls), refusal: None, extra };
    Ok(ChatResponse {
        id: if msg.id.is_empty() { ctx.id.to_string() } else { msg.id },
        object: "chat.completion".to_string(),
        created: ctx.created,
        model: if msg.model.is_empty() { ctx.model.to_string() } else { msg.model },
        choices: vec![Choice { index: 0, message, finish_reason: finish, logprobs: None, extra: choice_extra }],
        usage: msg.usage.as_ref().map(ApiUsage::to_usage),
        system_fingerprint: None,
        extra: Extra::new(),
    })
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

fn upstream_error(status: u16, e: ApiError) -> UpstreamError {
    let kind = (!e.kind.is_empty()).then_some(e.kind);
    let message = match (e.message.is_empty(), &kind) {
        (false, _) => e.message,
        (true, Some(k)) => format!("anthropic returned {k}"),
        (true, None) => format!("upstream returned status {status}"),
    };
    // The error type doubles as the machine code: it is Anthropic's only stable identifier.
    UpstreamError { status, message, code: kind.clone(), kind, param: None }
}

/// The HTTP status an error type stands for when it arrives without one (inside a 2xx body or stream).
fn status_of_error_type(kind: &str) -> u16 {
    match kind {
        "overloaded_error" => 529,
        "rate_limit_error" => 429,
        "api_error" => 500,
        _ => 0,
    }
}

/// Reads `{"type":"error","error":{"type","message"}}`; anything else (a proxy's HTML, Cloudflare's 413)
/// goes through the generic reader.
pub fn parse_error(status: u16, body: &[u8]) -> UpstreamError {
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
        error: ApiError,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) if env.kind == "error" => upstream_error(status, env.error),
        _ => UpstreamError::from_body(status, body),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------------------

/// One stream event. Unknown event types (and `ping`) parse to `Other` and are skipped, as Anthropic asks
/// of clients.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    MessageStart {
        message: ApiMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: ApiBlock,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u64,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<ApiUsage>,
    },
    MessageStop,
    Error {
        error: ApiError,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    /// `citations_delta` and anything newer.
    #[serde(other)]
    Other,
}

#[derive(Default, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    stop_sequence: Option<String>,
}

/// A `tool_use` block seen in this stream.
#[derive(Debug)]
struct ToolSlot {
    /// Anthropic's content-block index (text and thinking blocks count too).
    block: u64,
    /// OpenAI's tool-call index: the count of tool blocks before this one.
    index: u32,
    /// Whether any argument text went out; a call that got none is closed with `{}`.
    has_arguments: bool,
    /// The structured-output tool: its input streams as content, not as a tool call.
    structured: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    /// `message_stop` arrived.
    Done,
    /// An `error` event arrived; the upstream ends the stream after it.
    Failed,
}

/// Turns Anthropic's named-SSE stream into canonical chunks: a role chunk at `message_start`, content
/// and tool-call fragments per block, a finish chunk at `message_delta`, and at `message_stop` a
/// usage-only chunk followed by [`StreamEvent::Done`].
#[derive(Debug)]
pub struct StreamDecoder {
    sse: SseParser,
    events: Vec<SseEvent>,
    id: String,
    model: String,
    created: i64,
    usage: Option<ApiUsage>,
    tools: Vec<ToolSlot>,
    state: StreamState,
}

impl StreamDecoder {
    pub fn new(ctx: ResponseCtx<'_>) -> Self {
        StreamDecoder {
            sse: SseParser::new(),
            events: Vec::new(),
            id: ctx.id.to_string(),
            model: ctx.model.to_string(),
            created: ctx.created,
            usage: None,
            tools: Vec::new(),
            state: StreamState::Open,
        }
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.sse.feed(bytes, &mut self.events)?;
        self.drain(out)
    }

    /// Bounds one SSE line or event (see [`crate::sse::DEFAULT_MAX_EVENT_BYTES`]).
    pub fn set_max_event_bytes(&mut self, max: usize) {
        self.sse.set_limit(max);
    }

    /// A stream that ended after an `error` event is complete (the error was reported); one that ended
    /// before `message_stop` was cut off.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.sse.finish(&mut self.events)?;
        self.drain(out)?;
        match self.state {
            StreamState::Open => Err(WireError::malformed("stream", "the anthropic stream ended before message_stop")),
            StreamState::Done | StreamState::Failed => Ok(()),
        }
    }

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        // Taken out and put back so the buffer's capacity is reused across feeds.
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            if self.state != StreamState::Open {
                continue;
            }
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            let frame: Frame = serde_json::from_str(data).map_err(|e| WireError::malformed("stream event", e))?;
            self.on_frame(frame, out);
        }
        self.events = events;
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame, out: &mut Vec<StreamEvent>) {
        match frame {
            Frame::MessageStart { message } => {
                if !message.id.is_empty() {
                    self.id = message.id;
                }
                if !message.model.is_empty() {
                    self.model = message.model;
                }
                if let Some(u) = message.usage {
                    self.absorb_usage(u);
                }
                let delta = Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() };
                out.push(self.chunk(delta, None));
            }
            Frame::ContentBlockStart { index, content_block } => match content_block {
                ApiBlock::Text { text } => self.text(text, out),
                ApiBlock::Thinking { thinking, .. } => self.reasoning(thinking, out),
                ApiBlock::RedactedThinking { data } => self.signed(serde_json::json!({"type": "redacted_thinking", "data": data}), out),
                ApiBlock::ToolUse { id, name, input } => {
                    // The input is normally `{}` here and arrives as `input_json_delta`s; a proxy that
                    // sends it whole at the start is taken at its word.
                    let arguments = match input {
                        Some(Value::Object(o)) if !o.is_empty() => Value::Object(o).to_string(),
                        _ => String::new(),
                    };
                    let callers = self.tools.iter().filter(|t| !t.structured).count();
                    let slot = ToolSlot {
                        block: index,
                        index: u32::try_from(callers).unwrap_or(u32::MAX),
                        has_arguments: !arguments.is_empty(),
                        structured: name == STRUCTURED_OUTPUT_TOOL,
                    };
                    if slot.structured {
                        self.tools.push(slot);
                        self.text(arguments, out);
                        return;
                    }
                    let call = ToolCallDelta {
                        index: slot.index,
                        id: Some(id),
                        kind: Some("function".to_string()),
                        function: Some(FunctionCallDelta { name: Some(name), arguments: Some(arguments) }),
                    };
                    self.tools.push(slot);
                    out.push(self.tool_chunk(call));
                }
                ApiBlock::Other => {}
            },
            Frame::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => self.text(text, out),
                BlockDelta::ThinkingDelta { thinking } => self.reasoning(thinking, out),
                // The thinking streamed so far in this block is signed: the signature goes out as a
                // block of its own, with no text (the text went out as reasoning deltas).
                BlockDelta::SignatureDelta { signature } => {
                    self.signed(serde_json::json!({"type": "thinking", "thinking": "", "signature": signature}), out)
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    if !partial_json.is_empty() {
                        self.arguments(index, partial_json, out);
                    }
                }
                BlockDelta::Other => {}
            },
            Frame::ContentBlockStop { index } => {
                // Clients parse the concatenated arguments as JSON, and "" is not JSON.
                if self.tools.iter().any(|t| t.block == index && !t.has_arguments) {
                    self.arguments(index, "{}".to_string(), out);
                }
            }
            Frame::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    self.absorb_usage(u);
                }
                if let Some(reason) = delta.stop_reason {
                    let mut finish = finish_reason(&reason);
                    if finish == FinishReason::ToolCalls && !self.tools.is_empty() && self.tools.iter().all(|t| t.structured) {
                        finish = FinishReason::Stop;
                    }
                    let extra = stop_sequence_extra(Some(&reason), delta.stop_sequence);
                    let mut c = ChatChunk::new(&self.id, self.created, &self.model);
                    c.choices.push(ChunkChoice { index: 0, delta: Delta::default(), finish_reason: Some(finish), logprobs: None, extra });
                    out.push(StreamEvent::Chunk(c));
                }
            }
            Frame::MessageStop => {
                if let Some(u) = &self.usage {
                    let mut c = ChatChunk::new(&self.id, self.created, &self.model);
                    c.usage = Some(u.to_usage());
                    out.push(StreamEvent::Chunk(c));
                }
                self.state = StreamState::Done;
                out.push(StreamEvent::Done);
            }
            Frame::Error { error } => {
                let status = status_of_error_type(&error.kind);
                self.state = StreamState::Failed;
                out.push(StreamEvent::Error(upstream_error(status, error)));
            }
            Frame::Other => {}
        }
    }

    fn absorb_usage(&mut self, u: ApiUsage) {
        match &mut self.usage {
            Some(mine) => mine.absorb(u),
            None => self.usage = Some(u),
        }
    }

    fn text(&self, text: String, out: &mut Vec<StreamEvent>) {
        if !text.is_empty() {
            out.push(self.chunk(Delta { content: Some(text), ..Delta::default() }, None));
        }
    }

    fn reasoning(&self, text: String, out: &mut Vec<StreamEvent>) {
        if !text.is_empty() {
            let mut delta = Delta::default();
            delta.extra.insert(REASONING_FIELD.into(), Value::String(text));
            out.push(self.chunk(delta, None));
        }
    }

    /// Signed thinking ([`THINKING_BLOCKS_FIELD`]) on a delta of its own.
    fn signed(&self, block: Value, out: &mut Vec<StreamEvent>) {
        let mut delta = Delta::default();
        delta.extra.insert(THINKING_BLOCKS_FIELD.into(), Value::Array(vec![block]));
        out.push(self.chunk(delta, None));
    }

    /// Argument text for the tool call in content block `block`; deltas for other blocks (server tools)
    /// are not the caller's tool calls and are dropped.
    fn arguments(&mut self, block: u64, text: String, out: &mut Vec<StreamEvent>) {
        let Some(slot) = self.tools.iter_mut().find(|t| t.block == block) else {
            return;
        };
        slot.has_arguments = true;
        if slot.structured {
            self.text(text, out);
            return;
        }
        let call = ToolCallDelta {
            index: slot.index,
            id: None,
            kind: None,
            function: Some(FunctionCallDelta { name: None, arguments: Some(text) }),
        };
        out.push(self.tool_chunk(call));
    }

    fn tool_chunk(&self, call: ToolCallDelta) -> StreamEvent {
        self.chunk(Delta { tool_calls: Some(vec![call]), ..Delta::default() }, None)
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> StreamEvent {
        let mut c = ChatChunk::new(&self.id, self.created, &self.model);
        c.choices.push(ChunkChoice { index: 0, delta, finish_reason, logprobs: None, extra: Extra::new() });
        StreamEvent::Chunk(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Method, ProviderKind, ProviderOptions};
    use serde_json::json;

    const STREAM_TEXT: &str = include_str!("../../tests/fixtures/anthropic/stream_text.sse");
    const STREAM_TOOLS: &str = include_str!("../../tests/fixtures/anthropic/stream_tools.sse");
    const RESPONSE_TEXT: &str = include_str!("../../tests/fixtures/anthropic/response_text.json");
    const RESPONSE_TOOLS: &str = include_str!("../../tests/fixtures/anthropic/response_tools.json");

    fn ep(opts: &ProviderOptions) -> Endpoint<'_> {
        Endpoint {
            kind: ProviderKind::Anthropic,
            base_url: "https://api.anthropic.com",
            auth: crate::spec::Auth::Key("sk-ant-test"),
            options: opts,
        }
    }

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx { id: "chatcmpl-gw", created: 1_700_000_000, model: "claude-fallback" }
    }

    fn request(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    fn build(v: Value) -> Result<Value, WireError> {
        let opts = ProviderOptions::default();
        build_chat(&ep(&opts), &request(v), "claude-sonnet-4").map(|r| serde_json::from_slice(&r.body).unwrap())
    }

    fn build_ok(v: Value) -> Value {
        build(v).unwrap()
    }

    fn vertex_ep<'a>(opts: &'a ProviderOptions, auth: crate::spec::Auth<'a>) -> Endpoint<'a> {
        Endpoint { kind: ProviderKind::Vertex, base_url: "https://us-east5-aiplatform.googleapis.com", auth, options: opts }
    }

    #[test]
    fn vertex_puts_the_model_in_the_path_and_the_version_in_the_body() {
        let opts = ProviderOptions { project: Some("proj-1".into()), region: Some("us-east5".into()), ..ProviderOptions::default() };
        let req = request(
            json!({"model": "m", "max_tokens": 50, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}),
        );
        let w = build_vertex_chat(&vertex_ep(&opts, crate::spec::Auth::Bearer("ya29.token")), &req, "claude-3-5-haiku@20241022").unwrap();
        assert_eq!(
            w.url,
            "https://us-east5-aiplatform.googleapis.com/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-3-5-haiku@20241022:rawPredict"
        );
        assert!(w.headers.contains(&("authorization".into(), "Bearer ya29.token".into())));
        assert!(!w.headers.iter().any(|(k, _)| k == "x-api-key" || k == "anthropic-version"), "{:?}", w.headers);
        let body: Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(body.get("model"), None, "the path names the model: {body}");
        assert_eq!(body["anthropic_version"], VERTEX_VERSION);
        assert_eq!(body["system"], "Be brief.");
        assert_eq!(body["max_tokens"], 50);
        assert_eq!(body["messages"], json!([{"role": "user", "content": "Hi"}]));

        let stream = request(json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}));
        let w = build_vertex_chat(&vertex_ep(&opts, crate::spec::Auth::Bearer("t")), &stream, "claude-sonnet-4@20250514").unwrap();
        assert!(w.url.ends_with("/models/claude-sonnet-4@20250514:streamRawPredict"), "{}", w.url);
        assert_eq!(serde_json::from_slice::<Value>(&w.body).unwrap()["stream"], true);
    }

    #[test]
    fn vertex_claude_needs_a_project_and_a_plain_model_id() {
        let no_project = ProviderOptions::default();
        let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}));
        let e = build_vertex_chat(&vertex_ep(&no_project, crate::spec::Auth::Bearer("t")), &req, "claude-sonnet-4").unwrap_err();
        assert!(e.to_string().contains("project"), "{e}");
        let opts = ProviderOptions { project: Some("p".into()), ..ProviderOptions::default() };
        for bad in ["", "claude/../x", "claude?x=1", "claude#f", "claude%2F"] {
            assert!(build_vertex_chat(&vertex_ep(&opts, crate::spec::Auth::Bearer("t")), &req, bad).is_err(), "{bad}");
        }
        let e = build_vertex_chat(&vertex_ep(&opts, crate::spec::Auth::Key("AQ.express")), &req, "claude-sonnet-4").unwrap_err();
        assert!(e.to_string().contains("OAuth"), "{e}");
        // Without a region Claude's global endpoint is meant.
        let w = build_vertex_chat(&vertex_ep(&opts, crate::spec::Auth::Bearer("t")), &req, "claude-sonnet-4").unwrap();
        assert!(w.url.contains("/projects/p/locations/global/publishers/anthropic/"), "{}", w.url);
    }

    fn unsupported_param(v: Value) -> String {
        match build(v) {
            Err(WireError::Unsupported { param: Some(p), .. }) => p,
            other => panic!("expected an unsupported error naming a param, got {other:?}"),
        }
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    // ----- request -----

    #[test]
    fn url_headers_and_defaults() {
        let opts = ProviderOptions {
            extra_headers: vec![("anthropic-beta".into(), "prompt-caching-2024-07-31".into())],
            ..ProviderOptions::default()
        };
        let req = request(json!({"model": "anthropic/claude", "messages": [user("hi")], "seed": 7,
            "presence_penalty": 0.5, "frequency_penalty": 0.1, "logprobs": true, "stream_options": {"include_usage": true}}));
        let r = build_chat(&ep(&opts), &req, "claude-sonnet-4").unwrap();
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.url, "https://api.anthropic.com/v1/messages");
        assert_eq!(
            r.headers,
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-api-key".to_string(), "sk-ant-test".to_string()),
                ("anthropic-version".to_string(), "2023-06-01".to_string()),
                ("anthropic-beta".to_string(), "prompt-caching-2024-07-31".to_string()),
            ]
        );
        let b: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            b,
            json!({"model": "claude-sonnet-4", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}], "stream": false})
        );
    }

    #[test]
    fn version_option_and_no_key() {
        let opts = ProviderOptions { api_version: Some("2025-01-01".into()), ..ProviderOptions::default() };
        let mut e = ep(&opts);
        e.auth = crate::spec::Auth::None;
        let r = build_chat(&e, &request(json!({"model": "m", "messages": [user("hi")]})), "m").unwrap();
        assert!(r.headers.iter().all(|(k, _)| k != "x-api-key"));
        assert!(r.headers.contains(&("anthropic-version".into(), "2025-01-01".into())));
    }

    #[test]
    fn max_tokens_precedence() {
        let opts = ProviderOptions { default_max_tokens: Some(1000), ..ProviderOptions::default() };
        let max = |v: Value| -> Value {
            let r = build_chat(&ep(&opts), &request(v), "m").unwrap();
            serde_json::from_slice::<Value>(&r.body).unwrap()["max_tokens"].clone()
        };
        let msgs = json!([user("hi")]);
        assert_eq!(max(json!({"model": "m", "messages": msgs})), 1000);
        assert_eq!(max(json!({"model": "m", "messages": msgs, "max_tokens": 50})), 50);
        assert_eq!(max(json!({"model": "m", "messages": msgs, "max_tokens": 50, "max_completion_tokens": 60})), 60);
        assert_eq!(build_ok(json!({"model": "m", "messages": msgs}))["max_tokens"], DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn one_system_message_becomes_a_string() {
        let b = build_ok(json!({"model": "m", "messages": [{"role": "system", "content": "Be terse."}, user("hi")]}));
        assert_eq!(b["system"], "Be terse.");
        assert_eq!(b["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn system_and_developer_messages_are_hoisted_in_order_and_neighbours_merge() {
        let b = build_ok(json!({"model": "m", "messages": [
            {"role": "system", "content": "One."},
            user("a"),
            {"role": "developer", "content": [{"type": "text", "text": "Two."}, {"type": "text", "text": "Three."}]},
            user("b"),
            {"role": "system", "content": ""},
        ]}));
        assert_eq!(
            b["system"],
            json!([{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}, {"type": "text", "text": "Three."}])
        );
        assert_eq!(b["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]));
        let no_system = build_ok(json!({"model": "m", "messages": [user("x")]}));
        assert!(no_system.get("system").is_none());
    }

    #[test]
    fn sampling_stop_user_and_passthrough() {
        let b = build_ok(json!({"model": "m", "messages": [user("hi")], "temperature": 0.2, "top_p": 0.9,
            "stop": ["\n\n", "END"], "user": "u-42", "stream": true, "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "n": 1, "response_format": {"type": "text"}}));
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["top_p"], 0.9);
        assert_eq!(b["stop_sequences"], json!(["\n\n", "END"]));
        assert_eq!(b["metadata"], json!({"user_id": "u-42"}));
        assert_eq!(b["stream"], true);
        assert_eq!(b["top_k"], 5);
        assert_eq!(b["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
        assert!(b.get("n").is_none() && b.get("response_format").is_none() && b.get("user").is_none());

        let b = build_ok(json!({"model": "m", "messages": [user("hi")], "stop": "###",
            "metadata": {"user_id": "from-meta", "tag": "openai-only"}}));
        assert_eq!(b["stop_sequences"], json!(["###"]));
        assert_eq!(b["metadata"], json!({"user_id": "from-meta"}));
        let b = build_ok(json!({"model": "m", "messages": [user("hi")], "user": "explicit", "metadata": {"user_id": "meta"}}));
        assert_eq!(b["metadata"]["user_id"], "explicit");
        let b = build_ok(json!({"model": "m", "messages": [user("hi")], "metadata": {"tag": "x"}}));
        assert!(b.get("metadata").is_none());
    }

    #[test]
    fn temperature_outside_anthropic_range_is_refused() {
        let msgs = json!([user("hi")]);
        assert_eq!(unsupported_param(json!({"model": "m", "messages": msgs, "temperature": 1.2})), "temperature");
        assert_eq!(unsupported_param(json!({"model": "m", "messages": msgs, "temperature": -0.1})), "temperature");
        assert_eq!(build_ok(json!({"model": "m", "messages": msgs, "temperature": 1.0}))["temperature"], 1.0);
        assert_eq!(build_ok(json!({"model": "m", "messages": msgs, "temperature": 0.0}))["temperature"], 0.0);
    }

    #[test]
    fn n_above_one_is_refused() {
        assert_eq!(unsupported_param(json!({"model": "m", "messages": [user("hi")], "n": 2})), "n");
    }

    fn weather_schema() -> Value {
        json!({"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}}, "required": ["city", "temp"]})
    }

    #[test]
    fn structured_output_is_a_forced_tool() {
        let rf = json!({"type": "json_schema", "json_schema": {"name": "Weather", "description": "Today.", "schema": weather_schema(), "strict": true}});
        let b = build_ok(json!({"model": "m", "messages": [user("hi")], "response_format": rf}));
        assert_eq!(
            b["tools"],
            json!([{"name": STRUCTURED_OUTPUT_TOOL, "input_schema": weather_schema(),
                "description": "Give your answer by calling this tool: its input is your answer, a JSON object matching the \"Weather\" schema. Today."}])
        );
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": STRUCTURED_OUTPUT_TOOL}));
        assert!(b.get("output_config").is_none());
        let b = build_ok(json!({"model": "m", "messages": [user("hi")], "response_format": {"type": "json_object"}}));
        assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));

        // Beside the caller's tools: any tool, so the model may still call the caller's.
        let tools = json!([{"type": "function", "function": {"name": "get_time"}}]);
        let with_tools = |choice: Value| {
            let mut r =
                json!({"model": "m", "messages": [user("hi")], "tools": tools, "response_format": rf, "parallel_tool_calls": false});
            if !choice.is_null() {
                r["tool_choice"] = choice;
            }
            build_ok(r)
        };
        let b = with_tools(Value::Null);
        assert_eq!(b["tools"].as_array().unwrap().len(), 2);
        assert_eq!(b["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(with_tools(json!("none"))["tool_choice"]["name"], STRUCTURED_OUTPUT_TOOL);
        assert_eq!(with_tools(json!({"type": "function", "function": {"name": "get_time"}}))["tool_choice"]["name"], "get_time");

        let reserved = json!([{"type": "function", "function": {"name": STRUCTURED_OUTPUT_TOOL}}]);
        assert_eq!(unsupported_param(json!({"model": "m", "messages": [user("hi")], "tools": reserved})), "tools[0].function.name");
        let array_root = json!({"type": "json_schema", "json_schema": {"name": "l", "schema": {"type": "array"}}});
        assert_eq!(
            unsupported_param(json!({"model": "m", "messages": [user("hi")], "response_format": array_root})),
            "response_format.json_schema.schema"
        );
        assert_eq!(
            unsupported_param(json!({"model": "m", "messages": [user("hi")], "response_format": {"type": "yaml"}})),
            "response_format"
        );
    }

    #[test]
    fn structured_output_with_thinking_is_native() {
        let rf = json!({"type": "json_schema", "json_schema": {"name": "Weather", "schema": weather_schema()}});
        let thinking = json!({"type": "enabled", "budget_tokens": 1024});
        let b = build_ok(json!({"model": "m", "messages": [user("hi")], "response_format": rf, "thinking": thinking}));
        assert_eq!(b["output_config"], json!({"format": {"type": "json_schema", "schema": weather_schema()}}));
        assert!(b.get("tools").is_none() && b.get("tool_choice").is_none());
        let json_object = json!({"model": "m", "messages": [user("hi")], "response_format": {"type": "json_object"}, "thinking": thinking});
        assert_eq!(unsupported_param(json_object), "response_format");
        // Thinking switched off is no thinking.
        let off = build_ok(json!({"model": "m", "messages": [user("hi")], "response_format": rf, "thinking": {"type": "disabled"}}));
        assert_eq!(off["tool_choice"]["name"], STRUCTURED_OUTPUT_TOOL);
    }

    #[test]
    fn structured_answers_become_content() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": STRUCTURED_OUTPUT_TOOL, "input": {"city": "Paris", "temp": 18}}],
            "usage": {"input_tokens": 5, "output_tokens": 9}});
        let r = parse_chat(body.to_string().as_bytes(), ctx()).unwrap();
        let c = &r.choices[0];
        assert_eq!(c.message.content.as_deref(), Some(r#"{"city":"Paris","temp":18}"#));
        assert!(c.message.tool_calls.is_none());
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        // Beside a caller's call: the call stays a call, the structured input is the content.
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": STRUCTURED_OUTPUT_TOOL, "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]});
        let r = parse_chat(body.to_string().as_bytes(), ctx()).unwrap();
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(r.choices[0].message.tool_calls.as_ref().unwrap()[0].function.name, "get_time");
        assert_eq!(r.choices[0].message.content.as_deref(), Some("{}"));
    }

    #[test]
    fn structured_stream_becomes_content_deltas() {
        let input = start()
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_s", "name": STRUCTURED_OUTPUT_TOOL, "input": {}}}),
            )
            + &block_delta(0, json!({"type": "input_json_delta", "partial_json": ""}))
            + &block_delta(0, json!({"type": "input_json_delta", "partial_json": "{\"city\":"}))
            + &block_delta(0, json!({"type": "input_json_delta", "partial_json": "\"Oslo\"}"}))
            + &frame("content_block_stop", json!({"type": "content_block_stop", "index": 0}))
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_e", "name": STRUCTURED_OUTPUT_TOOL, "input": {}}}),
            )
            + &frame("content_block_stop", json!({"type": "content_block_stop", "index": 1}))
            + &end("tool_use");
        let ev = decode_every_way(&input);
        let cs = chunks(&ev);
        let text: String = cs.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        assert_eq!(text, r#"{"city":"Oslo"}{}"#);
        assert!(cs.iter().all(|c| c.choices.iter().all(|ch| ch.delta.tool_calls.is_none())));
        let finish: Vec<_> = cs.iter().filter_map(|c| c.choices.first()?.finish_reason.clone()).collect();
        assert_eq!(finish, vec![FinishReason::Stop]);
    }

    #[test]
    fn stop_sequences_are_named() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [{"type": "text", "text": "a"}],
            "stop_reason": "stop_sequence", "stop_sequence": "###", "usage": {"input_tokens": 1, "output_tokens": 1}});
        let r = parse_chat(body.to_string().as_bytes(), ctx()).unwrap();
        assert_eq!(r.choices[0].extra.get("stop_sequence"), Some(&json!("###")));
        let input = start()
            + &frame(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "###"}, "usage": {"output_tokens": 3}}),
            )
            + &frame("message_stop", json!({"type": "message_stop"}));
        let ev = decode_every_way(&input);
        let fin = chunks(&ev).into_iter().find_map(|c| c.choices.first().filter(|ch| ch.finish_reason.is_some()).cloned()).unwrap();
        assert_eq!((fin.finish_reason, fin.extra.get("stop_sequence")), (Some(FinishReason::Stop), Some(&json!("###"))));
    }

    #[test]
    fn file_parts_become_documents() {
        let b = build_ok(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "summarise"},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0xLjQ=", "filename": "r.pdf"}},
            {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8gd29ybGQ="}}]}]}));
        assert_eq!(
            b["messages"][0]["content"],
            json!([{"type": "text", "text": "summarise"},
                {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello world"}}])
        );
        let file =
            |f: Value| unsupported_param(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": f}]}]}));
        assert_eq!(file(json!({"file_id": "file-abc"})), "messages[0].content[0].file");
        assert_eq!(file(json!({"file_data": "data:image/svg+xml;base64,PHN2Zz4="})), "messages[0].content[0].file");
        assert_eq!(file(json!({"file_data": "data:text/plain;base64,//79"})), "messages[0].content[0].file");
        // Not in assistant turns.
        let asst = json!([user("x"), {"role": "assistant", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,AA=="}}]}]);
        assert_eq!(unsupported_param(json!({"model": "m", "messages": asst})), "messages[1].content[0]");
    }

    #[test]
    fn user_images_base64_and_url() {
        let b = build_ok(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "image_url", "image_url": "https://example.com/cat.png"},
            {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ"}},
        ]}]}));
        assert_eq!(
            b["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            ])
        );
    }

    #[test]
    fn parts_anthropic_cannot_take_are_refused_with_their_position() {
        let with_part = |part: Value| json!({"model": "m", "messages": [user("first"), {"role": "user", "content": [{"type": "text", "text": "x"}, part]}]});
        // `user("first")` merges with the second message, but positions refer to the caller's request.
        assert_eq!(
            unsupported_param(with_part(json!({"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}))),
            "messages[1].content[1]"
        );
        assert_eq!(
            unsupported_param(with_part(json!({"type": "image_url", "image_url": {"url": "data:text/plain,hello"}}))),
            "messages[1].content[1]"
        );
        assert_eq!(
            unsupported_param(with_part(json!({"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBE"}}))),
            "messages[1].content[1]"
        );
        assert_eq!(
            unsupported_param(with_part(json!({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}))),
            "messages[1].content[1]"
        );
        let image = json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}});
        assert_eq!(
            unsupported_param(json!({"model": "m", "messages": [{"role": "system", "content": [image]}, user("hi")]})),
            "messages[0].content[0]"
        );
        assert_eq!(
            unsupported_param(json!({"model": "m", "messages": [user("hi"), {"role": "assistant", "content": [image]}]})),
            "messages[1].content[0]"
        );
        assert_eq!(
            unsupported_param(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]})),
            "messages[0].role"
        );
    }

    #[test]
    fn tool_round_trip_with_parallel_calls_and_merged_results() {
        let b = build_ok(json!({"model": "m", "messages": [
            {"role": "system", "content": "Use tools."},
            user("Weather in Paris and Oslo?"),
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}},
                {"id": "toolu_02", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": [{"type": "text", "text": "12:00"}]},
            user("Thanks, and tomorrow?"),
        ]}));
        assert_eq!(
            b["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris", "unit": "c"}},
                    {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": "12:00"},
                    {"type": "text", "text": "Thanks, and tomorrow?"},
                ]},
            ])
        );
        // The caller's argument text is reused verbatim (key order kept).
        let raw = String::from_utf8(
            build_chat(&ep(&ProviderOptions::default()), &request(json!({"model": "m", "messages": [
                user("x"),
                {"role": "assistant", "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{\"z\":1,\"a\":2}"}}]},
            ]})), "m")
            .unwrap()
            .body,
        )
        .unwrap();
        assert!(raw.contains(r#""input":{"z":1,"a":2}"#), "{raw}");
    }

    #[test]
    fn tool_messages_with_images_and_empty_results() {
        let b = build_ok(json!({"model": "m", "messages": [
            user("draw"),
            {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "render", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": [
                {"type": "text", "text": "done"},
                {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGR"}},
            ]},
            {"role": "tool", "tool_call_id": "t1", "content": ""},
        ]}));
        assert_eq!(
            b["messages"][2]["content"],
            json!([
                {"type": "tool_result", "tool_use_id": "t1", "content": [
                    {"type": "text", "text": "done"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGR"}},
                ]},
                {"type": "tool_result", "tool_use_id": "t1"},
            ])
        );
        assert_eq!(b["messages"][1]["content"], json!([{"type": "tool_use", "id": "t1", "name": "render", "input": {}}]));
    }

    #[test]
    fn foreign_tool_ids_are_made_acceptable_on_both_sides() {
        let b = build_ok(json!({"model": "m", "messages": [
            user("x"),
            {"role": "assistant", "tool_calls": [
                {"id": "functions.get_weather:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny"},
        ]}));
        assert_eq!(b["messages"][1]["content"][0]["id"], "functions_get_weather_0");
        assert_eq!(b["messages"][2]["content"][0]["tool_use_id"], "functions_get_weather_0");
        assert_eq!(tool_id("toolu_01-AB"), Cow::Borrowed("toolu_01-AB"));
    }

    #[test]
    fn bad_tool_messages_are_refused() {
        let call = |args: &str| {
            json!({"model": "m", "messages": [user("x"), {"role": "assistant", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "type": "function", "function": {"name": "f", "arguments": args}},
            ]}]})
        };
        assert_eq!(unsupported_param(call("{\"city\": ")), "messages[1].tool_calls[1].function.arguments");
        assert_eq!(unsupported_param(call("[1, 2]")), "messages[1].tool_calls[1].function.arguments");
        assert_eq!(unsupported_param(call("\"text\"")), "messages[1].tool_calls[1].function.arguments");
        assert!(build(call("  {\"ok\": true}  ")).is_ok());
        assert_eq!(
            unsupported_param(json!({"model": "m", "messages": [user("x"), {"role": "tool", "content": "r"}]})),
            "messages[1].tool_call_id"
        );
    }

    #[test]
    fn empty_messages_are_dropped_and_same_roles_merge() {
        let b = build_ok(json!({"model": "m", "messages": [
            user("a"),
            {"role": "assistant", "content": null},
            {"role": "user", "content": ""},
            user("b"),
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": [{"type": "text", "text": "d"}]},
        ]}));
        assert_eq!(
            b["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
            ])
        );
    }

    #[test]
    fn tools_and_every_tool_choice_form() {
        let tools = json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather by city", "strict": true,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "now"}},
        ]);
        let with = |extra: Value| {
            let mut v = json!({"model": "m", "messages": [user("hi")], "tools": tools});
            for (k, val) in extra.as_object().unwrap() {
                v[k] = val.clone();
            }
            build_ok(v)
        };
        let b = with(json!({}));
        assert_eq!(
            b["tools"],
            json!([
                {"name": "get_weather", "description": "Weather by city",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert!(b.get("tool_choice").is_none());
        assert_eq!(with(json!({"tool_choice": "auto"}))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(with(json!({"tool_choice": "required"}))["tool_choice"], json!({"type": "any"}));
        assert_eq!(with(json!({"tool_choice": "none"}))["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            with(json!({"tool_choice": {"type": "function", "function": {"name": "now"}}}))["tool_choice"],
            json!({"type": "tool", "name": "now"})
        );
        assert_eq!(with(json!({"parallel_tool_calls": false}))["tool_choice"], json!({"type": "auto", "disable_parallel_tool_use": true}));
        assert_eq!(
            with(json!({"parallel_tool_calls": false, "tool_choice": "required"}))["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(with(json!({"parallel_tool_calls": false, "tool_choice": "none"}))["tool_choice"], json!({"type": "none"}));
        assert!(with(json!({"parallel_tool_calls": true})).get("tool_choice").is_none());
    }

    #[test]
    fn tool_choice_without_tools() {
        let base = |choice: Value| json!({"model": "m", "messages": [user("hi")], "tool_choice": choice, "parallel_tool_calls": false});
        assert!(build_ok(base(json!("none"))).get("tool_choice").is_none());
        assert!(build_ok(base(json!("auto"))).get("tool_choice").is_none());
        assert_eq!(unsupported_param(base(json!("required"))), "tool_choice");
        assert_eq!(
            unsupported_param(json!({"model": "m", "messages": [user("hi")],
                "tools": [{"type": "custom", "function": {"name": "x"}}]})),
            "tools[0].type"
        );
    }

    #[test]
    fn list_models_request_is_authenticated_and_unpaged() {
        let opts = ProviderOptions::default();
        let r = build_list_models(&ep(&opts));
        assert_eq!((r.method, r.url.as_str()), (Method::Get, "https://api.anthropic.com/v1/models?limit=1000"));
        assert!(r.headers.contains(&("x-api-key".into(), "sk-ant-test".into())));
        assert!(r.headers.contains(&("anthropic-version".into(), DEFAULT_VERSION.into())));
    }

    // ----- response -----

    #[test]
    fn text_response_with_cache_usage() {
        let r = parse_chat(RESPONSE_TEXT.as_bytes(), ctx()).unwrap();
        assert_eq!(r.id, "msg_01XFDUDYJgAACzvnptvVoYEL");
        assert_eq!(r.object, "chat.completion");
        assert_eq!(r.created, 1_700_000_000);
        assert_eq!(r.model, "claude-sonnet-4-20250514");
        assert_eq!(r.choices.len(), 1);
        let c = &r.choices[0];
        assert_eq!(c.message.role, Role::Assistant);
        assert_eq!(c.message.content.as_deref(), Some("Hi! How can I help?"));
        assert!(c.message.tool_calls.is_none() && c.message.extra.is_empty());
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (35, 7, 42));
        assert_eq!(u.cached_tokens(), Some(20));
        let out = serde_json::to_value(&u).unwrap();
        assert_eq!(out["prompt_tokens_details"], json!({"cached_tokens": 20, "cache_write_tokens": 5}));
    }

    #[test]
    fn tool_use_response() {
        let r = parse_chat(RESPONSE_TOOLS.as_bytes(), ctx()).unwrap();
        let c = &r.choices[0];
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.message.content.as_deref(), Some("Checking."));
        assert_eq!(c.message.extra.get("reasoning_content"), Some(&json!("Two cities, two calls.")));
        let calls = c.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "toolu_01NRLabsLyVHZPKxbKvkfSMn");
        assert_eq!(calls[0].kind, "function");
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
        assert_eq!((calls[1].function.name.as_str(), calls[1].function.arguments.as_str()), ("get_time", "{}"));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens()), (377, 65, 442, Some(0)));
        assert!(!serde_json::to_string(&u).unwrap().contains("cache_write_tokens"));
    }

    #[test]
    fn every_stop_reason() {
        for (stop, want) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("pause_turn", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
            ("something_new", FinishReason::Other("something_new".into())),
        ] {
            let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
                "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}});
            let r = parse_chat(body.to_string().as_bytes(), ctx()).unwrap();
            assert_eq!(r.choices[0].finish_reason, Some(want), "{stop}");
            assert_eq!(r.choices[0].message.content, None, "no text blocks means null content");
        }
    }

    #[test]
    fn response_gaps_are_filled_from_the_context() {
        let r = parse_chat(br#"{"type":"message","content":[{"type":"server_tool_use","id":"srv","name":"web_search","input":{}},{"type":"text","text":"x"}],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":2}}"#, ctx()).unwrap();
        assert_eq!((r.id.as_str(), r.model.as_str()), ("chatcmpl-gw", "claude-fallback"));
        assert_eq!(r.choices[0].finish_reason, None);
        assert!(r.choices[0].message.tool_calls.is_none(), "server tools are not the caller's tool calls");
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.total_tokens), (3, 5));
        assert!(u.prompt_tokens_details.is_none());
    }

    #[test]
    fn error_bodies_inside_a_2xx_and_garbage() {
        let err = parse_chat(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#, ctx())
            .unwrap_err();
        let WireError::Upstream(e) = err else { panic!("{err:?}") };
        assert_eq!(e.status, 529);
        assert_eq!(
            (e.message.as_str(), e.kind.as_deref(), e.code.as_deref()),
            ("Overloaded", Some("overloaded_error"), Some("overloaded_error"))
        );
        assert!(matches!(parse_chat(b"{not json", ctx()), Err(WireError::Malformed { .. })));
        assert!(matches!(parse_chat(br#"{"content":"text"}"#, ctx()), Err(WireError::Malformed { .. })));
    }

    #[test]
    fn error_shapes() {
        let e = parse_error(429, br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#);
        assert_eq!(e.status, 429);
        assert_eq!(e.kind.as_deref(), Some("rate_limit_error"));
        assert_eq!(e.code.as_deref(), Some("rate_limit_error"));
        assert!(e.message.starts_with("Number of request tokens"));
        assert_eq!(e.param, None);
        let e = parse_error(400, br#"{"type":"error","error":{"type":"invalid_request_error"}}"#);
        assert_eq!(e.message, "anthropic returned invalid_request_error");
        let e = parse_error(413, b"<html><body>413 Request Entity Too Large</body></html>");
        assert_eq!((e.status, e.kind.as_deref()), (413, None));
        assert!(e.message.contains("413 Request Entity Too Large"));
        let e = parse_error(502, br#"{"error":{"message":"bad gateway","type":"proxy_error"}}"#);
        assert_eq!((e.message.as_str(), e.kind.as_deref()), ("bad gateway", Some("proxy_error")));
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

    /// Decodes in pieces of 1 byte, 7 bytes and all at once, and checks the results are identical.
    fn decode_every_way(input: &str) -> Vec<StreamEvent> {
        let whole = decode(input, input.len()).unwrap();
        for piece in [1, 7] {
            assert_eq!(decode(input, piece).unwrap(), whole, "piece size {piece}");
        }
        whole
    }

    fn chunks(events: &[StreamEvent]) -> Vec<&ChatChunk> {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Chunk(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn text_stream() {
        let ev = decode_every_way(STREAM_TEXT);
        assert_eq!(ev.len(), 6, "{ev:#?}");
        let cs = chunks(&ev);
        for c in &cs {
            assert_eq!(c.id, "msg_01XFDUDYJgAACzvnptvVoYEL");
            assert_eq!(c.model, "claude-sonnet-4-20250514");
            assert_eq!(c.created, 1_700_000_000);
            assert_eq!(c.object, "chat.completion.chunk");
        }
        let d0 = &cs[0].choices[0].delta;
        assert_eq!((d0.role, d0.content.as_deref()), (Some(Role::Assistant), Some("")));
        assert_eq!(cs[1].choices[0].delta.content.as_deref(), Some("Hello"));
        assert_eq!(cs[2].choices[0].delta.content.as_deref(), Some(", wörld!"));
        assert_eq!(cs[3].choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(cs[3].choices[0].delta, Delta::default());
        assert!(cs[4].choices.is_empty());
        let u = cs[4].usage.as_ref().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens()), (11, 6, 17, Some(0)));
        assert!(cs[..4].iter().all(|c| c.usage.is_none()));
        assert_eq!(ev[5], StreamEvent::Done);
        // What a client sees for the finish chunk.
        assert_eq!(
            serde_json::to_value(cs[3]).unwrap(),
            json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "claude-sonnet-4-20250514", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        );
    }

    #[test]
    fn crlf_stream_decodes_the_same() {
        assert_eq!(decode_every_way(&STREAM_TEXT.replace('\n', "\r\n")), decode_every_way(STREAM_TEXT));
    }

    #[test]
    fn tool_stream_with_parallel_calls() {
        let ev = decode_every_way(STREAM_TOOLS);
        let cs = chunks(&ev);
        assert_eq!(ev.last(), Some(&StreamEvent::Done));
        assert_eq!(cs[1].choices[0].delta.content.as_deref(), Some("Checking both cities."));
        let calls: Vec<&ToolCallDelta> = cs.iter().filter_map(|c| c.choices.first()?.delta.tool_calls.as_ref()).flatten().collect();
        // Two starts plus four non-empty fragments; the empty first fragment is skipped.
        assert_eq!(calls.len(), 6, "{calls:#?}");
        assert_eq!(
            *calls[0],
            ToolCallDelta {
                index: 0,
                id: Some("toolu_01NRLabsLyVHZPKxbKvkfSMn".into()),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta { name: Some("get_weather".into()), arguments: Some(String::new()) }),
            }
        );
        assert_eq!(calls[3].index, 1, "the second tool block (content index 2) is OpenAI tool index 1");
        assert_eq!(calls[3].id.as_deref(), Some("toolu_01Tq7v2Bk3sJxPq9ZmRw4uYd"));
        for (i, want) in [(0, json!({"city": "Paris"})), (1, json!({"city": "Oslo"}))] {
            let args: String = calls.iter().filter(|c| c.index == i).filter_map(|c| c.function.as_ref()?.arguments.clone()).collect();
            assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), want);
        }
        assert!(calls.iter().filter(|c| c.id.is_none()).all(|c| c.kind.is_none() && c.function.as_ref().unwrap().name.is_none()));
        let finish: Vec<_> = cs.iter().filter_map(|c| c.choices.first()?.finish_reason.clone()).collect();
        assert_eq!(finish, vec![FinishReason::ToolCalls]);
        let u = cs.last().unwrap().usage.as_ref().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens()), (497, 89, 586, Some(120)));
    }

    fn frame(event: &str, data: Value) -> String {
        format!("event: {event}\ndata: {data}\n\n")
    }

    fn start() -> String {
        frame(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
            "content": [], "model": "claude", "usage": {"input_tokens": 4, "output_tokens": 1}}}),
        )
    }

    fn end(stop: &str) -> String {
        frame("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 3}}))
            + &frame("message_stop", json!({"type": "message_stop"}))
    }

    fn block_delta(index: u64, delta: Value) -> String {
        frame("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": delta}))
    }

    #[test]
    fn mid_stream_errors_carry_the_status_they_stand_for() {
        for (kind, status) in [("overloaded_error", 529), ("rate_limit_error", 429), ("api_error", 500), ("invalid_request_error", 0)] {
            let input = start()
                + &block_delta(0, json!({"type": "text_delta", "text": "Hel"}))
                + &frame("error", json!({"type": "error", "error": {"type": kind, "message": "Overloaded"}}))
                + &block_delta(0, json!({"type": "text_delta", "text": "ignored after the error"}));
            let ev = decode_every_way(&input);
            assert_eq!(ev.len(), 3, "{ev:#?}");
            assert_eq!(
                ev[2],
                StreamEvent::Error(UpstreamError {
                    status,
                    message: "Overloaded".into(),
                    kind: Some(kind.into()),
                    code: Some(kind.into()),
                    param: None,
                })
            );
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        let cut = &STREAM_TEXT[..STREAM_TEXT.find("event: message_stop").unwrap()];
        for piece in [1, 7, cut.len()] {
            let err = decode(cut, piece).unwrap_err();
            assert!(matches!(err, WireError::Malformed { what: "stream", .. }), "{err:?}");
        }
        // Cut inside a frame: the partial frame is delivered at finish and fails to parse.
        let mid = &STREAM_TEXT[..STREAM_TEXT.find("Hello").unwrap()];
        assert!(matches!(decode(mid, 7), Err(WireError::Malformed { .. })));
        assert!(matches!(decode("", 1), Err(WireError::Malformed { what: "stream", .. })));
    }

    #[test]
    fn malformed_json_is_an_error() {
        let input = start() + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\n\n";
        assert!(matches!(decode(&input, 7), Err(WireError::Malformed { what: "stream event", .. })));
    }

    #[test]
    fn pings_unknown_events_and_unknown_deltas_are_ignored() {
        let input = ": comment\n\n".to_string()
            + &frame("ping", json!({"type": "ping"}))
            + &start()
            + &frame("brand_new_event", json!({"type": "brand_new_event", "index": "not a number", "stuff": [1, 2]}))
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            )
            + &block_delta(0, json!({"type": "text_delta", "text": "A"}))
            + &block_delta(0, json!({"type": "citations_delta", "citation": {"type": "char_location", "cited_text": "x"}}))
            + &block_delta(0, json!({"type": "text_delta", "text": ""}))
            + &frame("content_block_stop", json!({"type": "content_block_stop", "index": 0}))
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
            )
            + &block_delta(1, json!({"type": "input_json_delta", "partial_json": "{\"query\":\"x\"}"}))
            + &frame("content_block_stop", json!({"type": "content_block_stop", "index": 1}))
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}}),
            )
            + &frame("ping", json!({"type": "ping"}))
            + &end("end_turn");
        let ev = decode_every_way(&input);
        let cs = chunks(&ev);
        // role, "A", finish, usage
        assert_eq!(cs.len(), 4, "{ev:#?}");
        assert_eq!(cs[1].choices[0].delta.content.as_deref(), Some("A"));
        assert!(cs.iter().all(|c| c.choices.iter().all(|ch| ch.delta.tool_calls.is_none())));
        let u = cs[3].usage.as_ref().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 3));
        assert!(u.prompt_tokens_details.is_none());
    }

    #[test]
    fn thinking_streams_as_reasoning_content_and_its_signature_on_a_delta_of_its_own() {
        let input = start()
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            )
            + &block_delta(0, json!({"type": "thinking_delta", "thinking": "Let me think."}))
            + &block_delta(0, json!({"type": "signature_delta", "signature": "EqQBCgIYAh"}))
            + &frame("content_block_stop", json!({"type": "content_block_stop", "index": 0}))
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "EmwKAhgB"}}),
            )
            + &frame("content_block_stop", json!({"type": "content_block_stop", "index": 1}))
            + &end("end_turn");
        let ev = decode_every_way(&input);
        let cs = chunks(&ev);
        // role, reasoning, signature, redacted, finish, usage
        assert_eq!(cs.len(), 6, "{ev:#?}");
        assert_eq!(cs[1].choices[0].delta.extra.get("reasoning_content"), Some(&json!("Let me think.")));
        assert_eq!(cs[1].choices[0].delta.content, None);
        assert_eq!(
            cs[2].choices[0].delta.extra.get(THINKING_BLOCKS_FIELD),
            Some(&json!([{"type": "thinking", "thinking": "", "signature": "EqQBCgIYAh"}]))
        );
        assert_eq!(
            cs[3].choices[0].delta.extra.get(THINKING_BLOCKS_FIELD),
            Some(&json!([{"type": "redacted_thinking", "data": "EmwKAhgB"}]))
        );
    }

    #[test]
    fn signed_thinking_comes_back_and_goes_first_in_its_turn() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [
            {"type": "thinking", "thinking": "Weather needs a tool.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 4}});
        let r = parse_chat(body.to_string().as_bytes(), ctx()).unwrap();
        let m = &r.choices[0].message;
        assert_eq!(m.extra.get("reasoning_content"), Some(&json!("Weather needs a tool.")));
        let signed = m.extra.get(THINKING_BLOCKS_FIELD).cloned().unwrap();
        assert_eq!(
            signed,
            json!([{"type": "thinking", "thinking": "Weather needs a tool.", "signature": "sig-1"}, {"type": "redacted_thinking", "data": "opaque"}])
        );
        // The next turn sends the answer back as it came: the signed blocks first, then the tool call.
        let b = build_ok(json!({"model": "m", "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [
            user("weather in Oslo?"),
            {"role": "assistant", "content": null, "thinking_blocks": signed, "reasoning_content": "Weather needs a tool.",
             "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}]}));
        let blocks = &b["messages"][1]["content"];
        assert_eq!(blocks[0], json!({"type": "thinking", "thinking": "Weather needs a tool.", "signature": "sig-1"}));
        assert_eq!(blocks[1], json!({"type": "redacted_thinking", "data": "opaque"}));
        assert_eq!(blocks[2]["type"], "tool_use");
        // Unsigned thinking (another provider's) is left out; a malformed list is refused by path.
        let b = build_ok(json!({"model": "m", "messages": [user("q"),
            {"role": "assistant", "content": "a", "thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": ""}]}, user("q2")]}));
        assert_eq!(b["messages"][1]["content"], "a");
        let e = build(
            json!({"model": "m", "messages": [user("q"), {"role": "assistant", "content": "a", "thinking_blocks": [{"type": "text"}]}]}),
        )
        .unwrap_err();
        assert!(matches!(&e, WireError::Unsupported { param: Some(p), .. } if p == "messages[1].thinking_blocks[0]"), "{e:?}");
    }

    #[test]
    fn tool_call_without_arguments_is_closed_with_an_empty_object() {
        let input = start()
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "now", "input": {}}}),
            )
            + &block_delta(0, json!({"type": "input_json_delta", "partial_json": ""}))
            + &frame("content_block_stop", json!({"type": "content_block_stop", "index": 0}))
            + &frame(
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "f", "input": {"whole": true}}}),
            )
            + &frame("content_block_stop", json!({"type": "content_block_stop", "index": 1}))
            + &end("tool_use");
        let ev = decode_every_way(&input);
        let calls: Vec<ToolCallDelta> = chunks(&ev).iter().filter_map(|c| c.choices.first()?.delta.tool_calls.clone()).flatten().collect();
        let args =
            |i: u32| -> String { calls.iter().filter(|c| c.index == i).filter_map(|c| c.function.as_ref()?.arguments.clone()).collect() };
        assert_eq!(calls.len(), 3, "{calls:#?}");
        assert_eq!(args(0), "{}");
        assert_eq!(args(1), r#"{"whole":true}"#);
    }

    #[test]
    fn stream_without_message_start_uses_the_context_identity() {
        let input = block_delta(0, json!({"type": "text_delta", "text": "x"})) + &frame("message_stop", json!({"type": "message_stop"}));
        let ev = decode_every_way(&input);
        assert_eq!(ev.len(), 2, "no usage was reported, so no usage chunk: {ev:#?}");
        let cs = chunks(&ev);
        assert_eq!((cs[0].id.as_str(), cs[0].model.as_str()), ("chatcmpl-gw", "claude-fallback"));
    }

    #[test]
    fn events_after_message_stop_are_ignored() {
        let input = STREAM_TEXT.to_string() + &block_delta(0, json!({"type": "text_delta", "text": "late"}));
        assert_eq!(decode_every_way(&input), decode_every_way(STREAM_TEXT));
    }
}
