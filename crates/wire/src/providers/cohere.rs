//! Cohere v2 codec: canonical (OpenAI-shaped) chat requests to `POST /v2/chat`, embeddings to
//! `POST /v2/embed`, the model list from `GET /v1/models`, and Cohere's responses, `{"message":…}` errors and
//! named-SSE streams back to canonical types.
//!
//! Cohere's v2 API is close to OpenAI's in its messages (the same four roles, `tool_call_id`, string
//! arguments) and far from it elsewhere: sampling knobs have other names (`p`, `k`, `stop_sequences`),
//! `tool_choice` knows only `REQUIRED` and `NONE`, the text an assistant writes before calling tools is a
//! separate `tool_plan`, usage comes in two counts (`billed_units` and `tokens`), and a stream is a sequence
//! of typed events whose indexes count content blocks rather than tool calls. This module owns those
//! differences.
//!
//! Where the two APIs cannot be mapped one to one, the choices are:
//! - The text an assistant turn carries beside its tool calls is sent as `tool_plan` (Cohere refuses text
//!   content next to tool calls), and a `tool_plan` that comes back is the message's `content`. Both are
//!   what the model says before it calls a tool, so a conversation round-trips through any OpenAI client.
//! - A named `tool_choice` keeps only that tool and sends `REQUIRED` (Cohere cannot name one); naming a tool
//!   the request does not define is refused.
//! - `top_p` is Cohere's `p`, which must lie in 0.01..=0.99: `1.0` (no nucleus cut, the OpenAI default) is
//!   sent as 0.99, the closest Cohere takes; values below 0.01 are refused. `presence_penalty` and
//!   `frequency_penalty` outside Cohere's 0..=1 are refused rather than clamped.
//! - Usage is the billed count (`billed_units`, what the account pays and budgets settle on), falling back
//!   to `tokens` when Cohere reports no billed units.
//! - `finish_reason` `ERROR` and `TIMEOUT` are upstream failures (500 and 504), not answers: the text
//!   before them is incomplete.
//! - A `file` part holding text (`text/*`, JSON) becomes one of the request's `documents`, which is how
//!   Cohere grounds a reply in a file; other files (PDF, images as files, `file_id` references) are refused
//!   with a 400 naming the part, since Cohere reads documents as text only.
//! - Refused (a 400): `n > 1`, `logprobs`, audio and other part types, images in system, assistant or tool
//!   messages, and the deprecated `function` role.
//! - Dropped silently: `parallel_tool_calls` and `user` (Cohere has no knob for them), `stream_options`
//!   (Cohere always reports usage), and reasoning text sent back on assistant turns. Cohere's own
//!   `top_k` (as `k`), `thinking`, `safety_mode` and `priority` pass through.
//! - Reasoning models' `thinking` content comes back as `reasoning_content`, as on the Anthropic codec.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{UpstreamError, WireError};
use crate::spec::{Endpoint, ResponseCtx, StreamEvent, WireRequest};
use crate::sse::{SseEvent, SseParser};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta, Embedding, EmbeddingsRequest,
    EmbeddingsResponse, EmbeddingsUsage, Extra, FileData, FinishReason, FunctionCall, FunctionCallDelta, Message, ResponseMessage, Role,
    Stop, ToolCall, ToolCallDelta, ToolChoice, Usage,
};

/// The field OpenAI-compatible reasoning servers use for a model's thinking text.
const REASONING_FIELD: &str = "reasoning_content";

/// `input_type` when the caller names none. Cohere requires one for its v3+ embedding models, and
/// `search_document` is what an index of stored texts (the common use of `/v1/embeddings`) is built with;
/// a caller embedding queries sends `input_type: "search_query"` as an extra field.
pub const DEFAULT_INPUT_TYPE: &str = "search_document";

const INPUT_TYPES: [&str; 5] = ["search_document", "search_query", "classification", "clustering", "image"];

/// Cohere's bounds on `p`.
const P_MIN: f64 = 0.01;
const P_MAX: f64 = 0.99;

// ---------------------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------------------

/// The `/v2/chat` body. Texts and images borrow from the canonical request.
#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_tools: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    documents: Vec<Document>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Format<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    safety_mode: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<&'a Value>,
    stream: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Turn<'a> {
    System {
        content: Parts<'a>,
    },
    User {
        content: Parts<'a>,
    },
    Assistant {
        #[serde(skip_serializing_if = "Parts::is_empty")]
        content: Parts<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_plan: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<CallOut<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: Parts<'a>,
    },
}

/// Content parts, written as a plain string when they are a single text (the form closest to what the
/// caller sent, and the one Cohere documents first).
#[derive(Default)]
struct Parts<'a>(Vec<Part<'a>>);

impl Parts<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Parts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [Part::Text { text }] => s.serialize_str(text),
            parts => parts.serialize(s),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: ImageOut<'a> },
}

#[derive(Serialize)]
struct ImageOut<'a> {
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

#[derive(Serialize)]
struct CallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: CallFunction<'a>,
}

#[derive(Serialize)]
struct CallFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ToolDef<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: ToolFunction<'a>,
}

#[derive(Serialize)]
struct ToolFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: Cow<'a, Value>,
}

/// One grounding document made from a text `file` part.
#[derive(Serialize)]
struct Document {
    data: DocumentData,
}

#[derive(Serialize)]
struct DocumentData {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    text: String,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Format<'a> {
    Text,
    JsonObject {
        #[serde(skip_serializing_if = "Option::is_none")]
        json_schema: Option<&'a Value>,
    },
}

pub fn build_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    check_unsupported(req)?;
    let mut documents = Vec::new();
    let messages = convert_messages(&req.messages, &mut documents)?;
    let (tools, tool_choice) = convert_tools(req)?;
    let strict_tools = (!tools.is_empty()
        && req
            .tools
            .iter()
            .flatten()
            .filter(|t| tools.iter().any(|d| d.function.name == t.function.name))
            .all(|t| t.function.strict == Some(true)))
    .then_some(true);
    let body = ChatBody {
        model,
        messages,
        tools,
        strict_tools,
        tool_choice,
        documents,
        response_format: convert_format(req)?,
        max_tokens: req.max_output_tokens(),
        stop_sequences: req.stop.as_ref().map_or_else(Vec::new, |s| match s {
            Stop::One(one) => vec![one.as_str()],
            Stop::Many(many) => many.iter().map(String::as_str).collect(),
        }),
        temperature: req.temperature,
        seed: req.seed,
        frequency_penalty: req.frequency_penalty,
        presence_penalty: req.presence_penalty,
        k: passthrough(req, "top_k"),
        p: convert_top_p(req.top_p)?,
        thinking: passthrough(req, "thinking"),
        safety_mode: passthrough(req, "safety_mode"),
        priority: passthrough(req, "priority"),
        stream: req.is_stream(),
    };
    let body = serde_json::to_vec(&body).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))?;
    Ok(authorized(WireRequest::post_json(format!("{}/v2/chat", ep.base_url), body), ep))
}

fn authorized(mut r: WireRequest, ep: &Endpoint<'_>) -> WireRequest {
    if let Some(k) = ep.api_key() {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    r.with_extra_headers(ep)
}

fn passthrough<'a>(req: &'a ChatRequest, field: &str) -> Option<&'a Value> {
    req.extra.get(field).filter(|v| !v.is_null())
}

fn check_unsupported(req: &ChatRequest) -> Result<(), WireError> {
    if let Some(n) = req.n.filter(|&n| n > 1) {
        return Err(WireError::unsupported(format!("n = {n} is not supported by cohere, which returns one reply per request"), Some("n")));
    }
    if req.extra.get("logprobs").is_some_and(|v| v.as_bool() == Some(true)) {
        return Err(WireError::unsupported(
            "logprobs are not supported on cohere (its log probabilities are per token id, not OpenAI's shape)",
            Some("logprobs"),
        ));
    }
    for (name, v) in [("presence_penalty", req.presence_penalty), ("frequency_penalty", req.frequency_penalty)] {
        if let Some(x) = v.filter(|x| !(0.0..=1.0).contains(x)) {
            return Err(WireError::unsupported(format!("{name} {x} is outside cohere's range of 0 to 1"), Some(name)));
        }
    }
    Ok(())
}

fn convert_top_p(top_p: Option<f64>) -> Result<Option<f64>, WireError> {
    match top_p {
        None => Ok(None),
        Some(p) if (P_MIN..=P_MAX).contains(&p) => Ok(Some(p)),
        Some(p) if p > P_MAX && p <= 1.0 => Ok(Some(P_MAX)),
        Some(p) => Err(WireError::unsupported(format!("top_p {p} is outside cohere's range of 0.01 to 0.99"), Some("top_p"))),
    }
}

fn convert_format(req: &ChatRequest) -> Result<Option<Format<'_>>, WireError> {
    let Some(f) = &req.response_format else { return Ok(None) };
    match f.kind.as_str() {
        "text" => Ok(Some(Format::Text)),
        "json_object" => Ok(Some(Format::JsonObject { json_schema: None })),
        "json_schema" => {
            let schema = f.json_schema.as_ref().and_then(|s| s.schema.as_ref()).filter(|s| !s.is_null());
            Ok(Some(Format::JsonObject { json_schema: schema }))
        }
        other => Err(WireError::unsupported(format!("response_format \"{other}\" is not supported by cohere"), Some("response_format"))),
    }
}

fn convert_messages<'a>(messages: &'a [Message], documents: &mut Vec<Document>) -> Result<Vec<Turn<'a>>, WireError> {
    let mut turns = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let turn = match m.role {
            Role::System | Role::Developer => {
                Turn::System { content: parts(m.content.as_ref(), i, Allowed::TextOnly("system"), documents)? }
            }
            Role::User => Turn::User { content: parts(m.content.as_ref(), i, Allowed::Everything, documents)? },
            Role::Assistant => {
                let calls = tool_calls(m);
                if calls.is_empty() {
                    let content = parts(m.content.as_ref(), i, Allowed::TextOnly("assistant"), documents)?;
                    if m.joined_text().is_empty() {
                        // An assistant turn with nothing in it carries nothing; Cohere refuses empty turns.
                        continue;
                    }
                    Turn::Assistant { content, tool_plan: None, tool_calls: calls }
                } else {
                    // Checked for what it holds even though only its text goes on.
                    parts(m.content.as_ref(), i, Allowed::TextOnly("assistant"), documents)?;
                    let plan = m.joined_text();
                    Turn::Assistant { content: Parts::default(), tool_plan: (!plan.is_empty()).then_some(plan), tool_calls: calls }
                }
            }
            Role::Tool => {
                let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.is_empty()) else {
                    return Err(WireError::unsupported(
                        "a tool message needs the tool_call_id of the call it answers",
                        Some(&format!("messages[{i}].tool_call_id")),
                    ));
                };
                let mut content = parts(m.content.as_ref(), i, Allowed::TextOnly("tool"), documents)?;
                if content.is_empty() {
                    // A tool that returned nothing still answered its call.
                    content.0.push(Part::Text { text: "" });
                }
                Turn::Tool { tool_call_id: id, content }
            }
            Role::Function => return Err(WireError::function_role("cohere", i)),
        };
        turns.push(turn);
    }
    Ok(turns)
}

fn tool_calls(m: &Message) -> Vec<CallOut<'_>> {
    m.tool_calls
        .iter()
        .flatten()
        .map(|c| CallOut {
            id: &c.id,
            kind: "function",
            function: CallFunction {
                name: &c.function.name,
                // Clients parse arguments as JSON; a call without parameters is `{}`.
                arguments: if c.function.arguments.trim().is_empty() { "{}" } else { &c.function.arguments },
            },
        })
        .collect()
}

/// Which parts a role may carry on Cohere's side.
#[derive(Clone, Copy)]
enum Allowed {
    /// User turns: text, images and text files.
    Everything,
    /// Text only; the role name is for the error message.
    TextOnly(&'static str),
}

fn parts<'a>(content: Option<&'a Content>, i: usize, allowed: Allowed, documents: &mut Vec<Document>) -> Result<Parts<'a>, WireError> {
    let mut out = Vec::new();
    match content {
        None => {}
        Some(Content::Text(t)) => out.push(Part::Text { text: t }),
        Some(Content::Parts(ps)) => {
            for (j, p) in ps.iter().enumerate() {
                let param = || format!("messages[{i}].content[{j}]");
                match (p, allowed) {
                    (ContentPart::Text { text }, _) => out.push(Part::Text { text }),
                    (ContentPart::ImageUrl { image_url }, Allowed::Everything) => {
                        out.push(Part::ImageUrl { image_url: ImageOut { url: &image_url.url, detail: image_url.detail.as_deref() } })
                    }
                    (ContentPart::File { file }, Allowed::Everything) => documents.push(text_document(file, &param())?),
                    (other, allowed) => return Err(unsupported_part(other, allowed, &param())),
                }
            }
        }
    }
    Ok(Parts(out))
}

fn unsupported_part(part: &ContentPart, allowed: Allowed, param: &str) -> WireError {
    let kind = match part {
        ContentPart::Text { .. } => "text",
        ContentPart::ImageUrl { .. } => "image_url",
        ContentPart::File { .. } => "file",
        ContentPart::Other(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
    };
    let message = match allowed {
        Allowed::TextOnly(role) => format!("cohere accepts only text in {role} messages, got a \"{kind}\" part"),
        Allowed::Everything => format!("content part type \"{kind}\" is not supported by cohere"),
    };
    WireError::unsupported(message, Some(param))
}

/// Media types whose bytes Cohere can read as a document's text.
fn is_text_media_type(mt: &str) -> bool {
    let mt = mt.to_ascii_lowercase();
    mt.starts_with("text/") || matches!(mt.as_str(), "application/json" | "application/xml" | "application/x-yaml" | "application/yaml")
}

/// A `file` part (`{"file_data":"data:…;base64,…","filename":…}`) as a grounding document.
fn text_document(file: &FileData, param: &str) -> Result<Document, WireError> {
    let filename = file.filename.as_deref().filter(|s| !s.is_empty());
    let refuse = |why: String| WireError::unsupported(why, Some(param));
    if file.file_data.is_none() {
        return Err(refuse("cohere cannot read uploaded files by file_id; send the file's text inline as file_data".into()));
    }
    let Some((media_type, payload)) = file.inline() else {
        return Err(refuse("file_data must be a base64 data: URL (data:<media type>;base64,<data>)".into()));
    };
    if !is_text_media_type(media_type) {
        return Err(refuse(format!(
            "cohere reads documents as text only, not \"{media_type}\" files; extract the text and send it as a text part or a text/plain file"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| refuse(format!("file_data is not valid base64: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| refuse("a text file must be UTF-8".into()))?;
    Ok(Document { data: DocumentData { title: filename.map(str::to_string), text } })
}

fn convert_tools(req: &ChatRequest) -> Result<(Vec<ToolDef<'_>>, Option<&'static str>), WireError> {
    let defined = req.tools.as_deref().unwrap_or_default();
    let mut tools = Vec::with_capacity(defined.len());
    for (k, t) in defined.iter().enumerate() {
        if t.kind != "function" {
            return Err(WireError::unsupported(
                format!("tool type \"{}\" is not supported by cohere", t.kind),
                Some(&format!("tools[{k}].type")),
            ));
        }
        let f = &t.function;
        tools.push(ToolDef {
            kind: "function",
            function: ToolFunction {
                name: &f.name,
                description: f.description.as_deref(),
                // Cohere requires a schema; a tool without parameters takes an empty object.
                parameters: match &f.parameters {
                    Some(p) if !p.is_null() => Cow::Borrowed(p),
                    _ => Cow::Owned(serde_json::json!({"type": "object", "properties": {}})),
                },
            },
        });
    }
    let choice = match &req.tool_choice {
        None | Some(ToolChoice::Auto) => None,
        // Without tools, `none` means nothing; it is left out rather than sent alone.
        Some(ToolChoice::None) => (!tools.is_empty()).then_some("NONE"),
        Some(ToolChoice::Required) if tools.is_empty() => {
            return Err(WireError::unsupported("tool_choice requires a tool call but the request has no tools", Some("tool_choice")))
        }
        Some(ToolChoice::Required) => Some("REQUIRED"),
        Some(ToolChoice::Function(name)) => {
            tools.retain(|t| t.function.name == name);
            if tools.is_empty() {
                return Err(WireError::unsupported(
                    format!("tool_choice names \"{name}\", which is not one of the request's tools"),
                    Some("tool_choice"),
                ));
            }
            Some("REQUIRED")
        }
    };
    Ok((tools, choice))
}

/// Lists every model the key can use in one page (Cohere's page size is at most 1000); chat and embedding
/// models both, since the gateway routes both.
pub fn build_list_models(ep: &Endpoint<'_>) -> WireRequest {
    authorized(WireRequest::get(format!("{}/v1/models?page_size=1000", ep.base_url)), ep)
}

/// Names from `{"models":[{"name":…,"endpoints":[…]}],"next_page_token":…}`.
pub fn parse_models(body: &[u8]) -> Result<Vec<String>, WireError> {
    #[derive(Deserialize)]
    struct List {
        models: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        #[serde(default)]
        name: Option<String>,
    }
    let l: List = serde_json::from_slice(body).map_err(|e| WireError::malformed("model list", e))?;
    Ok(l.models.into_iter().filter_map(|m| m.name.filter(|n| !n.is_empty())).collect())
}

// ---------------------------------------------------------------------------------------------------------
// Embeddings
// ---------------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct EmbedBody<'a> {
    model: &'a str,
    texts: Vec<&'a str>,
    input_type: &'a str,
    embedding_types: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimension: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncate: Option<&'a Value>,
}

pub fn build_embeddings(ep: &Endpoint<'_>, req: &EmbeddingsRequest, model: &str) -> Result<WireRequest, WireError> {
    let Some(texts) = req.input.texts() else {
        return Err(WireError::unsupported("cohere embeds text only, not token ids", Some("input")));
    };
    let embedding_type = match req.encoding_format.as_deref() {
        None | Some("float") => "float",
        // Cohere's base64 is the float vector's little-endian bytes, exactly OpenAI's encoding.
        Some("base64") => "base64",
        Some(f) => {
            return Err(WireError::unsupported(
                format!("encoding_format must be \"float\" or \"base64\", got \"{f}\""),
                Some("encoding_format"),
            ))
        }
    };
    let input_type = match req.extra.get("input_type") {
        None | Some(Value::Null) => DEFAULT_INPUT_TYPE,
        Some(Value::String(s)) if INPUT_TYPES.contains(&s.as_str()) => s.as_str(),
        Some(other) => {
            return Err(WireError::unsupported(
                format!("input_type must be one of {}, got {other}", INPUT_TYPES.join(", ")),
                Some("input_type"),
            ))
        }
    };
    let body = EmbedBody {
        model,
        texts,
        input_type,
        embedding_types: [embedding_type],
        output_dimension: req.dimensions,
        truncate: req.extra.get("truncate").filter(|v| !v.is_null()),
    };
    let body = serde_json::to_vec(&body).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))?;
    Ok(authorized(WireRequest::post_json(format!("{}/v2/embed", ep.base_url), body), ep))
}

#[derive(Deserialize)]
struct EmbedResponse {
    #[serde(default)]
    embeddings: EmbeddingsByType,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Default, Deserialize)]
struct EmbeddingsByType {
    #[serde(default, rename = "float")]
    floats: Option<Vec<Value>>,
    #[serde(default)]
    base64: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    billed_units: Option<Counts>,
    #[serde(default)]
    tokens: Option<Counts>,
}

/// Parses `/v2/embed` into OpenAI's shape: whichever of `float` and `base64` came back (the request asked
/// for the one the caller wants), in input order.
pub fn parse_embeddings(body: &[u8], ctx: ResponseCtx<'_>) -> Result<EmbeddingsResponse, WireError> {
    let r: EmbedResponse = serde_json::from_slice(body).map_err(|e| malformed_or_error(body, "embeddings response", e))?;
    let vectors = match (r.embeddings.floats, r.embeddings.base64) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => return Err(WireError::malformed("embeddings response", "no float or base64 embeddings in it")),
    };
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(i, embedding)| Embedding { object: "embedding".into(), index: u32::try_from(i).unwrap_or(u32::MAX), embedding })
        .collect();
    let tokens = r.meta.and_then(|m| m.billed_units.or(m.tokens)).and_then(|c| c.input_tokens).map_or(0, count);
    Ok(EmbeddingsResponse {
        object: "list".into(),
        data,
        model: ctx.model.to_string(),
        usage: EmbeddingsUsage { prompt_tokens: tokens, total_tokens: tokens },
        extra: Extra::new(),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Response and errors
// ---------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ApiResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    finish_reason: Option<String>,
    message: ApiMessage,
    #[serde(default)]
    usage: Option<ApiUsage>,
}

#[derive(Default, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    content: Option<Vec<ApiContent>>,
    #[serde(default)]
    tool_plan: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ApiToolCall>>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ApiContent {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ApiToolCall {
    #[serde(default)]
    id: String,
    #[serde(default)]
    function: Option<ApiFunction>,
}

#[derive(Default, Deserialize)]
struct ApiFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Cohere's counts are JSON numbers that its SDKs type as floats.
#[derive(Clone, Copy, Default, Deserialize)]
struct Counts {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

#[derive(Clone, Copy, Default, Deserialize)]
struct ApiUsage {
    #[serde(default)]
    billed_units: Option<Counts>,
    #[serde(default)]
    tokens: Option<Counts>,
    #[serde(default)]
    cached_tokens: Option<f64>,
}

fn count(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.round() as u64
    } else {
        0
    }
}

impl ApiUsage {
    /// The billed counts (what budgets settle on), each falling back to the model's own count.
    fn to_usage(self) -> Usage {
        let billed = self.billed_units.unwrap_or_default();
        let seen = self.tokens.unwrap_or_default();
        let prompt = billed.input_tokens.or(seen.input_tokens).map_or(0, count);
        let completion = billed.output_tokens.or(seen.output_tokens).map_or(0, count);
        let u = Usage::new(prompt, completion);
        match self.cached_tokens {
            Some(c) => u.with_cached(count(c).min(prompt)),
            None => u,
        }
    }
}

/// What a finish reason means: an answer's end, or a failure the text before it does not survive.
enum Finish {
    Answer(FinishReason),
    Failed(u16),
}

fn finish_reason(s: &str) -> Finish {
    match s {
        "COMPLETE" | "STOP_SEQUENCE" => Finish::Answer(FinishReason::Stop),
        "MAX_TOKENS" => Finish::Answer(FinishReason::Length),
        "TOOL_CALL" => Finish::Answer(FinishReason::ToolCalls),
        "ERROR" => Finish::Failed(500),
        "TIMEOUT" => Finish::Failed(504),
        other => Finish::Answer(FinishReason::Other(other.to_ascii_lowercase())),
    }
}

fn generation_failed(status: u16, detail: Option<&str>) -> UpstreamError {
    let reason = if status == 504 { "TIMEOUT" } else { "ERROR" };
    let message = match detail.filter(|d| !d.trim().is_empty()) {
        Some(d) => d.to_string(),
        None => format!("cohere ended the generation with finish_reason {reason}"),
    };
    UpstreamError {
        status,
        message,
        kind: None,
        code: Some(if status == 504 { "generation_timeout" } else { "generation_error" }.into()),
        param: None,
    }
}

pub fn parse_chat(body: &[u8], ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    let r: ApiResponse = serde_json::from_slice(body).map_err(|e| malformed_or_error(body, "chat response", e))?;
    let mut content: Option<String> = None;
    let mut reasoning: Option<String> = None;
    for c in r.message.content.into_iter().flatten() {
        match c {
            ApiContent::Text { text } => content.get_or_insert_with(String::new).push_str(&text),
            ApiContent::Thinking { thinking } => reasoning.get_or_insert_with(String::new).push_str(&thinking),
            ApiContent::Other => {}
        }
    }
    let finish = match r.finish_reason.as_deref().map(finish_reason) {
        Some(Finish::Failed(status)) => return Err(WireError::Upstream(generation_failed(status, content.as_deref()))),
        Some(Finish::Answer(f)) => Some(f),
        None => None,
    };
    if content.as_deref().is_none_or(str::is_empty) {
        if let Some(plan) = r.message.tool_plan.filter(|p| !p.is_empty()) {
            content = Some(plan);
        }
    }
    let calls: Vec<ToolCall> = r
        .message
        .tool_calls
        .into_iter()
        .flatten()
        .map(|c| {
            let f = c.function.unwrap_or_default();
            let arguments = f.arguments.filter(|a| !a.trim().is_empty()).unwrap_or_else(|| "{}".into());
            ToolCall { id: c.id, kind: "function".into(), function: FunctionCall { name: f.name.unwrap_or_default(), arguments } }
        })
        .collect();
    let mut extra = Extra::new();
    if let Some(r) = reasoning {
        extra.insert(REASONING_FIELD.into(), Value::String(r));
    }
    Ok(ChatResponse {
        id: if r.id.is_empty() { ctx.id.to_string() } else { r.id },
        object: "chat.completion".into(),
        created: ctx.created,
        // Cohere does not echo the model.
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

/// A 2xx body that does not parse but carries Cohere's `{"message":…}` is the upstream refusing, not a
/// malformed answer.
fn malformed_or_error(body: &[u8], what: &'static str, e: serde_json::Error) -> WireError {
    #[derive(Deserialize)]
    struct Refusal {
        message: String,
    }
    match serde_json::from_slice::<Refusal>(body) {
        Ok(r) if !r.message.is_empty() => WireError::Upstream(UpstreamError { status: 0, message: r.message, ..Default::default() }),
        _ => WireError::malformed(what, e),
    }
}

/// Reads Cohere's `{"message":…}` error bodies. Cohere has no error codes, so the one the engine acts on is
/// derived from the text: its "too many tokens" refusal is `context_length_exceeded`.
pub fn parse_error(status: u16, body: &[u8]) -> UpstreamError {
    let mut e = UpstreamError::from_body(status, body);
    let lower = e.message.to_ascii_lowercase();
    if e.code.is_none() && (lower.contains("too many tokens") || lower.contains("context length")) {
        e.code = Some("context_length_exceeded".into());
    }
    e
}

// ---------------------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------------------

/// One stream event, named by its `type` (the SSE `event:` line says the same). Citations, `debug` and
/// events newer than this code parse to `Other` and are skipped.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Frame {
    MessageStart {
        #[serde(default)]
        id: Option<String>,
    },
    ContentStart {
        #[serde(default)]
        delta: Option<FrameDelta>,
    },
    ContentDelta {
        #[serde(default)]
        delta: Option<FrameDelta>,
    },
    ToolPlanDelta {
        #[serde(default)]
        delta: Option<FrameDelta>,
    },
    ToolCallStart {
        #[serde(default)]
        index: Option<u64>,
        #[serde(default)]
        delta: Option<FrameDelta>,
    },
    ToolCallDelta {
        #[serde(default)]
        index: Option<u64>,
        #[serde(default)]
        delta: Option<FrameDelta>,
    },
    ToolCallEnd {
        #[serde(default)]
        index: Option<u64>,
    },
    MessageEnd {
        #[serde(default)]
        delta: Option<EndDelta>,
    },
    #[serde(other)]
    Other,
}

#[derive(Default, Deserialize)]
struct FrameDelta {
    #[serde(default)]
    message: Option<DeltaMessage>,
}

#[derive(Default, Deserialize)]
struct DeltaMessage {
    #[serde(default)]
    content: Option<DeltaContent>,
    #[serde(default)]
    tool_plan: Option<String>,
    #[serde(default)]
    tool_calls: Option<DeltaCall>,
}

#[derive(Default, Deserialize)]
struct DeltaContent {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
}

#[derive(Default, Deserialize)]
struct DeltaCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<ApiFunction>,
}

#[derive(Default, Deserialize)]
struct EndDelta {
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    usage: Option<ApiUsage>,
}

impl FrameDelta {
    fn into_message(self) -> DeltaMessage {
        self.message.unwrap_or_default()
    }
}

/// A tool call seen in this stream.
#[derive(Debug)]
struct ToolSlot {
    /// Cohere's event index (it counts content blocks, so it need not start at 0).
    block: Option<u64>,
    /// OpenAI's tool-call index: the count of calls before this one.
    index: u32,
    has_arguments: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    /// `message-end` (or a `[DONE]`) arrived.
    Done,
    /// The generation failed and the error was reported.
    Failed,
}

/// Turns Cohere's named-SSE stream into canonical chunks: a role chunk at `message-start`, text, tool-plan
/// and tool-call fragments as they come, and at `message-end` a finish chunk, a usage chunk and
/// [`StreamEvent::Done`] (or an error, when the generation ended in `ERROR` or `TIMEOUT`).
#[derive(Debug)]
pub struct StreamDecoder {
    sse: SseParser,
    events: Vec<SseEvent>,
    id: String,
    model: String,
    created: i64,
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

    /// A stream that ended before `message-end` was cut off.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.sse.finish(&mut self.events)?;
        self.drain(out)?;
        match self.state {
            StreamState::Open => Err(WireError::malformed("stream", "the cohere stream ended before message-end")),
            StreamState::Done | StreamState::Failed => Ok(()),
        }
    }

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            if self.state != StreamState::Open {
                continue;
            }
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                // Cohere's SDKs accept this end marker, so a proxy in front of Cohere may send one.
                self.state = StreamState::Done;
                out.push(StreamEvent::Done);
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| WireError::malformed("stream event", e))?;
            if v.get("type").is_none() {
                // Not an event: an error object a proxy or the API wrote into the stream.
                if let Some(message) = v.get("message").and_then(Value::as_str) {
                    self.state = StreamState::Failed;
                    out.push(StreamEvent::Error(UpstreamError { status: 500, message: message.to_string(), ..Default::default() }));
                    continue;
                }
            }
            let frame: Frame = serde_json::from_value(v).map_err(|e| WireError::malformed("stream event", e))?;
            self.on_frame(frame, out);
        }
        self.events = events;
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame, out: &mut Vec<StreamEvent>) {
        match frame {
            Frame::MessageStart { id } => {
                if let Some(id) = id.filter(|i| !i.is_empty()) {
                    self.id = id;
                }
                let delta = Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() };
                out.push(self.chunk(delta, None));
            }
            Frame::ContentStart { delta } | Frame::ContentDelta { delta } => {
                let content = delta.unwrap_or_default().into_message().content.unwrap_or_default();
                if let Some(t) = content.text.filter(|t| !t.is_empty()) {
                    out.push(self.chunk(Delta { content: Some(t), ..Delta::default() }, None));
                }
                if let Some(t) = content.thinking.filter(|t| !t.is_empty()) {
                    let mut d = Delta::default();
                    d.extra.insert(REASONING_FIELD.into(), Value::String(t));
                    out.push(self.chunk(d, None));
                }
            }
            Frame::ToolPlanDelta { delta } => {
                if let Some(t) = delta.unwrap_or_default().into_message().tool_plan.filter(|t| !t.is_empty()) {
                    out.push(self.chunk(Delta { content: Some(t), ..Delta::default() }, None));
                }
            }
            Frame::ToolCallStart { index, delta } => {
                let call = delta.unwrap_or_default().into_message().tool_calls.unwrap_or_default();
                let f = call.function.unwrap_or_default();
                let arguments = f.arguments.unwrap_or_default();
                let slot = ToolSlot {
                    block: index,
                    index: u32::try_from(self.tools.len()).unwrap_or(u32::MAX),
                    has_arguments: !arguments.is_empty(),
                };
                let d = ToolCallDelta {
                    index: slot.index,
                    id: Some(call.id.unwrap_or_default()),
                    kind: Some("function".into()),
                    function: Some(FunctionCallDelta { name: Some(f.name.unwrap_or_default()), arguments: Some(arguments) }),
                };
                self.tools.push(slot);
                out.push(self.tool_chunk(d));
            }
            Frame::ToolCallDelta { index, delta } => {
                let call = delta.unwrap_or_default().into_message().tool_calls.unwrap_or_default();
                if let Some(a) = call.function.and_then(|f| f.arguments).filter(|a| !a.is_empty()) {
                    self.arguments(index, a, out);
                }
            }
            Frame::ToolCallEnd { index } => {
                // Clients parse the concatenated arguments as JSON, and "" is not JSON.
                if self.slot(index).is_some_and(|s| !s.has_arguments) {
                    self.arguments(index, "{}".into(), out);
                }
            }
            Frame::MessageEnd { delta } => {
                let d = delta.unwrap_or_default();
                match d.finish_reason.as_deref().map(finish_reason) {
                    Some(Finish::Failed(status)) => {
                        self.state = StreamState::Failed;
                        out.push(StreamEvent::Error(generation_failed(status, d.error.as_deref())));
                        return;
                    }
                    None if d.error.as_deref().is_some_and(|e| !e.is_empty()) => {
                        self.state = StreamState::Failed;
                        out.push(StreamEvent::Error(generation_failed(500, d.error.as_deref())));
                        return;
                    }
                    Some(Finish::Answer(f)) => out.push(self.chunk(Delta::default(), Some(f))),
                    None => {}
                }
                if let Some(u) = d.usage {
                    let mut c = ChatChunk::new(&self.id, self.created, &self.model);
                    c.usage = Some(u.to_usage());
                    out.push(StreamEvent::Chunk(c));
                }
                self.state = StreamState::Done;
                out.push(StreamEvent::Done);
            }
            Frame::Other => {}
        }
    }

    /// The call an event's index names; the latest call when the event has no index.
    fn slot(&mut self, block: Option<u64>) -> Option<&mut ToolSlot> {
        match block {
            Some(b) if self.tools.iter().any(|t| t.block == Some(b)) => self.tools.iter_mut().find(|t| t.block == Some(b)),
            _ => self.tools.last_mut(),
        }
    }

    fn arguments(&mut self, block: Option<u64>, text: String, out: &mut Vec<StreamEvent>) {
        let Some(slot) = self.slot(block) else { return };
        slot.has_arguments = true;
        let d = ToolCallDelta {
            index: slot.index,
            id: None,
            kind: None,
            function: Some(FunctionCallDelta { name: None, arguments: Some(text) }),
        };
        out.push(self.tool_chunk(d));
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

    const RESPONSE_TEXT: &str = include_str!("../../tests/fixtures/cohere/response_text.json");
    const RESPONSE_TOOLS: &str = include_str!("../../tests/fixtures/cohere/response_tools.json");
    const STREAM_TEXT: &str = include_str!("../../tests/fixtures/cohere/stream_text.sse");
    const STREAM_TOOLS: &str = include_str!("../../tests/fixtures/cohere/stream_tools.sse");
    const EMBED: &str = include_str!("../../tests/fixtures/cohere/embed.json");
    const MODELS: &str = include_str!("../../tests/fixtures/cohere/models.json");

    fn ep(opts: &ProviderOptions) -> Endpoint<'_> {
        Endpoint { kind: ProviderKind::Cohere, base_url: "https://api.cohere.com", auth: crate::spec::Auth::Key("co-test"), options: opts }
    }

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx { id: "chatcmpl-gw", created: 1_700_000_000, model: "command-a-03-2025" }
    }

    fn build(v: Value) -> Result<Value, WireError> {
        let opts = ProviderOptions::default();
        let req: ChatRequest = serde_json::from_value(v).unwrap();
        build_chat(&ep(&opts), &req, "command-a-03-2025").map(|r| serde_json::from_slice(&r.body).unwrap())
    }

    fn refused(v: Value) -> (String, Option<String>) {
        match build(v) {
            Err(WireError::Unsupported { message, param }) => (message, param),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    // ----- request -----

    #[test]
    fn url_headers_and_plain_body() {
        let opts = ProviderOptions { extra_headers: vec![("x-client-name".into(), "switchyard".into())], ..ProviderOptions::default() };
        let req: ChatRequest = serde_json::from_value(json!({"model": "cohere/command-a", "messages": [user("hi")],
            "user": "u1", "parallel_tool_calls": false, "stream_options": {"include_usage": true}}))
        .unwrap();
        let r = build_chat(&ep(&opts), &req, "command-a-03-2025").unwrap();
        assert_eq!((r.method, r.url.as_str()), (Method::Post, "https://api.cohere.com/v2/chat"));
        assert_eq!(
            r.headers,
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("authorization".to_string(), "Bearer co-test".to_string()),
                ("x-client-name".to_string(), "switchyard".to_string()),
            ]
        );
        let b: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(b, json!({"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}], "stream": false}));
    }

    #[test]
    fn sampling_knobs_get_cohere_names() {
        let b = build(json!({"model": "m", "messages": [user("p")], "temperature": 0.5, "top_p": 0.9, "seed": 7,
            "stop": ["zzz"], "max_completion_tokens": 50, "top_k": 3, "frequency_penalty": 0.2, "presence_penalty": 0.1,
            "thinking": {"type": "disabled"}, "safety_mode": "STRICT", "priority": 1, "stream": true}))
        .unwrap();
        assert_eq!(
            b,
            json!({"model": "command-a-03-2025", "messages": [{"role": "user", "content": "p"}], "max_tokens": 50,
                "stop_sequences": ["zzz"], "temperature": 0.5, "seed": 7, "frequency_penalty": 0.2, "presence_penalty": 0.1,
                "k": 3, "p": 0.9, "thinking": {"type": "disabled"}, "safety_mode": "STRICT", "priority": 1, "stream": true})
        );
        assert_eq!(build(json!({"model": "m", "messages": [user("p")], "top_p": 1.0})).unwrap()["p"], 0.99);
        assert_eq!(build(json!({"model": "m", "messages": [user("p")], "stop": "END"})).unwrap()["stop_sequences"], json!(["END"]));
        assert_eq!(refused(json!({"model": "m", "messages": [user("p")], "top_p": 0.0})).1.as_deref(), Some("top_p"));
        assert_eq!(
            refused(json!({"model": "m", "messages": [user("p")], "presence_penalty": -0.5})).1.as_deref(),
            Some("presence_penalty")
        );
        assert_eq!(
            refused(json!({"model": "m", "messages": [user("p")], "frequency_penalty": 1.5})).1.as_deref(),
            Some("frequency_penalty")
        );
        assert_eq!(refused(json!({"model": "m", "messages": [user("p")], "n": 2})).1.as_deref(), Some("n"));
        assert_eq!(refused(json!({"model": "m", "messages": [user("p")], "logprobs": true})).1.as_deref(), Some("logprobs"));
        assert!(build(json!({"model": "m", "messages": [user("p")], "logprobs": false, "n": 1})).is_ok());
    }

    #[test]
    fn roles_parts_and_images() {
        let b = build(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
            {"role": "assistant", "content": "It is a cat."},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "thanks"}]}))
        .unwrap();
        assert_eq!(
            b["messages"],
            json!([
                {"role": "system", "content": "Be terse."},
                {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
                {"role": "assistant", "content": "It is a cat."},
                {"role": "user", "content": "thanks"}])
        );
        let (msg, param) = refused(json!({"model": "m", "messages": [{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, user("x")]}));
        assert!(msg.contains("only text in system"), "{msg}");
        assert_eq!(param.as_deref(), Some("messages[0].content[0]"));
        let (msg, param) = refused(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}));
        assert!(msg.contains("\"input_audio\""), "{msg}");
        assert_eq!(param.as_deref(), Some("messages[0].content[0]"));
        assert_eq!(
            refused(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]})).1.as_deref(),
            Some("messages[0].role")
        );
    }

    #[test]
    fn tool_round_trip_puts_assistant_text_in_tool_plan() {
        let b = build(json!({"model": "m", "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object",
                    "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "now"}}],
            "messages": [user("weather?"),
                {"role": "assistant", "content": "I will check.", "tool_calls": [
                    {"id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "now_2", "type": "function", "function": {"name": "now", "arguments": ""}}]},
                {"role": "tool", "tool_call_id": "get_weather_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "now_2", "content": [{"type": "text", "text": "noon"}]},
                {"role": "tool", "tool_call_id": "x_3", "content": ""}]}))
        .unwrap();
        assert_eq!(
            b["tools"],
            json!([
                {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}])
        );
        assert_eq!(
            b["messages"][1],
            json!({"role": "assistant", "tool_plan": "I will check.", "tool_calls": [
                {"id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "now_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]})
        );
        assert_eq!(b["messages"][2], json!({"role": "tool", "tool_call_id": "get_weather_1", "content": "18C"}));
        assert_eq!(b["messages"][3], json!({"role": "tool", "tool_call_id": "now_2", "content": "noon"}));
        assert_eq!(b["messages"][4], json!({"role": "tool", "tool_call_id": "x_3", "content": ""}));
        assert!(b.get("tool_choice").is_none() && b.get("strict_tools").is_none());
        let no_plan = build(json!({"model": "m", "messages": [user("x"), {"role": "assistant", "content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "a", "content": "r"}]}))
        .unwrap();
        assert_eq!(
            no_plan["messages"][1],
            json!({"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
        );
        assert_eq!(
            refused(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]})).1.as_deref(),
            Some("messages[0].tool_call_id")
        );
    }

    #[test]
    fn tool_choice_forms() {
        let tools = json!([{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}, "strict": true}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}}]);
        let with = |choice: Value| build(json!({"model": "m", "messages": [user("x")], "tools": tools, "tool_choice": choice}));
        assert_eq!(with(json!("required")).unwrap()["tool_choice"], "REQUIRED");
        assert_eq!(with(json!("none")).unwrap()["tool_choice"], "NONE");
        assert!(with(json!("auto")).unwrap().get("tool_choice").is_none());
        let named = with(json!({"type": "function", "function": {"name": "a"}})).unwrap();
        assert_eq!((named["tool_choice"].as_str(), named["tools"].as_array().map(Vec::len)), (Some("REQUIRED"), Some(1)));
        assert_eq!(named["tools"][0]["function"]["name"], "a");
        assert_eq!(named["strict_tools"], true, "every tool sent is strict");
        assert!(with(json!("required")).unwrap().get("strict_tools").is_none(), "b is not strict");
        let (msg, _) = match with(json!({"type": "function", "function": {"name": "zzz"}})) {
            Err(WireError::Unsupported { message, param }) => (message, param),
            other => panic!("{other:?}"),
        };
        assert!(msg.contains("zzz"), "{msg}");
        assert_eq!(refused(json!({"model": "m", "messages": [user("x")], "tool_choice": "required"})).1.as_deref(), Some("tool_choice"));
        assert!(build(json!({"model": "m", "messages": [user("x")], "tool_choice": "none"})).unwrap().get("tool_choice").is_none());
        let (msg, param) =
            refused(json!({"model": "m", "messages": [user("x")], "tools": [{"type": "web_search", "function": {"name": "w"}}]}));
        assert!(msg.contains("web_search") && param.as_deref() == Some("tools[0].type"), "{msg}");
    }

    #[test]
    fn response_formats() {
        let schema = json!({"type": "object", "properties": {"echo": {"type": "string"}}});
        let b = build(json!({"model": "m", "messages": [user("x")], "response_format": {"type": "json_schema",
            "json_schema": {"name": "out", "schema": schema, "strict": true}}}))
        .unwrap();
        assert_eq!(b["response_format"], json!({"type": "json_object", "json_schema": schema}));
        let b = build(json!({"model": "m", "messages": [user("x")], "response_format": {"type": "json_object"}})).unwrap();
        assert_eq!(b["response_format"], json!({"type": "json_object"}));
        let b = build(json!({"model": "m", "messages": [user("x")], "response_format": {"type": "text"}})).unwrap();
        assert_eq!(b["response_format"], json!({"type": "text"}));
        assert_eq!(
            refused(json!({"model": "m", "messages": [user("x")], "response_format": {"type": "yaml"}})).1.as_deref(),
            Some("response_format")
        );
    }

    #[test]
    fn text_files_become_documents_and_other_files_are_refused() {
        let text = base64::engine::general_purpose::STANDARD.encode("Opening hours: 9 to 5.");
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "When?"},
            {"type": "file", "file": {"file_data": format!("data:text/plain;base64,{text}"), "filename": "hours.txt"}}]}]}))
        .unwrap();
        assert_eq!(b["messages"][0]["content"], "When?");
        assert_eq!(b["documents"], json!([{"data": {"title": "hours.txt", "text": "Opening hours: 9 to 5."}}]));
        let file = |f: Value| json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": f}]}]});
        let (msg, param) = refused(file(json!({"file_data": "data:application/pdf;base64,JVBERi0xLjQ=", "filename": "a.pdf"})));
        assert!(msg.contains("application/pdf") && param.as_deref() == Some("messages[0].content[0]"), "{msg}");
        assert!(refused(file(json!({"file_id": "file-abc"}))).0.contains("file_id"));
        assert!(refused(file(json!({"file_data": "not a data url"}))).0.contains("data: URL"));
        assert!(refused(file(json!({"file_data": "data:text/plain;base64,@@@"}))).0.contains("base64"));
        assert!(refused(file(json!({"file_data": "data:text/plain;base64,/w=="}))).0.contains("UTF-8"));
    }

    // ----- response -----

    #[test]
    fn parses_text_response_with_billed_usage_and_cache() {
        let r = parse_chat(RESPONSE_TEXT.as_bytes(), ctx()).unwrap();
        assert_eq!(r.id, "c14c80c3-18eb-4519-9460-6c92edd8cfb4");
        assert_eq!((r.model.as_str(), r.created, r.object.as_str()), ("command-a-03-2025", 1_700_000_000, "chat.completion"));
        let c = &r.choices[0];
        assert_eq!(c.message.content.as_deref(), Some("Coca-Cola is a carbonated soft drink made by The Coca-Cola Company."));
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens()), (21, 14, 35, Some(21)));
    }

    #[test]
    fn parses_tool_calls_with_the_plan_as_content() {
        let r = parse_chat(RESPONSE_TOOLS.as_bytes(), ctx()).unwrap();
        let m = &r.choices[0].message;
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(m.content.as_deref(), Some("I will look up the weather in Paris and in Oslo."));
        let calls = m.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].id.as_str(), calls[0].function.name.as_str()), ("get_weather_fq0dz4dgkp4k", "get_weather"));
        assert_eq!(calls[1].function.arguments, r#"{"city":"Oslo"}"#);
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (37, 41), "billed units, not the template-inflated tokens");
    }

    #[test]
    fn finish_reasons_thinking_and_token_fallback() {
        let body = |finish: &str| {
            json!({"id": "x", "finish_reason": finish, "message": {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Hmm."}, {"type": "text", "text": "one"}, {"type": "text", "text": " two"}]},
                "usage": {"tokens": {"input_tokens": 5.0, "output_tokens": 2.0}}})
            .to_string()
        };
        let r = parse_chat(body("MAX_TOKENS").as_bytes(), ctx()).unwrap();
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(r.choices[0].message.content.as_deref(), Some("one two"));
        assert_eq!(r.choices[0].message.extra.get("reasoning_content"), Some(&json!("Hmm.")));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.cached_tokens()), (5, 2, None));
        assert_eq!(parse_chat(body("STOP_SEQUENCE").as_bytes(), ctx()).unwrap().choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(
            parse_chat(body("SOMETHING_NEW").as_bytes(), ctx()).unwrap().choices[0].finish_reason,
            Some(FinishReason::Other("something_new".into()))
        );
        for (reason, status) in [("ERROR", 500), ("TIMEOUT", 504)] {
            match parse_chat(body(reason).as_bytes(), ctx()) {
                Err(WireError::Upstream(e)) => assert_eq!(e.status, status),
                other => panic!("{reason}: {other:?}"),
            }
        }
        let bare = parse_chat(br#"{"message":{"role":"assistant"},"finish_reason":"COMPLETE"}"#, ctx()).unwrap();
        assert_eq!((bare.id.as_str(), bare.choices[0].message.content.as_deref(), bare.usage), ("chatcmpl-gw", None, None));
    }

    #[test]
    fn error_bodies_and_garbage() {
        match parse_chat(br#"{"message":"invalid api token"}"#, ctx()) {
            Err(WireError::Upstream(e)) => assert_eq!(e.message, "invalid api token"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_chat(b"{not json", ctx()), Err(WireError::Malformed { .. })));
        assert!(matches!(parse_chat(br#"{"message":{"content":"text"}}"#, ctx()), Err(WireError::Malformed { .. })));
        let e = parse_error(401, br#"{"id":"7f1e","message":"invalid api token"}"#);
        assert_eq!((e.status, e.message.as_str(), e.code.as_deref()), (401, "invalid api token", None));
        let e = parse_error(
            400,
            br#"{"message":"too many tokens: total number of tokens in the prompt cannot exceed 256000 - received 300012. Try using a shorter prompt"}"#,
        );
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        let e = parse_error(503, b"<html>upstream connect error</html>");
        assert_eq!((e.status, e.message.as_str()), (503, "<html>upstream connect error</html>"));
    }

    // ----- embeddings and models -----

    #[test]
    fn embeddings_request_and_response() {
        let opts = ProviderOptions::default();
        let req: EmbeddingsRequest =
            serde_json::from_value(json!({"model": "cohere/embed-v4.0", "input": ["alpha", "beta"], "dimensions": 256})).unwrap();
        let w = build_embeddings(&ep(&opts), &req, "embed-v4.0").unwrap();
        assert_eq!(w.url, "https://api.cohere.com/v2/embed");
        assert_eq!(
            serde_json::from_slice::<Value>(&w.body).unwrap(),
            json!({"model": "embed-v4.0", "texts": ["alpha", "beta"], "input_type": "search_document", "embedding_types": ["float"], "output_dimension": 256})
        );
        let req: EmbeddingsRequest = serde_json::from_value(json!({"model": "m", "input": "q", "encoding_format": "base64",
            "input_type": "search_query", "truncate": "END"}))
        .unwrap();
        let b: Value = serde_json::from_slice(&build_embeddings(&ep(&opts), &req, "embed-v4.0").unwrap().body).unwrap();
        assert_eq!(
            (b["input_type"].as_str(), &b["embedding_types"], &b["truncate"]),
            (Some("search_query"), &json!(["base64"]), &json!("END"))
        );
        for bad in [
            json!({"model": "m", "input": [1, 2]}),
            json!({"model": "m", "input": "x", "encoding_format": "int8"}),
            json!({"model": "m", "input": "x", "input_type": "poetry"}),
        ] {
            let req: EmbeddingsRequest = serde_json::from_value(bad).unwrap();
            assert!(matches!(build_embeddings(&ep(&opts), &req, "e"), Err(WireError::Unsupported { .. })));
        }
        let r = parse_embeddings(EMBED.as_bytes(), ResponseCtx { model: "embed-v4.0", ..ctx() }).unwrap();
        assert_eq!((r.data.len(), r.data[1].index, r.model.as_str(), r.usage.prompt_tokens), (2, 1, "embed-v4.0", 2));
        assert_eq!(r.data[0].embedding, json!([0.016296387, -0.008354187, -0.04699707]));
        let r = parse_embeddings(br#"{"id":"e","embeddings":{"base64":["AACAPw=="]},"meta":{"billed_units":{"input_tokens":1}}}"#, ctx())
            .unwrap();
        assert_eq!(r.data[0].embedding, json!("AACAPw=="));
        assert!(matches!(parse_embeddings(br#"{"id":"e","embeddings":{}}"#, ctx()), Err(WireError::Malformed { .. })));
    }

    #[test]
    fn model_list() {
        let opts = ProviderOptions::default();
        let r = build_list_models(&ep(&opts));
        assert_eq!((r.method, r.url.as_str()), (Method::Get, "https://api.cohere.com/v1/models?page_size=1000"));
        assert!(r.headers.contains(&("authorization".to_string(), "Bearer co-test".to_string())));
        assert_eq!(parse_models(MODELS.as_bytes()).unwrap(), vec!["command-a-03-2025", "embed-v4.0"]);
        assert!(parse_models(br#"{"data":[]}"#).is_err());
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
        events.iter().filter_map(|e| if let StreamEvent::Chunk(c) = e { Some(c) } else { None }).collect()
    }

    #[test]
    fn text_stream() {
        let ev = decode_every_way(STREAM_TEXT);
        let cs = chunks(&ev);
        assert_eq!(ev.len(), 6, "{ev:#?}");
        assert!(cs.iter().all(|c| c.id == "a8fc192e-4bb8-4e15-ae1f-a174e8b02ae8" && c.model == "command-a-03-2025"));
        let d0 = &cs[0].choices[0].delta;
        assert_eq!((d0.role, d0.content.as_deref()), (Some(Role::Assistant), Some("")));
        assert_eq!(cs[1].choices[0].delta.content.as_deref(), Some("Hello"));
        assert_eq!(cs[2].choices[0].delta.content.as_deref(), Some(", wörld!"));
        assert_eq!((cs[3].choices[0].finish_reason.clone(), &cs[3].choices[0].delta), (Some(FinishReason::Stop), &Delta::default()));
        assert!(cs[4].choices.is_empty());
        let u = cs[4].usage.as_ref().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (11, 6, 17));
        assert_eq!(ev[5], StreamEvent::Done);
        assert_eq!(decode_every_way(&STREAM_TEXT.replace('\n', "\r\n")), ev);
    }

    #[test]
    fn tool_stream_counts_calls_from_zero() {
        let ev = decode_every_way(STREAM_TOOLS);
        let cs = chunks(&ev);
        let text: String = cs.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        assert_eq!(text, "I will check both cities.");
        let calls: Vec<&ToolCallDelta> = cs.iter().filter_map(|c| c.choices.first()?.delta.tool_calls.as_ref()).flatten().collect();
        assert_eq!(calls.len(), 6, "{calls:#?}");
        assert_eq!(
            *calls[0],
            ToolCallDelta {
                index: 0,
                id: Some("get_weather_nsz5zm3w56q3".into()),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta { name: Some("get_weather".into()), arguments: Some(String::new()) }),
            }
        );
        for (i, want) in [(0, json!({"city": "Paris"})), (1, json!({"city": "Oslo"}))] {
            let args: String = calls.iter().filter(|c| c.index == i).filter_map(|c| c.function.as_ref()?.arguments.clone()).collect();
            assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), want);
        }
        let finish: Vec<_> = cs.iter().filter_map(|c| c.choices.first()?.finish_reason.clone()).collect();
        assert_eq!(finish, vec![FinishReason::ToolCalls]);
        assert_eq!(cs.last().unwrap().usage.as_ref().map(|u| u.total_tokens), Some(78));
    }

    fn frame(event: &str, data: Value) -> String {
        format!("event: {event}\ndata: {data}\n\n")
    }

    fn start() -> String {
        frame("message-start", json!({"id": "s1", "type": "message-start", "delta": {"message": {"role": "assistant"}}}))
    }

    fn text_delta(t: &str) -> String {
        frame("content-delta", json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": t}}}}))
    }

    fn end(finish: &str) -> String {
        frame(
            "message-end",
            json!({"type": "message-end", "delta": {"finish_reason": finish,
            "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 1}}}}),
        )
    }

    #[test]
    fn tool_indexes_counting_content_blocks_and_calls_without_arguments() {
        let input = start()
            + &frame(
                "tool-call-start",
                json!({"type": "tool-call-start", "index": 3, "delta": {"message": {"tool_calls":
                {"id": "now_1", "type": "function", "function": {"name": "now", "arguments": ""}}}}}),
            )
            + &frame("tool-call-end", json!({"type": "tool-call-end", "index": 3}))
            + &frame(
                "tool-call-start",
                json!({"type": "tool-call-start", "index": 5, "delta": {"message": {"tool_calls":
                {"id": "f_2", "type": "function", "function": {"name": "f", "arguments": "{\"whole\":true}"}}}}}),
            )
            + &frame("tool-call-end", json!({"type": "tool-call-end", "index": 5}))
            + &end("TOOL_CALL");
        let ev = decode_every_way(&input);
        let calls: Vec<ToolCallDelta> = chunks(&ev).iter().filter_map(|c| c.choices.first()?.delta.tool_calls.clone()).flatten().collect();
        let args =
            |i: u32| -> String { calls.iter().filter(|c| c.index == i).filter_map(|c| c.function.as_ref()?.arguments.clone()).collect() };
        assert_eq!(calls.len(), 3, "{calls:#?}");
        assert_eq!((args(0).as_str(), args(1).as_str()), ("{}", r#"{"whole":true}"#));
    }

    #[test]
    fn generation_errors_end_the_stream_with_an_error() {
        for (finish, status) in [("ERROR", 500), ("TIMEOUT", 504)] {
            let input = start()
                + &text_delta("Hel")
                + &frame("message-end", json!({"type": "message-end", "delta": {"finish_reason": finish, "error": "internal failure"}}))
                + &text_delta("ignored");
            let ev = decode_every_way(&input);
            assert_eq!(ev.len(), 3, "{ev:#?}");
            let StreamEvent::Error(e) = &ev[2] else { panic!("{ev:#?}") };
            assert_eq!((e.status, e.message.as_str()), (status, "internal failure"));
        }
        let ev = decode_every_way(&(start() + "data: {\"message\":\"stream broke\"}\n\n"));
        assert!(matches!(&ev[1], StreamEvent::Error(e) if e.status == 500 && e.message == "stream broke"), "{ev:#?}");
        let ev = decode_every_way(&frame("message-end", json!({"type": "message-end", "delta": {"finish_reason": "ERROR"}})));
        assert!(matches!(&ev[..], [StreamEvent::Error(e)] if e.message.contains("ERROR")), "{ev:#?}");
    }

    #[test]
    fn thinking_citations_debug_and_done_marker() {
        let input = start()
            + &frame(
                "content-start",
                json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}}),
            )
            + &frame(
                "content-delta",
                json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": "Let me think."}}}}),
            )
            + &frame("content-end", json!({"type": "content-end", "index": 0}))
            + &frame(
                "citation-start",
                json!({"type": "citation-start", "index": 0, "delta": {"message": {"citations": {"start": 0, "end": 3, "text": "abc"}}}}),
            )
            + &frame("citation-end", json!({"type": "citation-end", "index": 0}))
            + &frame("debug", json!({"type": "debug", "prompt": "<BOS_TOKEN>"}))
            + &text_delta("A")
            + &end("COMPLETE")
            + "data: [DONE]\n\n";
        let ev = decode_every_way(&input);
        let cs = chunks(&ev);
        assert_eq!(cs.len(), 5, "role, thinking, text, finish, usage: {ev:#?}");
        assert_eq!(cs[1].choices[0].delta.extra.get("reasoning_content"), Some(&json!("Let me think.")));
        assert_eq!(cs[2].choices[0].delta.content.as_deref(), Some("A"));
        assert_eq!(ev.iter().filter(|e| **e == StreamEvent::Done).count(), 1);
        // A stream a proxy ends with `[DONE]` without `message-end` is complete too.
        let ev = decode_every_way(&(start() + &text_delta("x") + "data: [DONE]\n\n"));
        assert_eq!(ev.last(), Some(&StreamEvent::Done));
    }

    #[test]
    fn truncated_and_malformed_streams_are_errors() {
        let cut = &STREAM_TEXT[..STREAM_TEXT.find("event: message-end").unwrap()];
        for piece in [1, 7, cut.len()] {
            assert!(matches!(decode(cut, piece), Err(WireError::Malformed { what: "stream", .. })));
        }
        assert!(matches!(decode("", 1), Err(WireError::Malformed { what: "stream", .. })));
        let bad = start() + "event: content-delta\ndata: {\"type\":\"content-delta\",\n\n";
        assert!(matches!(decode(&bad, 7), Err(WireError::Malformed { what: "stream event", .. })));
        let wrong = start() + &frame("content-delta", json!({"type": "content-delta", "delta": {"message": {"content": {"text": 5}}}}));
        assert!(matches!(decode(&wrong, 7), Err(WireError::Malformed { what: "stream event", .. })));
    }
}
