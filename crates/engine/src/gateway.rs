//! The gateway: configured providers with their health, and the entry points of the request path. [`Gateway::chat`] is where a request's journey is written down in order;
//! the attempt machinery it calls (health ordering, retries, key rotation, hedging) is in `executor`, the
//! providers and their live state in `pool`.

use std::collections::HashSet;
use std::time::Duration;

use switchyard_wire::codec;
use switchyard_wire::types::{ChatRequest, ChatResponse, EmbeddingInput, EmbeddingsRequest, EmbeddingsResponse, ModelInfo, ModelList};

use crate::config::Config;
use crate::ctx::{RequestCtx, Served};
use crate::error::GatewayError;
use crate::executor::{Op, Output, Run};
use crate::plan::{Plan, Planner};
use crate::pool::{endpoint, ProviderHealthView, Upstreams};
use crate::upstream::{self, ChatStream, Label};

/// How long a provider's upstream model list is trusted before `/v1/models` asks again.
const MODEL_LIST_TTL: Duration = Duration::from_secs(60);
const MODEL_LIST_TIMEOUT: Duration = Duration::from_secs(5);

// Moved once, from the engine to the handler.
#[allow(clippy::large_enum_variant)]
pub enum ChatOutcome {
    Complete(ChatResponse, Served),
    Stream(ChatStream, Served),
}

pub struct Gateway {
    up: Upstreams,
    planner: Planner,
}

impl Gateway {
    pub fn new(cfg: &Config) -> Result<Self, GatewayError> {
        Ok(Gateway { up: Upstreams::new(cfg)?, planner: Planner::new(cfg) })
    }

    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.up.providers.iter().map(|p| p.cfg.name.as_str())
    }

    /// How long a stream may wait for its first chunk before the server starts sending keep-alives.
    pub fn stream_keepalive(&self) -> Duration {
        self.up.routing.stream_keepalive
    }

    /// The request path for chat completions:
    ///
    /// 1. **Accept** (server): the body was decoded into a [`ChatRequest`]; here it is checked.
    /// 2. **Plan**: the model (`provider/model` or a bare name), the request's `fallbacks` and the config's
    ///    `routes[].fallbacks` become an ordered list of targets; the matching route adds its context
    ///    fallbacks, hedging, retry policy and deadline.
    /// 3. **Execute** (`executor`): order the targets by health (degraded providers after healthy ones,
    ///    but never dropped unless the route fails fast); per target choose a key by weight among keys that
    ///    are not cooling down; fetch image URLs if the provider needs bytes (bounded, concurrent, inside
    ///    the deadline, and before any slot is held); wait for a slot under the provider's in-flight limit;
    ///    build the provider request (pure codec); send it with connect /
    ///    first-byte / idle / total timeouts bounded by the request's deadline; classify the outcome and let
    ///    `retry` decide: 429/401/quota rotate to another key at once and cool the key down; transient
    ///    failures move to the next target, and the plan is retried in rounds with backoff; caller faults
    ///    return at once; a context-length error moves to the context fallbacks; a short rate-limit reset
    ///    is waited for once. A hedged route sends the next target too when the first is slow. A stream is
    ///    committed to its target when its first content chunk arrives, never before.
    /// 4. **Respond** (server): the caller's API shape, with headers saying who served it.
    pub async fn chat(&self, req: ChatRequest, ctx: &RequestCtx) -> Result<ChatOutcome, GatewayError> {
        validate_chat(&req)?;
        let plan = self.plan(&req.model, req.fallbacks.as_deref().unwrap_or(&[]))?;
        let op = Op::chat(&req);
        match Run::new(&self.up, &plan, &op, ctx).execute().await? {
            (Output::Complete(r), served) => Ok(ChatOutcome::Complete(r, served)),
            (Output::Stream(s), served) => Ok(ChatOutcome::Stream(s, served)),
            (Output::Embeddings(_), _) => Err(GatewayError::Internal("a chat request produced embeddings".into())),
        }
    }

    /// `POST /v1/embeddings`: the same plan and fallback rules as chat, one body back.
    pub async fn embeddings(&self, req: EmbeddingsRequest, ctx: &RequestCtx) -> Result<(EmbeddingsResponse, Served), GatewayError> {
        if req.model.trim().is_empty() {
            return Err(GatewayError::bad_request("model is required", Some("model")));
        }
        let empty = match &req.input {
            EmbeddingInput::Text(t) => t.is_empty(),
            EmbeddingInput::Texts(v) => v.is_empty() || v.iter().any(String::is_empty),
            EmbeddingInput::Tokens(v) => v.is_empty(),
            EmbeddingInput::TokenLists(v) => v.is_empty() || v.iter().any(Vec::is_empty),
        };
        if empty {
            return Err(GatewayError::bad_request("input must not be empty (nor hold empty strings)", Some("input")));
        }
        let plan = self.plan(&req.model, req.fallbacks.as_deref().unwrap_or(&[]))?;
        let op = Op::Embeddings(&req);
        match Run::new(&self.up, &plan, &op, ctx).execute().await? {
            (Output::Embeddings(r), served) => Ok((r, served)),
            _ => Err(GatewayError::Internal("an embeddings request produced a chat answer".into())),
        }
    }

    /// The ordered targets for a model and the request body's fallbacks (see `plan`).
    pub fn plan(&self, model: &str, request_fallbacks: &[String]) -> Result<Plan, GatewayError> {
        self.planner.plan(&self.up, model, request_fallbacks)
    }

    /// Asks every provider that lists models for its list and remembers them (used for bare model names and
    /// `/v1/models`). Failures leave the provider's previous list in place.
    pub async fn refresh_models(&self) {
        let futures = self.up.providers.iter().map(|p| async move {
            let key = p.cfg.keys.first();
            let ep = endpoint(p, key);
            let req = codec::build_list_models(&ep)?;
            let label = Label { target: &p.cfg.name, key: key.map(|k| k.name.as_str()) };
            let t = crate::config::Timeouts { total: MODEL_LIST_TIMEOUT, ..p.cfg.timeouts };
            match upstream::send_complete(&p.client, p.cfg.kind, &t, &label, req).await {
                Ok(body) => codec::parse_models(p.cfg.kind, &body).ok(),
                Err(f) => {
                    tracing::debug!(provider = %p.cfg.name, "model list unavailable: {}", f.attempt.message);
                    None
                }
            }
        });
        let lists = futures_util::future::join_all(futures).await;
        self.planner.set_lists(lists);
    }

    /// `GET /v1/models`: `provider/model` ids from configuration and from the upstreams' own lists.
    pub async fn models(&self) -> ModelList {
        if self.planner.lists_stale(MODEL_LIST_TTL) {
            self.refresh_models().await;
        }
        let discovered = self.planner.lists();
        let mut data = Vec::new();
        for (i, p) in self.up.providers.iter().enumerate() {
            let mut seen = HashSet::new();
            let declared = p.cfg.declared_models();
            for m in declared.chain(discovered.get(i).into_iter().flatten().map(String::as_str)) {
                if p.cfg.allows_model(m) && seen.insert(m) {
                    data.push(ModelInfo {
                        id: format!("{}/{m}", p.cfg.name),
                        object: "model".into(),
                        created: 0,
                        owned_by: p.cfg.name.clone(),
                    });
                }
            }
        }
        // Named chains are models callers may ask for.
        for r in self.up.routes.iter().filter(|r| !r.targets.is_empty()) {
            for m in &r.models {
                data.push(ModelInfo { id: m.clone(), object: "model".into(), created: 0, owned_by: "switchyard".into() });
            }
        }
        ModelList { object: "list".into(), data }
    }

    /// Health, key and load state of every provider, for `GET /api/health/providers`.
    pub fn health(&self) -> Vec<ProviderHealthView> {
        self.up.health()
    }
}

/// Checks that need no provider: a clear 400 here beats a confusing one from an upstream.
fn validate_chat(req: &ChatRequest) -> Result<(), GatewayError> {
    if req.messages.is_empty() {
        return Err(GatewayError::bad_request("messages must hold at least one message", Some("messages")));
    }
    if req.n == Some(0) {
        return Err(GatewayError::bad_request("n must be at least 1", Some("n")));
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(GatewayError::bad_request(format!("temperature must be between 0 and 2, got {t}"), Some("temperature")));
        }
    }
    Ok(())
}

impl From<switchyard_wire::WireError> for GatewayError {
    fn from(e: switchyard_wire::WireError) -> Self {
        match e {
            switchyard_wire::WireError::Unsupported { message, param } => {
                GatewayError::BadRequest { message, param, code: "unsupported_parameter" }
            }
            other => GatewayError::Internal(other.to_string()),
        }
    }
}
