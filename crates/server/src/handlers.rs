//! Request handlers: read, decode, call the engine, render.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use switchyard_engine::{ChatOutcome, GatewayError, RequestCtx, Served};
use switchyard_wire::inbound;
use switchyard_wire::inbound::completions::{self, CompletionRequest, CompletionStreamEncoder, Echo};
use switchyard_wire::inbound::responses::{ResponseShell, ResponsesRequest, ResponsesStreamEncoder};
use switchyard_wire::outbound::OpenAiStreamEncoder;
use switchyard_wire::types::{ChatRequest, ChatResponse, EmbeddingsRequest};

use crate::errors::{error_response, refusal_response, Refusal};
use crate::reqlog::Record;
use crate::sse::{sse_response, ClientEncoder, Phase};
use crate::throttle::{more, Throttled};
use crate::AppState;

static BODY_TIMEOUTS: Throttled = Throttled::new("body_read_timeout");

pub async fn health() -> Response {
    json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec())
}

pub async fn not_found() -> Response {
    error_response(&GatewayError::BadRequest {
        message: "no such route; the OpenAI routes are /v1/chat/completions, /v1/responses, /v1/completions, /v1/embeddings and /v1/models"
            .into(),
        param: None,
        code: "unknown_route",
    })
    .with_status(StatusCode::NOT_FOUND)
}

pub async fn method_not_allowed() -> Response {
    error_response(&GatewayError::BadRequest {
        message: "method not allowed on this route".into(),
        param: None,
        code: "method_not_allowed",
    })
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

trait WithStatus {
    fn with_status(self, s: StatusCode) -> Self;
}

impl WithStatus for Response {
    fn with_status(mut self, s: StatusCode) -> Self {
        *self.status_mut() = s;
        self
    }
}

pub async fn chat_completions(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let ctx = caller_ctx(&headers);
    let mut rec = Record::new(&ctx, &state.gateway, "chat", method, uri.path());
    let req: ChatRequest = match read_json(body, &state, &mut rec).await {
        Ok(r) => r,
        Err(resp) => return logged(resp, rec),
    };
    rec.model(&req.model);
    let api = OpenAiChat { include_usage: req.include_usage() };
    answer_chat(&state, ctx, req, rec, api).await
}

/// `POST /v1/completions`: the legacy Completions API, served as a chat request (see
/// `switchyard_wire::inbound::completions` for what is translated and what is refused).
pub async fn completions(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let ctx = caller_ctx(&headers);
    let mut rec = Record::new(&ctx, &state.gateway, "completions", method, uri.path());
    let req: CompletionRequest = match read_json(body, &state, &mut rec).await {
        Ok(r) => r,
        Err(resp) => return logged(resp, rec),
    };
    rec.model(&req.model);
    let include_usage = req.include_usage();
    let (chat, echo) = match completions::to_chat(req) {
        Ok(c) => c,
        Err(e) => {
            let e = GatewayError::BadRequest { message: e.message, param: Some(e.param.to_string()), code: "invalid_request" };
            rec.failed(&e);
            return logged(error_response(&e), rec);
        }
    };
    answer_chat(&state, ctx, chat, rec, CompletionApi { include_usage, echo }).await
}

/// `POST /v1/responses`: the Responses API, translated to a chat request (`switchyard_wire::inbound::responses`)
/// and served as one, so routing, fallbacks, virtual keys, budgets and the attribution headers are the chat
/// route's; the answer is rendered back as a Response object or the Responses event stream.
pub async fn responses(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let ctx = caller_ctx(&headers);
    let mut rec = Record::new(&ctx, &state.gateway, "responses", method, uri.path());
    let req: ResponsesRequest = match read_json(body, &state, &mut rec).await {
        Ok(r) => r,
        Err(resp) => return logged(resp, rec),
    };
    rec.model(&req.model);
    let id = inbound::responses::response_id(&ctx.id);
    let (chat, shell) = match inbound::responses::to_chat(req, id, ctx.created) {
        Ok(x) => x,
        Err(e) => {
            let e = GatewayError::BadRequest { message: e.message, param: e.param, code: e.code };
            rec.failed(&e);
            return logged(error_response(&e), rec);
        }
    };
    answer_chat(&state, ctx, chat, rec, ResponsesApi(Box::new(shell))).await
}

/// `GET|DELETE /v1/responses/{id}`, `POST /v1/responses/{id}/cancel`, `GET /v1/responses/{id}/input_items`:
/// the gateway keeps no responses (see `switchyard_wire::inbound::responses`), so there is none to find.
pub async fn stored_response(uri: Uri) -> Response {
    let id = uri.path().split("/responses/").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or("");
    let id: String = id.chars().take(100).collect();
    error_response(&GatewayError::BadRequest {
        message: format!(
            "Response with id '{id}' not found: this gateway does not store responses (each is answered with store: false); \
             keep the Response you were sent, and send the whole conversation in `input`"
        ),
        param: None,
        code: "response_not_found",
    })
    .with_status(StatusCode::NOT_FOUND)
}

/// The legacy Completions API's answers.
struct CompletionApi {
    include_usage: bool,
    echo: Echo,
}

impl ChatApi for CompletionApi {
    type Encoder = CompletionStreamEncoder;

    fn encoder(self, _: &str) -> CompletionStreamEncoder {
        CompletionStreamEncoder::new(self.include_usage, self.echo)
    }

    fn complete(&self, resp: &ChatResponse) -> Vec<u8> {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_vec(&completions::from_chat(resp, &self.echo)).unwrap_or_default()
    }

    fn error(&self, e: &GatewayError) -> Response {
        error_response(e)
    }
}

/// The Responses API's answers (boxed: the shell carries the request's settings).
struct ResponsesApi(Box<ResponseShell>);

impl ChatApi for ResponsesApi {
    type Encoder = ResponsesStreamEncoder;

    fn encoder(self, _: &str) -> ResponsesStreamEncoder {
        ResponsesStreamEncoder::new(*self.0)
    }

    fn complete(&self, resp: &ChatResponse) -> Vec<u8> {
        self.0.render(resp)
    }

    fn error(&self, e: &GatewayError) -> Response {
        error_response(e)
    }
}

/// What differs between the chat routes (OpenAI's, Anthropic's): how an answer, a stream and an error are
/// written. The request path itself ([`answer_chat`]) is the same for all.
pub(crate) trait ChatApi: Send + 'static {
    type Encoder: ClientEncoder;
    /// The stream encoder; `request_id` names a stream that fails before any chunk named itself.
    fn encoder(self, request_id: &str) -> Self::Encoder;
    fn complete(&self, resp: &ChatResponse) -> Vec<u8>;
    fn error(&self, e: &GatewayError) -> Response;
}

struct OpenAiChat {
    include_usage: bool,
}

impl ChatApi for OpenAiChat {
    type Encoder = OpenAiStreamEncoder;

    fn encoder(self, _: &str) -> OpenAiStreamEncoder {
        OpenAiStreamEncoder::new(self.include_usage)
    }

    fn complete(&self, resp: &ChatResponse) -> Vec<u8> {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_vec(resp).unwrap_or_default()
    }

    fn error(&self, e: &GatewayError) -> Response {
        error_response(e)
    }
}

/// Stages 2 to 8 for a decoded chat request (see `switchyard_engine::Gateway::chat`), answered in `api`'s
/// shape. `rec` is the request's record, logged when the answer (or the stream) is over.
pub(crate) async fn answer_chat<A: ChatApi>(state: &AppState, ctx: RequestCtx, req: ChatRequest, mut rec: Record, api: A) -> Response {
    let is_stream = req.is_stream();
    if is_stream {
        rec.stream_asked();
    }
    let gateway = state.gateway.clone();
    let mut answer: Pending = Box::pin(async move { gateway.chat(req, &ctx).await });
    if is_stream {
        // A stream still waiting for its first chunk after the keep-alive interval is committed now (200
        // and headers) so that proxies do not cut it; from then on failures arrive as an error event.
        let keepalive = state.gateway.stream_keepalive();
        tokio::select! {
            r = &mut answer => return chat_response(r, api, rec),
            _ = tokio::time::sleep(keepalive) => {
                let id = rec.id().to_string();
                let enc = api.encoder(&id);
                let resp = sse_response(Phase::Waiting(answer), enc, keepalive, String::new(), rec);
                return with_id_header(resp, &id);
            }
        }
    }
    chat_response(answer.await, api, rec)
}

/// The request's context with what the caller presented: its key (ours are virtual keys, in the first of
/// `x-switchyard-vk`, Bifrost's `x-bf-vk`, `Authorization: Bearer`, `x-api-key`) and its `traceparent`.
pub(crate) fn caller_ctx(headers: &HeaderMap) -> RequestCtx {
    caller_ctx_with(headers, None)
}

/// [`caller_ctx`] for a route whose SDK sends the key its own way (`x-goog-api-key`, `?key=`): `sdk_key`,
/// when present, is tried after our own headers and before the generic ones.
pub(crate) fn caller_ctx_with(headers: &HeaderMap, sdk_key: Option<&str>) -> RequestCtx {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let bearer = get("authorization").and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))).map(str::trim);
    let sdk_key = sdk_key.map(str::trim).filter(|k| !k.is_empty());
    let key = get("x-switchyard-vk").or_else(|| get("x-bf-vk")).or(sdk_key).or(bearer).or_else(|| get("x-api-key"));
    RequestCtx::new()
        .with_caller(key.map(|k| secrecy::SecretString::from(k.to_string())), get("traceparent"))
        .with_request_id(get("x-request-id"))
}

/// USD from billionths, as written in `x-switchyard-cost` and the request log: plain decimal, no
/// exponent, trailing zeros dropped.
pub(crate) fn usd(nano: u64) -> String {
    let s = format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Puts the answer's status on the request's record, which logs it when dropped (here, for every answer
/// but a stream's, whose record goes on with the stream).
pub(crate) fn logged(resp: Response, mut rec: Record) -> Response {
    rec.status(resp.status().as_u16());
    with_request_id(resp, &rec)
}

/// `x-request-id` (and, as before, `x-switchyard-request-id`): the key to the request's log record, so
/// that a caller's report can be found in the gateway's log.
fn with_request_id(resp: Response, rec: &Record) -> Response {
    with_id_header(resp, rec.id())
}

pub(crate) fn with_id_header(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-switchyard-request-id", v.clone());
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

pub(crate) type Pending = Pin<Box<dyn Future<Output = Result<ChatOutcome, GatewayError>> + Send>>;

/// The answer to a chat request. Requests are counted from their record when it is finished (see
/// `switchyard_engine::telemetry::metrics`), a stream's when it ends.
fn chat_response<A: ChatApi>(r: Result<ChatOutcome, GatewayError>, api: A, mut rec: Record) -> Response {
    match r {
        Ok(ChatOutcome::Complete(resp, served)) => {
            rec.served(&served);
            rec.usage(resp.usage.as_ref());
            let json = api.complete(&resp);
            rec.response_body(&json);
            logged(with_served(json_response(StatusCode::OK, json), &served), rec)
        }
        Ok(ChatOutcome::Stream(stream, served)) => {
            let label = format!("{}/{}", served.provider, served.model);
            rec.served(&served);
            let id = rec.id().to_string();
            let resp = sse_response(Phase::Streaming(stream), api.encoder(&id), Duration::from_secs(15), label, rec);
            with_id_header(with_served(resp, &served), &id)
        }
        Err(e) => {
            rec.failed(&e);
            logged(api.error(&e), rec)
        }
    }
}

pub async fn embeddings(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let ctx = caller_ctx(&headers);
    let mut rec = Record::new(&ctx, &state.gateway, "embeddings", method, uri.path());
    let req: EmbeddingsRequest = match read_json(body, &state, &mut rec).await {
        Ok(r) => r,
        Err(resp) => return logged(resp, rec),
    };
    rec.model(&req.model);
    let resp = match state.gateway.embeddings(req, &ctx).await {
        Ok((resp, served)) => {
            rec.served(&served);
            rec.embedding_tokens(resp.usage.prompt_tokens);
            match serde_json::to_vec(&resp) {
                Ok(json) => {
                    rec.response_body(&json);
                    with_served(json_response(StatusCode::OK, json), &served)
                }
                Err(e) => error_response(&GatewayError::Internal(format!("cannot encode the response: {e}"))),
            }
        }
        Err(e) => {
            rec.failed(&e);
            error_response(&e)
        }
    };
    logged(resp, rec)
}

/// `GET /metrics`: Prometheus text format: the recorder's counters and histograms, then what the request
/// metrics hold themselves (costs, provider health read now, budget gauges).
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(h) => {
            let mut text = h.render();
            state.gateway.request_metrics().render_into(&mut text, &state.gateway.health());
            ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"))], text).into_response()
        }
        None => error_response(&GatewayError::BadRequest { message: "metrics are not enabled".into(), param: None, code: "not_found" })
            .with_status(StatusCode::NOT_FOUND),
    }
}

/// `GET /api/health/providers`: health, key and load state per provider (no secrets).
pub async fn provider_health(State(state): State<AppState>) -> Response {
    #[derive(serde::Serialize)]
    struct Body {
        providers: Vec<switchyard_engine::ProviderHealthView>,
    }
    match serde_json::to_vec(&Body { providers: state.gateway.health() }) {
        Ok(json) => json_response(StatusCode::OK, json),
        Err(e) => error_response(&GatewayError::Internal(format!("cannot encode provider health: {e}"))),
    }
}

/// `GET /v1/models/{id}` (the SDK's `models.retrieve`): the entry `/v1/models` lists for this caller, or
/// OpenAI's 404 `model_not_found`. The id is the rest of the path, so `openai/gpt-4o` works unescaped.
pub async fn model(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let list = match state.gateway.models_for(&caller_ctx(&headers)).await {
        Ok(l) => l,
        Err(e) => return error_response(&e),
    };
    match list.data.into_iter().find(|m| m.id == id) {
        Some(m) => match serde_json::to_vec(&m) {
            Ok(json) => json_response(StatusCode::OK, json),
            Err(e) => error_response(&GatewayError::Internal(format!("cannot encode the model: {e}"))),
        },
        None => error_response(&GatewayError::ModelNotFound {
            message: format!("The model '{id}' does not exist or you do not have access to it."),
        }),
    }
}

pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let list = match state.gateway.models_for(&caller_ctx(&headers)).await {
        Ok(l) => l,
        Err(e) => return error_response(&e),
    };
    match serde_json::to_vec(&list) {
        Ok(json) => json_response(StatusCode::OK, json),
        Err(e) => error_response(&GatewayError::Internal(format!("cannot encode the model list: {e}"))),
    }
}

/// Why a request body could not be read: a bad body, or one the server's limits refused.
pub(crate) enum BodyError {
    Bad(GatewayError),
    Refused(Refusal),
}

/// [`read_json_as`] with failures answered in OpenAI's shape.
async fn read_json<T: DeserializeOwned>(body: Body, state: &AppState, rec: &mut Record) -> Result<T, Response> {
    read_json_as(body, state, rec).await.map_err(|e| match e {
        BodyError::Bad(e) => error_response(&e),
        BodyError::Refused(r) => refusal_response(&r),
    })
}

/// Reads the whole body under the size limit and within the body timeout, and decodes it, naming the
/// offending field on failure. The content type was checked before (see `policy`). The bytes go on the
/// request's record when bodies are kept.
pub(crate) async fn read_json_as<T: DeserializeOwned>(body: Body, state: &AppState, rec: &mut Record) -> Result<T, BodyError> {
    let bytes = read_body(body, state, rec).await?;
    decode_json(&bytes).map_err(BodyError::Bad)
}

/// Reads the whole body under the size limit and within the body timeout, for a route that decodes it
/// itself (the GenAI routes parse Google's shapes with their own errors). The bytes go on the record.
pub(crate) async fn read_body(body: Body, state: &AppState, rec: &mut Record) -> Result<bytes::Bytes, BodyError> {
    let limit = state.server.max_body_bytes;
    let within = state.server.body_read_timeout;
    let bytes = match tokio::time::timeout(within, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if is_length_limit(&e) => {
            return Err(BodyError::Bad(GatewayError::BadRequest {
                message: format!("request body is larger than the {limit} byte limit (server.max_body_size)"),
                param: None,
                code: "payload_too_large",
            }))
        }
        Ok(Err(e)) => return Err(BodyError::Bad(GatewayError::bad_request(format!("could not read the request body: {e}"), None))),
        Err(_) => {
            if let Some(n) = BODY_TIMEOUTS.hit() {
                // The client's slowness, not the operator's problem: INFO.
                tracing::info!(
                    "answered 408: a request body did not arrive within {} (server.body_read_timeout){}",
                    switchyard_engine::human::duration(within),
                    more(n)
                );
            }
            return Err(BodyError::Refused(Refusal::BodyTimeout(within)));
        }
    };
    rec.request_body(&bytes);
    Ok(bytes)
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    // The fast path decodes without tracking field paths; only a failing body is decoded again with them,
    // to name the offending field.
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::bad_request("request body is empty; send a JSON object", None));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = matches!(inner.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof);
        let mut param = (!syntax && path != "." && !path.is_empty()).then_some(path.clone());
        // serde reports a missing field at its parent; the caller wants the field's own path.
        let text = inner.to_string();
        if let Some(field) = text.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
            param = Some(match &param {
                Some(parent) => format!("{parent}.{field}"),
                None => field.to_string(),
            });
        }
        let msg = match inner.classify() {
            _ if syntax => format!("request body is not valid JSON: {inner}"),
            _ if param.is_some() => format!("invalid request body at {path}: {inner}"),
            _ => format!("invalid request body: {inner}"),
        };
        GatewayError::BadRequest { message: msg, param, code: "invalid_request" }
    })?;
    de.end().map_err(|e| GatewayError::bad_request(format!("request body is not valid JSON: {e}"), None))?;
    Ok(value)
}

pub(crate) fn json_response(status: StatusCode, json: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response()
}

pub(crate) fn with_served(mut resp: Response, s: &Served) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-switchyard-provider", Some(s.provider.as_str())),
        ("x-switchyard-model", Some(s.model.as_str())),
        ("x-switchyard-key", s.key.as_deref()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            h.insert(name, v);
        }
    }
    h.insert("x-switchyard-attempts", HeaderValue::from(s.attempts));
    h.insert("x-switchyard-fallback-index", HeaderValue::from(s.fallback_index));
    if s.hedged {
        h.insert("x-switchyard-hedged", HeaderValue::from_static("true"));
    }
    if let Some(c) = s.cost_nano_usd.and_then(|c| HeaderValue::from_str(&usd(c)).ok()) {
        h.insert("x-switchyard-cost", c);
    }
    resp
}
