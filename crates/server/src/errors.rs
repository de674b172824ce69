//! Rendering gateway errors in OpenAI's error shape, with the status and headers each one calls for.

use std::time::Duration;

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

/// What the server itself refuses, before a request reaches the engine: a limit of the `server:` section
/// or a request a browser page could have forged.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the request body did not arrive within {} (server.body_read_timeout); send the whole body at once, or raise the limit", switchyard_engine::human::duration(*.0))]
    BodyTimeout(Duration),
    #[error("{}", media_type_message(.0.as_deref()))]
    NotJson(Option<String>),
    #[error("this gateway does not answer for host \"{0}\"; use the address it listens on, or add the name to server.allowed_hosts")]
    HostNotAllowed(String),
}

fn media_type_message(got: Option<&str>) -> String {
    let fix = "send the body as JSON with `Content-Type: application/json`";
    match got {
        None => format!("the request has no Content-Type; {fix}"),
        Some(t) if t.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") => format!(
            "Content-Type {t} is not accepted (curl -d sends it unless told otherwise); {fix}, e.g. curl -H 'Content-Type: application/json' -d ..."
        ),
        Some(t) => format!("Content-Type {t} is not accepted; {fix}"),
    }
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Refusal::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::HostNotAllowed(_) => StatusCode::FORBIDDEN,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BodyTimeout(_) => "request_timeout",
            Refusal::NotJson(_) => "unsupported_media_type",
            Refusal::HostNotAllowed(_) => "host_not_allowed",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Refusal::BodyTimeout(_) | Refusal::NotJson(_) => "invalid_request_error",
            Refusal::HostNotAllowed(_) => "permission_error",
        }
    }
}

pub fn refusal_response(r: &Refusal) -> Response {
    let body = Body { error: Inner { message: r.to_string(), kind: r.kind(), param: None, code: r.code().to_string(), attempts: &[] } };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = (r.status(), [(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
    if matches!(r, Refusal::BodyTimeout(_)) {
        // The rest of the body may still be on its way: the connection cannot carry another request.
        resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The 503 written straight to a socket that is over `server.max_connections`, before any HTTP parsing.
pub fn over_capacity_bytes(max_connections: usize) -> Vec<u8> {
    raw_503(format!(
        "the gateway is at its limit of {max_connections} open connections (server.max_connections); retry shortly, or reuse connections"
    ))
}

/// The 503 written to a waiting client when the process has no file descriptor left to serve it.
pub fn out_of_descriptors_bytes() -> Vec<u8> {
    raw_503("the gateway has no file descriptor left for another connection (its open-file limit); retry shortly".into())
}

fn raw_503(message: String) -> Vec<u8> {
    let body = Body { error: Inner { message, kind: "overloaded_error", param: None, code: "too_many_connections".into(), attempts: &[] } };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        json.len()
    )
    .into_bytes();
    out.extend_from_slice(&json);
    out
}

/// A gateway error in Anthropic's shape (`{"type":"error","error":{"type","message"},"request_id"}`), for
/// the `/anthropic` routes: the same status and retry headers as [`error_response`], the error type
/// Anthropic uses for that status, and Anthropic's `request-id` header. The SDKs pick their exception
/// classes by status, so the OpenAI routes' statuses carry over as they are.
pub fn anthropic_error_response(e: &GatewayError, request_id: &str) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = anthropic_response(status, &e.to_string(), request_id);
    if let Some(ms) = e.retry_after_ms() {
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000).max(1)));
        resp.headers_mut().insert("retry-after-ms", HeaderValue::from(ms));
    }
    if !e.attempts().is_empty() {
        resp.headers_mut().insert("x-switchyard-attempts", HeaderValue::from(e.sent_attempts()));
    }
    resp
}

/// A server refusal (see [`Refusal`]) in Anthropic's shape.
pub fn anthropic_refusal_response(r: &Refusal, request_id: &str) -> Response {
    let mut resp = anthropic_response(r.status(), &r.to_string(), request_id);
    if matches!(r, Refusal::BodyTimeout(_)) {
        resp.headers_mut().insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pub(crate) fn anthropic_response(status: StatusCode, message: &str, request_id: &str) -> Response {
    use switchyard_wire::inbound::anthropic::{error_json, error_type};
    let json = error_json(error_type(status.as_u16()), message, Some(request_id));
    let mut resp = (status, [(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}
