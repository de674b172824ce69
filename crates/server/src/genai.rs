//! The Google GenAI drop-in routes under `/genai`: `POST /genai/v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent` (`alt=sse`; without it the one-array form), `GET /genai/v1beta/models` and
//! `GET /genai/v1beta/models/{model}` (also under `v1`). A Google SDK pointed at `{gateway}/genai` works
//! unchanged over whatever provider serves the model: the translation is `switchyard_wire::inbound::genai`,
//! the engine does the rest, and errors come back in Google's shape with the RPC status the SDK raises on.
//!
//! The request path is the one every chat route shares (`handlers::answer_chat`); `GenAiApi` only says
//! how an answer, a stream and an error are written. The caller's virtual key may come as the SDK sends
//! it, `x-goog-api-key` or `?key=`, besides the gateway's own headers.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use switchyard_engine::{GatewayError, RequestCtx};
use switchyard_wire::inbound::genai::{self, GenaiStreamEncoder, RequestError};
use switchyard_wire::types::{ChatChunk, ChatResponse};

use crate::errors::Refusal;
use crate::handlers::{answer_chat, caller_ctx_with, json_response, logged, read_body, with_id_header, BodyError, ChatApi};
use crate::reqlog::Record;
use crate::sse::ClientEncoder;
use crate::AppState;

/// The API versions the Google SDKs use.
pub(crate) const VERSIONS: [&str; 2] = ["v1beta", "v1"];

impl ClientEncoder for GenaiStreamEncoder {
    fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
        GenaiStreamEncoder::encode(self, chunk, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        GenaiStreamEncoder::finish(self, out);
    }

    fn fail(&mut self, e: &GatewayError, out: &mut Vec<u8>) {
        GenaiStreamEncoder::fail(self, e.status(), &e.to_string(), Some(&e.code()), out);
    }

    /// Google's SDK hands every line that is not blank to its JSON parser, so an SSE comment would fail
    /// the stream: a blank line keeps it open instead.
    fn keepalive(&self) -> Option<&'static [u8]> {
        Some(genai::KEEPALIVE)
    }

    /// No room for a note in Google's stream (see `keepalive`); the `x-switchyard-*` headers name the
    /// target of a stream that started at once.
    fn served(&self, _served: &str, _out: &mut Vec<u8>) {}
}

/// What the GenAI routes answer in: Google's response, stream and error shapes over the shared chat
/// request path ([`answer_chat`]).
struct GenAiApi {
    /// `:streamGenerateContent` without `alt=sse`: the whole answer as a one-element JSON array, the form
    /// Google sends a stream in when SSE was not asked for.
    array: bool,
}

impl ChatApi for GenAiApi {
    type Encoder = GenaiStreamEncoder;

    fn encoder(self, _: &str) -> GenaiStreamEncoder {
        GenaiStreamEncoder::new()
    }

    fn complete(&self, resp: &ChatResponse) -> Vec<u8> {
        let mut json = genai::render_response(resp);
        if self.array {
            json.insert(0, b'[');
            json.push(b']');
        }
        json
    }

    fn error(&self, e: &GatewayError) -> Response {
        error_response(e)
    }
}

/// A gateway error as Google's error body, with the retry headers the OpenAI routes send too.
pub(crate) fn error_response(e: &GatewayError) -> Response {
    let status = e.status();
    let code = e.code();
    let body = genai::error_body(status, &e.to_string(), Some(&code), e.param());
    let mut resp = json_response(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), body);
    if let Some(ms) = e.retry_after_ms() {
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000).max(1)));
        resp.headers_mut().insert("retry-after-ms", HeaderValue::from(ms));
    }
    if !e.attempts().is_empty() {
        resp.headers_mut().insert("x-switchyard-attempts", HeaderValue::from(e.sent_attempts()));
    }
    resp
}

/// A server refusal (see [`Refusal`]) in Google's shape.
fn refusal_response(r: &Refusal) -> Response {
    let mut resp = json_response(r.status(), genai::error_body(r.status().as_u16(), &r.to_string(), Some(r.code()), None));
    if matches!(r, Refusal::BodyTimeout(_)) {
        // The rest of the body may still be on its way: the connection cannot carry another request.
        resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn body_error(e: BodyError) -> Response {
    match e {
        BodyError::Bad(e) => error_response(&e),
        BodyError::Refused(r) => refusal_response(&r),
    }
}

fn bad_request(e: RequestError) -> GatewayError {
    GatewayError::BadRequest { message: e.message, param: e.field, code: "invalid_request" }
}

fn google_error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    json_response(status, genai::error_body(status.as_u16(), message, None, field))
}

fn no_route(uri: &Uri) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        &format!(
            "no such route {}; the GenAI routes are /genai/v1beta/models, /genai/v1beta/models/{{model}}:generateContent and :streamGenerateContent",
            uri.path()
        ),
        None,
    )
}

/// Any other path under `/genai`: Google's 404 rather than the OpenAI routes' one (a Google client prints
/// that as `404 None`).
pub async fn not_found(uri: Uri, headers: HeaderMap) -> Response {
    let id = ctx_of(&headers, &uri).request_id;
    with_id_header(no_route(&uri), &id)
}

/// The query parameter `name` (no percent-decoding: virtual keys are URL-safe).
fn query(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn ctx_of(headers: &HeaderMap, uri: &Uri) -> RequestCtx {
    let header = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    caller_ctx_with(headers, header.or_else(|| query(uri, "key")).as_deref())
}

/// `POST /genai/{version}/models/{model}:{method}`.
pub async fn post(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((model, action)) = rest.rsplit_once(':') else {
        return no_route(&uri);
    };
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        other => {
            return google_error(
                StatusCode::NOT_IMPLEMENTED,
                &format!("method {other} is not served by the gateway; use generateContent or streamGenerateContent"),
                None,
            )
        }
    };
    let sse = stream && query(&uri, "alt").as_deref() == Some("sse");
    let model = model.strip_prefix("models/").unwrap_or(model);
    let ctx = ctx_of(&headers, &uri);
    let mut rec = Record::new(&ctx, &state.gateway, "chat", method, uri.path());
    let bytes = match read_body(body, &state, &mut rec).await {
        Ok(b) => b,
        Err(e) => return logged(body_error(e), rec),
    };
    // Only an SSE stream is a stream to the engine: the array form is one complete answer, wrapped.
    let req = match genai::parse_request(model, &bytes, sse) {
        Ok(r) => r,
        Err(e) => {
            let e = bad_request(e);
            rec.failed(&e);
            return logged(error_response(&e), rec);
        }
    };
    rec.model(&req.model);
    answer_chat(&state, ctx, req, rec, GenAiApi { array: stream && !sse }).await
}

/// `GET /genai/{version}/models`: every model the caller's key may use, as Google lists models.
pub async fn list(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let ctx = ctx_of(&headers, &uri);
    let resp = match state.gateway.models_for(&ctx).await {
        Ok(list) => json_response(StatusCode::OK, genai::render_models(&list)),
        Err(e) => error_response(&e),
    };
    with_id_header(resp, &ctx.request_id)
}

/// `GET /genai/{version}/models/{model}`: one model (the SDK's `models.get`).
pub async fn get(State(state): State<AppState>, Path(rest): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    if rest.contains(':') {
        return no_route(&uri);
    }
    let id = rest.strip_prefix("models/").unwrap_or(&rest);
    let ctx = ctx_of(&headers, &uri);
    let resp = match state.gateway.models_for(&ctx).await {
        Ok(list) => match list.data.iter().find(|m| m.id == id) {
            Some(m) => match serde_json::to_vec(&genai::model_json(&m.id, &m.owned_by)) {
                Ok(json) => json_response(StatusCode::OK, json),
                Err(e) => error_response(&GatewayError::Internal(format!("cannot encode the model: {e}"))),
            },
            None => google_error(StatusCode::NOT_FOUND, &format!("models/{id} is not found"), None),
        },
        Err(e) => error_response(&e),
    };
    with_id_header(resp, &ctx.request_id)
}
