//! Switchyard's HTTP surface: the OpenAI-compatible routes (also under `/openai`), the Anthropic drop-in
//! routes under `/anthropic` (`anthropic`), the Google GenAI drop-in routes under `/genai` (`genai`), the
//! Bedrock Runtime drop-in routes under `/bedrock` (`bedrock`), error rendering, streaming responses, and the
//! guards every client connection and request passes.
//!
//! Handlers stay thin: read the body, decode it (stage 1 of the request path, see `switchyard_engine`),
//! call the engine, render. Everything about routing, keys and upstreams lives in the engine. What lives
//! here besides is what only the HTTP side can bound: how many connections, for how long (`conn`), which
//! requests a browser page could have forged (`policy`), and how long a stream client that stops reading
//! may hold an upstream (`sse`). The web UI at `/` (`ui`) is static files drawn from the management API.

pub mod admin;
mod admin_logs;
mod admin_providers;
mod admin_usage;
mod anthropic;
mod bedrock;
mod conn;
mod errors;
mod genai;
mod handlers;
mod policy;
mod reqlog;
mod sse;
mod throttle;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{any, get, post};
use axum::Router;
use switchyard_engine::config::ServerSettings;
use switchyard_engine::Gateway;
use tokio::net::TcpListener;

pub use conn::ConnectionLimits;
pub use errors::error_response;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    /// The `server:` section: body size and body time limits are the handlers' to apply.
    pub server: ServerSettings,
    /// Renders `/metrics`; `None` when no recorder was installed (then the route answers 404).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The management API's token; `None` turns the API off.
    pub admin: Option<admin::AdminToken>,
    /// Where the request log is kept, for `/api/logs` and `/api/stats`; `None` when `logs.enabled` is off.
    pub request_log: Option<Arc<dyn switchyard_engine::reqlog::RequestLogStore>>,
}

/// How often the recorder folds the histograms' samples into their buckets when nobody scrapes: the samples
/// wait in memory until then, so this bounds what they hold.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder the engine's metrics go to, with the `metrics:` section's
/// histogram buckets, and describes the request metrics. Call once, inside the runtime, before serving.
pub fn install_metrics(cfg: &switchyard_engine::config::MetricsConfig) -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use switchyard_engine::telemetry::metrics as m;
    let mut builder = PrometheusBuilder::new();
    let buckets = m::LATENCY_HISTOGRAMS
        .iter()
        .map(|n| (*n, &cfg.latency_buckets))
        .chain(m::OVERHEAD_HISTOGRAMS.iter().map(|n| (*n, &cfg.overhead_buckets)));
    for (name, bounds) in buckets {
        // Without buckets the recorder would export a summary, which cannot be aggregated across labels
        // or replicas.
        builder = match builder.set_buckets_for_metric(Matcher::Full(name.to_string()), bounds) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("metrics are off: the buckets of {name}: {e}");
                return None;
            }
        };
    }
    match builder.install_recorder() {
        Ok(h) => {
            m::describe();
            let upkeep = h.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(METRICS_UPKEEP);
                loop {
                    tick.tick().await;
                    upkeep.run_upkeep();
                }
            });
            Some(h)
        }
        Err(e) => {
            tracing::warn!("metrics are off: {e}");
            None
        }
    }
}

/// All routes. The OpenAI routes exist at `/v1/...` and, for SDKs that need a prefix, at `/openai/v1/...`.
/// `listen` is the address actually bound (its port, when 0 was asked for): requests are answered only
/// for the hosts it and `server.allowed_hosts` allow (see `policy`).
pub fn router(state: AppState, listen: SocketAddr) -> Router {
    let hosts = Arc::new(policy::HostPolicy::new(listen, &state.server.allowed_hosts));
    let mut r = Router::new()
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/health", get(handlers::health))
        .route("/api/health/providers", get(handlers::provider_health))
        .route("/metrics", get(handlers::metrics))
        .route("/api/providers", get(admin_providers::list).post(admin_providers::create))
        .route("/api/providers/{name}", get(admin_providers::get).put(admin_providers::put).delete(admin_providers::delete))
        .route("/api/governance/virtual-keys", get(admin::list_keys).post(admin::create_key))
        .route("/api/governance/virtual-keys/{id}", get(admin::get_key).put(admin::put_key).delete(admin::delete_key))
        .route("/api/governance/teams", get(admin::list_teams).post(admin::create_team))
        .route("/api/governance/teams/{id}", get(admin::get_team).put(admin::put_team).delete(admin::delete_team))
        .route("/api/governance/customers", get(admin::list_customers).post(admin::create_customer))
        .route("/api/governance/customers/{id}", get(admin::get_customer).put(admin::put_customer).delete(admin::delete_customer))
        .route("/api/usage", get(admin_usage::usage))
        .route("/api/logs", get(admin_logs::list))
        .route("/api/logs/{id}", get(admin_logs::get))
        .route("/api/stats", get(admin_logs::stats))
        .route("/api/residency", get(admin::residency));
    for prefix in ["", "/openai"] {
        r = r
            .route(&format!("{prefix}/v1/chat/completions"), post(handlers::chat_completions))
            .route(&format!("{prefix}/v1/responses"), post(handlers::responses))
            .route(&format!("{prefix}/v1/responses/{{id}}"), get(handlers::stored_response).delete(handlers::stored_response))
            .route(&format!("{prefix}/v1/responses/{{id}}/cancel"), post(handlers::stored_response))
            .route(&format!("{prefix}/v1/responses/{{id}}/input_items"), get(handlers::stored_response))
            .route(&format!("{prefix}/v1/completions"), post(handlers::completions))
            .route(&format!("{prefix}/v1/embeddings"), post(handlers::embeddings))
            .route(&format!("{prefix}/v1/models"), get(handlers::models))
            .route(&format!("{prefix}/v1/models/{{*id}}"), get(handlers::model));
    }
    r = r
        .route("/anthropic/v1/messages", post(anthropic::messages))
        .route("/anthropic/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/anthropic/v1/models", get(anthropic::models))
        .route("/anthropic/v1/models/{*id}", get(anthropic::model))
        .route("/anthropic", any(anthropic::not_found))
        .route("/anthropic/{*rest}", any(anthropic::not_found))
        .route("/bedrock", any(bedrock::route))
        .route("/bedrock/{*rest}", any(bedrock::route));
    // The Google GenAI SDK's routes, with `http_options.base_url` = `{gateway}/genai`.
    for version in genai::VERSIONS {
        r = r
            .route(&format!("/genai/{version}/models"), get(genai::list))
            .route(&format!("/genai/{version}/models/{{*rest}}"), post(genai::post).get(genai::get));
    }
    // Any other path under `/genai` gets Google's 404 rather than the OpenAI routes' one (a Google client
    // prints that as `404 None`).
    r = r.route("/genai", any(genai::not_found)).route("/genai/{*rest}", any(genai::not_found));
    r.fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(hosts, policy::guard))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// A bug must cost one request a 500, never the connection or the process.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    error_response(&switchyard_engine::GatewayError::Internal("internal error; the gateway logged it".into()))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests; see `conn` for the limits every
/// connection runs under.
pub async fn serve(listener: TcpListener, app: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()> + Send + 'static) {
    conn::serve(listener, app, limits, shutdown).await
}
