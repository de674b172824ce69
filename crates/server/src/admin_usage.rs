//! `GET /api/usage`: what was used, read from the usage ledger, for billing back and for answering "what
//! did this team spend last month". Behind the admin token like the rest of the management API.
//!
//! The question (filters, range, grouping) is parsed and checked by the engine
//! (`governance::usage::UsageQuery`); the store answers it; this renders. The live meters (a budget's use
//! in its current window) are shown on the entities themselves; this is the ledger's longer memory.
//! Keys are shown by id and name, except that a key whose id is its value has its id masked, as everywhere.

#![allow(clippy::result_large_err)]

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use switchyard_engine::governance::usage::{rfc3339, GroupBy, UsageGroup, UsageQuery, MAX_GROUPS};

use crate::admin::{authorized, error, json, mask};
use crate::AppState;

fn totals(g: &UsageGroup) -> Value {
    json!({
        "requests": g.requests,
        "input_tokens": g.input_tokens,
        "output_tokens": g.output_tokens,
        "total_tokens": g.input_tokens + g.output_tokens,
        "cost_usd": g.cost_usd,
    })
}

pub async fn usage(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let Ok(Query(params)) = params else {
        return error(StatusCode::BAD_REQUEST, "invalid_usage_query", "the query string cannot be read (is it URL-encoded?)");
    };
    let q = match UsageQuery::from_params(&params) {
        Ok(q) => q,
        Err(e) => {
            let body = json!({"error": {"message": e.to_string(), "type": "invalid_request_error", "param": e.param, "code": "invalid_usage_query"}});
            return json(StatusCode::BAD_REQUEST, &body);
        }
    };
    if !state.gateway.keeps_usage() {
        return error(
            StatusCode::NOT_FOUND,
            "usage_ledger_off",
            "this gateway keeps no usage ledger: start it with --data-dir DIR (SQLite) or --database-url URL (PostgreSQL); the live meters are shown on each virtual key, team and customer",
        );
    }
    let live = state.gateway.governance();
    let unavailable = |e| error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", format!("{e}"));
    let all = match live.usage(UsageQuery { group_by: None, ..q.clone() }).await {
        Ok(g) => g.into_iter().next().unwrap_or_default(),
        Err(e) => return unavailable(e),
    };
    let mut body = json!({
        "from": q.from_ms.map(rfc3339),
        "to": q.to_ms.map(rfc3339),
        "group_by": q.group_by.map(GroupBy::as_str),
        "totals": totals(&all),
    });
    if let Some(by) = q.group_by {
        let mut groups = match live.usage(q.clone()).await {
            Ok(g) => g,
            Err(e) => return unavailable(e),
        };
        let truncated = groups.len() > MAX_GROUPS;
        groups.truncate(MAX_GROUPS);
        let keys = if by == GroupBy::VirtualKey { live.keys().await } else { Vec::new() };
        let rows: Vec<Value> = groups
            .iter()
            .map(|g| {
                let mut row = totals(g);
                row[by.as_str()] = json!(g.key);
                if by == GroupBy::VirtualKey {
                    let known = g.key.as_deref().and_then(|id| keys.iter().find(|k| k.entity.id == id));
                    if let Some(k) = known {
                        row["name"] = json!(k.entity.name);
                        if k.id_is_value {
                            row["virtual_key"] = json!(mask(&k.entity.id));
                        }
                    }
                }
                row
            })
            .collect();
        body["groups"] = Value::Array(rows);
        body["truncated"] = json!(truncated);
    }
    json(StatusCode::OK, &body)
}
