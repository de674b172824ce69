//! The gateway: configured providers with their health, model resolution, the routing plan, and the entry
//! points of the request path. [`Gateway::chat`] is where a request's journey is written down in order;
//! the attempt machinery it calls (health ordering, retries, key rotation, hedging) is in `executor`, the
//! providers and their live state in `pool`.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use switchyard_wire::codec;
use switchyard_wire::types::{ChatRequest, ChatResponse, EmbeddingInput, EmbeddingsRequest, EmbeddingsResponse, ModelInfo, ModelList};

use crate::config::Config;
use crate::ctx::{RequestCtx, Served};
use crate::error::GatewayError;
use crate::executor::{Op, Output, Run};
use crate::pool::{endpoint, Plan, ProviderHealthView, Target, Upstreams, Via};
use crate::upstream::{self, ChatStream, Label};

/// How long a provider's upstream model list is trusted before `/v1/models` asks again.
const MODEL_LIST_TTL: Duration = Duration::from_secs(60);
const MODEL_LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The same provider and model is one target, whatever its parameters.
fn push_new(list: &mut Vec<Target>, t: Target) {
    if !list.iter().any(|x| x.provider == t.provider && x.model == t.model) {
        list.push(t);
    }
}

// Moved once, from the engine to the handler.
#[allow(clippy::large_enum_variant)]
pub enum ChatOutcome {
    Complete(ChatResponse, Served),
    Stream(ChatStream, Served),
}

pub struct Gateway {
    up: Upstreams,
    by_name: HashMap<String, usize>,
    /// Per provider (index-aligned), the model names the file ties to it.
    declared: Vec<HashSet<String>>,
    /// Upstream model lists per provider (index-aligned with the providers), refreshed off the hot path.
    discovered: RwLock<(Option<Instant>, Vec<Vec<String>>)>,
}

impl Gateway {
    pub fn new(cfg: &Config) -> Result<Self, GatewayError> {
        let by_name = cfg.providers.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
        let n = cfg.providers.len();
        let declared = cfg.providers.iter().map(|p| p.declared_models().map(str::to_string).collect()).collect();
        Ok(Gateway { up: Upstreams::new(cfg)?, by_name, declared, discovered: RwLock::new((None, vec![Vec::new(); n])) })
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

    /// Turns the requested model and fallbacks into the ordered targets to try.
    ///
    /// Order: the requested model's targets (one, or a named chain's), then the request body's
    /// `fallbacks`, then the matching route's `fallbacks`, each target once. The route (if one matches)
    /// also brings its context fallbacks, hedging and deadline.
    pub fn plan(&self, model: &str, request_fallbacks: &[String]) -> Result<Plan, GatewayError> {
        let (mut targets, via) = self.resolve_requested(model)?;
        for (i, f) in request_fallbacks.iter().enumerate() {
            let (ts, _) = self.resolve_requested(f).map_err(|e| GatewayError::BadRequest {
                message: format!("fallbacks[{i}]: {e}"),
                param: Some(format!("fallbacks[{i}]")),
                code: "invalid_fallback",
            })?;
            for t in ts {
                push_new(&mut targets, t);
            }
        }
        let primary_label = targets.first().map(|t| t.label.clone()).unwrap_or_default();
        let route = self.route_of(model).or_else(|| self.route_of(&primary_label));
        let mut context = Vec::new();
        if let Some(r) = route.map(|i| &self.up.routes[i]) {
            for f in &r.fallbacks {
                // Config fallbacks were checked at load time.
                if let Ok(t) = self.resolve(&f.target) {
                    push_new(&mut targets, t.with_params(&f.params));
                }
            }
            for f in &r.context_fallbacks {
                if let Ok(t) = self.resolve(&f.target) {
                    push_new(&mut context, t.with_params(&f.params));
                }
            }
        }
        if targets.is_empty() {
            return Err(GatewayError::ModelNotFound { message: format!("model \"{model}\": its route has no target left to try") });
        }
        Ok(Plan { targets, context, route, via })
    }

    /// The route that names `model` (load-time checks make it at most one).
    fn route_of(&self, model: &str) -> Option<usize> {
        self.up.routes.iter().position(|r| r.models.iter().any(|m| m == model))
    }

    /// The targets a requested model name stands for: a named chain's (`routes[].targets`), or the one
    /// provider that serves it; a bare name no provider serves is served by its route's fallbacks, if it
    /// has a route with any.
    fn resolve_requested(&self, model: &str) -> Result<(Vec<Target>, Via), GatewayError> {
        let model = model.trim();
        if let Some(r) = self.route_of(model).map(|i| &self.up.routes[i]) {
            if !r.targets.is_empty() {
                let ts = r.targets.iter().filter_map(|f| self.resolve(&f.target).ok().map(|t| t.with_params(&f.params))).collect();
                return Ok((ts, Via::Chain));
            }
        }
        match self.resolve_one(model) {
            Ok(x) => Ok(x),
            Err(e @ GatewayError::ModelNotFound { .. }) => match self.route_of(model).map(|i| &self.up.routes[i]) {
                Some(r) if !r.fallbacks.is_empty() => {
                    let ts = r.fallbacks.iter().filter_map(|f| self.resolve(&f.target).ok().map(|t| t.with_params(&f.params))).collect();
                    Ok((ts, Via::RouteFallbacks))
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn resolve(&self, model: &str) -> Result<Target, GatewayError> {
        self.resolve_one(model).map(|(mut ts, _)| ts.remove(0))
    }

    /// `provider/model` when the prefix is a configured provider; otherwise a bare model name served by
    /// exactly one provider (or any name when only one provider is configured). A provider's `models`
    /// allow-list is respected either way. Always one target.
    fn resolve_one(&self, model: &str) -> Result<(Vec<Target>, Via), GatewayError> {
        let model = model.trim();
        if model.is_empty() {
            return Err(GatewayError::bad_request("model is required", Some("model")));
        }
        if let Some((prefix, rest)) = model.split_once('/') {
            if let Some(&i) = self.by_name.get(prefix) {
                if rest.is_empty() {
                    return Err(GatewayError::bad_request(
                        format!("model \"{model}\" names provider {prefix} but no model after the '/'"),
                        Some("model"),
                    ));
                }
                let p = &self.up.providers[i].cfg;
                if !p.allows_model(rest) {
                    return Err(GatewayError::ModelNotFound {
                        message: format!(
                            "model \"{model}\": provider {prefix} serves only {} (providers.{prefix}.models)",
                            p.models.join(", ")
                        ),
                    });
                }
                return Ok((vec![self.target(i, rest)], Via::Provider));
            }
        }
        let candidates: Vec<usize> = {
            let discovered = self.discovered.read();
            let listed = |i: usize| discovered.as_ref().is_ok_and(|d| d.1.get(i).is_some_and(|l| l.iter().any(|m| m == model)));
            (0..self.up.providers.len())
                .filter(|&i| {
                    let p = &self.up.providers[i].cfg;
                    p.allows_model(model) && (self.declared[i].contains(model) || listed(i))
                })
                .collect()
        };
        match candidates.as_slice() {
            [i] => Ok((vec![self.target(*i, model)], Via::Listed)),
            [] if self.up.providers.len() == 1 && self.up.providers[0].cfg.allows_model(model) => {
                Ok((vec![self.target(0, model)], Via::OnlyProvider))
            }
            [] => {
                let names: Vec<&str> = self.provider_names().collect();
                let message = if names.is_empty() {
                    "no providers are configured; set OPENAI_API_KEY (or another provider's key), start with --demo, or pass --config"
                        .to_string()
                } else if let Some((prefix, _)) = model.split_once('/') {
                    format!("model \"{model}\": \"{prefix}\" is not a configured provider and no provider lists this model; configured providers: {}", names.join(", "))
                } else {
                    format!(
                        "model \"{model}\" is not served by any configured provider; write it as provider/model (configured providers: {})",
                        names.join(", ")
                    )
                };
                Err(GatewayError::ModelNotFound { message })
            }
            many => {
                let list: Vec<String> = many.iter().map(|&i| format!("{}/{model}", self.up.providers[i].cfg.name)).collect();
                Err(GatewayError::AmbiguousModel {
                    message: format!("model \"{model}\" is served by several providers; choose one of: {}", list.join(", ")),
                })
            }
        }
    }

    fn target(&self, provider: usize, model: &str) -> Target {
        Target { provider, model: model.to_string(), label: format!("{}/{model}", self.up.providers[provider].cfg.name), params: None }
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
        if let Ok(mut d) = self.discovered.write() {
            for (i, l) in lists.into_iter().enumerate() {
                if let Some(l) = l {
                    d.1[i] = l;
                }
            }
            d.0 = Some(Instant::now());
        }
    }

    /// `GET /v1/models`: `provider/model` ids from configuration and from the upstreams' own lists.
    pub async fn models(&self) -> ModelList {
        let stale = self.discovered.read().map(|d| d.0.is_none_or(|t| t.elapsed() > MODEL_LIST_TTL)).unwrap_or(true);
        if stale {
            self.refresh_models().await;
        }
        let discovered = self.discovered.read().map(|d| d.1.clone()).unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::collections::BTreeMap;

    fn gw(yaml: &str) -> Gateway {
        let cfg = parse_str(yaml, &BTreeMap::new()).unwrap();
        Gateway::new(&cfg).unwrap()
    }

    const TWO: &str = r#"
providers:
  openai:
    keys: [{value: k, models: [gpt-4o-mini]}]
  openrouter:
    keys: [{value: k}]
    models: [gpt-4o-mini, shared]
  local:
    type: ollama
    models: [llava, shared]
  router:
    type: openrouter
    keys: [{value: k}]
routes:
  - models: ["openai/gpt-4o-mini"]
    fallbacks: ["local/llava", "openrouter/gpt-4o-mini"]
"#;

    #[test]
    fn provider_prefix_splits_on_the_first_slash_only() {
        let g = gw(TWO);
        let p = g.plan("router/openai/gpt-4o", &[]).unwrap().targets;
        assert_eq!((p[0].label.as_str(), p[0].model.as_str()), ("router/openai/gpt-4o", "openai/gpt-4o"));
    }

    #[test]
    fn bare_names_resolve_when_unambiguous() {
        let g = gw(TWO);
        assert_eq!(g.plan("llava", &[]).unwrap().targets[0].label, "local/llava");
        let e = g.plan("gpt-4o-mini", &[]).unwrap_err();
        assert!(
            matches!(e, GatewayError::AmbiguousModel { ref message } if message.contains("openai/gpt-4o-mini") && message.contains("openrouter/gpt-4o-mini")),
            "{e:?}"
        );
        assert!(matches!(g.plan("nothing", &[]).unwrap_err(), GatewayError::ModelNotFound { .. }));
        assert!(matches!(g.plan("unknown/x", &[]).unwrap_err(), GatewayError::ModelNotFound { .. }));
    }

    #[test]
    fn plan_orders_request_fallbacks_then_route_fallbacks_without_repeats() {
        let g = gw(TWO);
        let p = g.plan("openai/gpt-4o-mini", &["openrouter/gpt-4o-mini".into()]).unwrap().targets;
        let labels: Vec<&str> = p.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, vec!["openai/gpt-4o-mini", "openrouter/gpt-4o-mini", "local/llava"]);
        let e = g.plan("openai/gpt-4o-mini", &["bogus/x".into()]).unwrap_err();
        assert!(matches!(e, GatewayError::BadRequest { code: "invalid_fallback", .. }));
    }

    #[test]
    fn single_provider_takes_any_bare_name() {
        let g = gw("providers:\n  vllm:\n    base_url: http://127.0.0.1:1\n");
        assert_eq!(g.plan("meta-llama/Llama-3-8B", &[]).unwrap().targets[0].label, "vllm/meta-llama/Llama-3-8B");
    }

    fn labels(p: &Plan) -> Vec<&str> {
        p.targets.iter().map(|t| t.label.as_str()).collect()
    }

    #[test]
    fn a_providers_models_list_is_an_allow_list() {
        let g = gw(TWO);
        let e = g.plan("openrouter/gpt-4o", &[]).unwrap_err();
        assert!(
            matches!(e, GatewayError::ModelNotFound { ref message } if message.contains("serves only gpt-4o-mini, shared") && message.contains("providers.openrouter.models")),
            "{e:?}"
        );
        // A key's list restricts that key only; the provider serves anything.
        assert_eq!(labels(&g.plan("openai/gpt-4o", &[]).unwrap()), vec!["openai/gpt-4o"]);
        let one = gw("providers:\n  vllm:\n    base_url: http://127.0.0.1:1\n    models: [llama]\n");
        assert!(matches!(one.plan("mistral", &[]).unwrap_err(), GatewayError::ModelNotFound { .. }));
        assert_eq!(one.plan("llama", &[]).unwrap().via, Via::Listed);
    }

    const CHAINS: &str = r#"
providers:
  ollama:
    base_url: http://127.0.0.1:1
  anthropic:
    base_url: http://127.0.0.1:1
    keys: [{value: k}]
  openai:
    base_url: http://127.0.0.1:1
    keys: [{value: k}]
fallbacks:
  synthetic-captions:
    - provider: ollama
      model: "qwen2.5-vl:7b"
    - provider: anthropic
      model: "claude-sonnet-4-6"
routes:
  - models: [real-captions]
    fallbacks: [ollama/qwen2.5-vl:7b]
  - models: [anthropic/claude-sonnet-4-6]
    fallbacks: [openai/gpt-4o]
"#;

    #[test]
    fn named_chains_and_unserved_route_names_resolve_to_their_targets() {
        let g = gw(CHAINS);
        let p = g.plan("synthetic-captions", &[]).unwrap();
        // The chain's second target has a route of its own; its fallbacks are not added to the chain's.
        assert_eq!((labels(&p), p.via), (vec!["ollama/qwen2.5-vl:7b", "anthropic/claude-sonnet-4-6"], Via::Chain));
        let p = g.plan("real-captions", &[]).unwrap();
        assert_eq!((labels(&p), p.via), (vec!["ollama/qwen2.5-vl:7b"], Via::RouteFallbacks));
        let p = g.plan("anthropic/claude-sonnet-4-6", &["synthetic-captions".into()]).unwrap();
        assert_eq!(labels(&p), vec!["anthropic/claude-sonnet-4-6", "ollama/qwen2.5-vl:7b", "openai/gpt-4o"]);
        assert!(matches!(g.plan("nothing-here", &[]).unwrap_err(), GatewayError::ModelNotFound { .. }));
    }

    #[test]
    fn top_level_from_to_entries_are_routes() {
        let g = gw("providers:\n  anthropic:\n    keys: [{value: k}]\n  openai:\n    keys: [{value: k}]\nfallbacks:\n  - from: anthropic/claude-sonnet-4-6\n    to: openai/gpt-4o\n  - from: anthropic/claude-sonnet-4-6\n    to: [openai/gpt-4o-mini]\n");
        let p = g.plan("anthropic/claude-sonnet-4-6", &[]).unwrap();
        assert_eq!((labels(&p), p.via), (vec!["anthropic/claude-sonnet-4-6", "openai/gpt-4o", "openai/gpt-4o-mini"], Via::Provider));
    }

    #[tokio::test]
    async fn models_lists_chains_and_respects_allow_lists() {
        let g = gw(CHAINS);
        let ids: Vec<String> = g.models().await.data.into_iter().map(|m| m.id).collect();
        assert!(ids.contains(&"synthetic-captions".to_string()), "{ids:?}");
        assert!(!ids.contains(&"real-captions".to_string()), "{ids:?}");
    }
}
