//! The management API for providers, in Bifrost's shapes: `GET`/`POST /api/providers`,
//! `GET`/`PUT`/`DELETE /api/providers/{name}`, behind the same admin token as the governance routes
//! (`admin`). Handlers parse, call the engine (which checks each write exactly as the configuration file is
//! checked, residency proof included, and swaps it in without resetting any other provider's health), and
//! render. Key values are never shown: a literal is masked (`…abcd`), an `env.NAME` reference is shown as
//! written, and secret-looking extra headers are masked too.

// The refusal is the response itself, built once for a refused request; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use switchyard_engine::providers::spec::ProviderSpec;
use switchyard_engine::providers::{ProviderView, ProviderWriteError};
use switchyard_engine::scrub::is_secret_header;

use crate::admin::{authorized, decode, error, json, mask};
use crate::AppState;

/// A provider as shown: the configuration in force (one shape for the file's and the API's), what the API
/// was given that the configuration does not hold (`custom_provider_config`), and where it comes from.
fn view(p: &ProviderView) -> Value {
    let c = &p.cfg;
    let keys: Vec<Value> = match &p.spec {
        // The spec's keys, disabled ones included, and whether each value is a reference.
        Some(spec) => spec
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let name = k.key_name().map(str::to_string).unwrap_or_else(|| format!("key-{}", i + 1));
                let value = k.value.as_ref().map(|v| match v.env_var() {
                    Some(var) => format!("env.{var}"),
                    None => mask(v.expose()),
                });
                let from_env = k.value.as_ref().is_some_and(|v| v.env_var().is_some());
                let weight = c.keys.iter().find(|x| x.name == name).map_or(k.weight.unwrap_or(1.0), |x| x.weight);
                json!({"name": name, "value": value, "from_env": from_env, "weight": weight, "models": k.models, "enabled": k.enabled.unwrap_or(true)})
            })
            .collect(),
        None => c
            .keys
            .iter()
            .map(|k| json!({"name": k.name, "value": mask(k.secret.expose_secret()), "weight": k.weight, "models": k.models, "enabled": true}))
            .collect(),
    };
    let headers: serde_json::Map<String, Value> =
        c.options.extra_headers.iter().map(|(n, v)| (n.clone(), json!(if is_secret_header(n) { mask(v) } else { v.clone() }))).collect();
    let mut v = json!({
        "name": c.name,
        "type": c.kind.as_str(),
        "source": if p.from_config { "config_file" } else { "api" },
        "keys": keys,
        "network_config": {
            "base_url": c.base_url,
            "extra_headers": headers,
            "default_request_timeout_in_seconds": c.timeouts.total.as_secs(),
            "connection_timeout_in_seconds": c.timeouts.connect.as_secs(),
            "stream_idle_timeout_in_seconds": c.timeouts.stream_idle.as_secs(),
            "max_retries": c.retry.max_retries,
            "retry_backoff_initial": c.retry.initial_backoff.as_millis() as u64,
            "retry_backoff_max": c.retry.max_backoff.as_millis() as u64,
        },
        "concurrency_and_buffer_size": {"concurrency": c.overload.max_in_flight, "buffer_size": c.overload.max_queue},
        "tags": c.tags,
        "models": c.models,
        "provider_status": "active",
    });
    if let Some(custom) = p.spec.as_ref().and_then(|s| s.custom_provider_config.as_ref()) {
        v["custom_provider_config"] = serde_json::to_value(custom).unwrap_or(Value::Null);
    }
    v
}

fn write_error(e: ProviderWriteError) -> Response {
    let message = e.to_string();
    match e {
        ProviderWriteError::Invalid(issues) => {
            let list: Vec<Value> = issues.iter().map(|i| json!({"path": i.path, "message": i.message})).collect();
            let mut body =
                json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "invalid_provider"}});
            body["error"]["issues"] = Value::Array(list);
            json(StatusCode::BAD_REQUEST, &body)
        }
        ProviderWriteError::FromConfig(_) => error(StatusCode::CONFLICT, "defined_in_config_file", message),
        ProviderWriteError::Exists(_) => error(StatusCode::CONFLICT, "provider_exists", message),
        ProviderWriteError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", message),
        ProviderWriteError::Store(_) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", format!("{message}; nothing was changed"))
        }
        ProviderWriteError::Internal(_) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", format!("{message}; nothing was changed"))
        }
    }
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let all: Vec<Value> = state.gateway.providers().await.iter().map(view).collect();
    json(StatusCode::OK, &json!({"total": all.len(), "providers": all}))
}

pub async fn get(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.provider(&name).await {
        Some(p) => json(StatusCode::OK, &view(&p)),
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no provider \"{name}\"")),
    }
}

/// `POST`: creates; a provider of that name already there is a 409.
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match decode::<ProviderSpec>(&body) {
        Ok(spec) => save(&state, spec, true).await,
        Err(r) => r,
    }
}

/// `PUT /{name}`: creates or replaces as a whole (a key sent without its value keeps the value of the key
/// of the same name).
pub async fn put(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let mut spec = match decode::<ProviderSpec>(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if spec.provider.is_empty() {
        spec.provider = name;
    } else if spec.provider != name {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("provider: \"{}\" differs from the name in the path, \"{name}\"; a provider is renamed by creating the new one and deleting the old", spec.provider),
        );
    }
    save(&state, spec, false).await
}

async fn save(state: &AppState, spec: ProviderSpec, create: bool) -> Response {
    match state.gateway.put_provider(spec, create).await {
        Ok(p) => json(StatusCode::OK, &view(&p)),
        Err(e) => write_error(e),
    }
}

pub async fn delete(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.delete_provider(&name).await {
        Ok(()) => json(StatusCode::OK, &json!({"message": format!("provider \"{name}\" deleted")})),
        Err(e) => write_error(e),
    }
}
