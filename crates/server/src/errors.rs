//! Rendering gateway errors in OpenAI's error shape, with the status and headers each one calls for.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_engine::{Attempt, GatewayError};

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: String,
    /// Every upstream attempt, when the error comes from upstreams (an extension; SDKs ignore it).
    #[serde(skip_serializing_if = "<[Attempt]>::is_empty")]
    attempts: &'a [Attempt],
}

pub fn error_response(e: &GatewayError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = Body { error: Inner { message: e.to_string(), kind: e.kind(), param: e.param(), code: e.code(), attempts: e.attempts() } };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = (status, [(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
    if let Some(ms) = e.retry_after_ms() {
        // Both forms: `retry-after` (whole seconds, rounded up) for every HTTP client, `retry-after-ms` for
        // the OpenAI and Anthropic SDKs, which prefer it.
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000).max(1)));
        resp.headers_mut().insert("retry-after-ms", HeaderValue::from(ms));
    }
    if !e.attempts().is_empty() {
        resp.headers_mut().insert("x-switchyard-attempts", HeaderValue::from(e.sent_attempts()));
    }
    resp
}
