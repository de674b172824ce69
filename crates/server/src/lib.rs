//! Switchyard's HTTP surface: the OpenAI-compatible routes (also under `/openai`), error rendering and
//! streaming responses.
//!
//! Handlers stay thin: read the body, decode it (stage 1 of the request path, see `switchyard_engine`),
//! call the engine, render. Everything about routing, keys and upstreams lives in the engine.

mod errors;
mod handlers;

use std::future::Future;
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use switchyard_engine::Gateway;
use tokio::net::TcpListener;

pub use errors::error_response;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    /// Request bodies above this get a 413.
    pub max_body_bytes: usize,
    /// Renders `/metrics`; `None` when no recorder was installed (then the route answers 404).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Installs the process-wide Prometheus recorder the engine's counters go to. Call once, before serving.
pub fn install_metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("metrics are off: {e}");
            None
        }
    }
}

/// All routes. The OpenAI routes exist at `/v1/...` and, for SDKs that need a prefix, at `/openai/v1/...`.
pub fn router(state: AppState) -> Router {
    let mut r = Router::new()
        .route("/health", get(handlers::health))
        .route("/api/health/providers", get(handlers::provider_health))
        .route("/metrics", get(handlers::metrics));
    for prefix in ["", "/openai"] {
        r = r
            .route(&format!("{prefix}/v1/chat/completions"), post(handlers::chat_completions))
            .route(&format!("{prefix}/v1/embeddings"), post(handlers::embeddings))
            .route(&format!("{prefix}/v1/models"), get(handlers::models));
    }
    r.fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// A bug must cost one request a 500, never the connection or the process.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    error_response(&switchyard_engine::GatewayError::Internal("internal error; the gateway logged it".into()))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
///
/// Accepted sockets get `TCP_NODELAY`: with Nagle on, the last small write of a response waits for the
/// client's delayed ACK (about 40 ms on Linux) on every keep-alive request.
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
