//! The AWS Bedrock Runtime flavour: `POST /model/{modelId}/converse` (JSON), `/converse-stream` (the
//! binary event-stream framing) and `/invoke` for Titan and Cohere embedding models, with Converse's
//! validation (union content blocks with exactly one member, user/assistant turns that alternate and
//! start with the user, `toolResult` ids that answer the previous turn's `toolUse` blocks, a `toolConfig`
//! whenever tool blocks are used, bytes-only images whose bytes match their format) and AWS's error
//! shape: the status, `x-amzn-ErrorType: <Shape>:<namespace>`, `x-amzn-RequestId` and `{"message":…}`.
//!
//! Authentication is checked as AWS checks it. A SigV4 `Authorization` must be signed (service
//! `bedrock`) with the documented test credentials [`ACCESS_KEY_ID`] / [`SECRET_ACCESS_KEY`] (any session
//! token is accepted and must be signed), with `x-amz-date` within 15 minutes of the mock's clock and,
//! when the request's `Host` is `bedrock-runtime.<region>.amazonaws.com`, a scope naming that region
//! (on a loopback address any region is taken). A Bedrock API key is `Authorization: Bearer <key>`, any
//! key unless `require_key` names one (for SigV4, `require_key` is the access key id that must sign).
//! Failures are 403s: `MissingAuthenticationTokenException`, `UnrecognizedClientException`,
//! `IncompleteSignatureException` or `InvalidSignatureException`, in AWS's words.
//!
//! Stream events are the member bodies only (`{"contentBlockIndex":0,"delta":{"text":"Hi"}}`), in
//! Bedrock's order: `messageStart`, text deltas with no `contentBlockStart`, `contentBlockStop`, then per
//! tool call `contentBlockStart` (`toolUse` id and name), input deltas, `contentBlockStop`; `messageStop`
//! and last `metadata` (usage, metrics). The in-stream error is a `throttlingException`.

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};
use switchyard_wire::sigv4::{self, Received, VerifyError};

use crate::behaviour::{self, arg_fragments, text_chunks, Conversation, Finish, Image, Message, Reply, Role, ToolCall, ToolChoice};
use crate::common::{
    b64_decode, check_key, derived_alnum, echo_key_into, embedding, json_response, json_type, now_secs, percent_decode, random_hex,
    retry_headers, sniff_image, words, ApiError, Ctx,
};
use crate::faults::{gate, json_ok, stream_response, Frame, Framing};
use crate::FaultKind;

/// The test access key id the mock knows (documented; it signs nothing real).
pub const ACCESS_KEY_ID: &str = "AKIASWITCHYARDMOCK01";
/// The test secret for [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "switchyard/mock/SECRET+do-not-use-anywhere";

pub(crate) const DEFAULT_MODELS: [&str; 6] = [
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "eu.anthropic.claude-3-5-haiku-20241022-v1:0",
    "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-3-5-haiku-20241022-v1:0",
    "amazon.nova-lite-v1:0",
    "amazon.titan-embed-text-v2:0",
    "cohere.embed-multilingual-v3",
];

const BEDROCK_NS: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";
const CORAL_NS: &str = "http://internal.amazon.com/coral/com.amazon.coral.service/";
const IMAGE_FORMATS: [(&str, &str); 4] = [("png", "image/png"), ("jpeg", "image/jpeg"), ("gif", "image/gif"), ("webp", "image/webp")];
const DOCUMENT_FORMATS: [&str; 9] = ["pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"];

enum Route {
    Converse,
    ConverseStream,
    Invoke,
    Unknown,
}

/// `(model id, operation)` of `/model/{modelId}/{op}`; the id is one percent-encoded segment.
fn split_path(path: &str) -> Option<(String, &str)> {
    let rest = path.strip_prefix("/model/")?;
    let (id, op) = rest.split_once('/')?;
    (!id.is_empty() && !op.contains('/')).then(|| (percent_decode(id), op))
}

/// The model named in the path, for counting and knobs (`+fault=1` suffixes included).
pub(crate) fn model_of(path: &str) -> Option<String> {
    split_path(path).map(|(id, _)| id)
}

fn route(path: &str) -> Route {
    match split_path(path).map(|(_, op)| op) {
        Some("converse") => Route::Converse,
        Some("converse-stream") => Route::ConverseStream,
        Some("invoke") => Route::Invoke,
        _ => Route::Unknown,
    }
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    let route = route(&ctx.path);
    if matches!(route, Route::Unknown) {
        return error(&ctx, ApiError::NoRoute);
    }
    if ctx.method != Method::POST {
        return error(&ctx, ApiError::MethodNotAllowed);
    }
    if let Err(e) = authenticate(&ctx) {
        return *e;
    }
    let kind = match gate(&ctx).await {
        Ok(k) => k,
        Err(e) => return error(&ctx, e),
    };
    match route {
        Route::Converse => converse(&ctx, kind, false),
        Route::ConverseStream => converse(&ctx, kind, true),
        Route::Invoke => invoke(&ctx, kind),
        Route::Unknown => error(&ctx, ApiError::NoRoute),
    }
}

fn request_id() -> String {
    format!("{}-{}-{}-{}-{}", random_hex(8), random_hex(4), random_hex(4), random_hex(4), random_hex(12))
}

/// A Bearer key, or a SigV4 signature checked against the test credentials; a refusal is AWS's 403.
fn authenticate(ctx: &Ctx) -> Result<(), Box<Response>> {
    let auth = ctx.header("authorization").unwrap_or("").trim();
    if auth.len() > 7 && auth[..7].eq_ignore_ascii_case("bearer ") {
        return check_key(ctx, true).map_err(|e| Box::new(error(ctx, e)));
    }
    let headers: Vec<(String, String)> =
        ctx.headers.iter().map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    let host = ctx.header("host").unwrap_or("");
    let region = host.strip_prefix("bedrock-runtime.").and_then(|h| h.split_once(".amazonaws.com")).map(|(r, _)| r.to_string());
    let scope_region = sigv4::parse_authorization(auth).ok().map(|a| a.scope.region.to_string()).unwrap_or_default();
    let want_region = region.unwrap_or(scope_region);
    let received = Received {
        method: ctx.method.as_str(),
        path: &ctx.path,
        query: ctx.query.as_deref().unwrap_or(""),
        headers: &headers,
        body: &ctx.raw,
    };
    let required = ctx.handle.config().require_key.clone();
    let secret_for = |akid: &str| {
        let allowed = required.as_deref().is_none_or(|r| r == akid);
        (akid == ACCESS_KEY_ID && allowed).then(|| SECRET_ACCESS_KEY.to_string())
    };
    let now = i64::try_from(now_secs()).unwrap_or(i64::MAX);
    match sigv4::verify(&received, &want_region, switchyard_wire::providers::bedrock::SERVICE, now, secret_for) {
        Ok(_) => Ok(()),
        Err(e) => Err(Box::new(auth_error(ctx, &e))),
    }
}

fn auth_error(ctx: &Ctx, e: &VerifyError) -> Response {
    let mut body = json!({"message": e.to_string()});
    echo_key_into(ctx, &mut body, "/message");
    let h = vec![("x-amzn-errortype", format!("{}:{CORAL_NS}", e.aws_type())), ("x-amzn-requestid", request_id())];
    json_response(403, &h, &body)
}

pub(crate) fn error(ctx: &Ctx, err: ApiError) -> Response {
    let model = ctx.model_or_empty();
    let (status, shape, message): (u16, &str, String) = match &err {
        ApiError::Invalid { message, .. } => (400, "ValidationException", message.clone()),
        ApiError::MissingKey => {
            return auth_error(ctx, &VerifyError::Missing);
        }
        ApiError::BadKey | ApiError::Status(401) => {
            return auth_error(ctx, &VerifyError::UnknownKey(ctx.key.clone().unwrap_or_default()));
        }
        ApiError::Status(403) => (403, "AccessDeniedException", "You don't have access to the model with the specified model ID.".into()),
        ApiError::ModelNotFound(m) => {
            (404, "ResourceNotFoundException", format!("Could not resolve the foundation model from the model identifier {m}."))
        }
        ApiError::Status(404) => {
            (404, "ResourceNotFoundException", format!("Could not resolve the foundation model from the model identifier {model}."))
        }
        ApiError::NoRoute => (404, "UnknownOperationException", "The requested operation is not recognized by the service.".into()),
        ApiError::MethodNotAllowed => (405, "UnknownOperationException", "Method Not Allowed".into()),
        ApiError::TooLarge | ApiError::Status(413) => {
            (413, "ValidationException", "The request body is larger than the service accepts.".into())
        }
        ApiError::ContextLength { prompt_tokens, window } => {
            let detail = match window {
                Some(w) => format!(" ({prompt_tokens} tokens > {w} maximum)"),
                None => String::new(),
            };
            (400, "ValidationException", format!("Input is too long for requested model.{detail}"))
        }
        ApiError::Quota => (
            400,
            "ServiceQuotaExceededException",
            "Your account has exceeded its service quota for this model. Request an increase in the Service Quotas console.".into(),
        ),
        ApiError::Status(408) => {
            (408, "ModelTimeoutException", "Model has timed out in processing the request. Try your request again.".into())
        }
        ApiError::Status(424) => {
            (424, "ModelErrorException", "The system encountered an unexpected error during processing. Try your request again.".into())
        }
        ApiError::Status(429) => (429, "ThrottlingException", "Too many requests, please wait before trying again.".into()),
        ApiError::Status(500) => {
            (500, "InternalServerException", "The server encountered an internal error while processing the request.".into())
        }
        ApiError::Status(503) => (503, "ServiceUnavailableException", "Bedrock is unable to process your request.".into()),
        ApiError::Status(s) if *s >= 500 => (*s, "InternalServerException", format!("The server encountered an internal error ({s}).")),
        ApiError::Status(s) => (*s, "ValidationException", format!("The request failed ({s}).")),
    };
    let mut body = json!({"message": message});
    echo_key_into(ctx, &mut body, "/message");
    let mut h = vec![("x-amzn-errortype", format!("{shape}:{BEDROCK_NS}")), ("x-amzn-requestid", request_id())];
    retry_headers(ctx, &err, &mut h);
    json_response(status, &h, &body)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid(message)
}

/// The single member of a union object, or the error Converse gives for any other shape.
fn union_member<'a>(v: &'a Value, path: &str, allowed: &[&str]) -> Result<(&'a str, &'a Value), ApiError> {
    let Some(o) = v.as_object() else {
        return Err(invalid(format!("{path}: expected a union object, got {}", json_type(v))));
    };
    if o.len() != 1 {
        return Err(invalid(format!("{path}: a union must set exactly one member, got {}", o.len())));
    }
    let (k, val) = o.iter().next().ok_or_else(|| invalid(format!("{path}: empty union")))?;
    if !allowed.contains(&k.as_str()) {
        return Err(invalid(format!("{path}: unknown member '{k}' (expected one of {})", allowed.join(", "))));
    }
    Ok((k.as_str(), val))
}

fn nonblank<'a>(v: Option<&'a Value>, path: &str) -> Result<&'a str, ApiError> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(invalid(format!(
            "The text field in the ContentBlock object at {path} is blank. Add text to the text field, and try again."
        ))),
        Some(other) => Err(invalid(format!("{path}: expected a string, got {}", json_type(other)))),
        None => Err(invalid(format!("{path}: a required member is missing"))),
    }
}

fn image(v: &Value, path: &str) -> Result<Image, ApiError> {
    let format = v.get("format").and_then(Value::as_str).unwrap_or("");
    let Some((_, media_type)) = IMAGE_FORMATS.iter().find(|(f, _)| *f == format) else {
        return Err(invalid(format!("{path}.format: must be one of png, jpeg, gif, webp")));
    };
    let source = v.get("source").ok_or_else(|| invalid(format!("{path}.source: a required member is missing")))?;
    let (member, bytes) = union_member(source, &format!("{path}.source"), &["bytes", "s3Location"])?;
    if member != "bytes" {
        return Err(invalid(format!("{path}.source: the mock takes image bytes only")));
    }
    let b64 = bytes.as_str().ok_or_else(|| invalid(format!("{path}.source.bytes: expected a base64 string")))?;
    let data = b64_decode(b64).map_err(|_| invalid(format!("{path}.source.bytes: invalid base64")))?;
    if data.is_empty() {
        return Err(invalid(format!("{path}.source.bytes: must not be empty")));
    }
    let sniffed = sniff_image(&data);
    if sniffed != "application/octet-stream" && sniffed != *media_type {
        return Err(invalid(format!("{path}: the image bytes are not in the format {format}")));
    }
    Ok(Image::Inline { media_type: (*media_type).to_string(), data })
}

fn document(v: &Value, path: &str) -> Result<(), ApiError> {
    let format = v.get("format").and_then(Value::as_str).unwrap_or("");
    if !DOCUMENT_FORMATS.contains(&format) {
        return Err(invalid(format!("{path}.format: must be one of {}", DOCUMENT_FORMATS.join(", "))));
    }
    let name = v.get("name").and_then(Value::as_str).unwrap_or("");
    let name_ok = !name.is_empty()
        && name.chars().count() <= 200
        && !name.contains("  ")
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '(' | ')' | '[' | ']'));
    if !name_ok {
        return Err(invalid(format!(
            "{path}.name: the document name can only contain alphanumeric characters, whitespace characters (no more than one in a row), hyphens, parentheses and square brackets"
        )));
    }
    let source = v.get("source").ok_or_else(|| invalid(format!("{path}.source: a required member is missing")))?;
    let (member, bytes) = union_member(source, &format!("{path}.source"), &["bytes", "s3Location", "text", "content"])?;
    if member == "bytes" && bytes.as_str().and_then(|b| b64_decode(b).ok()).is_none_or(|d| d.is_empty()) {
        return Err(invalid(format!("{path}.source.bytes: expected non-empty base64")));
    }
    Ok(())
}

/// Parses and validates a Converse body into the neutral conversation.
fn parse_converse(body: &Value) -> Result<Conversation, ApiError> {
    let obj = body.as_object().ok_or_else(|| invalid("Malformed input request: expected a JSON object"))?;
    const KNOWN: [&str; 11] = [
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid(format!("Malformed input request: extraneous key [{k}] is not permitted")));
    }
    let mut conv = Conversation { n: 1, ..Conversation::default() };
    let msgs = match obj.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(invalid(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ))
        }
        None => return Err(invalid("messages: a required member is missing")),
        Some(other) => return Err(invalid(format!("messages: expected a list, got {}", json_type(other)))),
    };
    let mut uses_tools = false;
    let mut prev_ids: Vec<String> = Vec::new();
    let mut prev_role: Option<Role> = None;
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => return Err(invalid(format!("messages.{i}.role: must be user or assistant"))),
        };
        if i == 0 && role != Role::User {
            return Err(invalid(
                "A conversation must start with a user message. Try again with a conversation that starts with a user message.",
            ));
        }
        if prev_role == Some(role) {
            return Err(invalid("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again."));
        }
        prev_role = Some(role);
        let blocks = match m.get("content") {
            Some(Value::Array(b)) => b,
            _ => return Err(invalid(format!("messages.{i}.content: expected a list of content blocks"))),
        };
        if blocks.is_empty() {
            return Err(invalid(format!("The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again.")));
        }
        let mut msg = Message::new(role);
        let mut ids = Vec::new();
        let mut answered = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let path = format!("messages.{i}.content.{j}");
            let (member, v) = union_member(
                b,
                &path,
                &[
                    "text",
                    "image",
                    "document",
                    "toolUse",
                    "toolResult",
                    "guardContent",
                    "cachePoint",
                    "reasoningContent",
                    "video",
                    "citationsContent",
                ],
            )?;
            match member {
                "text" => msg.texts.push(nonblank(Some(v), &path)?.to_string()),
                "image" if role == Role::User => msg.images.push(image(v, &format!("{path}.image"))?),
                "document" if role == Role::User => document(v, &format!("{path}.document"))?,
                "image" | "document" => return Err(invalid(format!("{path}: {member} blocks are only allowed in user messages"))),
                "toolUse" => {
                    if role != Role::Assistant {
                        return Err(invalid(format!("{path}: toolUse blocks are only allowed in assistant messages")));
                    }
                    uses_tools = true;
                    let id = v
                        .get("toolUseId")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| invalid(format!("{path}.toolUse.toolUseId: a required member is missing")))?;
                    let name = v
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{path}.toolUse.name: a required member is missing")))?;
                    let input = v
                        .get("input")
                        .filter(|i| i.is_object())
                        .ok_or_else(|| invalid(format!("{path}.toolUse.input: expected a JSON object")))?;
                    ids.push(id.to_string());
                    msg.tool_calls.push(ToolCall { name: name.to_string(), arguments: input.to_string() });
                }
                "toolResult" => {
                    if role != Role::User {
                        return Err(invalid(format!("{path}: toolResult blocks are only allowed in user messages")));
                    }
                    uses_tools = true;
                    let id = v
                        .get("toolUseId")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("{path}.toolResult.toolUseId: a required member is missing")))?;
                    answered.push(id.to_string());
                    let Some(parts) = v.get("content").and_then(Value::as_array) else {
                        return Err(invalid(format!("{path}.toolResult.content: a required member is missing")));
                    };
                    let mut texts = Vec::new();
                    for (k, p) in parts.iter().enumerate() {
                        let pp = format!("{path}.toolResult.content.{k}");
                        match union_member(p, &pp, &["text", "json", "image", "document", "video", "searchResult"])? {
                            ("text", t) => {
                                texts.push(t.as_str().ok_or_else(|| invalid(format!("{pp}.text: expected a string")))?.to_string())
                            }
                            ("json", j) => texts.push(j.to_string()),
                            ("image", im) => {
                                image(im, &format!("{pp}.image"))?;
                            }
                            _ => {}
                        }
                    }
                    if let Some(s) = v.get("status").and_then(Value::as_str) {
                        if s != "success" && s != "error" {
                            return Err(invalid(format!("{path}.toolResult.status: must be success or error")));
                        }
                    }
                    msg.tool_results.push(texts.join(" "));
                }
                _ => {}
            }
        }
        if role == Role::User && !prev_ids.is_empty() {
            let missing: Vec<&String> = prev_ids.iter().filter(|id| !answered.contains(id)).collect();
            if !missing.is_empty() {
                return Err(invalid(format!(
                    "Expected toolResult blocks at messages.{i}.content for the following Ids: {}",
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if role == Role::User {
            if let Some(extra) = answered.iter().find(|id| !prev_ids.contains(id)) {
                return Err(invalid(format!(
                    "messages.{i}: the toolResult block with id {extra} does not answer a toolUse block of the previous turn"
                )));
            }
        }
        prev_ids = if role == Role::Assistant { ids } else { Vec::new() };
        // Tool results of a user turn are the neutral model's tool messages.
        if role == Role::User && !msg.tool_results.is_empty() {
            let mut t = Message::new(Role::Tool);
            t.tool_results = std::mem::take(&mut msg.tool_results);
            conv.messages.push(t);
            if msg.texts.is_empty() && msg.images.is_empty() {
                continue;
            }
        }
        conv.messages.push(msg);
    }
    match obj.get("system") {
        None => {}
        Some(Value::Array(blocks)) => {
            for (j, b) in blocks.iter().enumerate() {
                let path = format!("system.{j}");
                if let ("text", t) = union_member(b, &path, &["text", "guardContent", "cachePoint"])? {
                    conv.system.push(nonblank(Some(t), &path)?.to_string());
                }
            }
        }
        Some(other) => return Err(invalid(format!("system: expected a list, got {}", json_type(other)))),
    }
    if let Some(ic) = obj.get("inferenceConfig") {
        let ic = ic.as_object().ok_or_else(|| invalid("inferenceConfig: expected an object"))?;
        if let Some(k) = ic.keys().find(|k| !["maxTokens", "temperature", "topP", "stopSequences"].contains(&k.as_str())) {
            return Err(invalid(format!("inferenceConfig: unknown member '{k}'")));
        }
        if let Some(m) = ic.get("maxTokens") {
            match m.as_u64() {
                Some(n) if n >= 1 => conv.max_tokens = Some(n),
                _ => return Err(invalid("inferenceConfig.maxTokens: must be an integer of at least 1")),
            }
        }
        for f in ["temperature", "topP"] {
            if let Some(x) = ic.get(f) {
                if !x.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) {
                    return Err(invalid(format!("inferenceConfig.{f}: must be a number between 0 and 1")));
                }
            }
        }
        if let Some(s) = ic.get("stopSequences") {
            let list = s.as_array().ok_or_else(|| invalid("inferenceConfig.stopSequences: expected a list"))?;
            for (j, x) in list.iter().enumerate() {
                match x.as_str() {
                    Some(t) if !t.is_empty() => conv.stop.push(t.to_string()),
                    _ => return Err(invalid(format!("inferenceConfig.stopSequences.{j}: must be a non-empty string"))),
                }
            }
        }
    }
    match obj.get("toolConfig") {
        None if uses_tools => {
            return Err(invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks."));
        }
        None => {}
        Some(tc) => {
            let tools = tc
                .get("tools")
                .and_then(Value::as_array)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| invalid("toolConfig.tools: must hold at least one tool"))?;
            for (j, t) in tools.iter().enumerate() {
                let path = format!("toolConfig.tools.{j}");
                let (member, spec) = union_member(t, &path, &["toolSpec", "systemTool", "cachePoint"])?;
                if member != "toolSpec" {
                    continue;
                }
                let name = spec.get("name").and_then(Value::as_str).unwrap_or("");
                let valid = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(invalid(format!("{path}.toolSpec.name: must match [a-zA-Z0-9_-]+ (1 to 64 characters)")));
                }
                let schema =
                    spec.get("inputSchema").ok_or_else(|| invalid(format!("{path}.toolSpec.inputSchema: a required member is missing")))?;
                let schema = match union_member(schema, &format!("{path}.toolSpec.inputSchema"), &["json"])? {
                    (_, j) if j.is_object() => j,
                    _ => return Err(invalid(format!("{path}.toolSpec.inputSchema.json: expected a JSON object"))),
                };
                if conv.tools.iter().any(|t| t == name) {
                    return Err(invalid(format!("toolConfig.tools: the tool name {name} is used more than once")));
                }
                conv.tools.push(name.to_string());
                // A forced call's input is the smallest value this schema accepts (see `behaviour`).
                conv.tool_schemas.insert(name.to_string(), schema.clone());
            }
            if let Some(choice) = tc.get("toolChoice") {
                conv.tool_choice = match union_member(choice, "toolConfig.toolChoice", &["auto", "any", "tool"])? {
                    ("auto", _) => ToolChoice::Auto,
                    ("any", _) => ToolChoice::Required,
                    (_, named) => {
                        let name = named.get("name").and_then(Value::as_str).unwrap_or("");
                        if !conv.tools.iter().any(|t| t == name) {
                            return Err(invalid(format!("toolConfig.toolChoice.tool.name: {name} is not one of the tools")));
                        }
                        ToolChoice::Named(name.to_string())
                    }
                };
            }
        }
    }
    if let Some(a) = obj.get("additionalModelRequestFields") {
        if !a.is_object() {
            return Err(invalid("additionalModelRequestFields: expected a JSON object"));
        }
    }
    Ok(conv)
}

fn stop_reason(r: &Reply) -> &'static str {
    match r.finish {
        Finish::Stop if r.stop_sequence.is_some() => "stop_sequence",
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::Filter => "content_filtered",
    }
}

fn tool_id(seed: &[u8], i: usize) -> String {
    format!("tooluse_{}", derived_alnum(seed, i, 22))
}

fn args_object(args: &str) -> Value {
    serde_json::from_str::<Value>(args).ok().filter(Value::is_object).unwrap_or_else(|| json!({}))
}

fn usage_json(r: &Reply) -> Value {
    let u = r.usage;
    let mut usage = json!({"inputTokens": u.prompt - u.cached, "outputTokens": u.completion, "totalTokens": u.prompt + u.completion});
    if u.cached > 0 {
        usage["cacheReadInputTokens"] = json!(u.cached);
        usage["cacheWriteInputTokens"] = json!(0);
    }
    usage
}

fn converse(ctx: &Ctx, kind: Option<FaultKind>, stream: bool) -> Response {
    let Some(body) = ctx.body.as_ref() else {
        return error(ctx, invalid("Malformed input request: the body is not valid JSON"));
    };
    let conv = match parse_converse(body) {
        Ok(c) => c,
        Err(e) => return error(ctx, e),
    };
    let model = ctx.model_or_empty().to_string();
    if !ctx.model_known(&model) {
        return error(ctx, ApiError::ModelNotFound(model));
    }
    let reply = match behaviour::decide(&conv, ctx.knobs.context_window) {
        Ok(r) => r,
        Err(e) => return error(ctx, e),
    };
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) && !stream {
        return error(ctx, ApiError::Status(500));
    }
    let seed = ctx.seed();
    let headers = vec![("x-amzn-requestid", request_id())];
    let latency = u64::try_from(ctx.elapsed_ms()).unwrap_or(u64::MAX);
    if !stream {
        let mut content: Vec<Value> = Vec::new();
        if !reply.text.is_empty() {
            content.push(json!({"text": reply.text}));
        }
        for (i, c) in reply.tool_calls.iter().enumerate() {
            content.push(json!({"toolUse": {"toolUseId": tool_id(&seed, i), "name": c.name, "input": args_object(&c.arguments)}}));
        }
        let body = json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason(&reply),
            "usage": usage_json(&reply),
            "metrics": {"latencyMs": latency},
        });
        return json_ok(ctx, kind, &headers, &body);
    }
    let mut frames = vec![Frame::named("messageStart", &json!({"role": "assistant"}))];
    let mut index = 0usize;
    if !reply.text.is_empty() {
        for piece in text_chunks(&reply.text) {
            frames.push(Frame::named("contentBlockDelta", &json!({"contentBlockIndex": index, "delta": {"text": piece}})).content());
        }
        frames.push(Frame::named("contentBlockStop", &json!({"contentBlockIndex": index})));
        index += 1;
    }
    for (i, c) in reply.tool_calls.iter().enumerate() {
        frames.push(Frame::named(
            "contentBlockStart",
            &json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_id(&seed, i), "name": c.name}}}),
        ));
        for frag in arg_fragments(&c.arguments) {
            frames.push(
                Frame::named("contentBlockDelta", &json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": frag}}})).content(),
            );
        }
        frames.push(Frame::named("contentBlockStop", &json!({"contentBlockIndex": index})));
        index += 1;
    }
    frames.push(Frame::named("messageStop", &json!({"stopReason": stop_reason(&reply)})));
    frames.push(Frame::named("metadata", &json!({"usage": usage_json(&reply), "metrics": {"latencyMs": latency}})));
    let mut err = json!({"message": "Too many tokens, please wait before trying again."});
    echo_key_into(ctx, &mut err, "/message");
    let err = Frame::exception("throttlingException", &err);
    stream_response(ctx, Framing::EventStream, frames, err, kind, headers)
}

/// InvokeModel for the embedding models (Titan text embeddings, Cohere embed); other models' native
/// bodies are not modelled.
fn invoke(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let model = ctx.model_or_empty().to_string();
    if !ctx.model_known(&model) {
        return error(ctx, ApiError::ModelNotFound(model));
    }
    let Some(body) = ctx.body.as_ref().and_then(Value::as_object) else {
        return error(ctx, invalid("Malformed input request: the body is not a JSON object"));
    };
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) {
        return error(ctx, ApiError::Status(500));
    }
    let headers = vec![("x-amzn-requestid", request_id())];
    if model.contains("titan-embed") {
        if let Some(k) = body.keys().find(|k| !["inputText", "dimensions", "normalize", "embeddingTypes"].contains(&k.as_str())) {
            return error(
                ctx,
                invalid(format!(
                    "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
                )),
            );
        }
        let Some(text) = body.get("inputText").and_then(Value::as_str) else {
            return error(
                ctx,
                invalid("Malformed input request: #: required key [inputText] not found, please reformat your input and try again."),
            );
        };
        let dims =
            match body.get("dimensions") {
                None => 1024,
                Some(d) => match d.as_u64() {
                    Some(n @ (256 | 512 | 1024)) => n as usize,
                    _ => return error(
                        ctx,
                        invalid(
                            "Malformed input request: #/dimensions: 256, 512 or 1024 expected, please reformat your input and try again.",
                        ),
                    ),
                },
            };
        let v = embedding(text, dims);
        let out = json!({"embedding": v, "embeddingsByType": {"float": v}, "inputTextTokenCount": words(text)});
        return json_ok(ctx, kind, &headers, &out);
    }
    if model.contains("cohere.embed") {
        let Some(texts) = body.get("texts").and_then(Value::as_array) else {
            return error(
                ctx,
                invalid("Malformed input request: #: required key [texts] not found, please reformat your input and try again."),
            );
        };
        if texts.is_empty() || texts.len() > 96 {
            return error(
                ctx,
                invalid("Malformed input request: #/texts: expected between 1 and 96 texts, please reformat your input and try again."),
            );
        }
        match body.get("input_type").and_then(Value::as_str) {
            Some("search_document" | "search_query" | "classification" | "clustering") => {}
            _ => return error(ctx, invalid("Malformed input request: #: required key [input_type] not found or not one of search_document, search_query, classification, clustering.")),
        }
        let mut vectors = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            match t.as_str() {
                Some(s) => vectors.push(embedding(s, 1024)),
                None => return error(ctx, invalid(format!("Malformed input request: #/texts/{i}: expected type: String"))),
            }
        }
        let out = json!({"embeddings": vectors, "id": request_id(), "response_type": "embeddings_floats", "texts": texts});
        return json_ok(ctx, kind, &headers, &out);
    }
    error(
        ctx,
        invalid(format!("The mock serves InvokeModel for embedding models only (amazon.titan-embed-*, cohere.embed-*), not {model}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})
    }

    #[test]
    fn paths() {
        assert_eq!(
            model_of("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse").as_deref(),
            Some("anthropic.claude-3-5-haiku-20241022-v1:0")
        );
        assert_eq!(
            model_of("/model/arn%3Aaws%3Abedrock%3Aeu-central-1%3A123456789012%3Ainference-profile%2Fx/converse-stream").as_deref(),
            Some("arn:aws:bedrock:eu-central-1:123456789012:inference-profile/x")
        );
        assert!(matches!(route("/model/m/converse-stream"), Route::ConverseStream));
        assert!(matches!(route("/model/m/invoke"), Route::Invoke));
        assert!(matches!(route("/model/a/b/converse"), Route::Unknown), "an unencoded / splits the id");
        assert!(matches!(route("/v1/chat/completions"), Route::Unknown));
    }

    #[test]
    fn converse_is_strict() {
        assert!(parse_converse(&base()).is_ok());
        let bad = [
            json!({"messages": [{"role": "user", "content": [{"text": "hi", "image": {}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"text": "  "}]}]}),
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            json!({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}),
            json!({"messages": [{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}]}),
            json!({"messages": [{"role": "system", "content": [{"text": "a"}]}]}),
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "model": "x"}),
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"temperature": 1.5}}),
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "inferenceConfig": {"max_tokens": 5}}),
            json!({"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "/9j/4AAQ"}}}]}]}),
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "toolConfig": {"tools": []}}),
            json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "toolConfig": {"tools": [{"toolSpec": {"name": "a b", "inputSchema": {"json": {}}}}]}}),
            json!({"messages": [{"role": "user", "content": [{"document": {"format": "pdf", "name": "a_b", "source": {"bytes": "JVBERi0="}}}]}]}),
        ];
        for b in bad {
            assert!(parse_converse(&b).is_err(), "{b}");
        }
    }

    #[test]
    fn tool_round_trips_are_checked() {
        let tools = json!({"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}]});
        let mut b = json!({"messages": [
            {"role": "user", "content": [{"text": "hi"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "18C"}]}}]}]});
        assert!(parse_converse(&b).is_err(), "tool blocks need a toolConfig");
        b["toolConfig"] = tools;
        let conv = parse_converse(&b).unwrap();
        assert_eq!(conv.messages.last().unwrap().tool_results, vec!["18C".to_string()]);
        b["messages"][2]["content"][0]["toolResult"]["toolUseId"] = json!("t2");
        assert!(parse_converse(&b).is_err());
    }
}
