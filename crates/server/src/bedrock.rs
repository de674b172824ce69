//! The Bedrock Runtime drop-in routes under `/bedrock`: `POST /bedrock/model/{modelId}/converse`,
//! `.../converse-stream` and `.../invoke` (embeddings), so `boto3.client("bedrock-runtime",
//! endpoint_url="<gateway>/bedrock")` reaches every provider the gateway serves. The model id is the
//! Switchyard model name. Handlers parse with `switchyard_wire::inbound::bedrock`, call the engine as the
//! OpenAI routes do (same virtual keys, fallbacks, limits, attribution headers) and answer in AWS's shapes:
//! JSON errors with `x-amzn-errortype`, streams as binary event-stream frames, `x-amzn-requestid` beside
//! `x-request-id`.
//!
//! How callers authenticate: boto3 signs every request with SigV4, and checking a signature needs the
//! caller's secret, which the gateway does not have (virtual keys are single secrets, stored hashed). So
//! the access key id of the `Authorization: AWS4-HMAC-SHA256 Credential=<id>/…` header is taken as the
//! virtual key (set it as `aws_access_key_id`; the secret can be anything), and the signature is not
//! checked. That is as strong as a Bearer key over the same connection (the id travels in clear either
//! way), and no weaker: use TLS in front of the gateway as for every other route. `Authorization: Bearer`
//! (a Bedrock API key, boto3's `AWS_BEARER_TOKEN_BEDROCK`) is read as on every route.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use switchyard_engine::{GatewayError, RequestCtx};
use switchyard_wire::inbound::bedrock::{
    error_json, error_shape, parse_path, render_embeddings, render_response, to_chat, to_embeddings, BedrockStreamEncoder, InboundError,
    Operation,
};
use switchyard_wire::sigv4;
use switchyard_wire::types::ChatResponse;

use crate::errors::Refusal;
use crate::handlers::{answer_chat, caller_ctx, logged, read_json_as, with_served, BodyError, ChatApi};
use crate::reqlog::Record;
use crate::AppState;

struct BedrockChat {
    request_id: String,
}

impl ChatApi for BedrockChat {
    type Encoder = BedrockStreamEncoder;

    fn encoder(self, _: &str) -> BedrockStreamEncoder {
        BedrockStreamEncoder::new()
    }

    fn complete(&self, resp: &ChatResponse) -> Vec<u8> {
        render_response(resp)
    }

    fn error(&self, e: &GatewayError) -> Response {
        aws_error_response(e, &self.request_id)
    }
}

/// An AWS error: the status, the shape in `x-amzn-errortype` (boto3's `Error.Code`), `{"message": …}`.
fn aws_response(status: StatusCode, message: &str, request_id: &str) -> Response {
    let shape = error_shape(status.as_u16());
    let mut resp = (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], error_json(message)).into_response();
    resp.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static(shape));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

pub(crate) fn aws_error_response(e: &GatewayError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = aws_response(status, &e.to_string(), request_id);
    if let Some(ms) = e.retry_after_ms() {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000).max(1)));
    }
    if !e.attempts().is_empty() {
        resp.headers_mut().insert("x-switchyard-attempts", HeaderValue::from(e.sent_attempts()));
    }
    resp
}

fn refusal_response(r: &Refusal, request_id: &str) -> Response {
    let mut resp = aws_response(r.status(), &r.to_string(), request_id);
    if matches!(r, Refusal::BodyTimeout(_)) {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn bad_request(e: InboundError) -> GatewayError {
    GatewayError::BadRequest { message: e.message, param: e.param, code: "invalid_request" }
}

/// The caller's context, with a SigV4 `Authorization`'s access key id as its virtual key (see the module
/// doc); any other header is read as on every route.
fn bedrock_caller_ctx(headers: &HeaderMap) -> RequestCtx {
    let access_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| sigv4::parse_authorization(v).ok())
        .and_then(|a| HeaderValue::from_str(&format!("Bearer {}", a.access_key_id)).ok());
    match access_key {
        Some(bearer) => {
            let mut h = headers.clone();
            h.insert(header::AUTHORIZATION, bearer);
            caller_ctx(&h)
        }
        None => caller_ctx(headers),
    }
}

/// AWS's `x-amzn-requestid` beside the gateway's `x-request-id` (the same value).
fn with_aws_id(mut resp: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v.clone());
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Every path under `/bedrock`.
pub async fn route(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let ctx = bedrock_caller_ctx(&headers);
    let rest = uri.path().strip_prefix("/bedrock").unwrap_or_default();
    let Some((model, op)) = parse_path(rest).filter(|_| method == Method::POST) else {
        let id = ctx.request_id.clone();
        let message = "no such operation; the Bedrock routes are POST /bedrock/model/{modelId}/converse, /converse-stream and /invoke";
        let mut resp = aws_response(StatusCode::NOT_FOUND, message, &id);
        resp.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static("UnknownOperationException"));
        return with_aws_id(resp, &id);
    };
    let purpose = if op == Operation::Invoke { "embeddings" } else { "chat" };
    let mut rec = Record::new(&ctx, &state.gateway, purpose, method, uri.path());
    let id = rec.id().to_string();
    let body: Value = match read_json_as(body, &state, &mut rec).await {
        Ok(v) => v,
        Err(BodyError::Bad(e)) => return with_aws_id(logged(aws_error_response(&e, &id), rec), &id),
        Err(BodyError::Refused(r)) => return with_aws_id(logged(refusal_response(&r, &id), rec), &id),
    };
    rec.model(&model);
    if op == Operation::Invoke {
        return with_aws_id(invoke(&state, ctx, &model, &body, rec, &id).await, &id);
    }
    let chat = match to_chat(&model, &body, op == Operation::ConverseStream) {
        Ok(c) => c,
        Err(e) => {
            let e = bad_request(e);
            rec.failed(&e);
            return with_aws_id(logged(aws_error_response(&e, &id), rec), &id);
        }
    };
    let resp = answer_chat(&state, ctx, chat, rec, BedrockChat { request_id: id.clone() }).await;
    with_aws_id(resp, &id)
}

/// InvokeModel with an embedding body: served as an embeddings request, answered in the caller's shape.
async fn invoke(state: &AppState, ctx: RequestCtx, model: &str, body: &Value, mut rec: Record, id: &str) -> Response {
    let (req, shape) = match to_embeddings(model, body) {
        Ok(x) => x,
        Err(e) => {
            let e = bad_request(e);
            rec.failed(&e);
            return logged(aws_error_response(&e, id), rec);
        }
    };
    let texts: Vec<String> = req.input.texts().unwrap_or_default().into_iter().map(str::to_string).collect();
    let resp = match state.gateway.embeddings(req, &ctx).await {
        Ok((resp, served)) => {
            rec.served(&served);
            rec.embedding_tokens(resp.usage.prompt_tokens);
            let json = render_embeddings(&resp, shape, &texts);
            rec.response_body(&json);
            let r = (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
            with_served(r, &served)
        }
        Err(e) => {
            rec.failed(&e);
            aws_error_response(&e, id)
        }
    };
    logged(resp, rec)
}
