//! The Google GenAI API as callers speak it (`/genai/v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`): a `GenerateContentRequest` into the canonical request, canonical
//! answers and chunks back into `GenerateContentResponse` JSON and SSE frames, and errors in Google's
//! `{"error":{"code","message","status"}}` shape, so the official SDKs work unchanged over any upstream.
//!
//! The choices where the shapes differ:
//! - `systemInstruction` becomes one system message; `user` turns become user messages, `model` turns
//!   assistant messages. `functionResponse` parts become `tool` messages (placed before the turn's other
//!   parts), `functionCall` parts the assistant's tool calls.
//! - Gemini matches results to calls by id when both have one, else by function name and order; the
//!   canonical form needs ids, so calls without one get `call_…` ids and each result takes the id of the
//!   oldest unanswered call of its name.
//! - A result's `response` object becomes the tool message's text: `{"result": "…"}` or
//!   `{"output": "…"}` (what the SDK's automatic function calling sends) as that text, any other object as
//!   its JSON.
//! - `inlineData` images become `data:` URLs, other inline media (PDF, ...) `file` parts; `fileData` with
//!   an image type becomes an image URL. Google's `Schema` (`parameters`, `responseSchema`: OpenAPI
//!   subset, upper-case types, `nullable`) is turned into JSON Schema; `parametersJsonSchema` and
//!   `responseJsonSchema` already are.
//! - Refused with a 400 `INVALID_ARGUMENT`: Google-side tools (search, code execution, URL context),
//!   `cachedContent` (a cache that lives at Google), non-text response modalities, enum output, and parts
//!   the canonical form cannot carry (executable code, video metadata). Dropped: `safetySettings`,
//!   `labels`, `thinkingConfig`, logprob knobs (hints another upstream cannot apply).
//! - The stream: text goes out as it comes; tool calls, which OpenAI-shaped upstreams send in fragments,
//!   go out whole (as Gemini sends them) when their candidate finishes; usage rides on the last frame.
//!   Frames are `data: …\r\n\r\n` as Google writes them. The SDK reads any non-`data:` line as JSON, so
//!   keep-alives are bare blank lines, never SSE comments.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::image::parse_data_url;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, Extra, FileData, FinishReason, FunctionCall, FunctionDef, ImageUrl,
    JsonSchemaFormat, Message, ModelList, ResponseFormat, Role, Stop, StreamOptions, Tool, ToolCall, ToolChoice, Usage,
};

/// The bytes to send when a stream has nothing to say for a while: a blank line, which the SDK's reader
/// skips (an SSE comment would reach its JSON parser and fail the stream).
pub const KEEPALIVE: &[u8] = b"\r\n";

/// A caller's request the gateway cannot take, as the 400 Google would answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub message: String,
    /// The field at fault, in the request's own (camelCase) path.
    pub field: Option<String>,
}

fn invalid(message: impl Into<String>, field: impl Into<String>) -> RequestError {
    RequestError { message: message.into(), field: Some(field.into()) }
}

// ---------------------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------------------

/// A `GenerateContentRequest`. Proto3 JSON accepts both camelCase and snake_case names.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateRequest {
    #[serde(default)]
    contents: Vec<GContent>,
    #[serde(default, alias = "system_instruction")]
    system_instruction: Option<SystemInstruction>,
    #[serde(default)]
    tools: Vec<Map<String, Value>>,
    #[serde(default, alias = "tool_config")]
    tool_config: Option<GToolConfig>,
    #[serde(default, alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
    #[serde(default, alias = "cached_content")]
    cached_content: Option<String>,
    // Accepted and dropped, named so that they are not mistaken for unknown fields later.
    #[serde(default, alias = "safety_settings")]
    #[allow(dead_code)]
    safety_settings: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    labels: Option<Value>,
}

/// `systemInstruction` is a `Content`; a bare string (some clients send one) is taken too.
#[derive(Deserialize)]
#[serde(untagged)]
enum SystemInstruction {
    Text(String),
    Content(GContent),
}

#[derive(Deserialize, Default)]
struct GContent {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GToolConfig {
    #[serde(default, alias = "function_calling_config")]
    function_calling_config: Option<GFunctionCallingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GFunctionCallingConfig {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default, alias = "allowed_function_names")]
    allowed_function_names: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default, alias = "top_p")]
    top_p: Option<f64>,
    #[serde(default, alias = "top_k")]
    top_k: Option<Value>,
    #[serde(default, alias = "max_output_tokens")]
    max_output_tokens: Option<u32>,
    #[serde(default, alias = "stop_sequences")]
    stop_sequences: Vec<String>,
    #[serde(default, alias = "candidate_count")]
    candidate_count: Option<u32>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default, alias = "presence_penalty")]
    presence_penalty: Option<f64>,
    #[serde(default, alias = "frequency_penalty")]
    frequency_penalty: Option<f64>,
    #[serde(default, alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(default, alias = "response_schema")]
    response_schema: Option<Value>,
    #[serde(default, alias = "response_json_schema")]
    response_json_schema: Option<Value>,
    #[serde(default, alias = "response_modalities")]
    response_modalities: Vec<String>,
}

/// A call seen in a model turn, waiting for its result.
struct PendingCall {
    id: String,
    name: String,
    answered: bool,
}

/// Parses a `GenerateContentRequest` for `model` (the path's model, `models/` removed) into the canonical
/// request; `stream` is whether the route was `:streamGenerateContent` (usage is then always asked for,
/// since Google's streams always end with it).
pub fn parse_request(model: &str, body: &[u8], stream: bool) -> Result<ChatRequest, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError { message: "the request body is empty; send a GenerateContentRequest JSON object".into(), field: None });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let g: GenerateRequest = decode(&mut de)?;
    if g.cached_content.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(invalid(
            "cachedContent refers to a cache kept by Google, which the gateway cannot pass to its upstreams",
            "cachedContent",
        ));
    }
    let mut messages = Vec::with_capacity(g.contents.len() + 1);
    match g.system_instruction {
        None => {}
        Some(SystemInstruction::Text(t)) => messages.push(Message::text(Role::System, t)),
        Some(SystemInstruction::Content(c)) => {
            let mut texts = Vec::new();
            for (j, p) in c.parts.iter().enumerate() {
                match p.get("text").and_then(Value::as_str) {
                    Some(t) => texts.push(ContentPart::Text { text: t.to_string() }),
                    None => return Err(invalid("systemInstruction takes only text parts", format!("systemInstruction.parts[{j}]"))),
                }
            }
            if !texts.is_empty() {
                messages.push(Message { content: Some(collapse(texts)), ..Message::text(Role::System, "") });
            }
        }
    }
    if g.contents.is_empty() {
        return Err(invalid("contents must not be empty", "contents"));
    }
    let mut pending: Vec<PendingCall> = Vec::new();
    let mut call_count = 0usize;
    for (i, c) in g.contents.iter().enumerate() {
        match c.role.as_deref().unwrap_or("user") {
            "model" | "assistant" => {
                let mut texts = Vec::new();
                let mut calls = Vec::new();
                for (j, p) in c.parts.iter().enumerate() {
                    let at = || format!("contents[{i}].parts[{j}]");
                    if let Some(f) = p.get("functionCall").or_else(|| p.get("function_call")) {
                        let name = f.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
                        let Some(name) = name else {
                            return Err(invalid("a functionCall needs its name", format!("{}.functionCall.name", at())));
                        };
                        let id = match f.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                            Some(id) => id.to_string(),
                            None => format!("call_{call_count}_{name}"),
                        };
                        call_count += 1;
                        let arguments = match f.get("args") {
                            None | Some(Value::Null) => "{}".to_string(),
                            Some(v @ Value::Object(_)) => v.to_string(),
                            Some(_) => return Err(invalid("functionCall.args must be an object", format!("{}.functionCall.args", at()))),
                        };
                        pending.push(PendingCall { id: id.clone(), name: name.to_string(), answered: false });
                        calls.push(ToolCall { id, kind: "function".into(), function: FunctionCall { name: name.to_string(), arguments } });
                    } else if let Some(t) = p.get("text").and_then(Value::as_str) {
                        // The model's own thoughts are not part of the answer an OpenAI-shaped upstream reads.
                        if p.get("thought").and_then(Value::as_bool) != Some(true) && !t.is_empty() {
                            texts.push(ContentPart::Text { text: t.to_string() });
                        }
                    } else if !is_empty_part(p) {
                        return Err(unsupported_part(p, &at(), "model turns carry text and functionCall parts only"));
                    }
                }
                if texts.is_empty() && calls.is_empty() {
                    continue;
                }
                let mut m = Message::text(Role::Assistant, "");
                m.content = (!texts.is_empty()).then(|| collapse(texts));
                m.tool_calls = (!calls.is_empty()).then_some(calls);
                messages.push(m);
            }
            "user" | "function" | "tool" => {
                let mut parts = Vec::new();
                for (j, p) in c.parts.iter().enumerate() {
                    let at = || format!("contents[{i}].parts[{j}]");
                    if let Some(r) = p.get("functionResponse").or_else(|| p.get("function_response")) {
                        messages.push(tool_message(r, &mut pending, &format!("{}.functionResponse", at()))?);
                    } else if let Some(t) = p.get("text").and_then(Value::as_str) {
                        if !t.is_empty() {
                            parts.push(ContentPart::Text { text: t.to_string() });
                        }
                    } else if let Some(d) = p.get("inlineData").or_else(|| p.get("inline_data")) {
                        parts.push(inline_part(d, &at())?);
                    } else if let Some(d) = p.get("fileData").or_else(|| p.get("file_data")) {
                        parts.push(file_data_part(d, &at())?);
                    } else if !is_empty_part(p) {
                        return Err(unsupported_part(
                            p,
                            &at(),
                            "the gateway takes text, inlineData, fileData (images) and functionResponse parts",
                        ));
                    }
                }
                if !parts.is_empty() {
                    let mut m = Message::text(Role::User, "");
                    m.content = Some(collapse(parts));
                    messages.push(m);
                }
            }
            other => return Err(invalid(format!("role must be \"user\" or \"model\", got \"{other}\""), format!("contents[{i}].role"))),
        }
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(invalid("contents hold no text, media or function parts", "contents"));
    }

    let mut req = ChatRequest { model: model.to_string(), messages, ..ChatRequest::default() };
    let mut tools = convert_tools(&g.tools)?;
    if let Some(fc) = g.tool_config.and_then(|t| t.function_calling_config) {
        if let Some(allowed) = apply_tool_config(&mut req, fc, &tools)? {
            // ANY with several allowed names: only those tools are offered, and one of them must be called.
            tools.retain(|t| allowed.contains(&t.function.name));
        }
    }
    if !tools.is_empty() {
        req.tools = Some(tools);
    }
    if let Some(gc) = g.generation_config {
        apply_generation_config(&mut req, gc)?;
    }
    if stream {
        req.stream = Some(true);
        req.stream_options = Some(StreamOptions { include_usage: Some(true), extra: Extra::new() });
    }
    Ok(req)
}

/// Decodes with the failing field's path in the error, as Google names it.
fn decode(de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'_>>) -> Result<GenerateRequest, RequestError> {
    let g = GenerateRequest::deserialize(&mut *de).map_err(|e| {
        let syntax = matches!(e.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof);
        let message = if syntax { format!("Invalid JSON payload received. {e}") } else { format!("Invalid GenerateContentRequest: {e}") };
        RequestError { message, field: None }
    })?;
    de.end().map_err(|e| RequestError { message: format!("Invalid JSON payload received. {e}"), field: None })?;
    Ok(g)
}

/// One text part is sent as a plain string, the form most upstreams take best.
fn collapse(mut parts: Vec<ContentPart>) -> Content {
    if parts.len() == 1 {
        if let Some(ContentPart::Text { text }) = parts.first_mut() {
            return Content::Text(std::mem::take(text));
        }
    }
    Content::Parts(parts)
}

/// Flags-only parts (a lone `thoughtSignature`, an empty object) carry nothing to translate.
fn is_empty_part(p: &Map<String, Value>) -> bool {
    p.keys().all(|k| matches!(k.as_str(), "thought" | "thoughtSignature" | "thought_signature" | "partMetadata" | "part_metadata"))
}

fn unsupported_part(p: &Map<String, Value>, at: &str, what: &str) -> RequestError {
    let kind =
        p.keys().find(|k| !matches!(k.as_str(), "thought" | "thoughtSignature" | "thought_signature")).map_or("unknown", String::as_str);
    invalid(format!("part type \"{kind}\" is not supported here; {what}"), at.to_string())
}

fn tool_message(r: &Value, pending: &mut [PendingCall], at: &str) -> Result<Message, RequestError> {
    let name = r.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
    let Some(name) = name else { return Err(invalid("a functionResponse needs the name of its function", format!("{at}.name"))) };
    let given = r.get("id").and_then(Value::as_str).filter(|s| !s.is_empty());
    let slot = match given {
        Some(id) => pending.iter_mut().find(|c| c.id == id),
        None => pending.iter_mut().find(|c| !c.answered && c.name == name),
    };
    let Some(slot) = slot else {
        return Err(invalid(
            format!(
                "functionResponse for \"{name}\" answers no earlier functionCall; each result must follow the model turn that called it"
            ),
            at.to_string(),
        ));
    };
    slot.answered = true;
    let text = match r.get("response") {
        None | Some(Value::Null) => String::new(),
        Some(Value::Object(o)) if o.len() == 1 => match o.iter().next() {
            Some((k, Value::String(s))) if k == "result" || k == "output" => s.clone(),
            _ => Value::Object(o.clone()).to_string(),
        },
        Some(Value::Object(o)) => Value::Object(o.clone()).to_string(),
        Some(_) => return Err(invalid("functionResponse.response must be an object", format!("{at}.response"))),
    };
    let mut m = Message::text(Role::Tool, text);
    m.tool_call_id = Some(slot.id.clone());
    Ok(m)
}

fn inline_part(d: &Value, at: &str) -> Result<ContentPart, RequestError> {
    let mime = d.get("mimeType").or_else(|| d.get("mime_type")).and_then(Value::as_str).unwrap_or("");
    let Some(data) = d.get("data").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return Err(invalid("inlineData needs base64 data", format!("{at}.inlineData.data")));
    };
    if mime.is_empty() {
        return Err(invalid("inlineData needs a mimeType", format!("{at}.inlineData.mimeType")));
    }
    let url = format!("data:{mime};base64,{data}");
    if mime.starts_with("image/") {
        Ok(ContentPart::ImageUrl { image_url: ImageUrl { url, detail: None } })
    } else {
        Ok(ContentPart::File { file: FileData { file_data: Some(url), file_id: None, filename: None } })
    }
}

fn file_data_part(d: &Value, at: &str) -> Result<ContentPart, RequestError> {
    let mime = d.get("mimeType").or_else(|| d.get("mime_type")).and_then(Value::as_str).unwrap_or("");
    let uri = d.get("fileUri").or_else(|| d.get("file_uri")).and_then(Value::as_str).unwrap_or("");
    if uri.is_empty() {
        return Err(invalid("fileData needs a fileUri", format!("{at}.fileData.fileUri")));
    }
    let looks_like_image = mime.starts_with("image/") || (mime.is_empty() && parse_data_url(uri).is_none());
    if !looks_like_image {
        return Err(invalid(format!("fileData of type \"{mime}\" is not supported; send it as inlineData"), format!("{at}.fileData")));
    }
    Ok(ContentPart::ImageUrl { image_url: ImageUrl { url: uri.to_string(), detail: None } })
}

fn convert_tools(tools: &[Map<String, Value>]) -> Result<Vec<Tool>, RequestError> {
    let mut out = Vec::new();
    for (k, t) in tools.iter().enumerate() {
        for (key, v) in t {
            match key.as_str() {
                "functionDeclarations" | "function_declarations" => {
                    let decls = v
                        .as_array()
                        .ok_or_else(|| invalid("functionDeclarations must be a list", format!("tools[{k}].functionDeclarations")))?;
                    for (d, decl) in decls.iter().enumerate() {
                        out.push(declaration(decl, &format!("tools[{k}].functionDeclarations[{d}]"))?);
                    }
                }
                other => {
                    return Err(invalid(
                        format!("tool \"{other}\" runs at Google and is not supported through the gateway; use functionDeclarations"),
                        format!("tools[{k}].{other}"),
                    ))
                }
            }
        }
    }
    Ok(out)
}

fn declaration(d: &Value, at: &str) -> Result<Tool, RequestError> {
    let Some(name) = d.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return Err(invalid("a function declaration needs a name", format!("{at}.name")));
    };
    let parameters = match (d.get("parametersJsonSchema").or_else(|| d.get("parameters_json_schema")), d.get("parameters")) {
        (Some(s), _) if !s.is_null() => Some(s.clone()),
        (_, Some(s)) if !s.is_null() => Some(to_json_schema(s)),
        _ => None,
    };
    Ok(Tool {
        kind: "function".into(),
        function: FunctionDef {
            name: name.to_string(),
            description: d.get("description").and_then(Value::as_str).map(str::to_string),
            parameters,
            strict: None,
        },
    })
}

/// Google's `Schema` (an OpenAPI 3.0 subset: upper-case `type`, `nullable`, `propertyOrdering`) as JSON
/// Schema: types lower-cased, `nullable: true` as a `"null"` type, Google-only keys dropped.
pub fn to_json_schema(s: &Value) -> Value {
    match s {
        Value::Object(o) => {
            let mut out = Map::with_capacity(o.len());
            let nullable = o.get("nullable").and_then(Value::as_bool) == Some(true);
            for (k, v) in o {
                match k.as_str() {
                    "nullable" | "propertyOrdering" | "property_ordering" | "example" => {}
                    "type" => {
                        let t = match v {
                            Value::String(t) => Value::String(t.to_ascii_lowercase()),
                            other => other.clone(),
                        };
                        out.insert(k.clone(), if nullable { json!([t, "null"]) } else { t });
                    }
                    "properties" => {
                        let props = v.as_object().map(|p| p.iter().map(|(n, ps)| (n.clone(), to_json_schema(ps))).collect::<Map<_, _>>());
                        out.insert(k.clone(), props.map_or_else(|| v.clone(), Value::Object));
                    }
                    "items" => {
                        out.insert(k.clone(), to_json_schema(v));
                    }
                    "anyOf" | "any_of" => {
                        let list = v.as_array().map(|a| a.iter().map(to_json_schema).collect::<Vec<_>>());
                        out.insert("anyOf".into(), list.map_or_else(|| v.clone(), Value::Array));
                    }
                    other => {
                        out.insert(snake_to_camel(other), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// `min_items` → `minItems`: the snake_case spellings proto3 JSON allows, under JSON Schema's names.
fn snake_to_camel(k: &str) -> String {
    if !k.contains('_') {
        return k.to_string();
    }
    let mut out = String::with_capacity(k.len());
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Sets `tool_choice`; returns the tools to keep when `ANY` allows several by name.
fn apply_tool_config(req: &mut ChatRequest, fc: GFunctionCallingConfig, tools: &[Tool]) -> Result<Option<Vec<String>>, RequestError> {
    let field = "toolConfig.functionCallingConfig";
    if tools.is_empty() {
        return Ok(None);
    }
    for n in &fc.allowed_function_names {
        if !tools.iter().any(|t| &t.function.name == n) {
            return Err(invalid(
                format!("allowedFunctionNames names \"{n}\", which no functionDeclaration declares"),
                format!("{field}.allowedFunctionNames"),
            ));
        }
    }
    req.tool_choice = match fc.mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("MODE_UNSPECIFIED" | "AUTO" | "VALIDATED") => Some(ToolChoice::Auto),
        Some("NONE") => Some(ToolChoice::None),
        Some("ANY") => match fc.allowed_function_names.as_slice() {
            [one] => Some(ToolChoice::Function(one.clone())),
            [] => Some(ToolChoice::Required),
            many => {
                req.tool_choice = Some(ToolChoice::Required);
                return Ok(Some(many.to_vec()));
            }
        },
        Some(other) => {
            return Err(invalid(
                format!("functionCallingConfig.mode \"{other}\" is not one of AUTO, ANY, NONE, VALIDATED"),
                format!("{field}.mode"),
            ))
        }
    };
    Ok(None)
}

fn apply_generation_config(req: &mut ChatRequest, gc: GenerationConfig) -> Result<(), RequestError> {
    let field = "generationConfig";
    req.temperature = gc.temperature;
    req.top_p = gc.top_p;
    if let Some(k) = gc.top_k.filter(|v| !v.is_null()) {
        req.extra.insert("top_k".into(), k);
    }
    req.max_tokens = gc.max_output_tokens;
    if !gc.stop_sequences.is_empty() {
        req.stop = Some(Stop::Many(gc.stop_sequences));
    }
    req.n = gc.candidate_count;
    req.seed = gc.seed;
    req.presence_penalty = gc.presence_penalty;
    req.frequency_penalty = gc.frequency_penalty;
    if gc.response_modalities.iter().any(|m| !m.eq_ignore_ascii_case("TEXT")) {
        return Err(invalid("only TEXT responseModalities are supported through the gateway", format!("{field}.responseModalities")));
    }
    let schema = match (gc.response_json_schema.filter(|s| !s.is_null()), gc.response_schema.filter(|s| !s.is_null())) {
        (Some(s), _) => Some(s),
        (None, Some(s)) => Some(to_json_schema(&s)),
        (None, None) => None,
    };
    match gc.response_mime_type.as_deref() {
        None | Some("" | "text/plain") if schema.is_none() => {}
        None | Some("" | "text/plain") => {
            return Err(invalid("a response schema needs responseMimeType \"application/json\"", format!("{field}.responseMimeType")))
        }
        Some("application/json") => {
            req.response_format = Some(match schema {
                Some(schema) => ResponseFormat {
                    kind: "json_schema".into(),
                    json_schema: Some(JsonSchemaFormat { name: "response".into(), description: None, schema: Some(schema), strict: None }),
                },
                None => ResponseFormat { kind: "json_object".into(), json_schema: None },
            });
        }
        Some(other) => {
            return Err(invalid(
                format!("responseMimeType \"{other}\" is not supported; use text/plain or application/json"),
                format!("{field}.responseMimeType"),
            ))
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------------------

/// The canonical finish reason in Gemini's words. Gemini says `STOP` for a turn that called functions.
pub fn finish_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::ToolCalls | FinishReason::FunctionCall => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Other(o) => match o.as_str() {
            "malformed_function_call" => "MALFORMED_FUNCTION_CALL",
            "unexpected_tool_call" => "UNEXPECTED_TOOL_CALL",
            "too_many_tool_calls" => "TOO_MANY_TOOL_CALLS",
            _ => "OTHER",
        },
    }
}

/// The `usageMetadata` for a canonical usage: thinking tokens are reported apart from the candidates'.
pub fn usage_metadata(u: &Usage) -> Value {
    let reasoning = u.completion_tokens_details.as_ref().and_then(|d| d.get("reasoning_tokens")).and_then(Value::as_u64).unwrap_or(0);
    let mut m = Map::new();
    m.insert("promptTokenCount".into(), u.prompt_tokens.into());
    m.insert("candidatesTokenCount".into(), u.completion_tokens.saturating_sub(reasoning).into());
    m.insert("totalTokenCount".into(), u.total_tokens.into());
    if let Some(c) = u.cached_tokens().filter(|c| *c > 0) {
        m.insert("cachedContentTokenCount".into(), c.into());
    }
    if reasoning > 0 {
        m.insert("thoughtsTokenCount".into(), reasoning.into());
    }
    Value::Object(m)
}

fn args_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        // A broken argument string from an upstream is still shown to the caller, not dropped.
        Ok(other) if !arguments.trim().is_empty() => json!({ "value": other }),
        Err(_) if !arguments.trim().is_empty() => json!({ "_raw": arguments }),
        _ => json!({}),
    }
}

fn call_part(id: &str, name: &str, arguments: &str) -> Value {
    json!({"functionCall": {"id": id, "name": name, "args": args_object(arguments)}})
}

fn candidate(index: u32, parts: Vec<Value>, finish: Option<&FinishReason>) -> Value {
    let mut c = Map::new();
    let filtered = matches!(finish, Some(FinishReason::ContentFilter));
    if !(parts.is_empty() && filtered) {
        let parts = if parts.is_empty() { vec![json!({"text": ""})] } else { parts };
        c.insert("content".into(), json!({"role": "model", "parts": parts}));
    }
    if let Some(f) = finish {
        c.insert("finishReason".into(), finish_reason(f).into());
    }
    c.insert("index".into(), index.into());
    Value::Object(c)
}

/// A complete answer as a `GenerateContentResponse`.
pub fn render_response(r: &ChatResponse) -> Vec<u8> {
    let candidates: Vec<Value> = r
        .choices
        .iter()
        .map(|ch| {
            let mut parts = Vec::new();
            if let Some(t) = ch.message.extra.get("reasoning_content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                parts.push(json!({"text": t, "thought": true}));
            }
            if let Some(t) = ch.message.content.as_deref().filter(|t| !t.is_empty()) {
                parts.push(json!({ "text": t }));
            }
            for c in ch.message.tool_calls.iter().flatten() {
                parts.push(call_part(&c.id, &c.function.name, &c.function.arguments));
            }
            candidate(ch.index, parts, ch.finish_reason.as_ref())
        })
        .collect();
    let mut out = Map::new();
    out.insert("candidates".into(), Value::Array(candidates));
    if let Some(u) = &r.usage {
        out.insert("usageMetadata".into(), usage_metadata(u));
    }
    out.insert("modelVersion".into(), r.model.clone().into());
    out.insert("responseId".into(), r.id.clone().into());
    serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
}

/// `GET /genai/v1beta/models`: the gateway's models as Google's `ListModelsResponse`, names as
/// `models/{provider}/{model}`, which the SDK passes back unchanged.
pub fn render_models(list: &ModelList) -> Vec<u8> {
    let models: Vec<Value> = list.data.iter().map(|m| model_json(&m.id, &m.owned_by)).collect();
    serde_json::to_vec(&json!({ "models": models })).unwrap_or_default()
}

/// One model as Google's `Model` resource.
pub fn model_json(id: &str, owned_by: &str) -> Value {
    let mut v = json!({"name": format!("models/{id}"), "baseModelId": id, "version": "001", "displayName": id,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]});
    if !owned_by.is_empty() {
        v["description"] = Value::String(format!("served by {owned_by} through switchyard"));
    }
    v
}

// ---------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------

/// The Google RPC status Google answers an HTTP status with.
pub fn rpc_status(http: u16) -> &'static str {
    match http {
        400 | 413 | 415 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        402 => "FAILED_PRECONDITION",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 | 501 => "UNIMPLEMENTED",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        502 | 503 | 529 => "UNAVAILABLE",
        s if s >= 500 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

/// Google's error body. `reason` (the gateway's machine code) rides in an `ErrorInfo` detail, where
/// Google's own reasons (`API_KEY_INVALID`) are; `field` in a `BadRequest` detail.
pub fn error_body(http: u16, message: &str, reason: Option<&str>, field: Option<&str>) -> Vec<u8> {
    let mut details = Vec::new();
    if let Some(r) = reason {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r, "domain": "switchyard"}));
    }
    if let Some(f) = field {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": f, "description": message}]}));
    }
    let mut e = json!({"code": http, "message": message, "status": rpc_status(http)});
    if !details.is_empty() {
        e["details"] = Value::Array(details);
    }
    serde_json::to_vec(&json!({ "error": e })).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------------------------------------

fn write_frame(out: &mut Vec<u8>, v: &Value) {
    if let Ok(json) = serde_json::to_vec(v) {
        out.reserve(json.len() + 10);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// A tool call being assembled from an upstream's fragments.
#[derive(Debug, Default)]
struct CallBuf {
    id: String,
    name: String,
    arguments: String,
}

#[derive(Debug, Default)]
struct CandidateBuf {
    index: u32,
    /// By OpenAI tool-call index.
    calls: Vec<(u32, CallBuf)>,
    finish: Option<FinishReason>,
}

/// Encodes canonical chunks as Gemini `alt=sse` frames for one client.
#[derive(Debug, Default)]
pub struct GenaiStreamEncoder {
    id: String,
    model: String,
    candidates: Vec<CandidateBuf>,
    usage: Option<Usage>,
    finished: bool,
}

impl GenaiStreamEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The usage the upstream reported so far.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    fn slot(&mut self, index: u32) -> &mut CandidateBuf {
        let pos = match self.candidates.iter().position(|c| c.index == index) {
            Some(p) => p,
            None => {
                self.candidates.push(CandidateBuf { index, ..CandidateBuf::default() });
                self.candidates.len() - 1
            }
        };
        &mut self.candidates[pos]
    }

    fn frame(&self, candidates: Vec<Value>, usage: Option<&Usage>) -> Value {
        let mut v = Map::new();
        v.insert("candidates".into(), Value::Array(candidates));
        if let Some(u) = usage {
            v.insert("usageMetadata".into(), usage_metadata(u));
        }
        v.insert("modelVersion".into(), self.model.clone().into());
        v.insert("responseId".into(), self.id.clone().into());
        Value::Object(v)
    }

    /// Appends the frame for one chunk: its text at once; tool-call fragments and the finish are held
    /// until [`Self::finish`], which sends each candidate's calls whole with its finish reason and usage.
    pub fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        if self.id.is_empty() {
            self.id = chunk.id.clone();
        }
        if self.model.is_empty() {
            self.model = chunk.model.clone();
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        let mut candidates = Vec::new();
        for ch in chunk.choices {
            let mut parts = Vec::new();
            if let Some(t) = ch.delta.extra.get("reasoning_content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                parts.push(json!({"text": t, "thought": true}));
            }
            if let Some(t) = ch.delta.content.filter(|t| !t.is_empty()) {
                parts.push(json!({ "text": t }));
            }
            let slot = self.slot(ch.index);
            for d in ch.delta.tool_calls.into_iter().flatten() {
                let pos = match slot.calls.iter().position(|(i, _)| *i == d.index) {
                    Some(p) => p,
                    None => {
                        slot.calls.push((d.index, CallBuf::default()));
                        slot.calls.len() - 1
                    }
                };
                let call = &mut slot.calls[pos].1;
                if let Some(id) = d.id.filter(|s| !s.is_empty()) {
                    call.id = id;
                }
                if let Some(f) = d.function {
                    if let Some(n) = f.name.filter(|s| !s.is_empty()) {
                        call.name = n;
                    }
                    if let Some(a) = f.arguments {
                        call.arguments.push_str(&a);
                    }
                }
            }
            if let Some(f) = ch.finish_reason {
                slot.finish = Some(f);
            }
            if !parts.is_empty() {
                candidates.push(json!({"content": {"role": "model", "parts": parts}, "index": ch.index}));
            }
        }
        if !candidates.is_empty() {
            let frame = self.frame(candidates, None);
            write_frame(out, &frame);
        }
    }

    /// The stream ended well: the held tool calls, each candidate's finish reason and the usage.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let mut bufs = std::mem::take(&mut self.candidates);
        if bufs.is_empty() {
            bufs.push(CandidateBuf { finish: Some(FinishReason::Stop), ..CandidateBuf::default() });
        }
        let candidates: Vec<Value> = bufs
            .iter_mut()
            .map(|c| {
                c.calls.sort_by_key(|(i, _)| *i);
                let parts = c.calls.iter().map(|(_, call)| call_part(&call.id, &call.name, &call.arguments)).collect();
                let finish = c.finish.clone().unwrap_or(FinishReason::Stop);
                candidate(c.index, parts, Some(&finish))
            })
            .collect();
        let frame = self.frame(candidates, self.usage.as_ref());
        write_frame(out, &frame);
    }

    /// The stream failed after it started: an `{"error":…}` frame, which the SDK raises as its APIError.
    pub fn fail(&mut self, http: u16, message: &str, reason: Option<&str>, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&error_body(http, message, reason, None));
        out.extend_from_slice(b"\r\n\r\n");
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};

    fn parse(v: Value) -> Result<ChatRequest, RequestError> {
        parse_request("openai/gpt-4o-mini", v.to_string().as_bytes(), false)
    }

    fn canon(v: Value) -> Value {
        serde_json::to_value(parse(v).unwrap()).unwrap()
    }

    fn field(v: Value) -> Option<String> {
        parse(v).unwrap_err().field
    }

    #[test]
    fn conversation_and_config() {
        let c = canon(json!({
            "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "No emoji."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "thinking…", "thought": true}, {"text": "hello"}]},
                {"parts": [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"inline_data": {"mime_type": "application/pdf", "data": "JVBERi0="}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}]}],
            "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 3, "maxOutputTokens": 64, "stopSequences": ["END"],
                "candidateCount": 2, "seed": 5, "presencePenalty": 0.1, "frequencyPenalty": 0.2, "responseModalities": ["TEXT"]},
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]}));
        assert_eq!(c["model"], "openai/gpt-4o-mini");
        assert_eq!(
            c["messages"],
            json!([
                {"role": "system", "content": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])
        );
        for (k, v) in [
            ("temperature", json!(0.2)),
            ("top_p", json!(0.9)),
            ("top_k", json!(3)),
            ("max_tokens", json!(64)),
            ("stop", json!(["END"])),
            ("n", json!(2)),
            ("seed", json!(5)),
            ("presence_penalty", json!(0.1)),
            ("frequency_penalty", json!(0.2)),
        ] {
            assert_eq!(c[k], v, "{k}");
        }
        assert!(c.get("stream").is_none() && c.get("safetySettings").is_none() && c.get("safety_settings").is_none(), "{c}");
        let s = parse_request("m", br#"{"contents":[{"parts":[{"text":"x"}]}]}"#, true).unwrap();
        assert!(s.is_stream() && s.include_usage());
        let c = canon(json!({"systemInstruction": "plain", "contents": [{"role": "user", "parts": [{"text": "x"}]}]}));
        assert_eq!(c["messages"][0], json!({"role": "system", "content": "plain"}));
    }

    #[test]
    fn function_calls_and_results_pair_up() {
        let c = canon(json!({
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather", "parameters": {"type": "OBJECT", "properties": {
                    "city": {"type": "STRING", "description": "City"}, "days": {"type": "INTEGER", "nullable": true},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "min_items": 1}}, "required": ["city"], "propertyOrdering": ["city"]}},
                {"name": "now", "parametersJsonSchema": {"type": "object", "additionalProperties": false}},
                {"name": "noop"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather", "now"]}},
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "abc"},
                    {"functionCall": {"id": "given-1", "name": "now"}},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}},
                    {"functionResponse": {"id": "given-1", "name": "now", "response": {"time": "12:00", "tz": "UTC"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"output": "20C"}}},
                    {"text": "and tomorrow?"}]}]}));
        let tools = c["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 2, "ANY with two allowed names keeps those two: {tools:?}");
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(
            tools[0]["function"]["parameters"],
            json!({"type": "object", "properties": {"city": {"type": "string", "description": "City"},
                "days": {"type": ["integer", "null"]}, "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}}, "required": ["city"]})
        );
        assert_eq!(tools[1]["function"]["parameters"], json!({"type": "object", "additionalProperties": false}));
        let m = c["messages"].as_array().unwrap();
        let calls = m[1]["tool_calls"].as_array().unwrap();
        assert_eq!(m[1]["content"], Value::Null);
        let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids[1], "given-1");
        assert_ne!(ids[0], ids[2]);
        assert_eq!(calls[0]["function"], json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}));
        assert_eq!(calls[1]["function"]["arguments"], "{}");
        // Results by id where given, else by name in order.
        assert_eq!(m[2], json!({"role": "tool", "content": "18C", "tool_call_id": ids[0]}));
        assert_eq!(m[3]["tool_call_id"], "given-1");
        assert_eq!(serde_json::from_str::<Value>(m[3]["content"].as_str().unwrap()).unwrap(), json!({"time": "12:00", "tz": "UTC"}));
        assert_eq!(m[4], json!({"role": "tool", "content": "20C", "tool_call_id": ids[2]}));
        assert_eq!(m[5], json!({"role": "user", "content": "and tomorrow?"}));

        for (mode, names, want) in [
            ("AUTO", json!([]), json!("auto")),
            ("NONE", json!([]), json!("none")),
            ("ANY", json!([]), json!("required")),
            ("ANY", json!(["now"]), json!({"type": "function", "function": {"name": "now"}})),
        ] {
            let c = canon(json!({"tools": [{"functionDeclarations": [{"name": "now"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": mode, "allowedFunctionNames": names}},
                "contents": [{"role": "user", "parts": [{"text": "x"}]}]}));
            assert_eq!(c["tool_choice"], want, "{mode}");
        }
    }

    #[test]
    fn structured_output() {
        let c = canon(json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "application/json"}}));
        assert_eq!(c["response_format"], json!({"type": "json_object"}));
        let c = canon(json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}}}));
        assert_eq!(
            c["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}})
        );
        let c = canon(json!({"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"response_mime_type": "application/json",
            "response_json_schema": {"type": "object", "additionalProperties": false}}}));
        assert_eq!(c["response_format"]["json_schema"]["schema"], json!({"type": "object", "additionalProperties": false}));
        assert_eq!(
            field(json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "text/x.enum"}})).as_deref(),
            Some("generationConfig.responseMimeType")
        );
        assert_eq!(
            field(json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseSchema": {"type": "STRING"}}})).as_deref(),
            Some("generationConfig.responseMimeType")
        );
    }

    #[test]
    fn bad_requests_name_their_field() {
        assert_eq!(field(json!({"contents": []})).as_deref(), Some("contents"));
        assert_eq!(field(json!({"contents": [{"role": "system", "parts": [{"text": "x"}]}]})).as_deref(), Some("contents[0].role"));
        assert_eq!(
            field(json!({"contents": [{"parts": [{"executableCode": {"language": "PYTHON", "code": "1"}}]}]})).as_deref(),
            Some("contents[0].parts[0]")
        );
        assert_eq!(
            field(json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"googleSearch": {}}]})).as_deref(),
            Some("tools[0].googleSearch")
        );
        assert_eq!(
            field(json!({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]})).as_deref(),
            Some("contents[0].parts[0].functionResponse")
        );
        assert_eq!(
            field(json!({"contents": [{"parts": [{"text": "x"}]}], "cachedContent": "cachedContents/1"})).as_deref(),
            Some("cachedContent")
        );
        assert_eq!(
            field(json!({"contents": [{"parts": [{"inlineData": {"data": "AA=="}}]}]})).as_deref(),
            Some("contents[0].parts[0].inlineData.mimeType")
        );
        assert_eq!(
            field(json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{"name": "f"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["g"]}}}))
            .as_deref(),
            Some("toolConfig.functionCallingConfig.allowedFunctionNames")
        );
        let e = parse_request("m", b"{not json", false).unwrap_err();
        assert!(e.message.starts_with("Invalid JSON payload received."), "{e}");
        let e = parse_request("m", br#"{"contents": "x"}"#, false).unwrap_err();
        assert!(e.message.contains("invalid type"), "{e}");
        assert!(parse_request("m", b"  ", false).is_err());
        assert_eq!(
            field(json!({"contents": [{"role": "model", "parts": [{"text": "thinking", "thought": true}]}]})).as_deref(),
            Some("contents")
        );
    }

    #[test]
    fn responses_render_as_google_does() {
        let r: ChatResponse = serde_json::from_value(json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Checking.", "reasoning_content": "hm",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                "finish_reason": "tool_calls"},
                {"index": 1, "message": {"role": "assistant", "content": null}, "finish_reason": "content_filter"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17, "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2}}}))
        .unwrap();
        let v: Value = serde_json::from_slice(&render_response(&r)).unwrap();
        assert_eq!(
            v,
            json!({"candidates": [
                {"content": {"role": "model", "parts": [{"text": "hm", "thought": true}, {"text": "Checking."},
                    {"functionCall": {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}}]}, "finishReason": "STOP", "index": 0},
                {"finishReason": "SAFETY", "index": 1}],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 17, "cachedContentTokenCount": 4, "thoughtsTokenCount": 2},
                "modelVersion": "gpt-4o-mini", "responseId": "chatcmpl-1"})
        );
        for (f, want) in [
            (FinishReason::Length, "MAX_TOKENS"),
            (FinishReason::Other("malformed_function_call".into()), "MALFORMED_FUNCTION_CALL"),
            (FinishReason::Other("weird".into()), "OTHER"),
        ] {
            assert_eq!(finish_reason(&f), want);
        }
    }

    #[test]
    fn errors_in_googles_shape() {
        let v: Value = serde_json::from_slice(&error_body(429, "slow down", Some("rate_limit_exceeded"), None)).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "rate_limit_exceeded", "domain": "switchyard"}]}})
        );
        let v: Value = serde_json::from_slice(&error_body(400, "bad", None, Some("contents"))).unwrap();
        assert_eq!(v["error"]["details"][0]["fieldViolations"][0]["field"], "contents");
        for (http, s) in [
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (404, "NOT_FOUND"),
            (502, "UNAVAILABLE"),
            (503, "UNAVAILABLE"),
            (504, "DEADLINE_EXCEEDED"),
            (500, "INTERNAL"),
        ] {
            assert_eq!(rpc_status(http), s);
        }
    }

    fn chunk(index: u32, delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
        let mut c = ChatChunk::new("chatcmpl-s", 1, "claude-haiku-4-5");
        c.choices.push(ChunkChoice { index, delta, finish_reason: finish, ..ChunkChoice::default() });
        c
    }

    fn frames(out: &[u8]) -> Vec<Value> {
        let s = std::str::from_utf8(out).unwrap();
        assert!(s.ends_with("\r\n\r\n"), "{s:?}");
        s.split("\r\n\r\n").filter(|f| !f.is_empty()).map(|f| serde_json::from_str(f.strip_prefix("data: ").unwrap()).unwrap()).collect()
    }

    #[test]
    fn stream_sends_text_at_once_and_calls_whole_at_the_end() {
        let mut e = GenaiStreamEncoder::new();
        let mut out = Vec::new();
        e.encode(chunk(0, Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() }, None), &mut out);
        assert!(out.is_empty(), "a role-only chunk says nothing to a Gemini client");
        e.encode(chunk(0, Delta { content: Some("Let me ".into()), ..Delta::default() }, None), &mut out);
        e.encode(chunk(0, Delta { content: Some("check.".into()), ..Delta::default() }, None), &mut out);
        let frag = |id: Option<&str>, name: Option<&str>, args: &str| ToolCallDelta {
            index: 0,
            id: id.map(str::to_string),
            kind: id.map(|_| "function".to_string()),
            function: Some(FunctionCallDelta { name: name.map(str::to_string), arguments: Some(args.to_string()) }),
        };
        e.encode(
            chunk(0, Delta { tool_calls: Some(vec![frag(Some("call_9"), Some("get_weather"), "")]), ..Delta::default() }, None),
            &mut out,
        );
        e.encode(chunk(0, Delta { tool_calls: Some(vec![frag(None, None, "{\"city\":")]), ..Delta::default() }, None), &mut out);
        e.encode(chunk(0, Delta { tool_calls: Some(vec![frag(None, None, "\"Paris\"}")]), ..Delta::default() }, None), &mut out);
        e.encode(chunk(0, Delta::default(), Some(FinishReason::ToolCalls)), &mut out);
        let mut u = ChatChunk::new("chatcmpl-s", 1, "claude-haiku-4-5");
        u.usage = Some(Usage::new(5, 4));
        e.encode(u, &mut out);
        assert_eq!(e.usage().map(|u| u.total_tokens), Some(9));
        e.finish(&mut out);
        e.finish(&mut out);
        let f = frames(&out);
        assert_eq!(f.len(), 3, "{f:#?}");
        assert_eq!(f[0]["candidates"][0]["content"]["parts"], json!([{"text": "Let me "}]));
        assert_eq!(f[0]["responseId"], "chatcmpl-s");
        assert_eq!(f[0]["modelVersion"], "claude-haiku-4-5");
        assert!(f[0].get("usageMetadata").is_none());
        assert_eq!(
            f[2]["candidates"],
            json!([{"content": {"role": "model", "parts": [{"functionCall": {"id": "call_9", "name": "get_weather", "args": {"city": "Paris"}}}]},
                "finishReason": "STOP", "index": 0}])
        );
        assert_eq!(f[2]["usageMetadata"], json!({"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9}));
    }

    #[test]
    fn stream_text_finish_and_failure() {
        let mut e = GenaiStreamEncoder::new();
        let mut out = Vec::new();
        e.encode(chunk(0, Delta { content: Some("hi".into()), ..Delta::default() }, Some(FinishReason::Length)), &mut out);
        e.finish(&mut out);
        let f = frames(&out);
        assert_eq!(
            f[1]["candidates"][0],
            json!({"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "MAX_TOKENS", "index": 0})
        );
        let mut e = GenaiStreamEncoder::new();
        let mut out = Vec::new();
        e.encode(chunk(0, Delta { content: Some("hi".into()), ..Delta::default() }, None), &mut out);
        e.fail(502, "upstream reset", Some("stream_interrupted"), &mut out);
        e.finish(&mut out);
        assert!(e.is_finished());
        let f = frames(&out);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1]["error"]["code"], 502);
        assert_eq!(f[1]["error"]["status"], "UNAVAILABLE");
        assert_eq!(f[1]["error"]["details"][0]["reason"], "stream_interrupted");
    }

    #[test]
    fn models_as_google_lists_them() {
        let list: ModelList = serde_json::from_value(
            json!({"object": "list", "data": [{"id": "openai/gpt-4o-mini", "object": "model", "created": 0, "owned_by": "openai"}]}),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&render_models(&list)).unwrap();
        assert_eq!(v["models"][0]["name"], "models/openai/gpt-4o-mini");
        assert_eq!(v["models"][0]["supportedGenerationMethods"], json!(["generateContent", "streamGenerateContent"]));
    }

    /// The inbound and outbound Gemini translations agree: a Gemini request through the canonical form and
    /// back out through the Gemini codec keeps its meaning.
    #[test]
    fn round_trip_through_the_gemini_codec() {
        use crate::providers::gemini;
        use crate::spec::{Auth, Endpoint, ProviderKind, ProviderOptions};
        let original = json!({
            "systemInstruction": {"parts": [{"text": "Be terse."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
                {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "get_weather", "response": {"result": "18C"}}}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "generationConfig": {"temperature": 0.3, "maxOutputTokens": 9, "responseMimeType": "application/json"}});
        let req = parse_request("gemini-2.5-flash", original.to_string().as_bytes(), false).unwrap();
        let opts = ProviderOptions::default();
        let ep = Endpoint { kind: ProviderKind::Gemini, base_url: "http://g", auth: Auth::None, options: &opts };
        let w = gemini::build_chat(&ep, &req, "gemini-2.5-flash").unwrap();
        let back: Value = serde_json::from_slice(&w.body).unwrap();
        assert_eq!(back, original);
    }
}
