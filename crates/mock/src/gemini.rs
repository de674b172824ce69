//! The Gemini flavour, in both of Google's path styles: the Gemini API (`/v1beta/models/{model}:…`, API key
//! in `x-goog-api-key` or `?key=`) and Gemini on Vertex AI
//! (`/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:…`, an OAuth token as Bearer; also
//! "express mode", `/v1/publishers/google/models/{model}:…` with an API key). Routes: `:generateContent`,
//! `:streamGenerateContent` (`alt=sse`: `data:` frames with CRLF, each a whole response with only the new
//! text, no end marker; without it, one JSON array), `:countTokens`, `:embedContent`,
//! `:batchEmbedContents`, Vertex's `:predict`, and `GET /v1beta/models` (paged) and `/v1beta/models/{m}`.
//! Claude on Vertex (`/v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict` and
//! `:streamRawPredict`) is the Anthropic flavour's Messages API behind Vertex's differences: the model in the
//! path (never the body), `anthropic_version: "vertex-2023-10-16"` in the body instead of a header, and a
//! Bearer token; answers and errors are Anthropic's.
//! `POST /token` stands in for Google's OAuth token endpoint (`oauth2.googleapis.com/token`), so that a
//! service account whose `token_uri` points here gets the Bearer token Vertex paths then accept.
//!
//! Like the real service it refuses what a translation bug produces: unknown fields (`Unknown name "x":
//! Cannot find field.`), roles other than `user`/`model`, empty `parts`, function responses that do not
//! match the previous turn's calls in number, non-object `args`/`response`, bad base64, and, for Gemini 3
//! models, a replayed function call without a `thoughtSignature`. Errors are Google RPC bodies
//! (`{"error":{"code","message","status","details"}}`); unknown paths get Google's HTML 404; an error after
//! a stream began is written as plain pretty-printed JSON, as Google does. There are no rate-limit headers
//! (Google sends none); a 429 says how long to wait in a `RetryInfo` detail.

use axum::body::Body;
use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::behaviour::{self, prompt_tokens, text_chunks, Conversation, Finish, Image, Message, Reply, Role, ToolCall, ToolChoice};
use crate::common::{
    b64_decode, b64_encode, bytes_response, context_numbers, echo_key_into, embedding, json_response, json_type, percent_decode,
    sniff_image, words, ApiError, Ctx,
};
use crate::faults::{gate, json_ok, stream_response, Frame, Framing};
use crate::ratelimit::wait;
use crate::FaultKind;

/// The prompt window the `[[context]]` directive names (Gemini 2.5's).
const CONTEXT_WINDOW: u64 = 1_048_576;
/// The dimensions of an embedding when the request names none (small, so tests stay fast).
const DEFAULT_DIMS: usize = 16;

/// Which of Google's path styles a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// `/v1beta/…` or `/v1/models/…`: an API key.
    Api,
    /// `/v1/projects/…/publishers/google/…`: an OAuth token.
    Vertex,
    /// `/v1/publishers/google/…`: Vertex with an API key.
    Express,
    /// `/v1/projects/…/publishers/anthropic/…`: Claude on Vertex, an OAuth token.
    VertexClaude,
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Generate(String),
    Stream(String),
    CountTokens(String),
    Embed(String),
    BatchEmbed(String),
    Predict(String),
    /// Claude on Vertex: `:rawPredict` (`false`) or `:streamRawPredict` (`true`).
    RawPredict(String, bool),
    Models,
    Model(String),
    Unknown,
}

/// Splits a path into its style and the part after the `…/models` collection.
fn split(path: &str) -> Option<(Style, &str)> {
    let p = path.trim_end_matches('/');
    for version in ["/v1beta", "/v1"] {
        if let Some(rest) = p.strip_prefix(version) {
            if rest == "/models" || rest.starts_with("/models/") {
                return Some((Style::Api, &rest["/models".len()..]));
            }
        }
    }
    for version in ["/v1beta1", "/v1"] {
        let Some(rest) = p.strip_prefix(version) else { continue };
        if let Some(m) = rest.strip_prefix("/publishers/google/models") {
            return Some((Style::Express, m));
        }
        // /projects/{p}/locations/{l}/publishers/google/models…
        let segs: Vec<&str> = rest.splitn(6, '/').collect();
        if segs.len() == 6 && segs[1] == "projects" && segs[3] == "locations" && !segs[2].is_empty() && !segs[4].is_empty() {
            if let Some(m) = segs[5].strip_prefix("publishers/google/models") {
                return Some((Style::Vertex, m));
            }
            if let Some(m) = segs[5].strip_prefix("publishers/anthropic/models") {
                return Some((Style::VertexClaude, m));
            }
        }
    }
    None
}

fn route(path: &str) -> (Option<Style>, Route) {
    let Some((style, rest)) = split(path) else { return (None, Route::Unknown) };
    if rest.is_empty() {
        return (Some(style), if style == Style::Api { Route::Models } else { Route::Unknown });
    }
    let Some(rest) = rest.strip_prefix('/') else { return (Some(style), Route::Unknown) };
    let rest = percent_decode(rest);
    let r = match rest.rsplit_once(':') {
        Some((m, method)) if !m.is_empty() && !m.contains('/') => {
            let m = m.to_string();
            match method {
                "rawPredict" if style == Style::VertexClaude => Route::RawPredict(m, false),
                "streamRawPredict" if style == Style::VertexClaude => Route::RawPredict(m, true),
                _ if style == Style::VertexClaude => Route::Unknown,
                "generateContent" => Route::Generate(m),
                "streamGenerateContent" => Route::Stream(m),
                "countTokens" => Route::CountTokens(m),
                "embedContent" if style != Style::Vertex => Route::Embed(m),
                "batchEmbedContents" if style == Style::Api => Route::BatchEmbed(m),
                "predict" if style != Style::Api => Route::Predict(m),
                _ => Route::Unknown,
            }
        }
        _ if !rest.contains('/') && style == Style::Api => Route::Model(rest),
        _ => Route::Unknown,
    };
    (Some(style), r)
}

/// The model a path names, for counting (suffix included; the caller strips it).
pub(crate) fn model_of(path: &str) -> Option<String> {
    match route(path).1 {
        Route::Generate(m)
        | Route::Stream(m)
        | Route::CountTokens(m)
        | Route::Embed(m)
        | Route::BatchEmbed(m)
        | Route::Predict(m)
        | Route::RawPredict(m, _) => Some(m),
        Route::Model(m) => Some(m),
        Route::Models | Route::Unknown => None,
    }
}

/// The `?key=` a Gemini API client may authenticate with instead of the header.
pub(crate) fn query_key(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "key" && !v.is_empty()).then(|| percent_decode(v))
    })
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    if ctx.path == "/token" {
        return token(&ctx);
    }
    let (style, route) = route(&ctx.path);
    let Some(style) = style.filter(|_| route != Route::Unknown) else { return error(&ctx, ApiError::NoRoute) };
    let want = match route {
        Route::Models | Route::Model(_) => Method::GET,
        _ => Method::POST,
    };
    if ctx.method != want {
        return error(&ctx, ApiError::MethodNotAllowed);
    }
    if let Err(e) = authenticate(&ctx, style) {
        return error(&ctx, e);
    }
    let kind = match gate(&ctx).await {
        Ok(k) => k,
        Err(e) => return error(&ctx, e),
    };
    match route {
        Route::Generate(_) => generate(&ctx, kind, false),
        Route::Stream(_) => generate(&ctx, kind, true),
        Route::CountTokens(_) => count_tokens(&ctx, kind),
        Route::Embed(_) => embed(&ctx, kind, false),
        Route::BatchEmbed(_) => embed(&ctx, kind, true),
        Route::Predict(_) => predict(&ctx, kind),
        Route::RawPredict(_, stream) => claude(ctx, kind, stream),
        Route::Models => models(&ctx, kind),
        Route::Model(m) => model(&ctx, &m, kind),
        Route::Unknown => error(&ctx, ApiError::NoRoute),
    }
}

/// The Gemini API and express mode read an API key (`x-goog-api-key` or `?key=`); Vertex an OAuth token.
fn authenticate(ctx: &Ctx, style: Style) -> Result<(), ApiError> {
    let header = |n: &str| ctx.header(n).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    let presented = match style {
        Style::Api | Style::Express => header("x-goog-api-key").or_else(|| query_key(ctx.query.as_deref())),
        Style::Vertex | Style::VertexClaude => header("authorization").and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string()).filter(|t| !t.is_empty())
        }),
    };
    match (presented, &ctx.handle.config().require_key) {
        (None, _) => Err(ApiError::MissingKey),
        // One of our own tokens that `/token` never issued: forged, or from another mock run.
        (Some(t), _)
            if matches!(style, Style::Vertex | Style::VertexClaude) && t.starts_with(MOCK_TOKEN_PREFIX) && !ctx.handle.token_issued(&t) =>
        {
            Err(ApiError::BadKey)
        }
        (Some(k), Some(want)) if &k != want => Err(ApiError::BadKey),
        _ => Ok(()),
    }
}

/// The `anthropic_version` Vertex's Claude endpoints take.
const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// Claude on Vertex: Vertex's own checks, then the Anthropic flavour's Messages API on the body with the
/// path's model put in (and `stream` as the method says), answered and refused in Anthropic's shapes.
fn claude(mut ctx: Ctx, kind: Option<FaultKind>, stream: bool) -> Response {
    let Some(Value::Object(mut body)) = ctx.body.take() else {
        return crate::anthropic::error(
            &ctx,
            ApiError::invalid("There was an error parsing the body of your request: it is not valid JSON"),
        );
    };
    if body.contains_key("model") {
        return crate::anthropic::error(&ctx, ApiError::invalid("model: Extra inputs are not permitted"));
    }
    match body.remove("anthropic_version") {
        Some(Value::String(v)) if v == VERTEX_ANTHROPIC_VERSION => {}
        None => return crate::anthropic::error(&ctx, ApiError::invalid("anthropic_version: Field required")),
        Some(_) => {
            return crate::anthropic::error(
                &ctx,
                ApiError::invalid(format!("anthropic_version: Input should be '{VERTEX_ANTHROPIC_VERSION}'")),
            )
        }
    }
    if body.get("stream").and_then(Value::as_bool).unwrap_or(false) != stream {
        let what = if stream { "streamRawPredict needs \"stream\": true" } else { "rawPredict does not stream; use streamRawPredict" };
        return crate::anthropic::error(&ctx, ApiError::invalid(what));
    }
    body.insert("model".into(), Value::String(ctx.model_or_empty().to_string()));
    ctx.body = Some(Value::Object(body));
    crate::anthropic::messages(&ctx, kind)
}

/// The prefix of the access tokens `/token` issues. A Vertex request that presents one the mock did not
/// issue is refused as Google refuses an expired or revoked token; other Bearer tokens pass as before (the
/// mock checks how a token is sent, not who signed it).
pub(crate) const MOCK_TOKEN_PREFIX: &str = "ya29.mock-";

/// The only grant a service account uses.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google's OAuth error body (`{"error","error_description"}`, not the RPC shape of the APIs).
fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    json_response(status, &[], &json!({"error": error, "error_description": description}))
}

/// `POST /token` as Google answers a service account: a form with `grant_type` = the JWT-bearer grant and
/// `assertion` = an RS256 JWT whose claims name the issuer, a scope, this endpoint as audience and at most
/// an hour's validity around now, answered with `{"access_token","expires_in","token_type":"Bearer"}`. The
/// signature is not verified (the mock does not know the key); its shape and the claims are, so a gateway
/// that sends a malformed assertion gets Google's `invalid_grant`.
fn token(ctx: &Ctx) -> Response {
    if ctx.method != Method::POST {
        return error(ctx, ApiError::MethodNotAllowed);
    }
    let form_type = ctx.header("content-type").unwrap_or_default().to_ascii_lowercase();
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        return oauth_error(400, "invalid_request", "Invalid request: the body must be application/x-www-form-urlencoded.");
    }
    let text = String::from_utf8_lossy(&ctx.raw);
    let field = |name: &str| {
        text.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(&v.replace('+', " ")))
        })
    };
    match field("grant_type") {
        Some(g) if g == JWT_BEARER => {}
        Some(g) => return oauth_error(400, "unsupported_grant_type", &format!("Invalid grant_type: {g}")),
        None => return oauth_error(400, "invalid_request", "Missing required parameter: grant_type"),
    }
    let Some(assertion) = field("assertion") else {
        return oauth_error(400, "invalid_request", "Missing required parameter: assertion");
    };
    if let Err(why) = check_assertion(&assertion) {
        return oauth_error(400, "invalid_grant", &format!("Invalid JWT: {why}"));
    }
    let token = ctx.handle.issue_token();
    json_response(200, &[], &json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}))
}

/// The checks Google makes on an assertion that the mock can make without the key.
fn check_assertion(jwt: &str) -> Result<(), String> {
    use base64::Engine;
    let decode = |part: &str| -> Result<Value, String> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| "a part is not base64url".to_string())?;
        serde_json::from_slice(&raw).map_err(|_| "a part is not JSON".to_string())
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    let [head, claims, sig] = parts.as_slice() else { return Err("not a JWT of three parts".into()) };
    let head = decode(head)?;
    if head["alg"] != "RS256" {
        return Err(format!("alg must be RS256, got {}", head["alg"]));
    }
    if sig.is_empty() || base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).is_err() {
        return Err("Invalid JWT Signature.".into());
    }
    let c = decode(claims)?;
    for name in ["iss", "scope", "aud"] {
        if c[name].as_str().is_none_or(str::is_empty) {
            return Err(format!("the claim {name} is missing"));
        }
    }
    if c["aud"].as_str().is_none_or(|a| !a.ends_with("/token")) {
        return Err(format!("the audience {} is not this token endpoint", c["aud"]));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    match (c["iat"].as_i64(), c["exp"].as_i64()) {
        (Some(iat), Some(exp)) if exp > iat && exp - iat <= 3600 && (iat - now).abs() <= 300 => Ok(()),
        _ => Err(
            "Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."
                .into(),
        ),
    }
}

fn style_of(ctx: &Ctx) -> Style {
    route(&ctx.path).0.unwrap_or(Style::Api)
}

fn rpc_body(code: u16, status: &str, message: String, details: Vec<Value>) -> Value {
    let mut e = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        e["details"] = Value::Array(details);
    }
    json!({ "error": e })
}

fn bad_request(field: &str, description: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": field, "description": description}]})
}

/// Google's HTML page for a path no service answers.
fn html_404(ctx: &Ctx, status: u16) -> Response {
    let page = format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error {status} (Not Found)!!1</title>\n  <p><b>{status}.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>{}</code> was not found on this server.  <ins>That’s all we know.</ins>\n",
        ctx.path
    );
    bytes_response(status, "text/html; charset=UTF-8", &[], Body::from(page))
}

pub(crate) fn error(ctx: &Ctx, err: ApiError) -> Response {
    let model = ctx.model_or_empty();
    let vertex = style_of(ctx) == Style::Vertex;
    let (code, status, message, details): (u16, &str, String, Vec<Value>) = match &err {
        ApiError::NoRoute => return html_404(ctx, 404),
        ApiError::MethodNotAllowed => return html_404(ctx, 405),
        ApiError::Invalid { message, param } => {
            let details = param.as_deref().map(|p| vec![bad_request(p, message)]).unwrap_or_default();
            (400, "INVALID_ARGUMENT", message.clone(), details)
        }
        ApiError::MissingKey if vertex => (
            401,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.".into(),
            vec![json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CREDENTIALS_MISSING", "domain": "googleapis.com"})],
        ),
        ApiError::MissingKey => (
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.".into(),
            Vec::new(),
        ),
        ApiError::BadKey | ApiError::Status(401) if vertex => (
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.".into(),
            vec![json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED", "domain": "googleapis.com"})],
        ),
        ApiError::BadKey => (
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.".into(),
            vec![json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}})],
        ),
        ApiError::Status(401) => (401, "UNAUTHENTICATED", "Request had invalid authentication credentials.".into(), Vec::new()),
        ApiError::Status(403) => (403, "PERMISSION_DENIED", "The caller does not have permission".into(), Vec::new()),
        ApiError::ModelNotFound(m) => (404, "NOT_FOUND", not_found(m), Vec::new()),
        ApiError::Status(404) => (404, "NOT_FOUND", not_found(model), Vec::new()),
        ApiError::ContextLength { prompt_tokens, window } => {
            let (window, tokens) = context_numbers(*prompt_tokens, *window, CONTEXT_WINDOW);
            (400, "INVALID_ARGUMENT", format!("The input token count ({tokens}) exceeds the maximum number of tokens allowed ({window})."), Vec::new())
        }
        ApiError::Quota => (
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.".into(),
            vec![
                json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
                    "quotaId": "GenerateContentPaidTierInputTokensPerModelPerDay", "quotaDimensions": {"location": "global", "model": model}}]}),
                json!({"@type": "type.googleapis.com/google.rpc.Help", "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}),
            ],
        ),
        ApiError::TooLarge | ApiError::Status(413) => {
            (400, "INVALID_ARGUMENT", "Request payload size exceeds the limit: 20971520 bytes.".into(), Vec::new())
        }
        ApiError::Status(400) => (400, "INVALID_ARGUMENT", "Request contains an invalid argument.".into(), Vec::new()),
        ApiError::Status(429) => {
            let delay = format!("{}s", wait(ctx).as_secs_f64());
            (
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).".into(),
                vec![json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})],
            )
        }
        ApiError::Status(500) => (
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting".into(),
            Vec::new(),
        ),
        ApiError::Status(504) => (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.".into(), Vec::new()),
        ApiError::Status(s @ (502 | 503 | 529)) => (*s, "UNAVAILABLE", "The model is overloaded. Please try again later.".into(), Vec::new()),
        ApiError::Status(s) if *s >= 500 => (*s, "INTERNAL", "Internal error encountered.".into(), Vec::new()),
        ApiError::Status(s) => (*s, "FAILED_PRECONDITION", format!("Request failed with status {s}."), Vec::new()),
    };
    let mut body = rpc_body(code, status, message, details);
    echo_key_into(ctx, &mut body, "/error/message");
    json_response(code, &[], &body)
}

fn not_found(model: &str) -> String {
    format!(
        "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
    )
}

fn unknown_name(name: &str, at: &str) -> ApiError {
    let at = if at.is_empty() { String::new() } else { format!(" at '{at}'") };
    ApiError::invalid(format!("Invalid JSON payload received. Unknown name \"{name}\"{at}: Cannot find field."))
}

/// Refuses fields the proto does not have, under either spelling proto3 JSON accepts.
fn known_fields(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), ApiError> {
    for k in obj.keys() {
        let camel = to_camel(k);
        if !allowed.contains(&camel.as_str()) {
            return Err(unknown_name(k, at));
        }
    }
    Ok(())
}

fn to_camel(k: &str) -> String {
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

fn get<'a>(o: &'a Map<String, Value>, camel: &str) -> Option<&'a Value> {
    o.get(camel).or_else(|| {
        let snake: String =
            camel.chars().flat_map(|c| if c.is_ascii_uppercase() { vec!['_', c.to_ascii_lowercase()] } else { vec![c] }).collect();
        o.get(&snake)
    })
}

const REQUEST_FIELDS: [&str; 8] =
    ["contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "cachedContent", "labels"];
const CONFIG_FIELDS: [&str; 22] = [
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "mediaResolution",
    "speechConfig",
    "enableEnhancedCivicAnswers",
    "imageConfig",
    "routingConfig",
    "audioTimestamp",
];
const PART_FIELDS: [&str; 10] = [
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "thought",
    "thoughtSignature",
    "executableCode",
    "codeExecutionResult",
    "videoMetadata",
];

/// Parses and validates a `GenerateContentRequest` (also the body of `:countTokens`).
fn parse_request(body: &Value, model: &str) -> Result<Conversation, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid(format!("Invalid JSON payload received. Expected an object, got {}.", json_type(body))))?;
    known_fields(obj, &REQUEST_FIELDS, "")?;
    let mut conv = Conversation { n: 1, ..Conversation::default() };
    let contents = match get(obj, "contents") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) | None => {
            return Err(ApiError::invalid_param("* GenerateContentRequest.contents: contents is not specified\n", "contents"))
        }
        Some(other) => return Err(ApiError::invalid(format!("Invalid value at 'contents' ({}), expected a list", json_type(other)))),
    };
    if let Some(si) = get(obj, "systemInstruction").filter(|v| !v.is_null()) {
        for p in si.get("parts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                conv.system.push(t.to_string());
            }
        }
    }
    let signs = model.strip_prefix("gemini-").and_then(|r| r.chars().next()).and_then(|c| c.to_digit(10)).is_some_and(|v| v >= 3);
    let mut prev_calls: usize = 0;
    for (i, c) in contents.iter().enumerate() {
        let at = format!("contents[{i}]");
        let co = c.as_object().ok_or_else(|| ApiError::invalid(format!("Invalid value at '{at}', expected a Content object")))?;
        known_fields(co, &["role", "parts"], &at)?;
        let role = match co.get("role").and_then(Value::as_str) {
            None | Some("") | Some("user") => Role::User,
            Some("model") => Role::Assistant,
            Some(_) => return Err(ApiError::invalid_param("Please use a valid role: user, model.", format!("{at}.role"))),
        };
        let parts = match co.get("parts") {
            Some(Value::Array(p)) if !p.is_empty() => p,
            _ => {
                return Err(ApiError::invalid_param(
                    format!("* GenerateContentRequest.{at}.parts: contents.parts must not be empty.\n"),
                    format!("{at}.parts"),
                ))
            }
        };
        let mut msg = Message::new(role);
        let mut calls_here = 0usize;
        let mut responses = 0usize;
        for (j, p) in parts.iter().enumerate() {
            let pat = format!("{at}.parts[{j}]");
            let po = p.as_object().ok_or_else(|| ApiError::invalid(format!("Invalid value at '{pat}', expected a Part object")))?;
            known_fields(po, &PART_FIELDS, &pat)?;
            if let Some(t) = get(po, "text") {
                let t = t
                    .as_str()
                    .ok_or_else(|| ApiError::invalid(format!("Invalid value at '{pat}.text' ({}), expected a string", json_type(t))))?;
                if get(po, "thought").and_then(Value::as_bool) != Some(true) {
                    msg.texts.push(t.to_string());
                }
            } else if let Some(d) = get(po, "inlineData") {
                let mime = d.get("mimeType").or_else(|| d.get("mime_type")).and_then(Value::as_str).unwrap_or("");
                if mime.is_empty() {
                    return Err(ApiError::invalid_param(
                        "Unable to submit request because it has an empty inlineData.mimeType.",
                        format!("{pat}.inline_data.mime_type"),
                    ));
                }
                let data = d.get("data").and_then(Value::as_str).unwrap_or("");
                let bytes = b64_decode(data).map_err(|_| {
                    ApiError::invalid(format!(
                        "Invalid value at '{pat}.inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"{}\"",
                        truncated(data)
                    ))
                })?;
                if data.starts_with("data:") || bytes.is_empty() {
                    return Err(ApiError::invalid(format!(
                        "Invalid value at '{pat}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                    )));
                }
                let sniffed = sniff_image(&bytes);
                let media_type = if mime.starts_with("image/") && sniffed != "application/octet-stream" {
                    sniffed.to_string()
                } else {
                    mime.to_string()
                };
                msg.images.push(Image::Inline { media_type, data: bytes });
            } else if let Some(d) = get(po, "fileData") {
                let uri = d.get("fileUri").or_else(|| d.get("file_uri")).and_then(Value::as_str).unwrap_or("");
                if uri.is_empty() {
                    return Err(ApiError::invalid_param("fileData.fileUri is required.", format!("{pat}.file_data.file_uri")));
                }
                msg.images.push(Image::Url(uri.to_string()));
            } else if let Some(f) = get(po, "functionCall") {
                if role != Role::Assistant {
                    return Err(ApiError::invalid_param(
                        "Please ensure that function call turn comes immediately after a user turn or after a function response turn.",
                        pat,
                    ));
                }
                let name = f.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    return Err(ApiError::invalid_param(
                        "* GenerateContentRequest.contents.parts.function_call.name: Name cannot be empty.\n",
                        format!("{pat}.function_call.name"),
                    ));
                }
                let args = f.get("args").unwrap_or(&Value::Null);
                if !(args.is_object() || args.is_null()) {
                    return Err(ApiError::invalid(format!(
                        "Invalid value at '{pat}.function_call.args' ({}), expected a Struct",
                        json_type(args)
                    )));
                }
                if signs && calls_here == 0 && get(po, "thoughtSignature").and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(ApiError::invalid(format!(
                        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                        i + 1
                    )));
                }
                calls_here += 1;
                msg.tool_calls
                    .push(ToolCall { name: name.to_string(), arguments: if args.is_null() { "{}".into() } else { args.to_string() } });
            } else if let Some(r) = get(po, "functionResponse") {
                let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    return Err(ApiError::invalid_param(
                        "* GenerateContentRequest.contents.parts.function_response.name: Name cannot be empty.\n",
                        format!("{pat}.function_response.name"),
                    ));
                }
                let response = r.get("response").unwrap_or(&Value::Null);
                let text = match response {
                    Value::Object(o) if o.len() == 1 => match o.values().next() {
                        Some(Value::String(s)) => s.clone(),
                        _ => response.to_string(),
                    },
                    Value::Object(_) => response.to_string(),
                    other => {
                        return Err(ApiError::invalid(format!(
                            "Invalid value at '{pat}.function_response.response' ({}), expected a Struct",
                            json_type(other)
                        )))
                    }
                };
                responses += 1;
                msg.tool_results.push(text);
            } else if get(po, "executableCode").is_some() || get(po, "codeExecutionResult").is_some() {
                msg.texts.push(String::new());
            }
        }
        if prev_calls > 0 && responses != prev_calls {
            return Err(ApiError::invalid(
                "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.",
            ));
        }
        if responses > 0 && prev_calls == 0 {
            return Err(ApiError::invalid("Please ensure that function response turn comes immediately after a function call turn."));
        }
        prev_calls = calls_here;
        conv.messages.push(msg);
    }
    if let Some(tools) = get(obj, "tools").filter(|v| !v.is_null()) {
        let tools = tools.as_array().ok_or_else(|| ApiError::invalid("Invalid value at 'tools', expected a list"))?;
        for (k, t) in tools.iter().enumerate() {
            let decls = t.get("functionDeclarations").or_else(|| t.get("function_declarations")).and_then(Value::as_array);
            for (d, decl) in decls.into_iter().flatten().enumerate() {
                let at = format!("tools[{k}].function_declarations[{d}]");
                let name = decl.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    return Err(ApiError::invalid_param(
                        format!("* GenerateContentRequest.{at}.name: Name cannot be empty.\n"),
                        format!("{at}.name"),
                    ));
                }
                let legacy = decl.get("parameters").is_some_and(|v| !v.is_null());
                let json_schema =
                    decl.get("parametersJsonSchema").or_else(|| decl.get("parameters_json_schema")).is_some_and(|v| !v.is_null());
                if legacy && json_schema {
                    return Err(ApiError::invalid_param("parameters and parameters_json_schema cannot both be set.", at.clone()));
                }
                if legacy {
                    check_openapi_schema(&decl["parameters"], &format!("{at}.parameters"))?;
                }
                conv.tools.push(name.to_string());
            }
        }
    }
    if let Some(fc) = get(obj, "toolConfig").and_then(|t| t.get("functionCallingConfig").or_else(|| t.get("function_calling_config"))) {
        let allowed: Vec<&str> =
            fc.get("allowedFunctionNames").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        conv.tool_choice = match fc.get("mode").and_then(Value::as_str) {
            None | Some("AUTO" | "MODE_UNSPECIFIED" | "VALIDATED") => ToolChoice::Auto,
            Some("NONE") => ToolChoice::None,
            Some("ANY") => match allowed.first() {
                Some(n) => ToolChoice::Named((*n).to_string()),
                None => ToolChoice::Required,
            },
            Some(other) => return Err(ApiError::invalid(format!("Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), \"{other}\""))),
        };
    }
    if let Some(gc) = get(obj, "generationConfig").filter(|v| !v.is_null()) {
        let g =
            gc.as_object().ok_or_else(|| ApiError::invalid("Invalid value at 'generation_config', expected a GenerationConfig object"))?;
        known_fields(g, &CONFIG_FIELDS, "generation_config")?;
        if let Some(t) = get(g, "temperature") {
            match t.as_f64() {
                Some(x) if (0.0..=2.0).contains(&x) => {}
                _ => {
                    return Err(ApiError::invalid_param(
                        "* GenerateContentRequest.generation_config.temperature: must be in the range [0.0, 2.0]\n",
                        "generation_config.temperature",
                    ))
                }
            }
        }
        if let Some(n) = get(g, "maxOutputTokens") {
            match n.as_u64() {
                Some(n) if n >= 1 => conv.max_tokens = Some(n),
                _ => {
                    return Err(ApiError::invalid_param(
                        "* GenerateContentRequest.generation_config.max_output_tokens: must be positive\n",
                        "generation_config.max_output_tokens",
                    ))
                }
            }
        }
        if let Some(s) = get(g, "stopSequences") {
            let s =
                s.as_array().ok_or_else(|| ApiError::invalid("Invalid value at 'generation_config.stop_sequences', expected a list"))?;
            if s.len() > 5 {
                return Err(ApiError::invalid_param(
                    "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed\n",
                    "generation_config.stop_sequences",
                ));
            }
            conv.stop = s.iter().filter_map(Value::as_str).map(str::to_string).collect();
        }
        if let Some(c) = get(g, "candidateCount") {
            match c.as_u64() {
                Some(c @ 1..=8) => conv.n = u32::try_from(c).unwrap_or(1),
                _ => {
                    return Err(ApiError::invalid_param(
                        "* GenerateContentRequest.generation_config.candidate_count: must be between 1 and 8\n",
                        "generation_config.candidate_count",
                    ))
                }
            }
        }
        let mime = get(g, "responseMimeType").and_then(Value::as_str).unwrap_or("text/plain");
        let schema = get(g, "responseSchema").is_some_and(|v| !v.is_null());
        let json_schema = get(g, "responseJsonSchema").is_some_and(|v| !v.is_null());
        if schema && json_schema {
            return Err(ApiError::invalid_param("response_schema and response_json_schema cannot both be set.", "generation_config"));
        }
        if (schema || json_schema) && mime != "application/json" && mime != "text/x.enum" {
            return Err(ApiError::invalid_param("* GenerateContentRequest.generation_config.response_mime_type: response_mime_type must be application/json when response_schema is set\n", "generation_config.response_mime_type"));
        }
        match mime {
            "text/plain" => {}
            "application/json" => conv.json_mode = true,
            other => return Err(ApiError::invalid_param(format!("* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`, got {other}.\n"), "generation_config.response_mime_type")),
        }
        if schema {
            check_openapi_schema(&g["responseSchema"], "generation_config.response_schema")?;
        }
    }
    Ok(conv)
}

/// `parameters` / `responseSchema` take Google's OpenAPI subset, which has no `additionalProperties`
/// or `$schema`: the error a JSON Schema sent in the wrong field gets.
fn check_openapi_schema(v: &Value, at: &str) -> Result<(), ApiError> {
    if let Value::Object(o) = v {
        for (k, sub) in o {
            if matches!(k.as_str(), "additionalProperties" | "$schema" | "$ref" | "$defs" | "const") {
                return Err(unknown_name(k, at));
            }
            if k == "properties" {
                for (name, p) in sub.as_object().into_iter().flatten() {
                    check_openapi_schema(p, &format!("{at}.properties[{name}].value"))?;
                }
            } else if k == "items" {
                check_openapi_schema(sub, &format!("{at}.items"))?;
            }
        }
    }
    Ok(())
}

fn truncated(s: &str) -> String {
    s.chars().take(32).collect()
}

fn finish_reason(r: &Reply) -> &'static str {
    match r.finish {
        Finish::Stop | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
        Finish::Filter => "SAFETY",
    }
}

fn usage_json(r: &Reply, final_frame: bool) -> Value {
    let u = r.usage;
    if !final_frame {
        return json!({"promptTokenCount": u.prompt, "totalTokenCount": u.prompt,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u.prompt}]});
    }
    let mut v = json!({"promptTokenCount": u.prompt, "candidatesTokenCount": u.completion, "totalTokenCount": u.prompt + u.completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u.prompt}]});
    if u.cached > 0 {
        v["cachedContentTokenCount"] = json!(u.cached);
        v["cacheTokensDetails"] = json!([{"modality": "TEXT", "tokenCount": u.cached}]);
    }
    v
}

fn safety_ratings(blocked: bool) -> Value {
    let mut r = vec![
        json!({"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"}),
        json!({"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}),
        json!({"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"}),
    ];
    if blocked {
        r.push(json!({"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true}));
    } else {
        r.push(json!({"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}));
    }
    Value::Array(r)
}

/// The model's parts for tool calls: whole calls, no ids (as Gemini 2.5 answers); Gemini 3 signs the first.
fn call_parts(calls: &[ToolCall], signs: bool) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let args = serde_json::from_str::<Value>(&c.arguments).ok().filter(Value::is_object).unwrap_or_else(|| json!({}));
            let mut p = json!({"functionCall": {"name": c.name, "args": args}});
            if signs && i == 0 {
                p["thoughtSignature"] = json!(b64_encode(format!("sig:{}", c.name).as_bytes()));
            }
            p
        })
        .collect()
}

fn generate(ctx: &Ctx, kind: Option<FaultKind>, stream: bool) -> Response {
    let model = ctx.model_or_empty().to_string();
    let Some(body) = ctx.body.as_ref() else {
        return error(ctx, ApiError::invalid("Invalid JSON payload received. Unexpected end of string. Expected an object key or }."));
    };
    let conv = match parse_request(body, &model) {
        Ok(c) => c,
        Err(e) => return error(ctx, e),
    };
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
    let signs = model.strip_prefix("gemini-").and_then(|r| r.chars().next()).and_then(|c| c.to_digit(10)).is_some_and(|v| v >= 3);
    let response_id = ctx.request_id.chars().take(22).collect::<String>();
    let n = conv.n.max(1);
    let envelope = |candidates: Vec<Value>, usage: Value| json!({"candidates": candidates, "usageMetadata": usage, "modelVersion": model, "responseId": response_id});
    let filtered = reply.finish == Finish::Filter;
    let final_candidate = |i: u32, parts: Option<Vec<Value>>| {
        let mut c = json!({"finishReason": finish_reason(&reply), "index": i});
        if let Some(parts) = parts {
            c["content"] = json!({"role": "model", "parts": parts});
        }
        if filtered {
            c["safetyRatings"] = safety_ratings(true);
        }
        c
    };
    if !stream {
        let parts = if filtered {
            None
        } else if reply.tool_calls.is_empty() {
            Some(vec![json!({ "text": reply.text })])
        } else {
            Some(call_parts(&reply.tool_calls, signs))
        };
        let candidates = (0..n).map(|i| final_candidate(i, parts.clone())).collect();
        return json_ok(ctx, kind, &[], &envelope(candidates, usage_json(&reply, true)));
    }
    let mut frames = Vec::new();
    if filtered {
        frames.push(Frame::data(&envelope((0..n).map(|i| final_candidate(i, None)).collect(), usage_json(&reply, true))));
    } else if reply.tool_calls.is_empty() {
        let pieces = text_chunks(&reply.text);
        let (last, rest) = pieces.split_last().map_or((&"", &[][..]), |(l, r)| (l, r));
        for piece in rest {
            let cands = (0..n).map(|i| json!({"content": {"role": "model", "parts": [{"text": piece}]}, "index": i})).collect();
            frames.push(Frame::data(&envelope(cands, usage_json(&reply, false))).content());
        }
        let cands = (0..n).map(|i| final_candidate(i, Some(vec![json!({ "text": last })]))).collect();
        frames.push(Frame::data(&envelope(cands, usage_json(&reply, true))).content());
    } else {
        let cands = (0..n).map(|i| final_candidate(i, Some(call_parts(&reply.tool_calls, signs)))).collect();
        frames.push(Frame::data(&envelope(cands, usage_json(&reply, true))).content());
    }
    let mut err = rpc_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.".into(), Vec::new());
    echo_key_into(ctx, &mut err, "/error/message");
    let pretty = serde_json::to_string_pretty(&err).unwrap_or_default() + "\n";
    let err = Frame::verbatim(pretty);
    if ctx.query_param("alt").as_deref() != Some("sse") {
        // Without alt=sse Google streams one JSON array whose elements arrive as they are made.
        let items: Vec<Value> = frames.iter().filter_map(|f| serde_json::from_str(&f.data).ok()).collect();
        return json_ok(ctx, kind, &[], &Value::Array(items));
    }
    stream_response(ctx, Framing::SseCrlf, frames, err, kind, Vec::new())
}

fn count_tokens(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let model = ctx.model_or_empty().to_string();
    let Some(body) = ctx.body.as_ref() else { return error(ctx, ApiError::invalid("Invalid JSON payload received.")) };
    // `{"contents": …}` or `{"generateContentRequest": {…}}`.
    let inner = body.get("generateContentRequest").unwrap_or(body);
    let mut req = inner.clone();
    if let Some(o) = req.as_object_mut() {
        o.remove("model");
    }
    match parse_request(&req, &model) {
        Ok(conv) => json_ok(
            ctx,
            kind,
            &[],
            &json!({"totalTokens": prompt_tokens(&conv), "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens(&conv)}]}),
        ),
        Err(e) => error(ctx, e),
    }
}

fn content_text(c: Option<&Value>) -> Result<String, ApiError> {
    let parts = c.and_then(|c| c.get("parts")).and_then(Value::as_array).filter(|p| !p.is_empty());
    let Some(parts) = parts else {
        return Err(ApiError::invalid_param("* EmbedContentRequest.content: contents is not specified\n", "content"));
    };
    Ok(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" "))
}

fn dims(v: Option<&Value>) -> Result<usize, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(DEFAULT_DIMS),
        Some(d) => match d.as_u64() {
            Some(d @ 1..=3072) => Ok(usize::try_from(d).unwrap_or(DEFAULT_DIMS)),
            _ => Err(ApiError::invalid_param("output_dimensionality must be between 1 and 3072", "output_dimensionality")),
        },
    }
}

fn embed(ctx: &Ctx, kind: Option<FaultKind>, batch: bool) -> Response {
    let model = ctx.model_or_empty().to_string();
    if !ctx.model_known(&model) {
        return error(ctx, ApiError::ModelNotFound(model));
    }
    let Some(body) = ctx.body.as_ref().and_then(Value::as_object) else {
        return error(ctx, ApiError::invalid("Invalid JSON payload received."));
    };
    if matches!(kind, Some(FaultKind::StreamError | FaultKind::LateStreamError)) {
        return error(ctx, ApiError::Status(500));
    }
    let one = |r: &Map<String, Value>| -> Result<Value, ApiError> {
        known_fields(r, &["model", "content", "taskType", "title", "outputDimensionality"], "")?;
        let text = content_text(r.get("content"))?;
        let d = dims(get(r, "outputDimensionality"))?;
        Ok(json!({ "values": embedding(&text, d) }))
    };
    let result = if batch {
        let Some(requests) = body.get("requests").and_then(Value::as_array) else {
            return error(ctx, ApiError::invalid_param("* BatchEmbedContentsRequest.requests: requests is not specified\n", "requests"));
        };
        let mut out = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            let Some(r) = r.as_object() else { return error(ctx, ApiError::invalid(format!("Invalid value at 'requests[{i}]'"))) };
            let named = r.get("model").and_then(Value::as_str).unwrap_or("");
            let (named, _) = crate::knobs::split_model_suffix(named.strip_prefix("models/").unwrap_or(named));
            if named != model {
                return error(
                    ctx,
                    ApiError::invalid_param(
                        format!("* BatchEmbedContentsRequest.requests[{i}].model: the model of every request must be models/{model}\n"),
                        format!("requests[{i}].model"),
                    ),
                );
            }
            match one(r) {
                Ok(v) => out.push(v),
                Err(e) => return error(ctx, e),
            }
        }
        Ok(json!({ "embeddings": out }))
    } else {
        one(body).map(|v| json!({ "embedding": v }))
    };
    match result {
        Ok(v) => json_ok(ctx, kind, &[], &v),
        Err(e) => error(ctx, e),
    }
}

/// Vertex's `:predict` for text embedding models.
fn predict(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let model = ctx.model_or_empty().to_string();
    if !ctx.model_known(&model) {
        return error(ctx, ApiError::ModelNotFound(model));
    }
    let Some(instances) = ctx.body.as_ref().and_then(|b| b.get("instances")).and_then(Value::as_array) else {
        return error(ctx, ApiError::invalid_param("instances is required", "instances"));
    };
    let d = match dims(ctx.body.as_ref().and_then(|b| b.get("parameters")).and_then(|p| p.get("outputDimensionality"))) {
        Ok(d) => d,
        Err(e) => return error(ctx, e),
    };
    let mut predictions = Vec::with_capacity(instances.len());
    let mut chars = 0usize;
    for (i, inst) in instances.iter().enumerate() {
        let Some(text) = inst.get("content").and_then(Value::as_str) else {
            return error(ctx, ApiError::invalid_param(format!("instances[{i}].content is required"), format!("instances[{i}].content")));
        };
        chars += text.chars().count();
        predictions
            .push(json!({"embeddings": {"statistics": {"truncated": false, "token_count": words(text)}, "values": embedding(text, d)}}));
    }
    json_ok(ctx, kind, &[], &json!({"predictions": predictions, "metadata": {"billableCharacterCount": chars}}))
}

fn is_embedding_model(m: &str) -> bool {
    m.contains("embedding")
}

fn model_json(m: &str) -> Value {
    let methods: &[&str] = if is_embedding_model(m) {
        &["embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"]
    } else {
        &["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]
    };
    let display: String = m
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut v = json!({"name": format!("models/{m}"), "version": "001", "displayName": display,
        "description": format!("{display}, served by switchyard-mock."),
        "inputTokenLimit": if is_embedding_model(m) { 2048 } else { CONTEXT_WINDOW },
        "outputTokenLimit": if is_embedding_model(m) { 1 } else { 65_536 },
        "supportedGenerationMethods": methods});
    if !is_embedding_model(m) {
        v["temperature"] = json!(1);
        v["topP"] = json!(0.95);
        v["topK"] = json!(64);
        v["maxTemperature"] = json!(2);
    }
    v
}

fn models(ctx: &Ctx, kind: Option<FaultKind>) -> Response {
    let all = &ctx.handle.config().models;
    let size = ctx.query_param("pageSize").and_then(|s| s.parse::<usize>().ok()).filter(|s| *s > 0).unwrap_or(50).min(1000);
    let start = match ctx.query_param("pageToken").filter(|t| !t.is_empty()) {
        Some(t) => match b64_decode(&t).ok().and_then(|b| String::from_utf8(b).ok()).and_then(|s| s.parse::<usize>().ok()) {
            Some(s) => s,
            None => return error(ctx, ApiError::invalid_param("Invalid page token.", "page_token")),
        },
        None => 0,
    };
    let end = (start + size).min(all.len());
    let page: Vec<Value> = all.get(start..end).unwrap_or(&[]).iter().map(|m| model_json(m)).collect();
    let mut body = json!({ "models": page });
    if end < all.len() {
        body["nextPageToken"] = json!(b64_encode(end.to_string().as_bytes()));
    }
    json_ok(ctx, kind, &[], &body)
}

fn model(ctx: &Ctx, id: &str, kind: Option<FaultKind>) -> Response {
    let id = id.strip_prefix("models/").unwrap_or(id);
    if !ctx.handle.config().models.iter().any(|m| m == id) {
        let body = rpc_body(404, "NOT_FOUND", format!("models/{id} is not found for API version v1beta"), Vec::new());
        return json_response(404, &[], &body);
    }
    json_ok(ctx, kind, &[], &model_json(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_in_both_styles() {
        assert_eq!(
            route("/v1beta/models/gemini-2.5-flash:generateContent"),
            (Some(Style::Api), Route::Generate("gemini-2.5-flash".into()))
        );
        assert_eq!(
            route("/v1/models/gemini-2.5-flash:streamGenerateContent"),
            (Some(Style::Api), Route::Stream("gemini-2.5-flash".into()))
        );
        assert_eq!(
            route("/v1/projects/p1/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"),
            (Some(Style::Vertex), Route::Generate("gemini-2.5-pro".into()))
        );
        assert_eq!(
            route("/v1/publishers/google/models/gemini-2.5-pro:generateContent"),
            (Some(Style::Express), Route::Generate("gemini-2.5-pro".into()))
        );
        assert_eq!(route("/v1beta/models"), (Some(Style::Api), Route::Models));
        assert_eq!(route("/v1beta/models/gemini-2.5-flash"), (Some(Style::Api), Route::Model("gemini-2.5-flash".into())));
        assert_eq!(route("/v1beta/models/m:batchEmbedContents").1, Route::BatchEmbed("m".into()));
        assert_eq!(route("/v1/projects/p/locations/l/publishers/google/models/m:predict").1, Route::Predict("m".into()));
        assert_eq!(route("/v1/projects/p/locations/l/publishers/google/models/m:batchEmbedContents").1, Route::Unknown);
        assert_eq!(route("/v1beta/models/m:frobnicate").1, Route::Unknown);
        assert_eq!(route("/v1/chat/completions").1, Route::Unknown);
        assert_eq!(model_of("/v1beta/models/gemini-2.5-flash+kind=reset:generateContent").as_deref(), Some("gemini-2.5-flash+kind=reset"));
        assert_eq!(query_key(Some("alt=sse&key=AIza%2Bx")).as_deref(), Some("AIza+x"));
    }

    fn user(parts: Value) -> Value {
        json!({"contents": [{"role": "user", "parts": parts}]})
    }

    #[test]
    fn strict_like_the_real_service() {
        assert!(parse_request(&user(json!([{"text": "hi"}])), "m").is_ok());
        let e = parse_request(&json!({"contents": [{"parts": [{"text": "x"}]}], "max_tokens": 3}), "m").unwrap_err();
        assert!(matches!(&e, ApiError::Invalid { message, .. } if message.contains("Unknown name \"max_tokens\"")), "{e:?}");
        let e = parse_request(&json!({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"max_tokens": 3}}), "m").unwrap_err();
        assert!(matches!(&e, ApiError::Invalid { message, .. } if message.contains("generation_config")), "{e:?}");
        assert!(
            parse_request(&json!({"contents": [{"parts": [{"text": "x"}]}], "generation_config": {"max_output_tokens": 3}}), "m").is_ok()
        );
        assert!(parse_request(&json!({"contents": []}), "m").is_err());
        assert!(parse_request(&json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}), "m").is_err());
        assert!(parse_request(&json!({"contents": [{"role": "user", "parts": []}]}), "m").is_err());
        assert!(
            parse_request(&user(json!([{"inlineData": {"mimeType": "image/png", "data": "data:image/png;base64,AA=="}}])), "m").is_err()
        );
        // Calls and responses must pair up in number.
        let turns = |responses: Value| {
            json!({"contents": [{"role": "user", "parts": [{"text": "x"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"name": "f"}}]},
                {"role": "user", "parts": responses}]})
        };
        assert!(parse_request(&turns(json!([{"functionResponse": {"name": "f", "response": {"result": "a"}}}])), "m").is_err());
        let conv = parse_request(
            &turns(json!([{"functionResponse": {"name": "f", "response": {"result": "a"}}},
            {"functionResponse": {"name": "f", "response": {"x": 1, "y": 2}}}])),
            "m",
        )
        .unwrap();
        assert_eq!(conv.messages[2].tool_results, vec!["a".to_string(), r#"{"x":1,"y":2}"#.to_string()]);
        assert!(parse_request(
            &turns(json!([{"functionResponse": {"name": "f", "response": "a"}}, {"functionResponse": {"name": "f", "response": {}}}])),
            "m"
        )
        .is_err());
        // Gemini 3 wants the first replayed call signed.
        assert!(parse_request(
            &turns(json!([{"functionResponse": {"name": "f", "response": {}}}, {"functionResponse": {"name": "f", "response": {}}}])),
            "gemini-3-pro-preview"
        )
        .is_err());
        // JSON Schema in the OpenAPI-subset field is refused, in the JSON Schema field taken.
        let tools = |field: &str| json!({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{"name": "f", field: {"type": "object", "additionalProperties": false}}]}]});
        assert!(parse_request(&tools("parameters"), "m").is_err());
        assert!(parse_request(&tools("parametersJsonSchema"), "m").is_ok());
    }

    #[test]
    fn conversation_fields() {
        let conv = parse_request(
            &json!({"systemInstruction": {"parts": [{"text": "be brief"}]},
                "contents": [{"role": "user", "parts": [{"text": "hello"}, {"fileData": {"mimeType": "image/png", "fileUri": "gs://b/o.png"}}]}],
                "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["b"]}},
                "generationConfig": {"maxOutputTokens": 7, "stopSequences": ["x"], "candidateCount": 2, "responseMimeType": "application/json"}}),
            "m",
        )
        .unwrap();
        assert_eq!(conv.system, vec!["be brief".to_string()]);
        assert_eq!(conv.messages[0].images, vec![Image::Url("gs://b/o.png".into())]);
        assert_eq!(conv.tools, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(conv.tool_choice, ToolChoice::Named("b".into()));
        assert_eq!((conv.max_tokens, conv.stop.clone(), conv.n, conv.json_mode), (Some(7), vec!["x".to_string()], 2, true));
    }
}
