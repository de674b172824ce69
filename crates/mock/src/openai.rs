//! The OpenAI flavour: Chat Completions (JSON and data-only SSE), Embeddings and Models under any path
//! prefix, with OpenAI's validation rules, error bodies and response headers. Azure reuses the request
//! parsing and the renderers here, because Azure's inference shapes are OpenAI's: the renderers take a
//! [`Dialect`] that supplies what Azure does differently (headers, error bodies, content-filter
//! annotations), so this module never imports `azure.rs`, which imports this one.

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::behaviour::{self, arg_fragments, text_chunks, Conversation, Finish, Image, Message, Reply, Role, ToolCall, ToolChoice, Usage};
use crate::common::{
    b64_decode, b64_encode, check_key, context_numbers, derived_alnum, echo_key_into, echoed_key, embedding, json_response, json_type,
    mask_key, now_secs, percent_decode, random_alnum, retry_headers, words, ApiError, Ctx,
};
use crate::faults::{gate, json_ok, stream_response, Frame, Framing};
use crate::ratelimit::{go_duration, input_tokens, output_tokens, wait, Limit};
use crate::FaultKind;

/// A fixed `created` for listed models.
const MODEL_CREATED: u64 = 1_715_367_049;
const FINGERPRINT: &str = "fp_5w1tchy4rd";
/// The limits the mock reports, a minute each (a high usage tier's gpt-4o).
const RPM: u64 = 10_000;
const TPM: u64 = 30_000_000;

/// What a service that serves OpenAI's shapes under its own routes does differently. [`OpenAi`] is
/// OpenAI itself; Azure implements it in `azure.rs`.
pub(crate) trait Dialect {
    /// Headers on every answer.
    fn headers(&self, ctx: &Ctx) -> Vec<(&'static str, String)>;
    /// Adds the rate-limit headers of a served inference answer (chat, embeddings).
    fn rate_limits(&self, ctx: &Ctx, out: &mut Vec<(&'static str, String)>);
    /// Renders an error.
    fn error(&self, ctx: &Ctx, err: ApiError) -> Response;
    /// The error for a body `model` that is not configured.
    fn unknown_model(&self, model: String) -> ApiError {
        ApiError::ModelNotFound(model)
    }
    /// `owned_by` of listed models.
    fn owned_by(&self) -> &'static str {
        "system"
    }
    /// A choice's `content_filter_results` for an answer that finished with `finish`, if the service
    /// annotates answers.
    fn choice_filter(&self, _finish: Finish) -> Option<Value> {
        None
    }
    /// The top-level `prompt_filter_results`, if the service annotates prompts.
    fn prompt_filter(&self) -> Option<Value> {
        None
    }
}

/// OpenAI itself.
pub(crate) struct OpenAi;

impl Dialect for OpenAi {
    fn headers(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        headers(ctx)
    }

    fn rate_limits(&self, ctx: &Ctx, out: &mut Vec<(&'static str, String)>) {
        rate_limit_headers(ctx, false, out);
    }

    fn error(&self, ctx: &Ctx, err: ApiError) -> Response {
        error(ctx, err)
    }
}

enum Route {
    Chat,
    Embeddings,
    Models,
    Model(String),
    Unknown,
}

fn route(path: &str) -> Route {
    let p = path.trim_end_matches('/');
    if p.ends_with("/chat/completions") {
        Route::Chat
    } else if p.ends_with("/embeddings") {
        Route::Embeddings
    } else if p.ends_with("/models") || p == "models" {
        Route::Models
    } else if let Some((head, id)) = p.rsplit_once('/') {
        if (head.ends_with("/models") || head == "models") && !id.is_empty() {
            Route::Model(percent_decode(id))
        } else {
            Route::Unknown
        }
    } else {
        Route::Unknown
    }
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    let route = route(&ctx.path);
    let want = match route {
        Route::Chat | Route::Embeddings => Method::POST,
        Route::Models | Route::Model(_) => Method::GET,
        Route::Unknown => return error(&ctx, ApiError::NoRoute),
    };
    if ctx.method != want {
        return error(&ctx, ApiError::MethodNotAllowed);
    }
    if let Err(e) = check_key(&ctx, true) {
        return error(&ctx, e);
    }
    let kind = match gate(&ctx).await {
        Ok(k) => k,
        Err(e) => return error(&ctx, e),
    };
    match route {
        Route::Chat => chat(&ctx, &OpenAi, kind),
        Route::Embeddings => embeddings(&ctx, &OpenAi, kind),
        Route::Models => models(&ctx, &OpenAi, kind),
        Route::Model(id) => model(&ctx, &id, &OpenAi, kind),
        Route::Unknown => error(&ctx, ApiError::NoRoute),
    }
}

/// Headers every OpenAI response carries.
fn headers(ctx: &Ctx) -> Vec<(&'static str, String)> {
    vec![
        ("x-request-id", format!("req_{}", ctx.request_id.to_ascii_lowercase())),
        ("openai-processing-ms", ctx.elapsed_ms().to_string()),
        ("openai-version", "2020-10-01".to_string()),
        ("openai-organization", "switchyard-mock".to_string()),
    ]
}

/// OpenAI's `x-ratelimit-*` headers (resets as Go durations). An answer used one request and the tokens
/// it asked for (input estimate plus `max_completion_tokens`/`max_tokens`); a 429 (`refused`) found the
/// request limit used up, as its message says.
fn rate_limit_headers(ctx: &Ctx, refused: bool, out: &mut Vec<(&'static str, String)>) {
    let (requests, tokens) = if refused {
        (Limit::used_up(RPM, wait(ctx)), Limit::full(TPM))
    } else {
        (Limit::after(RPM, 1), Limit::after(TPM, input_tokens(ctx) + output_tokens(ctx, &["max_completion_tokens", "max_tokens"])))
    };
    out.extend([
        ("x-ratelimit-limit-requests", requests.limit.to_string()),
        ("x-ratelimit-limit-tokens", tokens.limit.to_string()),
        ("x-ratelimit-remaining-requests", requests.remaining.to_string()),
        ("x-ratelimit-remaining-tokens", tokens.remaining.to_string()),
        ("x-ratelimit-reset-requests", go_duration(requests.reset)),
        ("x-ratelimit-reset-tokens", go_duration(tokens.reset)),
    ]);
}

/// Headers of a served inference answer: the dialect's, plus its rate-limit headers.
fn answer_headers(ctx: &Ctx, d: &impl Dialect) -> Vec<(&'static str, String)> {
    let mut h = d.headers(ctx);
    d.rate_limits(ctx, &mut h);
    h
}

/// The OpenAI error body for `err`.
pub(crate) fn error_body(ctx: &Ctx, err: &ApiError) -> Value {
    let model = ctx.model_or_empty();
    let (message, kind, param, code): (String, &str, Option<String>, Option<&str>) = match err {
        ApiError::Invalid { message, param } => {
            (message.clone(), "invalid_request_error", param.clone(), None)
        }
        ApiError::MissingKey => (
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".into(),
            "invalid_request_error",
            None,
            None,
        ),
        ApiError::BadKey | ApiError::Status(401) => (
            format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                echoed_key(ctx).unwrap_or_else(|| mask_key(ctx.key.as_deref().unwrap_or_default()))
            ),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        ApiError::ModelNotFound(m) => (
            format!("The model `{m}` does not exist or you do not have access to it."),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        ),
        ApiError::Status(404) => (
            format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        ),
        ApiError::NoRoute | ApiError::MethodNotAllowed => (
            format!("Invalid URL ({} {})", ctx.method, ctx.path),
            "invalid_request_error",
            None,
            None,
        ),
        ApiError::ContextLength { prompt_tokens, window } => {
            let (window, tokens) = context_numbers(*prompt_tokens, *window, 128_000);
            (
                format!(
                    "This model's maximum context length is {window} tokens. However, your messages resulted in {tokens} tokens. Please reduce the length of the messages."
                ),
                "invalid_request_error",
                Some("messages".into()),
                Some("context_length_exceeded"),
            )
        }
        ApiError::Quota => (
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.".into(),
            "insufficient_quota",
            None,
            Some("insufficient_quota"),
        ),
        ApiError::TooLarge | ApiError::Status(413) => (
            "Request too large. The request body exceeds the maximum allowed size.".into(),
            "invalid_request_error",
            None,
            Some("request_too_large"),
        ),
        ApiError::Status(400) => (
            "Invalid request (the mock was asked to reject it).".into(),
            "invalid_request_error",
            None,
            None,
        ),
        ApiError::Status(403) => (
            "Country, region, or territory not supported".into(),
            "request_forbidden",
            None,
            Some("unsupported_country_region_territory"),
        ),
        ApiError::Status(408) => ("Request timed out.".into(), "timeout", None, None),
        ApiError::Status(409) => (
            "The request conflicted with another request; please retry.".into(),
            "invalid_request_error",
            None,
            None,
        ),
        ApiError::Status(429) => (
            format!(
                "Rate limit reached for {model} in organization org-switchyardmock on requests per min (RPM): Limit {RPM}, Used {RPM}, Requested 1. Please try again in {}.",
                go_duration(wait(ctx))
            ),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        ApiError::Status(500) => (
            "The server had an error while processing your request. Sorry about that!".into(),
            "server_error",
            None,
            None,
        ),
        ApiError::Status(502) => ("Bad gateway.".into(), "server_error", None, None),
        ApiError::Status(503) => (
            "The engine is currently overloaded, please try again later.".into(),
            "server_error",
            None,
            None,
        ),
        ApiError::Status(504) => ("Gateway timeout.".into(), "server_error", None, None),
        ApiError::Status(529) => ("Overloaded".into(), "server_error", None, None),
        ApiError::Status(s) if *s >= 500 => (
            format!("The server had an error (status {s})."),
            "server_error",
            None,
            None,
        ),
        ApiError::Status(s) => (
            format!("The request failed (status {s})."),
            "invalid_request_error",
            None,
            None,
        ),
    };
    let mut body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    echo_key_into(ctx, &mut body, "/error/message");
    body
}

pub(crate) fn error(ctx: &Ctx, err: ApiError) -> Response {
    let status = err.status();
    let mut h = headers(ctx);
    // A quota 429 is not a rate limit: no rate-limit (or retry) headers.
    if status == 429 && err != ApiError::Quota {
        rate_limit_headers(ctx, true, &mut h);
    }
    retry_headers(ctx, &err, &mut h);
    json_response(status, &h, &error_body(ctx, &err))
}

/// A parsed chat request.
pub(crate) struct ChatRequest {
    pub conv: Conversation,
    pub stream: bool,
    pub include_usage: bool,
}

fn invalid_type(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid_param(format!("Invalid type for '{param}': expected {expected}, but got {} instead.", json_type(got)), param)
}

fn positive_int(obj: &Map<String, Value>, name: &str, min: u64) -> Result<Option<u64>, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= min => Ok(Some(n)),
            Some(n) => Err(ApiError::invalid_param(
                format!("Invalid '{name}': integer below minimum value. Expected a value >= {min}, but got {n} instead."),
                name,
            )),
            None => Err(invalid_type(name, "an integer", v)),
        },
    }
}

/// Text of a `content` that may only hold text (system, developer, tool).
fn text_only(v: &Value, param: &str) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
                match (t, p.get("text").and_then(Value::as_str)) {
                    ("text", Some(s)) => Ok(s.to_string()),
                    ("text", None) => Err(ApiError::invalid_param(
                        format!("Missing required parameter: '{param}[{j}].text'."),
                        format!("{param}[{j}].text"),
                    )),
                    _ => Err(ApiError::invalid_param(
                        format!("Invalid value: '{t}'. Supported values are: 'text'."),
                        format!("{param}[{j}].type"),
                    )),
                }
            })
            .collect(),
        other => Err(invalid_type(param, "one of a string or array of objects", other)),
    }
}

/// Parses an `image_url.url`: a base64 `data:` URL or an http(s) URL.
pub(crate) fn parse_image_url(url: &str, param: &str) -> Result<Image, ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let bad = || ApiError::invalid_param("Invalid image data URL: expected data:image/<type>;base64,<data>.", param);
        let (meta, data) = rest.split_once(',').ok_or_else(bad)?;
        let media_type = meta.strip_suffix(";base64").ok_or_else(bad)?;
        if !media_type.starts_with("image/") {
            return Err(ApiError::invalid_param(
                format!(
                    "Invalid MIME type '{media_type}' for an image. Supported types are image/jpeg, image/png, image/gif and image/webp."
                ),
                param,
            ));
        }
        let bytes = b64_decode(data).map_err(|_| ApiError::invalid_param("Invalid base64 image data in the image URL.", param))?;
        Ok(Image::Inline { media_type: media_type.to_string(), data: bytes })
    } else if url.starts_with("http://") || url.starts_with("https://") {
        Ok(Image::Url(url.to_string()))
    } else {
        Err(ApiError::invalid_param("Invalid image URL: expected an http(s) URL or a base64 data URL.", param))
    }
}

fn user_content(v: &Value, i: usize, msg: &mut Message) -> Result<(), ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        Value::String(s) => msg.texts.push(s.clone()),
        Value::Array(parts) => {
            if parts.is_empty() {
                return Err(ApiError::invalid_param(
                    format!("Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead."),
                    param,
                ));
            }
            for (j, p) in parts.iter().enumerate() {
                let pp = format!("{param}[{j}]");
                let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
                match t {
                    "text" => match p.get("text").and_then(Value::as_str) {
                        Some(s) => msg.texts.push(s.to_string()),
                        None => {
                            return Err(ApiError::invalid_param(format!("Missing required parameter: '{pp}.text'."), format!("{pp}.text")))
                        }
                    },
                    "image_url" => {
                        let url = p.get("image_url").and_then(|u| u.get("url")).and_then(Value::as_str).ok_or_else(|| {
                            ApiError::invalid_param(
                                format!("Missing required parameter: '{pp}.image_url.url'."),
                                format!("{pp}.image_url.url"),
                            )
                        })?;
                        if let Some(d) = p.get("image_url").and_then(|u| u.get("detail")) {
                            if !matches!(d.as_str(), Some("auto" | "low" | "high")) {
                                return Err(ApiError::invalid_param(
                                    format!(
                                        "Invalid value: '{}'. Supported values are: 'auto', 'low', and 'high'.",
                                        d.as_str().unwrap_or_default()
                                    ),
                                    format!("{pp}.image_url.detail"),
                                ));
                            }
                        }
                        msg.images.push(parse_image_url(url, &format!("{pp}.image_url.url"))?);
                    }
                    "input_audio" | "file" => {}
                    other => {
                        return Err(ApiError::invalid_param(
                            format!("Invalid value: '{other}'. Supported values are: 'text', 'image_url', 'input_audio', and 'file'."),
                            format!("{pp}.type"),
                        ))
                    }
                }
            }
        }
        other => return Err(invalid_type(&param, "one of a string or array of objects", other)),
    }
    Ok(())
}

fn assistant_content(v: &Value, i: usize, msg: &mut Message) -> Result<(), ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        Value::Null => {}
        Value::String(s) => msg.texts.push(s.clone()),
        Value::Array(parts) => {
            for (j, p) in parts.iter().enumerate() {
                let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
                match t {
                    "text" => msg.texts.push(p.get("text").and_then(Value::as_str).unwrap_or_default().to_string()),
                    "refusal" => {}
                    other => {
                        return Err(ApiError::invalid_param(
                            format!("Invalid value: '{other}'. Supported values are: 'text' and 'refusal'."),
                            format!("{param}[{j}].type"),
                        ))
                    }
                }
            }
        }
        other => return Err(invalid_type(&param, "one of a string or array of objects", other)),
    }
    Ok(())
}

/// Parses and validates a Chat Completions body the way OpenAI does.
pub(crate) fn parse_chat(body: &Value) -> Result<ChatRequest, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("We could not parse the JSON body of your request. The body must be a JSON object."))?;
    let msgs = match obj.get("messages") {
        None | Some(Value::Null) => return Err(ApiError::invalid_param("Missing required parameter: 'messages'.", "messages")),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(invalid_type("messages", "an array", other)),
    };
    if msgs.is_empty() {
        return Err(ApiError::invalid_param(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
        ));
    }
    let mut conv = Conversation { n: 1, ..Conversation::default() };
    let mut seen_ids: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let role_param = format!("messages[{i}].role");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid_param(format!("Missing required parameter: '{role_param}'."), role_param.clone()))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        if role != "tool" && !pending.is_empty() {
            return Err(ApiError::invalid_param(
                format!("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}", pending.join(", ")),
                role_param,
            ));
        }
        match role {
            "system" | "developer" => {
                if content.is_null() {
                    return Err(invalid_type(&format!("messages[{i}].content"), "one of a string or array of objects", content));
                }
                conv.system.extend(text_only(content, &format!("messages[{i}].content"))?);
            }
            "user" => {
                let mut msg = Message::new(Role::User);
                user_content(content, i, &mut msg)?;
                conv.messages.push(msg);
            }
            "assistant" => {
                let mut msg = Message::new(Role::Assistant);
                assistant_content(content, i, &mut msg)?;
                if let Some(calls) = m.get("tool_calls").filter(|v| !v.is_null()) {
                    let calls = calls.as_array().ok_or_else(|| invalid_type(&format!("messages[{i}].tool_calls"), "an array", calls))?;
                    for (j, c) in calls.iter().enumerate() {
                        let p = format!("messages[{i}].tool_calls[{j}]");
                        let id = c
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| ApiError::invalid_param(format!("Missing required parameter: '{p}.id'."), format!("{p}.id")))?;
                        if c.get("type").and_then(Value::as_str) != Some("function") {
                            return Err(ApiError::invalid_param(format!("Missing required parameter: '{p}.type'."), format!("{p}.type")));
                        }
                        let f = c.get("function").unwrap_or(&Value::Null);
                        let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                            ApiError::invalid_param(
                                format!("Missing required parameter: '{p}.function.name'."),
                                format!("{p}.function.name"),
                            )
                        })?;
                        let args = f.get("arguments").unwrap_or(&Value::Null);
                        let Some(args) = args.as_str() else {
                            return Err(invalid_type(&format!("{p}.function.arguments"), "a string", args));
                        };
                        seen_ids.push(id.to_string());
                        pending.push(id.to_string());
                        msg.tool_calls.push(ToolCall { name: name.to_string(), arguments: args.to_string() });
                    }
                }
                if msg.tool_calls.is_empty() && content.is_null() {
                    return Err(ApiError::invalid_param(
                        "Invalid value for 'content': expected a string, got null.",
                        format!("messages[{i}].content"),
                    ));
                }
                conv.messages.push(msg);
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid_param(
                        format!("Missing required parameter: 'messages[{i}].tool_call_id'."),
                        format!("messages[{i}].tool_call_id"),
                    )
                })?;
                if !seen_ids.iter().any(|s| s == id) {
                    return Err(ApiError::invalid_param(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                        format!("messages[{i}].role"),
                    ));
                }
                pending.retain(|p| p != id);
                let mut msg = Message::new(Role::Tool);
                msg.tool_results.push(text_only(content, &format!("messages[{i}].content"))?.join(" "));
                conv.messages.push(msg);
            }
            "function" => {
                let mut msg = Message::new(Role::Tool);
                msg.tool_results.push(content.as_str().unwrap_or_default().to_string());
                conv.messages.push(msg);
            }
            other => {
                return Err(ApiError::invalid_param(
                    format!(
                    "Invalid value: '{other}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."
                ),
                    role_param,
                ))
            }
        }
    }
    if !pending.is_empty() {
        return Err(ApiError::invalid_param(
            format!("An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}", pending.join(", ")),
            "messages",
        ));
    }

    if let Some(tools) = obj.get("tools").filter(|v| !v.is_null()) {
        let tools = tools.as_array().ok_or_else(|| invalid_type("tools", "an array", tools))?;
        for (j, t) in tools.iter().enumerate() {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(ApiError::invalid_param(format!("Missing required parameter: 'tools[{j}].type'."), format!("tools[{j}].type")));
            }
            let name = t.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_param(
                    format!("Missing required parameter: 'tools[{j}].function.name'."),
                    format!("tools[{j}].function.name"),
                )
            })?;
            conv.tools.push(name.to_string());
            if let Some(schema) = t.get("function").and_then(|f| f.get("parameters")).filter(|s| s.is_object()) {
                conv.tool_schemas.insert(name.to_string(), schema.clone());
            }
        }
    }
    if let Some(tc) = obj.get("tool_choice").filter(|v| !v.is_null()) {
        if conv.tools.is_empty() {
            return Err(ApiError::invalid_param(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                "tool_choice",
            ));
        }
        conv.tool_choice = match tc {
            Value::String(s) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    return Err(ApiError::invalid_param(
                        format!("Invalid value: '{other}'. Supported values are: 'none', 'auto', and 'required'."),
                        "tool_choice",
                    ))
                }
            },
            Value::Object(_) => {
                let name = tc.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
                    ApiError::invalid_param("Missing required parameter: 'tool_choice.function.name'.", "tool_choice.function.name")
                })?;
                ToolChoice::Named(name.to_string())
            }
            other => return Err(invalid_type("tool_choice", "one of a string or object", other)),
        };
    }

    let mct = positive_int(obj, "max_completion_tokens", 1)?;
    let mt = positive_int(obj, "max_tokens", 1)?;
    conv.max_tokens = mct.or(mt);
    conv.n = positive_int(obj, "n", 1)?.map(|n| u32::try_from(n.min(128)).unwrap_or(128)).unwrap_or(1);
    if let Some(n) = obj.get("n").and_then(Value::as_u64) {
        if n > 128 {
            return Err(ApiError::invalid_param(
                format!("Invalid 'n': integer above maximum value. Expected a value <= 128, but got {n} instead."),
                "n",
            ));
        }
    }
    match obj.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => conv.stop.push(s.clone()),
        Some(Value::Array(a)) => {
            if a.len() > 4 {
                return Err(ApiError::invalid_param(
                    format!(
                        "Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with length {} instead.",
                        a.len()
                    ),
                    "stop",
                ));
            }
            for (j, s) in a.iter().enumerate() {
                let s = s.as_str().ok_or_else(|| invalid_type(&format!("stop[{j}]"), "a string", s))?;
                conv.stop.push(s.to_string());
            }
        }
        Some(other) => return Err(invalid_type("stop", "one of a string or array", other)),
    }
    if let Some(rf) = obj.get("response_format").filter(|v| !v.is_null()) {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => conv.json_mode = true,
            Some("json_schema") => {
                if !rf.get("json_schema").is_some_and(Value::is_object) {
                    return Err(ApiError::invalid_param(
                        "Missing required parameter: 'response_format.json_schema'.",
                        "response_format.json_schema",
                    ));
                }
                conv.json_mode = true;
            }
            Some(other) => {
                return Err(ApiError::invalid_param(
                    format!("Invalid value: '{other}'. Supported values are: 'json_object', 'json_schema', and 'text'."),
                    "response_format.type",
                ))
            }
            None => return Err(ApiError::invalid_param("Missing required parameter: 'response_format.type'.", "response_format.type")),
        }
    }
    if let Some(t) = obj.get("temperature").filter(|v| !v.is_null()) {
        match t.as_f64() {
            Some(x) if (0.0..=2.0).contains(&x) => {}
            Some(x) => {
                return Err(ApiError::invalid_param(
                    format!("Invalid 'temperature': decimal out of range. Expected a value between 0 and 2, but got {x} instead."),
                    "temperature",
                ))
            }
            None => return Err(invalid_type("temperature", "a decimal", t)),
        }
    }
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(invalid_type("stream", "a boolean", other)),
    };
    let mut include_usage = false;
    if let Some(so) = obj.get("stream_options").filter(|v| !v.is_null()) {
        if !stream {
            return Err(ApiError::invalid_param(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            ));
        }
        include_usage = so.get("include_usage").and_then(Value::as_bool).unwrap_or(false);
    }
    Ok(ChatRequest { conv, stream, include_usage })
}

/// The body's `model` (required), suffix stripped, checked against the configured models.
fn body_model(ctx: &Ctx, d: &impl Dialect) -> Result<String, ApiError> {
    let body = ctx.body.as_ref().ok_or_else(|| {
        ApiError::invalid("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)")
    })?;
    if !body.is_object() {
        return Err(ApiError::invalid("We could not parse the JSON body of your request. The body must be a JSON object."));
    }
    let model = ctx.model.clone().unwrap_or_default();
    if model.is_empty() {
        return Err(ApiError::invalid_param("you must provide a model parameter", "model"));
    }
    if !ctx.model_known(&model) {
        return Err(d.unknown_model(model));
    }
    Ok(model)
}

fn finish_str(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::Filter => "content_filter",
    }
}

pub(crate) fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt,
        "completion_tokens": u.completion,
        "total_tokens": u.prompt + u.completion,
        "prompt_tokens_details": {"cached_tokens": u.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

fn call_id(seed: &[u8], i: usize) -> String {
    format!("call_{}", derived_alnum(seed, i, 24))
}

/// Handles a chat completion after routing, auth and the fault gate.
pub(crate) fn chat(ctx: &Ctx, d: &impl Dialect, kind: Option<FaultKind>) -> Response {
    let model = match body_model(ctx, d) {
        Ok(m) => m,
        Err(e) => return d.error(ctx, e),
    };
    let req = match ctx.body.as_ref().map(parse_chat) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return d.error(ctx, e),
        None => return d.error(ctx, ApiError::invalid("missing body")),
    };
    let reply = match behaviour::decide(&req.conv, ctx.knobs.context_window) {
        Ok(r) => r,
        Err(e) => return d.error(ctx, e),
    };
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) && !req.stream {
        return d.error(ctx, ApiError::Status(500));
    }
    let id = format!("chatcmpl-{}", random_alnum(29));
    let created = now_secs();
    let seed = ctx.seed();
    let n = req.conv.n.max(1);
    if !req.stream {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), if reply.tool_calls.is_empty() { json!(reply.text) } else { Value::Null });
        message.insert("refusal".into(), Value::Null);
        message.insert("annotations".into(), json!([]));
        if !reply.tool_calls.is_empty() {
            let calls: Vec<Value> = reply
                .tool_calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({"id": call_id(&seed, i), "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        let choices: Vec<Value> = (0..n)
            .map(|i| {
                let mut c = json!({"index": i, "message": message.clone(), "logprobs": null,
                    "finish_reason": finish_str(reply.finish)});
                if let Some(f) = d.choice_filter(reply.finish) {
                    c["content_filter_results"] = f;
                }
                c
            })
            .collect();
        let mut body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": FINGERPRINT, "service_tier": "default",
            "choices": choices, "usage": usage_json(&reply.usage),
        });
        if let Some(p) = d.prompt_filter() {
            body["prompt_filter_results"] = p;
        }
        return json_ok(ctx, kind, &answer_headers(ctx, d), &body);
    }
    let frames =
        stream_frames(&reply, &StreamMeta { id: &id, created, model: &model, n, include_usage: req.include_usage, seed: &seed }, d);
    let mut err = json!({"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error", "param": null, "code": null}});
    echo_key_into(ctx, &mut err, "/error/message");
    let err = Frame::data(&err);
    stream_response(ctx, Framing::Sse, frames, err, kind, answer_headers(ctx, d))
}

struct StreamMeta<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    n: u32,
    include_usage: bool,
    seed: &'a [u8],
}

/// One choice's deltas: (delta, finish_reason, carries content).
fn choice_deltas(reply: &Reply, seed: &[u8]) -> Vec<(Value, Option<&'static str>, bool)> {
    let mut out = Vec::new();
    if reply.tool_calls.is_empty() {
        out.push((json!({"role": "assistant", "content": "", "refusal": null}), None, false));
        for piece in text_chunks(&reply.text) {
            out.push((json!({ "content": piece }), None, true));
        }
    } else {
        for (i, c) in reply.tool_calls.iter().enumerate() {
            let head = json!([{"index": i, "id": call_id(seed, i), "type": "function",
                "function": {"name": c.name, "arguments": ""}}]);
            if i == 0 {
                out.push((json!({"role": "assistant", "content": null, "tool_calls": head, "refusal": null}), None, false));
            } else {
                out.push((json!({ "tool_calls": head }), None, false));
            }
            for frag in arg_fragments(&c.arguments) {
                out.push((json!({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}), None, true));
            }
        }
    }
    out.push((json!({}), Some(finish_str(reply.finish)), false));
    out
}

fn stream_frames(reply: &Reply, meta: &StreamMeta<'_>, d: &impl Dialect) -> Vec<Frame> {
    let mut frames = Vec::new();
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut v = json!({"id": meta.id, "object": "chat.completion.chunk", "created": meta.created,
            "model": meta.model, "system_fingerprint": FINGERPRINT, "choices": choices});
        if meta.include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        v
    };
    if let Some(p) = d.prompt_filter() {
        frames.push(Frame::data(&json!({"id": "", "object": "", "created": 0, "model": "",
            "choices": [], "prompt_filter_results": p})));
    }
    let deltas = choice_deltas(reply, meta.seed);
    let last = deltas.len().saturating_sub(1);
    for (step, (delta, finish, content)) in deltas.iter().enumerate() {
        for i in 0..meta.n {
            let mut choice = json!({"index": i, "delta": delta, "logprobs": null, "finish_reason": finish});
            // A service that annotates answers annotates every chunk: text chunks pass the filter, the
            // finish chunk of a filtered answer says so, and the other chunks carry an empty object.
            if let Some(passed) = d.choice_filter(Finish::Stop) {
                choice["content_filter_results"] = if *content && reply.tool_calls.is_empty() {
                    passed
                } else if step == last && reply.finish == Finish::Filter {
                    d.choice_filter(Finish::Filter).unwrap_or_else(|| json!({}))
                } else {
                    json!({})
                };
            }
            let f = Frame::data(&chunk(json!([choice]), None));
            frames.push(if *content { f.content() } else { f });
        }
    }
    if meta.include_usage {
        frames.push(Frame::data(&chunk(json!([]), Some(usage_json(&reply.usage)))));
    }
    frames.push(Frame::raw("[DONE]"));
    frames
}

/// The texts of an embeddings `input` (token arrays become their numbers joined by commas).
fn embedding_inputs(input: Option<&Value>) -> Result<Vec<(String, u64)>, ApiError> {
    let bad = || {
        ApiError::invalid_param("'input' must be a non-empty string, array of strings, array of tokens or array of token arrays.", "input")
    };
    let tokens = |a: &[Value]| -> Option<(String, u64)> {
        let nums: Option<Vec<u64>> = a.iter().map(Value::as_u64).collect();
        let nums = nums?;
        (!nums.is_empty()).then(|| (nums.iter().map(u64::to_string).collect::<Vec<_>>().join(","), nums.len() as u64))
    };
    match input {
        Some(Value::String(s)) if !s.is_empty() => Ok(vec![(s.clone(), words(s))]),
        Some(Value::Array(a)) if !a.is_empty() => {
            if a.iter().all(Value::is_number) {
                return tokens(a).map(|t| vec![t]).ok_or_else(bad);
            }
            a.iter()
                .map(|item| match item {
                    Value::String(s) if !s.is_empty() => Ok((s.clone(), words(s))),
                    Value::Array(t) => tokens(t).ok_or_else(bad),
                    _ => Err(bad()),
                })
                .collect()
        }
        _ => Err(bad()),
    }
}

/// Handles an embeddings request after routing, auth and the fault gate.
pub(crate) fn embeddings(ctx: &Ctx, d: &impl Dialect, kind: Option<FaultKind>) -> Response {
    let model = match body_model(ctx, d) {
        Ok(m) => m,
        Err(e) => return d.error(ctx, e),
    };
    let body = ctx.body.as_ref().and_then(Value::as_object);
    let Some(body) = body else {
        return d.error(ctx, ApiError::invalid("missing body"));
    };
    let inputs = match embedding_inputs(body.get("input")) {
        Ok(i) => i,
        Err(e) => return d.error(ctx, e),
    };
    let dims = match positive_int(body, "dimensions", 1) {
        Ok(d) => usize::try_from(d.unwrap_or(8).min(8192)).unwrap_or(8),
        Err(e) => return d.error(ctx, e),
    };
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(other) => {
            return d.error(
                ctx,
                ApiError::invalid_param(
                    format!("Invalid value: '{}'. Supported values are: 'float' and 'base64'.", other.as_str().unwrap_or_default()),
                    "encoding_format",
                ),
            )
        }
    };
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) {
        return d.error(ctx, ApiError::Status(500));
    }
    let mut prompt = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, (text, toks))| {
            prompt += toks;
            let v = embedding(text, dims);
            let emb = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(b64_encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    let body = json!({"object": "list", "model": model, "data": data,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt}});
    json_ok(ctx, kind, &answer_headers(ctx, d), &body)
}

fn model_json(id: &str, d: &impl Dialect) -> Value {
    json!({"id": id, "object": "model", "created": MODEL_CREATED, "owned_by": d.owned_by()})
}

/// GET models: the configured models in OpenAI's list shape (no rate-limit headers: listing models is not
/// an inference call).
pub(crate) fn models(ctx: &Ctx, d: &impl Dialect, kind: Option<FaultKind>) -> Response {
    let data: Vec<Value> = ctx.handle.config().models.iter().map(|m| model_json(m, d)).collect();
    json_ok(ctx, kind, &d.headers(ctx), &json!({"object": "list", "data": data}))
}

/// GET models/{id}.
pub(crate) fn model(ctx: &Ctx, id: &str, d: &impl Dialect, kind: Option<FaultKind>) -> Response {
    if !ctx.handle.config().models.iter().any(|m| m == id) {
        return d.error(ctx, ApiError::ModelNotFound(id.to_string()));
    }
    json_ok(ctx, kind, &d.headers(ctx), &model_json(id, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_any_prefix() {
        assert!(matches!(route("/v1/chat/completions"), Route::Chat));
        assert!(matches!(route("/openai/v1/chat/completions/"), Route::Chat));
        assert!(matches!(route("/x/embeddings"), Route::Embeddings));
        assert!(matches!(route("/v1/models"), Route::Models));
        assert!(matches!(route("/v1/models/gpt-4o"), Route::Model(m) if m == "gpt-4o"));
        assert!(matches!(route("/v1/other"), Route::Unknown));
    }

    #[test]
    fn tool_message_must_follow_a_call() {
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_x", "content": "r"}]});
        let e = parse_chat(&body).err().unwrap();
        assert_eq!(e.status(), 400);
        let body = json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "call_x", "type": "function",
                "function": {"name": "f", "arguments": {"a": 1}}}]}]});
        let e = parse_chat(&body).err().unwrap();
        assert!(matches!(e, ApiError::Invalid { message, .. } if message.contains("expected a string")));
    }

    #[test]
    fn stream_options_need_stream() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": true}});
        assert!(parse_chat(&body).is_err());
    }

    #[test]
    fn data_urls() {
        let img = parse_image_url("data:image/png;base64,YWJj", "p").unwrap();
        assert_eq!(img, Image::Inline { media_type: "image/png".into(), data: b"abc".to_vec() });
        assert!(parse_image_url("ftp://x", "p").is_err());
        assert!(parse_image_url("data:image/png;base64,@@", "p").is_err());
    }
}
