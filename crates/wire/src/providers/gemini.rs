//! Google Gemini codec, in its two flavours: the Gemini API (`generativelanguage.googleapis.com`, an API
//! key in `x-goog-api-key`) and Gemini models on Vertex AI (`{region}-aiplatform.googleapis.com`, a
//! project and a region in the path, an OAuth access token as Bearer). Both take the same
//! `GenerateContentRequest` and answer the same `GenerateContentResponse`, so one module owns both and only
//! the URL and the credential differ.
//!
//! Gemini differs from OpenAI in structure: a conversation is `contents[]` of `user`/`model` turns made of
//! `parts`, the system prompt is `systemInstruction`, sampling lives in `generationConfig`, tool calls are
//! `functionCall` parts with JSON-object `args`, tool results are `functionResponse` parts matched by
//! function name, and a stream is SSE whose every `data:` is a whole response with only the new text, ended
//! by the body's end (no `[DONE]`). Where the two cannot be mapped one to one, the choices are:
//! - System and developer messages, wherever they appear, become `systemInstruction` text parts in order;
//!   consecutive turns of the same role are merged, tool results (OpenAI `tool` messages) become a `user`
//!   turn of `functionResponse` parts, and messages left with no parts are dropped (Gemini refuses them).
//! - A tool result names the function it answers: the name comes from the assistant call with the same
//!   `tool_call_id`. `response` must be an object: a result that is a JSON object is sent as is, anything
//!   else as `{"result": <text>}`.
//! - Gemini often gives calls no id: we synthesize `call_…` ids from the response id and the call's
//!   position, so the stream and non-stream paths agree. Ids (given or synthesized) are sent back on
//!   `functionCall`/`functionResponse` parts.
//! - Gemini 3 models sign their function calls (`thoughtSignature`) and refuse a replayed call without
//!   one. Signatures do not survive an OpenAI-shaped conversation (and would break other providers'
//!   id rules if hidden in ids), so they are dropped on the way in and the validator bypass Google
//!   documents for histories it did not produce is sent on the first call of each replayed turn.
//! - `response_format` is native: `json_object` sets `responseMimeType: application/json`, `json_schema`
//!   also sets `responseJsonSchema`, which takes full JSON Schema (`responseSchema` takes only Google's
//!   OpenAPI subset and refuses `additionalProperties`, which OpenAI's strict mode requires). Tool
//!   parameters go as `parametersJsonSchema` for the same reason.
//! - Images: base64 `data:` URLs become `inlineData`; `gs://` URIs (and Files API URIs) become `fileData`.
//!   Arbitrary http(s) URLs are not a reliable input on the Gemini API, so the engine fetches and inlines
//!   them first (see `accepts_image_urls`); one that still arrives is sent as `fileData` with the media
//!   type its extension names. `file` parts (PDF and others) become `inlineData` too.
//! - Dropped silently: `user`, `parallel_tool_calls` (Gemini decides), `logprobs`, `stream_options`
//!   (Gemini always reports usage) and fields of OpenAI's API Gemini has no equivalent for. `top_k` is
//!   passed as `topK`. `n` becomes `candidateCount`.
//! - Thought parts (`thought: true`) come back as `reasoning_content`, as the other codecs do.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{UpstreamError, WireError};
use crate::image::{is_http_url, parse_data_url};
use crate::spec::{Auth, Endpoint, ProviderKind, ResponseCtx, StreamEvent, WireRequest};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, ContentPart, Delta, EmbeddingsRequest, EmbeddingsResponse, Extra,
    FinishReason, FunctionCall, FunctionCallDelta, Message, ResponseMessage, Role, Stop, ToolCall, ToolCallDelta, ToolChoice, Usage,
};

/// The API version the Gemini API paths use (the one Google's SDKs use; `v1` lacks newer fields).
pub const API_VERSION: &str = "v1beta";
/// The API version of Vertex AI paths (GA features; the SDK's `v1beta1` is the preview surface).
pub const VERTEX_API_VERSION: &str = "v1";

/// The field OpenAI-compatible reasoning servers use for a model's thinking text.
const REASONING_FIELD: &str = "reasoning_content";
/// Google's documented stand-in signature for function calls Gemini did not produce itself (a history
/// from another model, or one whose signatures were lost); Gemini 3 refuses a replayed call without any.
const SIGNATURE_BYPASS: &str = "skip_thought_signature_validator";
/// Part of a tool result's text wrapped into the `response` object when it is not one.
const RESULT_KEY: &str = "result";

/// Where one request goes: the Gemini API, or Vertex AI with its project and region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `{base}/v1beta/models/{model}:…`.
    Api,
    /// `{base}/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:…` with an OAuth
    /// token. Without a project (Vertex "express mode", an API key instead of OAuth) the path is
    /// `{base}/v1/publishers/google/models/{model}:…`.
    Vertex { project: Option<&'a str>, region: &'a str },
}

/// The flavour an endpoint speaks: the Gemini API for `type: gemini`; Vertex for `type: vertex`, in express
/// mode when its credential is an API key rather than an OAuth token.
pub fn target<'a>(ep: &Endpoint<'a>) -> Target<'a> {
    match ep.kind {
        ProviderKind::Vertex => Target::Vertex {
            project: if matches!(ep.auth, Auth::Key(_)) { None } else { ep.options.project.as_deref() },
            region: ep.options.region.as_deref().unwrap_or("global"),
        },
        _ => Target::Api,
    }
}

/// The resource path of a model (`…/models/{model}`) under the endpoint's base, without the method.
fn model_url(ep: &Endpoint<'_>, target: Target<'_>, model: &str) -> Result<String, WireError> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    if model.is_empty() || model.contains(['/', '?', '#', ' ']) || model.contains("..") {
        return Err(WireError::unsupported(format!("\"{model}\" is not a valid gemini model id"), Some("model")));
    }
    Ok(match target {
        Target::Api => format!("{}/{API_VERSION}/models/{model}", ep.base_url),
        Target::Vertex { project: Some(project), region } => {
            format!("{}/{VERTEX_API_VERSION}/projects/{project}/locations/{region}/publishers/google/models/{model}", ep.base_url)
        }
        Target::Vertex { project: None, .. } => format!("{}/{VERTEX_API_VERSION}/publishers/google/models/{model}", ep.base_url),
    })
}

/// The credential, sent the way Google reads it: an API key in `x-goog-api-key` (never in the URL, where it
/// would reach access logs), an OAuth access token as Bearer.
fn authorized(mut r: WireRequest, ep: &Endpoint<'_>) -> WireRequest {
    match ep.auth {
        Auth::Key(k) => r = r.header("x-goog-api-key", k),
        Auth::Bearer(t) => r = r.header("authorization", format!("Bearer {t}")),
        Auth::None | Auth::Aws(_) => {}
    }
    r.with_extra_headers(ep)
}

// ---------------------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------------------

/// The `GenerateContentRequest` body. Texts and base64 payloads borrow from the canonical request, so
/// large inputs are serialized straight from the caller's buffers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateBody<'a> {
    contents: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(flatten)]
    data: PartData<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<&'static str>,
}

impl<'a> Part<'a> {
    fn new(data: PartData<'a>) -> Self {
        Part { data, thought_signature: None }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum PartData<'a> {
    Text(&'a str),
    InlineData(Blob<'a>),
    FileData(FileUri<'a>),
    FunctionCall(FunctionCallPart<'a>),
    FunctionResponse(FunctionResponsePart<'a>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileUri<'a> {
    mime_type: &'a str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct FunctionCallPart<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    name: &'a str,
    args: &'a RawValue,
}

#[derive(Serialize)]
struct FunctionResponsePart<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    name: &'a str,
    response: ResponseObject<'a>,
}

/// A tool result as Gemini's `response` object: the caller's JSON object as is, or its text wrapped.
enum ResponseObject<'a> {
    Raw(&'a RawValue),
    Text(String),
}

impl Serialize for ResponseObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ResponseObject::Raw(r) => r.serialize(s),
            ResponseObject::Text(t) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(RESULT_KEY, t)?;
                m.end()
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolBody<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<&'a str>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_empty()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
    }
}

/// Builds `:generateContent`, or `:streamGenerateContent?alt=sse` for a stream request.
pub fn build_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    let (system, contents) = convert_messages(&req.messages, signs_function_calls(model))?;
    if contents.is_empty() {
        return Err(WireError::unsupported(
            "gemini needs at least one user or assistant message besides the system prompt",
            Some("messages"),
        ));
    }
    let tools = convert_tools(req)?;
    let tool_config = convert_tool_choice(req, !tools.is_empty())?;
    let body = GenerateBody {
        contents,
        system_instruction: (!system.is_empty()).then_some(SystemInstruction { parts: system }),
        tools: if tools.is_empty() { Vec::new() } else { vec![ToolBody { function_declarations: tools }] },
        tool_config,
        generation_config: generation_config(req)?,
    };
    let body = serde_json::to_vec(&body).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))?;
    let base = model_url(ep, target(ep), model)?;
    let url = if req.is_stream() { format!("{base}:streamGenerateContent?alt=sse") } else { format!("{base}:generateContent") };
    Ok(authorized(WireRequest::post_json(url, body), ep))
}

/// Gemini 3 and later sign function calls and check the signatures of replayed ones.
fn signs_function_calls(model: &str) -> bool {
    let m = model.strip_prefix("models/").unwrap_or(model);
    let Some(rest) = m.strip_prefix("gemini-") else { return false };
    let major: String = rest.chars().take_while(char::is_ascii_digit).collect();
    major.parse::<u32>().is_ok_and(|v| v >= 3)
}

fn generation_config(req: &ChatRequest) -> Result<GenerationConfig<'_>, WireError> {
    let mut g = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.extra.get("top_k").filter(|v| !v.is_null()),
        max_output_tokens: req.max_output_tokens(),
        stop_sequences: match &req.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.as_str()],
            Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
        },
        candidate_count: req.n.filter(|&n| n != 1),
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        ..GenerationConfig::default()
    };
    if let Some(f) = &req.response_format {
        match f.kind.as_str() {
            "text" => {}
            "json_object" => g.response_mime_type = Some("application/json"),
            "json_schema" => {
                g.response_mime_type = Some("application/json");
                g.response_json_schema = f.json_schema.as_ref().and_then(|s| s.schema.as_ref()).filter(|s| !s.is_null());
            }
            other => {
                return Err(WireError::unsupported(
                    format!("response_format \"{other}\" is not supported; use text, json_object or json_schema"),
                    Some("response_format"),
                ))
            }
        }
    }
    Ok(g)
}

/// Splits the conversation into the system parts and alternating `user`/`model` turns.
fn convert_messages(messages: &[Message], sign_calls: bool) -> Result<(Vec<Part<'_>>, Vec<Turn<'_>>), WireError> {
    // Tool results name their function; the name comes from the call with the same id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for m in messages {
        for c in m.tool_calls.iter().flatten() {
            call_names.insert(c.id.as_str(), c.function.name.as_str());
        }
    }
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let mut parts = Vec::new();
        let role = match m.role {
            Role::System | Role::Developer => {
                push_content(m.content.as_ref(), i, false, &mut system)?;
                continue;
            }
            Role::User => {
                push_content(m.content.as_ref(), i, true, &mut parts)?;
                "user"
            }
            Role::Assistant => {
                push_content(m.content.as_ref(), i, false, &mut parts)?;
                push_calls(m, i, sign_calls, &mut parts)?;
                "model"
            }
            Role::Tool => {
                parts.push(tool_result(m, i, &call_names)?);
                "user"
            }
            Role::Function => return Err(WireError::function_role("gemini", i)),
        };
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => turns.push(Turn { role, parts }),
        }
    }
    Ok((system, turns))
}

fn push_content<'a>(content: Option<&'a Content>, i: usize, media: bool, out: &mut Vec<Part<'a>>) -> Result<(), WireError> {
    match content {
        None => {}
        Some(Content::Text(t)) => push_text(t, out),
        Some(Content::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let param = || format!("messages[{i}].content[{j}]");
                match p {
                    ContentPart::Text { text } => push_text(text, out),
                    ContentPart::ImageUrl { image_url } if media => out.push(Part::new(image_part(&image_url.url, &param)?)),
                    ContentPart::File { file } if media => out.push(Part::new(file_part(file, &param)?)),
                    other => {
                        let kind = match other {
                            ContentPart::Text { .. } => "text",
                            ContentPart::ImageUrl { .. } => "image_url",
                            ContentPart::File { .. } => "file",
                            ContentPart::Other(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
                        };
                        let message = if media {
                            format!("content part type \"{kind}\" is not supported by gemini")
                        } else {
                            format!("gemini accepts only text in system and assistant messages, got a \"{kind}\" part")
                        };
                        return Err(WireError::unsupported(message, Some(&param())));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Gemini refuses empty text parts, and an empty text carries nothing.
fn push_text<'a>(text: &'a str, out: &mut Vec<Part<'a>>) {
    if !text.is_empty() {
        out.push(Part::new(PartData::Text(text)));
    }
}

fn image_part<'a>(url: &'a str, param: &dyn Fn() -> String) -> Result<PartData<'a>, WireError> {
    if let Some(d) = parse_data_url(url) {
        return Ok(PartData::InlineData(Blob { mime_type: d.media_type, data: d.base64 }));
    }
    if url.starts_with("gs://") || is_http_url(url) {
        let Some(mime_type) = media_type_of(url) else {
            return Err(WireError::unsupported(
                format!("gemini needs the media type of a file URL, and \"{url}\" does not end in a known extension; send the image as a data: URL"),
                Some(&param()),
            ));
        };
        return Ok(PartData::FileData(FileUri { mime_type, file_uri: url }));
    }
    Err(WireError::unsupported("gemini takes images as base64 data: URLs, gs:// URIs or http(s) URLs", Some(&param())))
}

/// The media type a URL's extension names (query and fragment ignored).
fn media_type_of(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

/// OpenAI's `{"type":"file","file":{"file_data":"data:…;base64,…"}}` as inline data. Uploaded-file ids
/// (`file_id`) belong to OpenAI's storage, which Gemini cannot read.
fn file_part<'a>(file: &'a crate::types::FileData, param: &dyn Fn() -> String) -> Result<PartData<'a>, WireError> {
    if let Some((mime_type, data)) = file.inline() {
        return Ok(PartData::InlineData(Blob { mime_type, data }));
    }
    if file.file_data.is_some() {
        return Err(WireError::unsupported(
            "a file part's file_data must be a base64 data: URL",
            Some(&format!("{}.file.file_data", param())),
        ));
    }
    Err(WireError::unsupported(
        "gemini cannot read OpenAI file ids; send the file's content as file_data",
        Some(&format!("{}.file.file_id", param())),
    ))
}

/// An empty-arguments call is a call without parameters.
const EMPTY_ARGS: &str = "{}";

fn push_calls<'a>(m: &'a Message, i: usize, sign_calls: bool, out: &mut Vec<Part<'a>>) -> Result<(), WireError> {
    for (k, call) in m.tool_calls.iter().flatten().enumerate() {
        let args = object_text(&call.function.arguments).ok_or_else(|| {
            WireError::unsupported(
                format!("tool call arguments for \"{}\" must be a JSON object", call.function.name),
                Some(&format!("messages[{i}].tool_calls[{k}].function.arguments")),
            )
        })?;
        let mut part = Part::new(PartData::FunctionCall(FunctionCallPart { id: &call.id, name: &call.function.name, args }));
        // Of parallel calls only the first carries a signature.
        if sign_calls && k == 0 {
            part.thought_signature = Some(SIGNATURE_BYPASS);
        }
        out.push(part);
    }
    Ok(())
}

/// The caller's JSON object text as is (no re-encoding, key order kept); empty text is `{}`.
fn object_text(text: &str) -> Option<&RawValue> {
    let text = if text.trim().is_empty() { EMPTY_ARGS } else { text };
    let raw: &RawValue = serde_json::from_str(text).ok()?;
    raw.get().trim_start().starts_with('{').then_some(raw)
}

fn tool_result<'a>(m: &'a Message, i: usize, names: &HashMap<&str, &'a str>) -> Result<Part<'a>, WireError> {
    let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.is_empty()) else {
        return Err(WireError::unsupported(
            "a tool message needs the tool_call_id of the call it answers",
            Some(&format!("messages[{i}].tool_call_id")),
        ));
    };
    let Some(name) = names.get(id).copied().or(m.name.as_deref()) else {
        return Err(WireError::unsupported(
            format!("tool_call_id \"{id}\" matches no assistant tool call; gemini needs the name of the function a result answers"),
            Some(&format!("messages[{i}].tool_call_id")),
        ));
    };
    let response = match &m.content {
        Some(Content::Text(t)) => match serde_json::from_str::<&RawValue>(t) {
            Ok(raw) if raw.get().trim_start().starts_with('{') => ResponseObject::Raw(raw),
            _ => ResponseObject::Text(t.clone()),
        },
        Some(Content::Parts(parts)) => {
            if let Some((j, _)) = parts.iter().enumerate().find(|(_, p)| !matches!(p, ContentPart::Text { .. })) {
                return Err(WireError::unsupported("gemini takes only text in tool results", Some(&format!("messages[{i}].content[{j}]"))));
            }
            ResponseObject::Text(m.joined_text())
        }
        None => ResponseObject::Text(String::new()),
    };
    Ok(Part::new(PartData::FunctionResponse(FunctionResponsePart { id, name, response })))
}

fn convert_tools(req: &ChatRequest) -> Result<Vec<FunctionDeclaration<'_>>, WireError> {
    let Some(tools) = &req.tools else { return Ok(Vec::new()) };
    tools
        .iter()
        .enumerate()
        .map(|(k, t)| {
            if t.kind != "function" {
                return Err(WireError::unsupported(
                    format!("tool type \"{}\" is not supported by gemini", t.kind),
                    Some(&format!("tools[{k}].type")),
                ));
            }
            let f = &t.function;
            Ok(FunctionDeclaration {
                name: &f.name,
                description: f.description.as_deref(),
                parameters_json_schema: f.parameters.as_ref().filter(|p| !p.is_null()),
            })
        })
        .collect()
}

fn convert_tool_choice(req: &ChatRequest, has_tools: bool) -> Result<Option<ToolConfig<'_>>, WireError> {
    if !has_tools {
        return match &req.tool_choice {
            Some(ToolChoice::Required | ToolChoice::Function(_)) => {
                Err(WireError::unsupported("tool_choice requires a tool call but the request has no tools", Some("tool_choice")))
            }
            _ => Ok(None),
        };
    }
    let (mode, allowed) = match &req.tool_choice {
        None => return Ok(None),
        Some(ToolChoice::Auto) => ("AUTO", Vec::new()),
        Some(ToolChoice::None) => ("NONE", Vec::new()),
        Some(ToolChoice::Required) => ("ANY", Vec::new()),
        Some(ToolChoice::Function(name)) => ("ANY", vec![name.as_str()]),
    };
    Ok(Some(ToolConfig { function_calling_config: FunctionCallingConfig { mode, allowed_function_names: allowed } }))
}

// ---------------------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------------------

/// A `GenerateContentResponse`: the non-streaming body, and every frame of a stream.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    #[serde(default)]
    candidates: Vec<ApiCandidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<ApiUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApiCandidate {
    #[serde(default)]
    content: Option<ApiContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Deserialize, Default)]
struct ApiContent {
    #[serde(default)]
    parts: Vec<ApiPart>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApiPart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<ApiFunctionCall>,
}

#[derive(Deserialize)]
struct ApiFunctionCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    total_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    tool_use_prompt_token_count: Option<u64>,
}

impl ApiUsage {
    /// OpenAI counts thinking as completion (with `reasoning_tokens` as the detail) and cached input inside
    /// `prompt_tokens`, as Gemini's `promptTokenCount` already does. Tool-use prompt tokens (code execution
    /// and search results Gemini fed itself) are input too.
    fn to_usage(self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        let prompt = self.prompt_token_count.saturating_add(self.tool_use_prompt_token_count.unwrap_or(0));
        let completion = self.candidates_token_count.saturating_add(thoughts);
        let mut u = Usage::new(prompt, completion);
        if let Some(total) = self.total_token_count.filter(|t| *t >= prompt.saturating_add(completion)) {
            u.total_tokens = total;
        }
        if let Some(cached) = self.cached_content_token_count {
            u = u.with_cached(cached);
        }
        if thoughts > 0 {
            u.completion_tokens_details = Some(serde_json::json!({ "reasoning_tokens": thoughts }));
        }
        u
    }
}

/// Gemini's finish reasons in OpenAI's terms. A candidate that called functions and stopped is
/// `tool_calls` (Gemini says `STOP`). Reasons that mean the model's own call broke keep their name.
fn finish_reason(reason: &str, called: bool) -> FinishReason {
    match reason {
        "STOP" if called => FinishReason::ToolCalls,
        // LANGUAGE and OTHER: the text so far is the answer, there is no closer OpenAI reason.
        "STOP" | "LANGUAGE" | "OTHER" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

/// A response's identity seed: its `responseId`, else the gateway's id for it.
fn seed_of<'a>(r: &'a ApiResponse, ctx: &'a ResponseCtx<'_>) -> &'a str {
    r.response_id.as_deref().filter(|s| !s.is_empty()).unwrap_or(ctx.id)
}

/// `call_` + 24 alphanumerics (OpenAI's look), derived from the response, the candidate and the call's
/// position, so the same response always yields the same ids.
fn synth_call_id(seed: &str, candidate: u32, index: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // FNV-1a seeds a splitmix64 sequence: stable across runs and platforms, which is all ids need.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes().chain(candidate.to_le_bytes()).chain((index as u64).to_le_bytes()) {
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
        id.push(char::from(ALPHABET[(z % ALPHABET.len() as u64) as usize]));
    }
    id
}

fn to_tool_call(call: ApiFunctionCall, seed: &str, candidate: u32, index: usize) -> ToolCall {
    let id = call.id.filter(|id| !id.is_empty()).unwrap_or_else(|| synth_call_id(seed, candidate, index));
    let arguments = match call.args {
        None | Some(Value::Null) => EMPTY_ARGS.to_string(),
        Some(v) => v.to_string(),
    };
    ToolCall { id, kind: "function".to_string(), function: FunctionCall { name: call.name, arguments } }
}

/// What one candidate's parts hold, in OpenAI's terms.
#[derive(Default)]
struct Collected {
    text: Option<String>,
    reasoning: Option<String>,
    calls: Vec<ApiFunctionCall>,
}

fn collect(content: Option<ApiContent>) -> Collected {
    let mut c = Collected::default();
    for p in content.map(|c| c.parts).unwrap_or_default() {
        if let Some(call) = p.function_call {
            c.calls.push(call);
        } else if let Some(t) = p.text {
            let slot = if p.thought == Some(true) { &mut c.reasoning } else { &mut c.text };
            slot.get_or_insert_with(String::new).push_str(&t);
        }
    }
    c
}

/// A 2xx body that is `{"error":…}` (or a one-element array of it) is the upstream refusing.
fn error_in(r: &ApiResponse, body: &[u8]) -> Option<WireError> {
    r.error.as_ref().filter(|e| !e.is_null())?;
    let mut e = parse_error(0, body);
    if e.status == 0 {
        e.status = status_of(e.kind.as_deref().unwrap_or(""));
    }
    Some(WireError::Upstream(e))
}

pub fn parse_chat(body: &[u8], ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    let r: ApiResponse = serde_json::from_slice(body).map_err(|e| WireError::malformed("chat response", e))?;
    if let Some(e) = error_in(&r, body) {
        return Err(e);
    }
    let seed = seed_of(&r, &ctx).to_string();
    let mut choices = Vec::with_capacity(r.candidates.len().max(1));
    for (pos, cand) in r.candidates.into_iter().enumerate() {
        let index = cand.index.unwrap_or(pos as u32);
        let c = collect(cand.content);
        let calls: Vec<ToolCall> = c.calls.into_iter().enumerate().map(|(k, call)| to_tool_call(call, &seed, index, k)).collect();
        let finish = cand.finish_reason.as_deref().map(|f| finish_reason(f, !calls.is_empty()));
        let mut message = ResponseMessage {
            content: if c.text.is_none() && !calls.is_empty() { None } else { Some(c.text.unwrap_or_default()) },
            tool_calls: (!calls.is_empty()).then_some(calls),
            ..ResponseMessage::default()
        };
        if let Some(t) = c.reasoning {
            message.extra.insert(REASONING_FIELD.into(), Value::String(t));
        }
        choices.push(Choice { index, message, finish_reason: finish, logprobs: None, extra: Extra::new() });
    }
    if choices.is_empty() {
        // A blocked prompt: no candidates, the reason in `promptFeedback`. OpenAI says the same with an
        // empty answer and `content_filter`.
        let blocked = r.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_deref()).is_some();
        if !blocked {
            return Err(WireError::malformed("chat response", "no candidates and no promptFeedback.blockReason"));
        }
        choices.push(Choice {
            index: 0,
            message: ResponseMessage { content: Some(String::new()), ..ResponseMessage::default() },
            finish_reason: Some(FinishReason::ContentFilter),
            logprobs: None,
            extra: Extra::new(),
        });
    }
    choices.sort_by_key(|c| c.index);
    Ok(ChatResponse {
        id: r.response_id.filter(|s| !s.is_empty()).unwrap_or_else(|| ctx.id.to_string()),
        object: "chat.completion".to_string(),
        created: ctx.created,
        model: r.model_version.filter(|s| !s.is_empty()).unwrap_or_else(|| ctx.model.to_string()),
        choices,
        usage: r.usage_metadata.map(ApiUsage::to_usage),
        system_fingerprint: None,
        extra: Extra::new(),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/// The HTTP status a Google RPC status stands for, for errors that arrive without one.
fn status_of(rpc: &str) -> u16 {
    match rpc {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ABORTED" | "ALREADY_EXISTS" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" => 500,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 0,
    }
}

#[derive(Deserialize)]
struct RpcEnvelope {
    error: RpcError,
}

#[derive(Deserialize)]
struct RpcError {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

/// Reads Google's `{"error":{"code","message","status","details"}}` (also as the one-element array the
/// non-SSE stream endpoint answers with). `kind` is the RPC status (`RESOURCE_EXHAUSTED`), `code` the
/// `ErrorInfo.reason` when Google gives one (`API_KEY_INVALID`) and the status otherwise, `param` the first
/// field a `BadRequest` detail names. Anything else (a proxy's HTML) goes through the generic reader.
pub fn parse_error(status: u16, body: &[u8]) -> UpstreamError {
    parse_rpc_error(status, body).unwrap_or_else(|| UpstreamError::from_body(status, body))
}

/// [`parse_error`] for bodies in Google's RPC shape only; `None` for anything else.
pub fn parse_rpc_error(status: u16, body: &[u8]) -> Option<UpstreamError> {
    // Through `Value`: serde would also read a struct from an array, taking `[{"error":…}]` for an empty error.
    let env = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(mut items)) if !items.is_empty() => serde_json::from_value::<RpcEnvelope>(items.swap_remove(0)).ok(),
        Ok(v @ Value::Object(_)) => serde_json::from_value::<RpcEnvelope>(v).ok(),
        _ => None,
    };
    let RpcEnvelope { error: e } = env?;
    // Anthropic's `{"type":"error","error":{"type","message"}}` also has an `error` object; Google's carries
    // a numeric code or an RPC status.
    if e.code.is_none() && e.status.is_none() {
        return None;
    }
    let status = if status == 0 { e.code.unwrap_or(0) } else { status };
    let kind = e.status.filter(|s| !s.is_empty());
    let detail = |ty: &str| e.details.iter().find(|d| d.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with(ty)));
    let reason = detail("google.rpc.ErrorInfo").and_then(|d| d.get("reason")).and_then(Value::as_str).map(str::to_string);
    let param = detail("google.rpc.BadRequest")
        .and_then(|d| d.get("fieldViolations"))
        .and_then(|v| v.get(0))
        .and_then(|v| v.get("field"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = if e.message.is_empty() {
        match &kind {
            Some(k) => format!("gemini returned {k}"),
            None => format!("upstream returned status {status}"),
        }
    } else {
        e.message
    };
    Some(UpstreamError { status, message, code: reason.or_else(|| kind.clone()), kind, param })
}

// ---------------------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------------------

/// One candidate's progress in a stream.
#[derive(Debug, Default)]
struct CandidateState {
    index: u32,
    started: bool,
    /// Tool calls emitted so far: the next call's OpenAI index, and whether a `STOP` means `tool_calls`.
    calls: usize,
    finished: bool,
}

/// Lines are bounded as the SSE parser bounds them; see [`crate::sse::DEFAULT_MAX_EVENT_BYTES`].
#[derive(Debug)]
struct Lines {
    buf: Vec<u8>,
    max: usize,
    failed: Option<WireError>,
}

impl Lines {
    /// Appends complete lines (without their `\n` or `\r\n`) to `out`; the unfinished tail stays.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut rest = bytes;
        while let Some(p) = rest.iter().position(|&b| b == b'\n') {
            if self.buf.len() + p > self.max {
                return Err(self.fail());
            }
            self.buf.extend_from_slice(&rest[..p]);
            out.push(self.take());
            rest = &rest[p + 1..];
        }
        if self.buf.len() + rest.len() > self.max {
            return Err(self.fail());
        }
        self.buf.extend_from_slice(rest);
        Ok(())
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    fn finish(&mut self, out: &mut Vec<String>) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.buf.is_empty() {
            out.push(self.take());
        }
        Ok(())
    }

    fn fail(&mut self) -> WireError {
        let e = WireError::TooLong { what: "an SSE line", limit: self.max };
        self.buf = Vec::new();
        self.failed = Some(e.clone());
        e
    }
}

/// Turns Gemini's `alt=sse` stream into canonical chunks: per candidate a role chunk with its first
/// content, text and thought deltas, whole tool calls (Gemini sends them in one frame), a finish chunk;
/// at the end of the body the usage chunk and [`StreamEvent::Done`]. A body that ends before any
/// candidate finished (or the prompt was blocked) was cut off.
///
/// Besides `data:` frames Google writes an error that happens after the stream began as plain,
/// pretty-printed JSON lines; those are gathered until their braces balance and reported as
/// [`StreamEvent::Error`].
#[derive(Debug)]
pub struct StreamDecoder {
    lines: Lines,
    pending: Vec<String>,
    /// The `data:` lines of the event being read.
    data: String,
    has_data: bool,
    /// Lines that are not SSE fields: an error body written as plain JSON.
    raw: String,
    id: String,
    seed: String,
    model: String,
    created: i64,
    candidates: Vec<CandidateState>,
    usage: Option<ApiUsage>,
    blocked: bool,
    failed: bool,
}

impl StreamDecoder {
    pub fn new(ctx: ResponseCtx<'_>) -> Self {
        StreamDecoder {
            lines: Lines { buf: Vec::new(), max: crate::sse::DEFAULT_MAX_EVENT_BYTES, failed: None },
            pending: Vec::new(),
            data: String::new(),
            has_data: false,
            raw: String::new(),
            id: ctx.id.to_string(),
            seed: ctx.id.to_string(),
            model: ctx.model.to_string(),
            created: ctx.created,
            candidates: Vec::new(),
            usage: None,
            blocked: false,
            failed: false,
        }
    }

    /// Bounds one line, one event's data and one plain-JSON error.
    pub fn set_max_event_bytes(&mut self, max: usize) {
        self.lines.max = max;
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.lines.feed(bytes, &mut self.pending)?;
        self.drain(out)
    }

    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.lines.finish(&mut self.pending)?;
        self.drain(out)?;
        self.dispatch(out)?;
        if self.failed {
            return Ok(());
        }
        if !self.raw.trim().is_empty() {
            return Err(WireError::malformed("stream", "the gemini stream ended inside a JSON error body"));
        }
        let finished = self.candidates.iter().any(|c| c.finished);
        if !finished && !self.blocked {
            return Err(WireError::malformed("stream", "the gemini stream ended before a finishReason"));
        }
        if let Some(u) = self.usage {
            let mut c = ChatChunk::new(&self.id, self.created, &self.model);
            c.usage = Some(u.to_usage());
            out.push(StreamEvent::Chunk(c));
        }
        out.push(StreamEvent::Done);
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        let mut lines = std::mem::take(&mut self.pending);
        for line in lines.drain(..) {
            if self.failed {
                break;
            }
            self.line(&line, out)?;
        }
        self.pending = lines;
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        if !self.raw.is_empty() || line.trim_start().starts_with(['{', '[']) {
            return self.raw_line(line, out);
        }
        if line.is_empty() {
            return self.dispatch(out);
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            if self.data.len() + value.len() + 1 > self.lines.max {
                return Err(self.lines.fail());
            }
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
        Ok(())
    }

    /// Gathers a plain-JSON body line by line until it is complete JSON.
    fn raw_line(&mut self, line: &str, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        if self.raw.len() + line.len() + 1 > self.lines.max {
            return Err(self.lines.fail());
        }
        self.raw.push_str(line);
        self.raw.push('\n');
        if !balanced(&self.raw) {
            return Ok(());
        }
        let text = std::mem::take(&mut self.raw);
        let r: ApiResponse = match serde_json::from_str::<ApiResponse>(&text) {
            Ok(r) => r,
            Err(_) => serde_json::from_str::<Vec<ApiResponse>>(&text)
                .map_err(|e| WireError::malformed("stream event", e))?
                .into_iter()
                .next()
                .unwrap_or_default(),
        };
        self.frame(r, text.as_bytes(), out);
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        if !self.has_data {
            return Ok(());
        }
        self.has_data = false;
        let data = std::mem::take(&mut self.data);
        let data = data.trim();
        if data.is_empty() || self.failed {
            return Ok(());
        }
        let r: ApiResponse = serde_json::from_str(data).map_err(|e| WireError::malformed("stream event", e))?;
        self.frame(r, data.as_bytes(), out);
        Ok(())
    }

    fn frame(&mut self, r: ApiResponse, raw: &[u8], out: &mut Vec<StreamEvent>) {
        if let Some(WireError::Upstream(e)) = error_in(&r, raw) {
            self.failed = true;
            out.push(StreamEvent::Error(e));
            return;
        }
        if let Some(id) = r.response_id.filter(|s| !s.is_empty()) {
            self.seed.clone_from(&id);
            self.id = id;
        }
        if let Some(m) = r.model_version.filter(|s| !s.is_empty()) {
            self.model = m;
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u);
        }
        if r.candidates.is_empty() && r.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_deref()).is_some() && !self.blocked {
            self.blocked = true;
            let delta = Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() };
            out.push(self.chunk(0, delta, None));
            out.push(self.chunk(0, Delta::default(), Some(FinishReason::ContentFilter)));
            return;
        }
        for (pos, cand) in r.candidates.into_iter().enumerate() {
            let index = cand.index.unwrap_or(pos as u32);
            let slot = match self.candidates.iter().position(|c| c.index == index) {
                Some(s) => s,
                None => {
                    self.candidates.push(CandidateState { index, ..CandidateState::default() });
                    self.candidates.len() - 1
                }
            };
            if self.candidates[slot].finished {
                continue;
            }
            let c = collect(cand.content);
            let mut delta = Delta::default();
            if !self.candidates[slot].started {
                self.candidates[slot].started = true;
                delta.role = Some(Role::Assistant);
                delta.content = Some(String::new());
            }
            if let Some(t) = c.text.filter(|t| !t.is_empty()) {
                delta.content = Some(t);
            }
            if let Some(t) = c.reasoning.filter(|t| !t.is_empty()) {
                delta.extra.insert(REASONING_FIELD.into(), Value::String(t));
            }
            if !c.calls.is_empty() {
                let mut deltas = Vec::with_capacity(c.calls.len());
                for call in c.calls {
                    let k = self.candidates[slot].calls;
                    self.candidates[slot].calls += 1;
                    let tc = to_tool_call(call, &self.seed, index, k);
                    deltas.push(ToolCallDelta {
                        index: u32::try_from(k).unwrap_or(u32::MAX),
                        id: Some(tc.id),
                        kind: Some(tc.kind),
                        function: Some(FunctionCallDelta { name: Some(tc.function.name), arguments: Some(tc.function.arguments) }),
                    });
                }
                delta.tool_calls = Some(deltas);
            }
            if delta != Delta::default() {
                out.push(self.chunk(index, delta, None));
            }
            if let Some(reason) = cand.finish_reason.filter(|f| !f.is_empty() && f != "FINISH_REASON_UNSPECIFIED") {
                self.candidates[slot].finished = true;
                let finish = finish_reason(&reason, self.candidates[slot].calls > 0);
                out.push(self.chunk(index, Delta::default(), Some(finish)));
            }
        }
    }

    fn chunk(&self, index: u32, delta: Delta, finish_reason: Option<FinishReason>) -> StreamEvent {
        let mut c = ChatChunk::new(&self.id, self.created, &self.model);
        c.choices.push(ChunkChoice { index, delta, finish_reason, logprobs: None, extra: Extra::new() });
        StreamEvent::Chunk(c)
    }
}

/// Whether `text` holds at least one value whose braces and brackets are all closed (strings and their
/// escapes skipped).
fn balanced(text: &str) -> bool {
    let mut depth: i64 = 0;
    let mut opened = false;
    let mut in_str = false;
    let mut escaped = false;
    for b in text.bytes() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                opened = true;
            }
            b'}' | b']' => depth -= 1,
            _ => {}
        }
    }
    opened && depth <= 0
}

// ---------------------------------------------------------------------------------------------------------
// Embeddings and models
// ---------------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct BatchEmbedBody<'a> {
    requests: Vec<EmbedRequest<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedRequest<'a> {
    model: &'a str,
    content: EmbedContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u32>,
}

#[derive(Serialize)]
struct EmbedContent<'a> {
    parts: [TextPart<'a>; 1],
}

#[derive(Serialize)]
struct TextPart<'a> {
    text: &'a str,
}

/// Vertex's `:predict` body for text embedding models.
#[derive(Serialize)]
struct PredictBody<'a> {
    instances: Vec<PredictInstance<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<PredictParameters>,
}

#[derive(Serialize)]
struct PredictInstance<'a> {
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_type: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PredictParameters {
    output_dimensionality: u32,
}

/// The Gemini API's `:batchEmbedContents` (one request for any number of inputs), or Vertex's `:predict`.
/// A `task_type` field (Google's `RETRIEVAL_QUERY`, ...) is passed through.
pub fn build_embeddings(ep: &Endpoint<'_>, req: &EmbeddingsRequest, model: &str) -> Result<WireRequest, WireError> {
    let t = target(ep);
    let Some(texts) = req.input.texts() else {
        return Err(WireError::unsupported("gemini embeds text only, not token ids", Some("input")));
    };
    if let Some(f) = req.encoding_format.as_deref().filter(|f| *f != "float" && *f != "base64") {
        return Err(WireError::unsupported(
            format!("encoding_format must be \"float\" or \"base64\", got \"{f}\""),
            Some("encoding_format"),
        ));
    }
    let task_type = req.extra.get("task_type").and_then(Value::as_str);
    let base = model_url(ep, t, model)?;
    let (url, body) = match t {
        Target::Api => {
            let name = format!("models/{}", model.strip_prefix("models/").unwrap_or(model));
            let requests = texts
                .iter()
                .map(|t| EmbedRequest {
                    model: &name,
                    content: EmbedContent { parts: [TextPart { text: t }] },
                    task_type,
                    output_dimensionality: req.dimensions,
                })
                .collect();
            (format!("{base}:batchEmbedContents"), serde_json::to_vec(&BatchEmbedBody { requests }))
        }
        Target::Vertex { .. } => {
            let body = PredictBody {
                instances: texts.iter().map(|t| PredictInstance { content: t, task_type }).collect(),
                parameters: req.dimensions.map(|d| PredictParameters { output_dimensionality: d }),
            };
            (format!("{base}:predict"), serde_json::to_vec(&body))
        }
    };
    let body = body.map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))?;
    Ok(authorized(WireRequest::post_json(url, body), ep))
}

#[derive(Deserialize)]
struct EmbedResponse {
    #[serde(default)]
    embeddings: Option<Vec<Values>>,
    /// `:embedContent` answers one.
    #[serde(default)]
    embedding: Option<Values>,
    /// Vertex `:predict`.
    #[serde(default)]
    predictions: Option<Vec<Prediction>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Values {
    #[serde(default)]
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct Prediction {
    embeddings: PredictionEmbedding,
}

#[derive(Deserialize)]
struct PredictionEmbedding {
    #[serde(default)]
    values: Vec<f64>,
    #[serde(default)]
    statistics: Option<Statistics>,
}

#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    token_count: f64,
}

/// Parses either flavour's embeddings answer; `encoding_format: "base64"` re-encodes the floats as OpenAI
/// sends them (little-endian f32). The Gemini API reports no token usage; Vertex reports it per input.
pub fn parse_embeddings(body: &[u8], ctx: ResponseCtx<'_>, encoding_format: Option<&str>) -> Result<EmbeddingsResponse, WireError> {
    let r: EmbedResponse = serde_json::from_slice(body).map_err(|e| WireError::malformed("embeddings response", e))?;
    if r.error.as_ref().is_some_and(|e| !e.is_null()) {
        return Err(WireError::Upstream(parse_error(0, body)));
    }
    let mut tokens = 0u64;
    let vectors: Vec<Vec<f64>> = match (r.embeddings, r.embedding, r.predictions) {
        (Some(v), _, _) => v.into_iter().map(|e| e.values).collect(),
        (None, Some(one), _) => vec![one.values],
        (None, None, Some(p)) => p
            .into_iter()
            .map(|p| {
                tokens += p.embeddings.statistics.map_or(0, |s| s.token_count.max(0.0) as u64);
                p.embeddings.values
            })
            .collect(),
        (None, None, None) => return Err(WireError::malformed("embeddings response", "no embeddings in the answer")),
    };
    Ok(EmbeddingsResponse::from_vectors(vectors, ctx.model, tokens, encoding_format == Some("base64")))
}

/// `GET /v1beta/models` with Google's largest page (1000), which covers the catalogue in one request. Vertex
/// has no per-project list of Google's models in a shape worth reading; `None` there.
pub fn build_list_models(ep: &Endpoint<'_>) -> Option<WireRequest> {
    match target(ep) {
        Target::Api => Some(authorized(WireRequest::get(format!("{}/{API_VERSION}/models?pageSize=1000", ep.base_url)), ep)),
        Target::Vertex { .. } => None,
    }
}

/// Model ids (`models/` removed) from `{"models":[{"name":"models/…"}]}`.
pub fn parse_models(body: &[u8]) -> Result<Vec<String>, WireError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| WireError::malformed("model list", e))?;
    let Some(list) = v.as_object() else {
        return Err(WireError::malformed("model list", "expected an object with \"models\""));
    };
    let models: &[Value] = list.get("models").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    Ok(models
        .iter()
        .filter_map(|m| m.get("name").and_then(Value::as_str))
        .map(|n| n.strip_prefix("models/").unwrap_or(n).to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Method, ProviderKind, ProviderOptions};
    use base64::Engine as _;
    use serde_json::json;

    const RESPONSE_TEXT: &str = include_str!("../../tests/fixtures/gemini/response_text.json");
    const RESPONSE_TOOLS: &str = include_str!("../../tests/fixtures/gemini/response_tools.json");
    const STREAM_TEXT: &str = include_str!("../../tests/fixtures/gemini/stream_text.sse");
    const STREAM_TOOLS: &str = include_str!("../../tests/fixtures/gemini/stream_tools.sse");
    const ERROR_429: &str = include_str!("../../tests/fixtures/gemini/error_429.json");
    const ERROR_400_KEY: &str = include_str!("../../tests/fixtures/gemini/error_400_key.json");
    const BATCH_EMBED: &str = include_str!("../../tests/fixtures/gemini/batch_embed.json");
    const MODELS: &str = include_str!("../../tests/fixtures/gemini/models.json");

    const API: &str = "https://generativelanguage.googleapis.com";

    fn ep<'a>(opts: &'a ProviderOptions, base: &'a str) -> Endpoint<'a> {
        Endpoint { kind: ProviderKind::Gemini, base_url: base, auth: Auth::Key("AIza-test"), options: opts }
    }

    fn vertex<'a>(opts: &'a ProviderOptions, base: &'a str, auth: Auth<'a>) -> Endpoint<'a> {
        Endpoint { kind: ProviderKind::Vertex, base_url: base, auth, options: opts }
    }

    fn vertex_opts(region: &str) -> ProviderOptions {
        ProviderOptions { region: Some(region.into()), project: Some("my-proj".into()), ..ProviderOptions::default() }
    }

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx { id: "chatcmpl-gw", created: 1_700_000_000, model: "gemini-fallback" }
    }

    fn request(v: Value) -> ChatRequest {
        serde_json::from_value(v).unwrap()
    }

    fn wire(v: Value, model: &str) -> Result<WireRequest, WireError> {
        let opts = ProviderOptions::default();
        build_chat(&ep(&opts, API), &request(v), model)
    }

    fn build(v: Value) -> Value {
        serde_json::from_slice(&wire(v, "gemini-2.5-flash").unwrap().body).unwrap()
    }

    fn refused(v: Value) -> (String, Option<String>) {
        match wire(v, "gemini-2.5-flash") {
            Err(WireError::Unsupported { message, param }) => (message, param),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn header<'a>(w: &'a WireRequest, name: &str) -> Option<&'a str> {
        w.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn urls_and_credentials_per_flavour() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let w = wire(body.clone(), "gemini-2.5-flash").unwrap();
        assert_eq!(w.method, Method::Post);
        assert_eq!(w.url, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(header(&w, "x-goog-api-key"), Some("AIza-test"));
        assert_eq!(header(&w, "authorization"), None);
        assert!(!w.url.contains("key="), "the key never goes in the URL");
        let mut stream = body.clone();
        stream["stream"] = json!(true);
        let w = wire(stream.clone(), "models/gemini-2.5-flash").unwrap();
        assert_eq!(w.url, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");

        let opts = vertex_opts("europe-west4");
        let base = ProviderKind::Vertex.regional_base_url("europe-west4").unwrap();
        let w = build_chat(&vertex(&opts, &base, Auth::Bearer("ya29.tok")), &request(stream), "gemini-2.5-pro").unwrap();
        assert_eq!(
            w.url,
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-proj/locations/europe-west4/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(header(&w, "authorization"), Some("Bearer ya29.tok"));
        assert_eq!(header(&w, "x-goog-api-key"), None);
        // An API key on Vertex is express mode: no project in the path.
        let w =
            build_chat(&vertex(&opts, "https://aiplatform.googleapis.com", Auth::Key("AQ.key")), &request(body.clone()), "gemini-2.5-pro")
                .unwrap();
        assert_eq!(w.url, "https://aiplatform.googleapis.com/v1/publishers/google/models/gemini-2.5-pro:generateContent");
        assert_eq!(header(&w, "x-goog-api-key"), Some("AQ.key"));
        let global = ProviderOptions { region: None, ..vertex_opts("x") };
        assert_eq!(target(&vertex(&global, "b", Auth::Bearer("t"))), Target::Vertex { project: Some("my-proj"), region: "global" });
        assert!(matches!(wire(body, "a/../b"), Err(WireError::Unsupported { .. })));
    }

    #[test]
    fn conversation_maps_to_contents_and_system_instruction() {
        let b = build(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "first"},
            {"role": "developer", "content": "No emoji."},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "answer"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "third"}]}));
        assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "Be terse."}, {"text": "No emoji."}]}));
        assert_eq!(
            b["contents"],
            json!([
                {"role": "user", "parts": [{"text": "first"}, {"text": "second"}]},
                {"role": "model", "parts": [{"text": "answer"}]},
                {"role": "user", "parts": [{"text": "third"}]}])
        );
        assert!(b.get("generationConfig").is_none(), "nothing set, nothing sent: {b}");
        let (msg, param) = refused(json!({"model": "m", "messages": [{"role": "system", "content": "only a system prompt"}]}));
        assert!(msg.contains("at least one user"), "{msg}");
        assert_eq!(param.as_deref(), Some("messages"));
    }

    #[test]
    fn sampling_goes_to_generation_config() {
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": "p"}],
            "temperature": 1.5, "top_p": 0.9, "top_k": 40, "max_completion_tokens": 50, "max_tokens": 10,
            "stop": ["zzz", "yyy"], "n": 2, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
            "user": "u1", "logprobs": true, "parallel_tool_calls": false}));
        assert_eq!(
            b["generationConfig"],
            json!({"temperature": 1.5, "topP": 0.9, "topK": 40, "maxOutputTokens": 50, "stopSequences": ["zzz", "yyy"],
                "candidateCount": 2, "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.5})
        );
        assert_eq!(b.as_object().unwrap().len(), 2, "OpenAI-only fields are not sent: {b}");
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": "p"}], "stop": "\n", "n": 1}));
        assert_eq!(b["generationConfig"], json!({"stopSequences": ["\n"]}));
    }

    #[test]
    fn response_format_is_native() {
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": "p"}], "response_format": {"type": "json_object"}}));
        assert_eq!(b["generationConfig"], json!({"responseMimeType": "application/json"}));
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false});
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": "p"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "strict": true, "schema": schema}}}));
        assert_eq!(b["generationConfig"], json!({"responseMimeType": "application/json", "responseJsonSchema": schema}));
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": "p"}], "response_format": {"type": "text"}}));
        assert!(b.get("generationConfig").is_none());
        let (_, param) = refused(json!({"model": "m", "messages": [{"role": "user", "content": "p"}], "response_format": {"type": "xml"}}));
        assert_eq!(param.as_deref(), Some("response_format"));
    }

    #[test]
    fn images_and_files() {
        let b = build(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
            {"type": "image_url", "image_url": "gs://bucket/cat.JPG"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.webp?x=1"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]}]}));
        assert_eq!(
            b["contents"][0]["parts"],
            json!([
                {"text": "look"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.JPG"}},
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/a.webp?x=1"}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}])
        );
        let (msg, param) = refused(
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "https://x/noext"}]}]}),
        );
        assert!(msg.contains("media type"), "{msg}");
        assert_eq!(param.as_deref(), Some("messages[0].content[0]"));
        let (_, param) =
            refused(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}));
        assert_eq!(param.as_deref(), Some("messages[0].content[0].file.file_id"));
        let (_, param) =
            refused(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}));
        assert_eq!(param.as_deref(), Some("messages[0].content[0]"));
        let (msg, _) = refused(
            json!({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url", "image_url": "data:image/png;base64,AA=="}]}, {"role": "user", "content": "x"}]}),
        );
        assert!(msg.contains("only text"), "{msg}");
    }

    #[test]
    fn tools_choice_and_round_trip() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}},
            {"type": "function", "function": {"name": "now"}}]);
        let b = build(json!({"model": "m", "tools": tools, "tool_choice": "required", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"b\": 1, \"a\": 2}"}},
                {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
            {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\": 18}"},
            {"role": "user", "content": "thanks"}]}));
        assert_eq!(
            b["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather by city", "parametersJsonSchema":
                    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}},
                {"name": "now"}]}])
        );
        assert_eq!(b["toolConfig"], json!({"functionCallingConfig": {"mode": "ANY"}}));
        assert_eq!(
            b["contents"][1],
            json!({"role": "model", "parts": [{"text": "Let me check."},
                {"functionCall": {"id": "call_a", "name": "get_weather", "args": {"city": "Paris", "b": 1, "a": 2}}},
                {"functionCall": {"id": "call_b", "name": "now", "args": {}}}]})
        );
        // Tool results and the user's next text share one user turn; a JSON object result is sent as is.
        assert_eq!(
            b["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"id": "call_b", "name": "now", "response": {"result": "12:00"}}},
                {"functionResponse": {"id": "call_a", "name": "get_weather", "response": {"temp": 18}}},
                {"text": "thanks"}]})
        );
        // Key order of the caller's arguments is kept byte for byte.
        let raw = String::from_utf8(wire(json!({"model": "m", "messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"z\":1,\"a\":2}"}}]}]}),
            "gemini-2.5-flash").unwrap().body).unwrap();
        assert!(raw.contains(r#""args":{"z":1,"a":2}"#), "{raw}");

        for (choice, want) in [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("none"), json!({"mode": "NONE"})),
            (json!({"type": "function", "function": {"name": "now"}}), json!({"mode": "ANY", "allowedFunctionNames": ["now"]})),
        ] {
            let b = build(json!({"model": "m", "tools": tools, "tool_choice": choice, "messages": [{"role": "user", "content": "x"}]}));
            assert_eq!(b["toolConfig"]["functionCallingConfig"], want);
        }
        let b = build(json!({"model": "m", "tools": tools, "messages": [{"role": "user", "content": "x"}]}));
        assert!(b.get("toolConfig").is_none());
        let (_, param) = refused(json!({"model": "m", "tool_choice": "required", "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(param.as_deref(), Some("tool_choice"));
        let (_, param) = refused(
            json!({"model": "m", "tools": [{"type": "code_interpreter", "function": {"name": "x"}}], "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(param.as_deref(), Some("tools[0].type"));
    }

    #[test]
    fn tool_results_need_their_call_and_object_arguments() {
        let (msg, param) = refused(json!({"model": "m", "messages": [{"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_zzz", "content": "r"}]}));
        assert!(msg.contains("call_zzz"), "{msg}");
        assert_eq!(param.as_deref(), Some("messages[1].tool_call_id"));
        let (_, param) = refused(json!({"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]}));
        assert_eq!(param.as_deref(), Some("messages[1].tool_call_id"));
        let (_, param) = refused(json!({"model": "m", "messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}));
        assert_eq!(param.as_deref(), Some("messages[1].tool_calls[0].function.arguments"));
        let (_, param) = refused(json!({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]}));
        assert_eq!(param.as_deref(), Some("messages[0].role"));
    }

    #[test]
    fn gemini_3_replays_get_the_signature_bypass_on_the_first_call_of_a_turn() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "a"}, {"role": "tool", "tool_call_id": "c2", "content": "b"}]});
        let b: Value = serde_json::from_slice(&wire(body.clone(), "gemini-3-pro-preview").unwrap().body).unwrap();
        assert_eq!(b["contents"][1]["parts"][0]["thoughtSignature"], SIGNATURE_BYPASS);
        assert!(b["contents"][1]["parts"][1].get("thoughtSignature").is_none());
        let b: Value = serde_json::from_slice(&wire(body, "gemini-2.5-flash").unwrap().body).unwrap();
        assert!(b["contents"][1]["parts"][0].get("thoughtSignature").is_none());
        assert!(
            signs_function_calls("models/gemini-3.1-flash")
                && !signs_function_calls("gemini-2.0-flash")
                && !signs_function_calls("gemma-3")
        );
    }

    #[test]
    fn text_response_with_thoughts_and_cache() {
        let r = parse_chat(RESPONSE_TEXT.as_bytes(), ctx()).unwrap();
        assert_eq!(r.id, "R5sqaJaWK9uJ1dkP7Ki-mAE");
        assert_eq!(r.model, "gemini-2.5-flash");
        assert_eq!(r.created, 1_700_000_000);
        assert_eq!(r.choices.len(), 1);
        let c = &r.choices[0];
        assert_eq!(c.message.content.as_deref(), Some("The image shows a small orange cat sitting on a windowsill."));
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens()), (271, 47, 318, Some(256)));
        assert_eq!(u.completion_tokens_details, Some(json!({"reasoning_tokens": 34})));
    }

    #[test]
    fn tool_response_gets_stable_synthesized_ids() {
        let r = parse_chat(RESPONSE_TOOLS.as_bytes(), ctx()).unwrap();
        let c = &r.choices[0];
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.message.content, None);
        let calls = c.message.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap(), json!({"city": "Paris", "unit": "celsius"}));
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29, "{}", calls[0].id);
        assert_ne!(calls[0].id, calls[1].id);
        let again = parse_chat(RESPONSE_TOOLS.as_bytes(), ctx()).unwrap();
        assert_eq!(again.choices[0].message.tool_calls, c.message.tool_calls, "ids are stable");
        // Ids Gemini gives are kept.
        let body = json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"id": "fc-9", "name": "f"}}]}, "finishReason": "STOP"}]});
        let r = parse_chat(body.to_string().as_bytes(), ctx()).unwrap();
        let call = &r.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!((call.id.as_str(), call.function.arguments.as_str()), ("fc-9", "{}"));
        assert_eq!(r.id, "chatcmpl-gw", "no responseId: the gateway's");
        assert_eq!(r.model, "gemini-fallback");
    }

    #[test]
    fn finish_reasons_blocked_prompts_and_candidates() {
        for (reason, want) in [
            ("MAX_TOKENS", FinishReason::Length),
            ("SAFETY", FinishReason::ContentFilter),
            ("RECITATION", FinishReason::ContentFilter),
            ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
            ("SPII", FinishReason::ContentFilter),
            ("BLOCKLIST", FinishReason::ContentFilter),
            ("OTHER", FinishReason::Stop),
            ("MALFORMED_FUNCTION_CALL", FinishReason::Other("malformed_function_call".into())),
        ] {
            let body = json!({"candidates": [{"finishReason": reason, "index": 0}]});
            let r = parse_chat(body.to_string().as_bytes(), ctx()).unwrap();
            assert_eq!(r.choices[0].finish_reason, Some(want), "{reason}");
        }
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}});
        let r = parse_chat(blocked.to_string().as_bytes(), ctx()).unwrap();
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ContentFilter));
        assert_eq!(r.choices[0].message.content.as_deref(), Some(""));
        assert_eq!(r.usage.unwrap().prompt_tokens, 5);
        let two = json!({"candidates": [
            {"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "index": 1},
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0}]});
        let r = parse_chat(two.to_string().as_bytes(), ctx()).unwrap();
        assert_eq!((r.choices[0].index, r.choices[0].message.content.as_deref()), (0, Some("a")));
        assert_eq!((r.choices[1].index, r.choices[1].message.content.as_deref()), (1, Some("b")));
        assert!(matches!(parse_chat(b"{}", ctx()), Err(WireError::Malformed { .. })));
        assert!(matches!(parse_chat(b"not json", ctx()), Err(WireError::Malformed { .. })));
        let thought =
            json!({"candidates": [{"content": {"parts": [{"text": "hmm", "thought": true}, {"text": "42"}]}, "finishReason": "STOP"}]});
        let r = parse_chat(thought.to_string().as_bytes(), ctx()).unwrap();
        assert_eq!(r.choices[0].message.content.as_deref(), Some("42"));
        assert_eq!(r.choices[0].message.extra.get("reasoning_content"), Some(&json!("hmm")));
    }

    #[test]
    fn google_error_bodies() {
        let e = parse_error(429, ERROR_429.as_bytes());
        assert_eq!(e.status, 429);
        assert_eq!((e.kind.as_deref(), e.code.as_deref()), (Some("RESOURCE_EXHAUSTED"), Some("RESOURCE_EXHAUSTED")));
        assert!(e.message.starts_with("You exceeded your current quota"));
        let e = parse_error(400, ERROR_400_KEY.as_bytes());
        assert_eq!((e.kind.as_deref(), e.code.as_deref()), (Some("INVALID_ARGUMENT"), Some("API_KEY_INVALID")));
        let bad = json!({"error": {"code": 400, "message": "Invalid value at 'generation_config.temperature'", "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "generation_config.temperature", "description": "x"}]}]}});
        let e = parse_error(400, bad.to_string().as_bytes());
        assert_eq!(e.param.as_deref(), Some("generation_config.temperature"));
        let arr = json!([{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}]);
        let e = parse_error(503, arr.to_string().as_bytes());
        assert_eq!((e.status, e.kind.as_deref()), (503, Some("UNAVAILABLE")));
        let e = parse_error(502, b"<html>Bad Gateway</html>");
        assert_eq!((e.status, e.message.as_str()), (502, "<html>Bad Gateway</html>"));
        let e = parse_error(404, br#"{"error":{"code":404,"status":"NOT_FOUND"}}"#);
        assert_eq!(e.message, "gemini returned NOT_FOUND");
        // An error inside a 2xx body: the status comes from the body's code.
        let WireError::Upstream(e) = parse_chat(ERROR_429.as_bytes(), ctx()).unwrap_err() else { panic!() };
        assert_eq!(e.status, 429);
        let WireError::Upstream(e) = parse_chat(br#"{"error":{"message":"x","status":"UNAVAILABLE"}}"#, ctx()).unwrap_err() else {
            panic!()
        };
        assert_eq!(e.status, 503);
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

    fn decode_every_way(input: &str) -> Vec<StreamEvent> {
        let whole = decode(input, input.len()).unwrap();
        for piece in [1, 7, 64] {
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
        assert_eq!(ev.len(), 5, "{ev:#?}");
        for c in &cs {
            assert_eq!((c.id.as_str(), c.model.as_str(), c.created), ("6psqaLCbNYqH1dkPz9GA8AQ", "gemini-2.5-flash", 1_700_000_000));
        }
        let d0 = &cs[0].choices[0].delta;
        assert_eq!((d0.role, d0.content.as_deref()), (Some(Role::Assistant), Some("The")));
        assert_eq!(cs[1].choices[0].delta.content.as_deref(), Some(" sky is blue because of Rayleigh scattering."));
        assert_eq!(cs[2].choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(cs[2].choices[0].delta, Delta::default());
        assert!(cs[3].choices.is_empty());
        let u = cs[3].usage.as_ref().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (8, 9, 17));
        assert_eq!(ev[4], StreamEvent::Done);
        assert_eq!(decode_every_way(&STREAM_TEXT.replace("\r\n", "\n")), ev, "LF framing decodes the same");
    }

    #[test]
    fn tool_stream_arrives_whole() {
        let ev = decode_every_way(STREAM_TOOLS);
        let cs = chunks(&ev);
        assert_eq!(cs[0].choices[0].delta.content.as_deref(), Some("Checking both cities."));
        let calls = cs[1].choices[0].delta.tool_calls.as_ref().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].index, 0);
        assert_eq!(calls[1].index, 1);
        assert_eq!(calls[1].function.as_ref().unwrap().arguments.as_deref(), Some(r#"{"city":"Oslo"}"#));
        assert!(calls.iter().all(|c| c.id.as_deref().is_some_and(|i| i.starts_with("call_")) && c.kind.as_deref() == Some("function")));
        assert_ne!(calls[0].id, calls[1].id);
        assert_eq!(cs[2].choices[0].finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(ev.last(), Some(&StreamEvent::Done));
    }

    #[test]
    fn truncated_streams_and_garbage() {
        let cut = &STREAM_TEXT[..STREAM_TEXT.rfind("data: ").unwrap()];
        for piece in [1, 7, cut.len()] {
            assert!(matches!(decode(cut, piece), Err(WireError::Malformed { what: "stream", .. })));
        }
        assert!(matches!(decode("", 1), Err(WireError::Malformed { what: "stream", .. })));
        assert!(matches!(decode("data: {\"candidates\": [\n\n", 3), Err(WireError::Malformed { what: "stream event", .. })));
        let mut d = StreamDecoder::new(ctx());
        d.set_max_event_bytes(32);
        let mut out = Vec::new();
        let e = d.feed(&[b'x'; 64], &mut out).unwrap_err();
        assert_eq!(e, WireError::TooLong { what: "an SSE line", limit: 32 });
    }

    #[test]
    fn errors_inside_the_stream() {
        let first = STREAM_TEXT.split("\r\n\r\n").next().unwrap().to_string() + "\r\n\r\n";
        // As a data frame.
        let framed = first.clone()
            + "data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\r\n\r\n";
        let ev = decode_every_way(&framed);
        assert_eq!(
            ev.last(),
            Some(&StreamEvent::Error(UpstreamError {
                status: 503,
                message: "The model is overloaded.".into(),
                kind: Some("UNAVAILABLE".into()),
                code: Some("UNAVAILABLE".into()),
                param: None
            }))
        );
        // As Google writes it after the stream began: plain pretty-printed JSON (here with a brace in a string).
        let plain = first
            + "{\n  \"error\": {\n    \"code\": 500,\n    \"message\": \"Internal error {x\",\n    \"status\": \"INTERNAL\"\n  }\n}\n";
        let ev = decode_every_way(&plain);
        let StreamEvent::Error(e) = ev.last().unwrap() else { panic!("{ev:#?}") };
        assert_eq!((e.status, e.message.as_str()), (500, "Internal error {x"));
        assert_eq!(chunks(&ev).len(), 1);
        // Cut inside such a body: truncated.
        let cut = &plain[..plain.len() - 4];
        assert!(matches!(decode(cut, 5), Err(WireError::Malformed { what: "stream", .. })));
    }

    #[test]
    fn blocked_stream_and_several_candidates() {
        let blocked = "data: {\"promptFeedback\": {\"blockReason\": \"PROHIBITED_CONTENT\"}, \"usageMetadata\": {\"promptTokenCount\": 3, \"totalTokenCount\": 3}}\r\n\r\n";
        let ev = decode_every_way(blocked);
        let cs = chunks(&ev);
        assert_eq!(cs[1].choices[0].finish_reason, Some(FinishReason::ContentFilter));
        assert_eq!(cs[2].usage.as_ref().unwrap().prompt_tokens, 3);
        let two = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}, \"index\": 0}, {\"content\": {\"parts\": [{\"text\": \"b\"}]}, \"index\": 1}]}\n\n\
                   data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\"}]}, \"finishReason\": \"STOP\", \"index\": 0}, {\"finishReason\": \"MAX_TOKENS\", \"index\": 1}]}\n\n";
        let ev = decode_every_way(two);
        let finishes: Vec<(u32, FinishReason)> =
            chunks(&ev).iter().flat_map(|c| c.choices.iter()).filter_map(|ch| ch.finish_reason.clone().map(|f| (ch.index, f))).collect();
        assert_eq!(finishes, vec![(0, FinishReason::Stop), (1, FinishReason::Length)]);
        let roles = chunks(&ev).iter().flat_map(|c| c.choices.iter()).filter(|ch| ch.delta.role.is_some()).count();
        assert_eq!(roles, 2, "one role chunk per candidate");
    }

    // ----- embeddings and models -----

    #[test]
    fn embeddings_both_flavours() {
        let opts = ProviderOptions::default();
        let req: EmbeddingsRequest =
            serde_json::from_value(json!({"model": "m", "input": ["alpha", "beta"], "dimensions": 4, "task_type": "RETRIEVAL_QUERY"}))
                .unwrap();
        let w = build_embeddings(&ep(&opts, API), &req, "gemini-embedding-001").unwrap();
        assert_eq!(w.url, "https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:batchEmbedContents");
        let b: Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(
            b,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "alpha"}]}, "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 4},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "beta"}]}, "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 4}]})
        );
        let vopts = vertex_opts("us-central1");
        let w = build_embeddings(
            &vertex(&vopts, "https://us-central1-aiplatform.googleapis.com", Auth::Bearer("t")),
            &req,
            "text-embedding-005",
        )
        .unwrap();
        assert!(
            w.url.ends_with("/v1/projects/my-proj/locations/us-central1/publishers/google/models/text-embedding-005:predict"),
            "{}",
            w.url
        );
        let b: Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(
            b,
            json!({"instances": [{"content": "alpha", "task_type": "RETRIEVAL_QUERY"}, {"content": "beta", "task_type": "RETRIEVAL_QUERY"}],
                "parameters": {"outputDimensionality": 4}})
        );
        let tokens: EmbeddingsRequest = serde_json::from_value(json!({"model": "m", "input": [1, 2]})).unwrap();
        assert!(build_embeddings(&ep(&opts, API), &tokens, "m").is_err());

        let r = parse_embeddings(BATCH_EMBED.as_bytes(), ctx(), None).unwrap();
        assert_eq!(r.data.len(), 2);
        assert_eq!(r.data[1].index, 1);
        assert_eq!(r.data[0].embedding, json!([0.012, -0.034, 0.056, 0.078]));
        assert_eq!(r.model, "gemini-fallback");
        let r = parse_embeddings(BATCH_EMBED.as_bytes(), ctx(), Some("base64")).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(r.data[0].embedding.as_str().unwrap()).unwrap();
        assert_eq!(f32::from_le_bytes(bytes[..4].try_into().unwrap()), 0.012_f32);
        let predict = json!({"predictions": [{"embeddings": {"values": [0.1, 0.2], "statistics": {"token_count": 3, "truncated": false}}},
            {"embeddings": {"values": [0.3, 0.4], "statistics": {"token_count": 2.0, "truncated": false}}}]});
        let r = parse_embeddings(predict.to_string().as_bytes(), ctx(), None).unwrap();
        assert_eq!((r.data.len(), r.usage.prompt_tokens, r.usage.total_tokens), (2, 5, 5));
        assert!(matches!(parse_embeddings(b"{}", ctx(), None), Err(WireError::Malformed { .. })));
        assert!(matches!(parse_embeddings(ERROR_429.as_bytes(), ctx(), None), Err(WireError::Upstream(_))));
    }

    #[test]
    fn model_list() {
        let opts = ProviderOptions::default();
        let w = build_list_models(&ep(&opts, API)).unwrap();
        assert_eq!((w.method, w.url.as_str()), (Method::Get, "https://generativelanguage.googleapis.com/v1beta/models?pageSize=1000"));
        assert_eq!(header(&w, "x-goog-api-key"), Some("AIza-test"));
        let vopts = vertex_opts("global");
        assert!(build_list_models(&vertex(&vopts, "b", Auth::Bearer("t"))).is_none());
        assert_eq!(parse_models(MODELS.as_bytes()).unwrap(), vec!["gemini-2.5-flash", "gemini-embedding-001"]);
        assert!(parse_models(b"[]").is_err());
    }
}
