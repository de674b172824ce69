//! The management API for governance, in Bifrost's shapes: `/api/governance/virtual-keys`, `/teams`,
//! `/customers` (list, create, get, create-or-update by id, delete). Every route needs the admin token
//! (`Authorization: Bearer <token>`); no CORS headers are ever sent, so no browser page on another origin can
//! read an answer. Handlers parse, call the engine's live governance (which checks each write exactly as it
//! checks the configuration file, residency proof included, and applies it atomically), and render. Key
//! values are shown once, when a key is created with a value the gateway made; never again.

// The refusal is the response itself, built once for a refused request; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use switchyard_engine::governance::live::{Entity, Kind, Shown, WriteError};
use switchyard_engine::governance::meter::Reading;
use switchyard_engine::governance::model::{Customer, Team, VirtualKeySpec};
use switchyard_engine::governance::usage::rfc3339;
use switchyard_engine::governance::{LevelReadings, Readings};

use crate::AppState;

/// The admin token's hash; compared by hash so that the token itself is not kept in memory twice.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        AdminToken(Sha256::digest(token.as_bytes()).into())
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        presented.is_some_and(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())) == self.0)
    }
}

pub(crate) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": "invalid_request_error", "param": null, "code": code}});
    json(status, &body)
}

pub(crate) fn json(status: StatusCode, v: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Refuses a request without the admin token.
pub(crate) fn authorized(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    match &state.admin {
        Some(t) if t.accepts(headers) => Ok(()),
        Some(_) => Err(error(
            StatusCode::UNAUTHORIZED,
            "admin_unauthorized",
            "the management API needs the admin token: Authorization: Bearer <token> (SWITCHYARD_ADMIN_TOKEN, or the token printed at start)",
        )),
        None => Err(error(StatusCode::NOT_FOUND, "admin_disabled", "the management API is off")),
    }
}

fn write_error(e: WriteError) -> Response {
    match e {
        WriteError::Invalid(issues) => {
            let list: Vec<Value> = issues.iter().map(|i| json!({"path": i.path, "message": i.message})).collect();
            let mut body = json!({"error": {"message": WriteError::Invalid(issues).to_string(), "type": "invalid_request_error", "param": null, "code": "invalid_governance"}});
            body["error"]["issues"] = Value::Array(list);
            json(StatusCode::BAD_REQUEST, &body)
        }
        WriteError::FromFile(m) => error(StatusCode::CONFLICT, "defined_in_config_file", WriteError::FromFile(m).to_string()),
        WriteError::NotFound(what) => error(StatusCode::NOT_FOUND, "not_found", format!("no such {what}")),
        WriteError::Store(e) => error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", format!("{e}; nothing was changed")),
    }
}

fn reading(r: &Reading) -> Value {
    json!({
        "level": r.level,
        "used": r.used,
        "reserved": r.reserved,
        "max_limit": r.limit,
        "reset_duration": r.period.map(|p| p.to_string()),
        "window_start_ms": r.window.map(|w| w.0),
        "resets_at_ms": r.window.map(|w| w.1),
    })
}

/// A meter's use in its window, as fields of the budget or rate limit it counts for (Bifrost's names:
/// `current_usage`, `last_reset`; ours beside them: what requests in flight hold, and when it next resets).
fn reading_fields(out: &mut serde_json::Map<String, Value>, prefix: &str, r: &Reading) {
    let time = |t: Option<i64>| t.map_or(Value::Null, |ms| json!(rfc3339(ms)));
    out.insert(format!("{prefix}current_usage"), json!(r.used));
    out.insert(format!("{prefix}reserved"), json!(r.reserved));
    out.insert(format!("{prefix}last_reset"), time(r.window.map(|w| w.0)));
    out.insert(format!("{prefix}next_reset"), time(r.window.map(|w| w.1)));
}

/// Puts a level's readings into its `budget` and `rate_limit` objects.
fn with_readings(v: &mut Value, r: &LevelReadings) {
    if let (Some(b), Some(reading)) = (v.get_mut("budget").and_then(Value::as_object_mut), &r.budget) {
        reading_fields(b, "", reading);
    }
    if let Some(rate) = v.get_mut("rate_limit").and_then(Value::as_object_mut) {
        for (prefix, reading) in [("request_", &r.requests), ("token_", &r.tokens)] {
            if let Some(reading) = reading {
                reading_fields(rate, prefix, reading);
            }
        }
    }
}

/// Fields the views add, taken out of a body before it is decoded: what a `GET` answered can be sent back
/// with a `PUT` as it is.
const SHOWN_ONLY: [&str; 3] = ["source", "usage", "in_flight"];

fn strip_shown(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    for f in SHOWN_ONLY {
        m.remove(f);
    }
    let strip_level = |level: &mut Value| {
        for (field, prefixes) in [("budget", &[""][..]), ("rate_limit", &["request_", "token_"][..])] {
            if let Some(o) = level.get_mut(field).and_then(Value::as_object_mut) {
                for p in prefixes {
                    for f in ["current_usage", "reserved", "last_reset", "next_reset"] {
                        o.remove(&format!("{p}{f}"));
                    }
                }
            }
        }
    };
    strip_level(v);
    if let Some(list) = v.get_mut("provider_configs").and_then(Value::as_array_mut) {
        list.iter_mut().for_each(strip_level);
    }
}

/// An entity as shown: its fields, where it comes from, and its meters' readings (in its budget and rate
/// limit, and as one list under `usage`).
fn view<T: serde::Serialize>(e: &Shown<T>) -> Value {
    let mut v = serde_json::to_value(&e.entity).unwrap_or(Value::Null);
    with_readings(&mut v, &e.readings.own);
    v["source"] = json!(if e.from_file { "config_file" } else { "api" });
    v["usage"] = Value::Array(e.usage.iter().map(reading).collect());
    v
}

/// A key as shown: never its value, nor its id when the id is the value.
fn key_view(k: &Shown<VirtualKeySpec>) -> Value {
    let mut v = view(k);
    if k.id_is_value {
        v["id"] = json!(mask(&k.entity.id));
    }
    provider_config_readings(&mut v, &k.readings);
    if let Some(c) = &k.readings.concurrent {
        v["in_flight"] = json!(c.reserved);
    }
    v
}

fn provider_config_readings(v: &mut Value, r: &Readings) {
    let Some(list) = v.get_mut("provider_configs").and_then(Value::as_array_mut) else { return };
    for pc in list {
        let provider = pc.get("provider").and_then(Value::as_str).unwrap_or_default().to_string();
        if let Some((_, level)) = r.provider_configs.iter().find(|(p, _)| *p == provider) {
            with_readings(pc, level);
        }
    }
}

fn id_is_value(value: &SecretString, id: &str) -> bool {
    switchyard_engine::governance::key_hash(value.expose_secret()) == switchyard_engine::governance::key_hash(id)
}

/// A secret shown only by its last characters: `…free`.
pub(crate) fn mask(s: &str) -> String {
    let tail: String = s.chars().rev().take(if s.chars().count() > 12 { 4 } else { 2 }).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}

#[derive(Deserialize)]
pub struct Page {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    offset: Option<usize>,
}

fn page<T>(items: Vec<T>, p: &Page, view: impl Fn(&T) -> Value) -> (Vec<Value>, usize, usize, usize) {
    let total = items.len();
    let (offset, limit) = (p.offset.unwrap_or(0), p.limit.unwrap_or(100).clamp(1, 1000));
    (items.iter().skip(offset).take(limit).map(view).collect(), total, limit, offset)
}

pub async fn list_keys(State(state): State<AppState>, headers: HeaderMap, Query(p): Query<Page>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let (keys, total, limit, offset) = page(state.gateway.governance().keys().await, &p, key_view);
    json(StatusCode::OK, &json!({"virtual_keys": keys, "count": keys.len(), "total_count": total, "limit": limit, "offset": offset}))
}

pub async fn get_key(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.governance().keys().await.iter().find(|k| k.entity.id == id) {
        Some(k) => json(StatusCode::OK, &json!({"virtual_key": key_view(k)})),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such virtual key"),
    }
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        error(StatusCode::BAD_REQUEST, "invalid_request", format!("{path}: {}", e.into_inner()))
    })
}

/// A fresh secret: `sk-sy-` and 40 letters and digits.
fn fresh_value() -> String {
    let mut rng = fastrand::Rng::new();
    let tail: String = std::iter::repeat_with(|| rng.alphanumeric()).take(40).collect();
    format!("sk-sy-{tail}")
}

/// `POST`: the gateway makes the id (unless given) and the value, and shows the value this once.
pub async fn create_key(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let mut v: Value = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    strip_shown(&mut v);
    if v.get("id").is_none() {
        let mut rng = fastrand::Rng::new();
        v["id"] = json!(format!("vk-{}", std::iter::repeat_with(|| rng.alphanumeric()).take(12).collect::<String>()));
    }
    let value = v.get("value").and_then(Value::as_str).map(str::to_string).unwrap_or_else(fresh_value);
    v["value"] = Value::Null;
    put_key_value(&state, v, value, true).await
}

/// `PUT /{id}`: create or replace; without a `value` a new key's id is its value (Bifrost's seed scripts
/// use it as the SDK's api_key), and an existing key keeps the value it has.
pub async fn put_key(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let mut v: Value = match decode(&body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    strip_shown(&mut v);
    v["id"] = json!(id);
    if v.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
        // Bifrost's scripts omit the name. A key whose id is its value (no value sent) must never be shown
        // by its id, so it is named by a handle of the id's hash instead; a key with a value of its own is
        // named by its id.
        let id_is_value = v.get("value").and_then(Value::as_str).is_none_or(str::is_empty);
        v["name"] = if id_is_value { json!(format!("key-{}", &switchyard_engine::governance::value_sha256(&id)[..12])) } else { json!(id) };
    }
    let value = match v.get("value").and_then(Value::as_str) {
        Some(value) => value.to_string(),
        // A key the API made with a value of its own keeps it when a change is sent without one (as the web
        // UI's edit does): taking the id as its value would lock out every caller of the key.
        None => match state.gateway.governance().written_value(&id).await {
            Some(kept) if !id_is_value(&kept, &id) => kept.expose_secret().to_string(),
            _ => id.clone(),
        },
    };
    v["value"] = Value::Null;
    put_key_value(&state, v, value, false).await
}

async fn put_key_value(state: &AppState, v: Value, value: String, show_value: bool) -> Response {
    if value.starts_with("env.") {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "value: env.NAME is for the configuration file; the management API takes the key itself",
        );
    }
    if value.starts_with(switchyard_engine::config::governance::SHA256_VALUE) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "value: sha256:<hash> is for the configuration file (what switchyard export writes); the management API takes the key itself",
        );
    }
    let spec: VirtualKeySpec = match decode(&serde_json::to_vec(&v).unwrap_or_default()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let id = spec.id.clone();
    match state.gateway.governance().put(Entity::Key(spec, SecretString::from(value.clone()))).await {
        Ok(()) => {
            let shown = state.gateway.governance().keys().await.into_iter().find(|k| k.entity.id == id);
            let mut view = shown.as_ref().map(key_view).unwrap_or(Value::Null);
            if show_value {
                view["value"] = json!(value);
            }
            json(StatusCode::OK, &json!({"message": "virtual key saved", "virtual_key": view}))
        }
        Err(e) => write_error(e),
    }
}

pub async fn delete_key(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.governance().delete(Kind::Key, &id).await {
        Ok(()) => json(StatusCode::OK, &json!({"message": "virtual key deleted"})),
        Err(e) => write_error(e),
    }
}

pub async fn list_teams(State(state): State<AppState>, headers: HeaderMap, Query(p): Query<Page>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let (teams, total, limit, offset) = page(state.gateway.governance().teams().await, &p, view);
    json(StatusCode::OK, &json!({"teams": teams, "count": teams.len(), "total_count": total, "limit": limit, "offset": offset}))
}

pub async fn list_customers(State(state): State<AppState>, headers: HeaderMap, Query(p): Query<Page>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let (cs, total, limit, offset) = page(state.gateway.governance().customers().await, &p, view);
    json(StatusCode::OK, &json!({"customers": cs, "count": cs.len(), "total_count": total, "limit": limit, "offset": offset}))
}

pub async fn get_team(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.governance().teams().await.iter().find(|t| t.entity.id == id) {
        Some(t) => json(StatusCode::OK, &json!({"team": view(t)})),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such team"),
    }
}

pub async fn get_customer(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.governance().customers().await.iter().find(|c| c.entity.id == id) {
        Some(c) => json(StatusCode::OK, &json!({"customer": view(c)})),
        None => error(StatusCode::NOT_FOUND, "not_found", "no such customer"),
    }
}

/// `POST` or `PUT /{id}` for teams and customers (POST makes an id when none is given).
async fn put_entity(state: &AppState, kind: Kind, id: Option<String>, body: &[u8]) -> Response {
    let mut v: Value = match decode(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    strip_shown(&mut v);
    match id {
        Some(id) => v["id"] = json!(id),
        None if v.get("id").is_none() => {
            let mut rng = fastrand::Rng::new();
            v["id"] = json!(std::iter::repeat_with(|| rng.alphanumeric()).take(12).collect::<String>());
        }
        None => {}
    }
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    let entity = match kind {
        Kind::Team => decode::<Team>(&bytes).map(Entity::Team),
        _ => decode::<Customer>(&bytes).map(Entity::Customer),
    };
    let entity = match entity {
        Ok(e) => e,
        Err(r) => return r,
    };
    let noun = if kind == Kind::Team { "team" } else { "customer" };
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    match state.gateway.governance().put(entity).await {
        Ok(()) => {
            let live = state.gateway.governance();
            let shown = match kind {
                Kind::Team => live.teams().await.iter().find(|t| t.entity.id == id).map(view),
                _ => live.customers().await.iter().find(|c| c.entity.id == id).map(view),
            };
            json(StatusCode::OK, &json!({"message": format!("{noun} saved"), noun: shown.unwrap_or(v)}))
        }
        Err(e) => write_error(e),
    }
}

pub async fn create_team(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    match authorized(&state, &headers) {
        Ok(()) => put_entity(&state, Kind::Team, None, &body).await,
        Err(r) => r,
    }
}

pub async fn put_team(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    match authorized(&state, &headers) {
        Ok(()) => put_entity(&state, Kind::Team, Some(id), &body).await,
        Err(r) => r,
    }
}

pub async fn delete_team(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.governance().delete(Kind::Team, &id).await {
        Ok(()) => json(StatusCode::OK, &json!({"message": "team deleted"})),
        Err(e) => write_error(e),
    }
}

pub async fn create_customer(State(state): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    match authorized(&state, &headers) {
        Ok(()) => put_entity(&state, Kind::Customer, None, &body).await,
        Err(r) => r,
    }
}

pub async fn put_customer(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    match authorized(&state, &headers) {
        Ok(()) => put_entity(&state, Kind::Customer, Some(id), &body).await,
        Err(r) => r,
    }
}

pub async fn delete_customer(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.governance().delete(Kind::Customer, &id).await {
        Ok(()) => json(StatusCode::OK, &json!({"message": "customer deleted"})),
        Err(e) => write_error(e),
    }
}

/// `GET /api/residency`: for each virtual key, every provider its requests can reach (with the providers'
/// tags and how) and those they cannot: the report `switchyard check --explain` prints, computed by the
/// same code for what is served now (the file's keys and the API's, the providers in force).
pub async fn residency(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    match state.gateway.governance().residency().await {
        Ok(report) => {
            let keys: Vec<Value> = report
                .iter()
                .map(|k| {
                    let mut v = serde_json::to_value(k).unwrap_or(Value::Null);
                    if k.id_is_value {
                        v["id"] = json!(mask(&k.id));
                    }
                    v
                })
                .collect();
            json(StatusCode::OK, &json!({"virtual_keys": keys}))
        }
        Err(e) => write_error(e),
    }
}
