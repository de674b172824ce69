//! `GET /api/logs`, `GET /api/logs/{id}`, `GET /api/stats`: the request log and the dashboard's
//! aggregates, behind the admin token like the rest of the management API.
//!
//! The questions are parsed and checked by the engine (`reqlog::LogQuery`, `reqlog::StatsQuery`), the
//! store answers, this renders. Records are shown as the engine's `RequestRecord` serializes, with one
//! change: a virtual key whose id is its value (keys written without a `value`) has its id masked, as
//! everywhere else; such a key is still found by filtering on its id.

#![allow(clippy::result_large_err)]

use std::collections::HashSet;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use switchyard_engine::observe::RequestRecord;
use switchyard_engine::reqlog::{LogQuery, QueryError, RequestLogStore, StatsQuery};

use crate::admin::{authorized, error, json, mask};
use crate::AppState;

fn bad_query(code: &str, e: QueryError) -> Response {
    let body = json!({"error": {"message": e.to_string(), "type": "invalid_request_error", "param": e.param, "code": code}});
    json(StatusCode::BAD_REQUEST, &body)
}

/// The store, or the answer saying the log is off.
fn store(state: &AppState) -> Result<&std::sync::Arc<dyn RequestLogStore>, Response> {
    state
        .request_log
        .as_ref()
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "request_log_off", "the request log is off (logs.enabled: false in the configuration)"))
}

fn unavailable(e: switchyard_engine::governance::store::StoreError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string())
}

/// Ids of keys whose id is their value: never shown.
async fn secret_ids(state: &AppState) -> HashSet<String> {
    state.gateway.governance().keys().await.into_iter().filter(|k| k.id_is_value).map(|k| k.entity.id).collect()
}

fn shown(mut r: RequestRecord, secret: &HashSet<String>) -> Value {
    if let Some(c) = r.caller.as_mut() {
        if secret.contains(&c.virtual_key_id) {
            c.virtual_key_id = mask(&c.virtual_key_id);
        }
    }
    serde_json::to_value(&r).unwrap_or(Value::Null)
}

fn params(p: Result<Query<Vec<(String, String)>>, QueryRejection>, code: &str) -> Result<Vec<(String, String)>, Response> {
    p.map(|Query(p)| p).map_err(|_| error(StatusCode::BAD_REQUEST, code, "the query string cannot be read (is it URL-encoded?)"))
}

pub async fn list(State(state): State<AppState>, headers: HeaderMap, p: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let p = match params(p, "invalid_log_query") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = match LogQuery::from_params(&p, switchyard_engine::governance::meter::now_ms()) {
        Ok(q) => q,
        Err(e) => return bad_query("invalid_log_query", e),
    };
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let page = match store.query(q).await {
        Ok(p) => p,
        Err(e) => return unavailable(e),
    };
    let secret = secret_ids(&state).await;
    let data: Vec<Value> = page.records.into_iter().map(|r| shown(r, &secret)).collect();
    json(StatusCode::OK, &json!({"object": "list", "data": data, "next_cursor": page.next_cursor.map(|c| c.encode())}))
}

pub async fn get(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match store.get(id).await {
        Ok(Some(r)) => json(StatusCode::OK, &shown(r, &secret_ids(&state).await)),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no request with this id in the log (it may be older than logs.retention, or not written yet: records are written in batches)",
        ),
        Err(e) => unavailable(e),
    }
}

pub async fn stats(State(state): State<AppState>, headers: HeaderMap, p: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let p = match params(p, "invalid_stats_query") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let q = match StatsQuery::from_params(&p, switchyard_engine::governance::meter::now_ms()) {
        Ok(q) => q,
        Err(e) => return bad_query("invalid_stats_query", e),
    };
    let store = match store(&state) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut answer = match store.stats(q).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let secret = secret_ids(&state).await;
    for g in &mut answer.groups {
        let Some(Some(id)) = g.keys.get_mut("virtual_key") else { continue };
        if secret.contains(id.as_str()) {
            let original = std::mem::replace(id, mask(id));
            if let Some(Some(label)) = g.labels.get_mut("virtual_key") {
                if *label == original {
                    *label = mask(label);
                }
            }
        }
    }
    json(StatusCode::OK, &serde_json::to_value(&answer).unwrap_or(Value::Null))
}
