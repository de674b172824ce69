//! The Azure OpenAI flavour: deployment routes (`/openai/deployments/{deployment}/...?api-version=`) and the
//! `/openai/v1/...` routes, `api-key` auth, Azure's own 401/404/429 bodies and the content-filter
//! annotations Azure adds to OpenAI's shapes. Request parsing and rendering are OpenAI's (see `openai.rs`);
//! this module holds only what Azure does differently, which is what a gateway most often gets wrong, and
//! hands it to the OpenAI renderers as an [`openai::Dialect`].

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Value};

use crate::behaviour::Finish;
use crate::common::{check_key, echo_key_into, json_response, percent_decode, random_hex, retry_headers, ApiError, Ctx};
use crate::faults::gate;
use crate::openai::{self, Dialect};
use crate::ratelimit::{input_tokens, output_tokens, wait, Limit};

/// The deployment's limits the mock reports: 100,000 tokens a minute, and the 600 requests a minute
/// Azure grants with them (6 per 1,000 tokens), which Azure counts and reports per 10-second window.
const TPM: u64 = 100_000;
const REQUESTS_PER_10S: u64 = 100;

enum Route {
    /// `/openai/deployments/{d}/chat/completions`
    DeploymentChat,
    /// `/openai/deployments/{d}/embeddings`
    DeploymentEmbeddings,
    /// `/openai/v1/chat/completions`
    V1Chat,
    /// `/openai/v1/embeddings`
    V1Embeddings,
    /// `/openai/v1/models` (no api-version) or `/openai/models` (api-version required)
    Models {
        versioned: bool,
    },
    Unknown,
}

fn route(path: &str) -> Route {
    let p = path.trim_end_matches('/');
    if let Some(rest) = p.strip_prefix("/openai/deployments/") {
        if let Some((dep, op)) = rest.split_once('/') {
            if !dep.is_empty() {
                return match op {
                    "chat/completions" => Route::DeploymentChat,
                    "embeddings" => Route::DeploymentEmbeddings,
                    _ => Route::Unknown,
                };
            }
        }
        return Route::Unknown;
    }
    match p {
        "/openai/v1/chat/completions" => Route::V1Chat,
        "/openai/v1/embeddings" => Route::V1Embeddings,
        "/openai/v1/models" => Route::Models { versioned: false },
        "/openai/models" => Route::Models { versioned: true },
        _ => Route::Unknown,
    }
}

/// The deployment named in a deployments path, percent-decoded (suffix not yet stripped).
pub(crate) fn deployment_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/openai/deployments/")?;
    let dep = rest.split('/').next()?;
    (!dep.is_empty()).then(|| percent_decode(dep))
}

pub(crate) async fn handle(ctx: Ctx) -> Response {
    let route = route(&ctx.path);
    let (want, needs_version) = match route {
        Route::DeploymentChat | Route::DeploymentEmbeddings => (Method::POST, true),
        Route::V1Chat | Route::V1Embeddings => (Method::POST, false),
        Route::Models { versioned } => (Method::GET, versioned),
        Route::Unknown => return error(&ctx, ApiError::NoRoute),
    };
    if needs_version && ctx.query_param("api-version").is_none_or(|v| v.trim().is_empty()) {
        return error(&ctx, ApiError::NoRoute);
    }
    if ctx.method != want {
        return error(&ctx, ApiError::MethodNotAllowed);
    }
    if let Err(e) = check_key(&ctx, true) {
        return error(&ctx, e);
    }
    if matches!(route, Route::DeploymentChat | Route::DeploymentEmbeddings) && !ctx.model_known(ctx.model_or_empty()) {
        return error(&ctx, ApiError::Status(404));
    }
    let kind = match gate(&ctx).await {
        Ok(k) => k,
        Err(e) => return error(&ctx, e),
    };
    match route {
        Route::DeploymentChat | Route::V1Chat => openai::chat(&ctx, &Azure, kind),
        Route::DeploymentEmbeddings | Route::V1Embeddings => openai::embeddings(&ctx, &Azure, kind),
        Route::Models { .. } => openai::models(&ctx, &Azure, kind),
        Route::Unknown => error(&ctx, ApiError::NoRoute),
    }
}

/// What Azure does differently from OpenAI when it serves OpenAI's shapes.
struct Azure;

impl Dialect for Azure {
    fn headers(&self, ctx: &Ctx) -> Vec<(&'static str, String)> {
        headers(ctx)
    }

    fn rate_limits(&self, ctx: &Ctx, out: &mut Vec<(&'static str, String)>) {
        rate_limit_headers(ctx, false, out);
    }

    fn error(&self, ctx: &Ctx, err: ApiError) -> Response {
        error(ctx, err)
    }

    fn unknown_model(&self, _model: String) -> ApiError {
        // The deployment named in the path does not exist.
        ApiError::Status(404)
    }

    fn owned_by(&self) -> &'static str {
        "organization-owner"
    }

    fn choice_filter(&self, finish: Finish) -> Option<Value> {
        Some(filter_results(finish))
    }

    fn prompt_filter(&self) -> Option<Value> {
        Some(prompt_filter_results())
    }
}

/// Headers every Azure response carries.
fn headers(ctx: &Ctx) -> Vec<(&'static str, String)> {
    let id = format!("{}-{}-{}-{}-{}", random_hex(8), random_hex(4), random_hex(4), random_hex(4), random_hex(12));
    vec![
        ("apim-request-id", id.clone()),
        ("x-request-id", id),
        ("x-ms-region", "Switchyard Mock".to_string()),
        ("openai-processing-ms", ctx.elapsed_ms().to_string()),
    ]
}

/// Azure's rate-limit headers: only `x-ratelimit-remaining-requests` and `-tokens` (no limit or reset
/// headers; on a 429 the wait is `retry-after`). An answer used one request and the tokens it asked for
/// (input estimate plus `max_tokens`/`max_completion_tokens`); a 429 (`refused`) found the token limit
/// used up, as its message says.
fn rate_limit_headers(ctx: &Ctx, refused: bool, out: &mut Vec<(&'static str, String)>) {
    let (requests, tokens) = if refused {
        (Limit::full(REQUESTS_PER_10S), Limit::used_up(TPM, wait(ctx)))
    } else {
        (
            Limit::after(REQUESTS_PER_10S, 1),
            Limit::after(TPM, input_tokens(ctx) + output_tokens(ctx, &["max_completion_tokens", "max_tokens"])),
        )
    };
    out.push(("x-ratelimit-remaining-requests", requests.remaining.to_string()));
    out.push(("x-ratelimit-remaining-tokens", tokens.remaining.to_string()));
}

pub(crate) fn error(ctx: &Ctx, err: ApiError) -> Response {
    let status = err.status();
    let version = ctx.query_param("api-version").unwrap_or_else(|| "v1".to_string());
    let body = match &err {
        ApiError::MissingKey | ApiError::BadKey | ApiError::Status(401) => json!({"error": {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}),
        ApiError::NoRoute | ApiError::MethodNotAllowed => {
            json!({"error": {"code": "404", "message": "Resource not found"}})
        }
        ApiError::ModelNotFound(_) | ApiError::Status(404) => json!({"error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}),
        ApiError::Status(429) => {
            let secs = wait(ctx).as_secs();
            json!({"error": {"code": "429", "message": format!(
                "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version {version} have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {secs} seconds.")}})
        }
        other => {
            let mut b = openai::error_body(ctx, other);
            if b["error"]["code"].is_null() {
                b["error"]["code"] = json!(status.to_string());
            }
            b
        }
    };
    let mut body = body;
    echo_key_into(ctx, &mut body, "/error/message");
    let mut h = headers(ctx);
    // A quota 429 is not a rate limit: no rate-limit (or retry) headers.
    if status == 429 && err != ApiError::Quota {
        rate_limit_headers(ctx, true, &mut h);
    }
    retry_headers(ctx, &err, &mut h);
    json_response(status, &h, &body)
}

fn safe(filtered_violence: bool) -> Value {
    let ok = json!({"filtered": false, "severity": "safe"});
    json!({
        "hate": ok,
        "self_harm": ok,
        "sexual": ok,
        "violence": if filtered_violence { json!({"filtered": true, "severity": "high"}) } else { ok.clone() },
    })
}

/// A choice's `content_filter_results` (filtered when the reply was filtered).
fn filter_results(finish: Finish) -> Value {
    let mut v = safe(finish == Finish::Filter);
    if finish != Finish::Filter {
        v["protected_material_code"] = json!({"filtered": false, "detected": false});
        v["protected_material_text"] = json!({"filtered": false, "detected": false});
    }
    v
}

/// The top-level `prompt_filter_results`.
fn prompt_filter_results() -> Value {
    let mut r = safe(false);
    r["jailbreak"] = json!({"filtered": false, "detected": false});
    json!([{"prompt_index": 0, "content_filter_results": r}])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route("/openai/deployments/gpt-4o-mini/chat/completions"), Route::DeploymentChat));
        assert!(matches!(route("/openai/deployments/x/embeddings"), Route::DeploymentEmbeddings));
        assert!(matches!(route("/openai/v1/chat/completions"), Route::V1Chat));
        assert!(matches!(route("/v1/chat/completions"), Route::Unknown));
        assert_eq!(deployment_of("/openai/deployments/gpt-4o-mini%2Bfault=1/chat/completions").as_deref(), Some("gpt-4o-mini+fault=1"));
    }
}
