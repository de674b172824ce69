//! The Anthropic drop-in routes under `/anthropic` (`/anthropic/v1/messages`, `.../messages/count_tokens`,
//! `.../models`): an Anthropic SDK or Claude Code pointed at `<gateway>/anthropic` reaches every provider
//! the gateway serves. Handlers parse (with `switchyard_wire::inbound::anthropic`), call the engine as
//! the OpenAI routes do (same virtual keys, fallbacks, limits and attribution headers) and render in
//! Anthropic's shapes, errors included, with Anthropic's `request-id` header beside `x-request-id`.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use switchyard_engine::GatewayError;
use switchyard_wire::inbound::anthropic::{
    count_tokens_json, render_message, render_model, render_models, to_chat, AnthropicStreamEncoder, Inbound, InboundError,
    MessagesRequest, ModelEntry, ModelPage, Purpose,
};
use switchyard_wire::types::ChatResponse;

use crate::errors::{anthropic_error_response, anthropic_refusal_response, anthropic_response};
use crate::handlers::{answer_chat, caller_ctx, json_response, logged, read_json_as, with_id_header, BodyError, ChatApi};
use crate::reqlog::Record;
use crate::AppState;

struct AnthropicChat {
    inbound: Inbound,
    request_id: String,
}

impl ChatApi for AnthropicChat {
    type Encoder = AnthropicStreamEncoder;

    fn encoder(self, request_id: &str) -> AnthropicStreamEncoder {
        AnthropicStreamEncoder::new(self.inbound, request_id)
    }

    fn complete(&self, resp: &ChatResponse) -> Vec<u8> {
        render_message(resp, &self.inbound)
    }

    fn error(&self, e: &GatewayError) -> Response {
        anthropic_error_response(e, &self.request_id)
    }
}

fn bad_request(e: InboundError) -> GatewayError {
    GatewayError::BadRequest { message: e.message, param: e.param, code: "invalid_request" }
}

fn body_error(e: BodyError, request_id: &str) -> Response {
    match e {
        BodyError::Bad(e) => anthropic_error_response(&e, request_id),
        BodyError::Refused(r) => anthropic_refusal_response(&r, request_id),
    }
}

/// Anthropic's `request-id` beside the gateway's `x-request-id` (the same value).
fn with_anthropic_id(mut resp: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

/// `POST /anthropic/v1/messages`.
pub async fn messages(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let ctx = caller_ctx(&headers);
    let mut rec = Record::new(&ctx, &state.gateway, "chat", method, uri.path());
    let id = rec.id().to_string();
    let req: MessagesRequest = match read_json_as(body, &state, &mut rec).await {
        Ok(r) => r,
        Err(e) => return logged(body_error(e, &id), rec),
    };
    rec.model(&req.model);
    let (chat, inbound) = match to_chat(req, Purpose::Messages) {
        Ok(x) => x,
        Err(e) => {
            let e = bad_request(e);
            rec.failed(&e);
            return logged(anthropic_error_response(&e, &id), rec);
        }
    };
    let api = AnthropicChat { inbound, request_id: id.clone() };
    with_anthropic_id(answer_chat(&state, ctx, chat, rec, api).await, &id)
}

/// `POST /anthropic/v1/messages/count_tokens`: the gateway's own estimate of the prompt (see
/// `switchyard_engine::Gateway::count_tokens`), for any model the caller may use.
pub async fn count_tokens(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let ctx = caller_ctx(&headers);
    let mut rec = Record::new(&ctx, &state.gateway, "count_tokens", method, uri.path());
    let id = rec.id().to_string();
    let req: MessagesRequest = match read_json_as(body, &state, &mut rec).await {
        Ok(r) => r,
        Err(e) => return logged(body_error(e, &id), rec),
    };
    rec.model(&req.model);
    let result = match to_chat(req, Purpose::CountTokens) {
        Ok((chat, _)) => state.gateway.count_tokens(&chat, &ctx),
        Err(e) => Err(bad_request(e)),
    };
    let resp = match result {
        Ok(n) => json_response(StatusCode::OK, count_tokens_json(n)),
        Err(e) => {
            rec.failed(&e);
            anthropic_error_response(&e, &id)
        }
    };
    with_anthropic_id(logged(resp, rec), &id)
}

#[derive(serde::Deserialize)]
pub struct PageQuery {
    limit: Option<String>,
    after_id: Option<String>,
    before_id: Option<String>,
}

/// `GET /anthropic/v1/models`: what `/v1/models` lists for the caller, in Anthropic's list shape and paging.
pub async fn models(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<PageQuery>) -> Response {
    let ctx = caller_ctx(&headers);
    let id = ctx.request_id.clone();
    let list = match state.gateway.models_for(&ctx).await {
        Ok(l) => l,
        Err(e) => return answered(anthropic_error_response(&e, &id), &id),
    };
    let entries: Vec<ModelEntry<'_>> = list.data.iter().map(|m| ModelEntry { id: &m.id, created: m.created }).collect();
    let page = ModelPage { limit: q.limit, after_id: q.after_id, before_id: q.before_id };
    let resp = match render_models(&entries, &page) {
        Ok(json) => json_response(StatusCode::OK, json),
        Err(e) => anthropic_error_response(&bad_request(e), &id),
    };
    answered(resp, &id)
}

/// `GET /anthropic/v1/models/{id}`: ids hold a `/` (`provider/model`), whether or not the client
/// percent-encoded it.
pub async fn model(State(state): State<AppState>, headers: HeaderMap, Path(model): Path<String>) -> Response {
    let ctx = caller_ctx(&headers);
    let id = ctx.request_id.clone();
    let list = match state.gateway.models_for(&ctx).await {
        Ok(l) => l,
        Err(e) => return answered(anthropic_error_response(&e, &id), &id),
    };
    let resp = match list.data.iter().find(|m| m.id == model) {
        Some(m) => json_response(StatusCode::OK, render_model(ModelEntry { id: &m.id, created: m.created })),
        None => anthropic_error_response(&GatewayError::ModelNotFound { message: format!("model: {model}") }, &id),
    };
    answered(resp, &id)
}

/// Any other path under `/anthropic`: Anthropic's 404.
pub async fn not_found(headers: HeaderMap) -> Response {
    let id = caller_ctx(&headers).request_id;
    let message =
        "no such route; the Anthropic routes are /anthropic/v1/messages, /anthropic/v1/messages/count_tokens and /anthropic/v1/models";
    answered(anthropic_response(StatusCode::NOT_FOUND, message, &id), &id)
}

fn answered(resp: Response, id: &str) -> Response {
    with_anthropic_id(with_id_header(resp, id), id)
}
