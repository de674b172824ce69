//! The gateway: configured providers, the routing plan, and the attempt loop. [`Gateway::chat`] is the
//! request path in one place; read it first.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret;
use switchyard_wire::codec::{self, StreamDecoder};
use switchyard_wire::types::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, ModelInfo, ModelList};
use switchyard_wire::{Endpoint, ResponseCtx, WireError};

use crate::config::{Config, KeyConfig, ProviderConfig, RouteConfig};
use crate::error::{Attempt, FailureClass, GatewayError};
use crate::images::ImageFetcher;
use crate::keys;
use crate::upstream::{self, ChatStream, Failure, Label};

/// How long a provider's upstream model list is trusted before `/v1/models` asks again.
const MODEL_LIST_TTL: Duration = Duration::from_secs(60);
const MODEL_LIST_TIMEOUT: Duration = Duration::from_secs(5);

struct Provider {
    cfg: ProviderConfig,
    client: reqwest::Client,
}

/// One entry of a routing plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    provider: usize,
    /// The upstream model name (the provider prefix removed).
    pub model: String,
    /// `provider/model`, for headers and logs.
    pub label: String,
}

/// Per-request identity, set when the request is accepted.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// `chatcmpl-…`, used where a provider gives no id.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
}

impl RequestCtx {
    pub fn new() -> Self {
        let mut rng = fastrand::Rng::new();
        let id: String = std::iter::repeat_with(|| rng.alphanumeric()).take(24).collect();
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        RequestCtx { id: format!("chatcmpl-{id}"), created }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}

/// Who answered: the facts behind the `x-switchyard-*` response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub provider: String,
    pub model: String,
    pub key: Option<String>,
    /// Attempts made, the successful one included.
    pub attempts: usize,
    /// 0 for the primary target, n for the n-th fallback.
    pub fallback_index: usize,
}

pub enum ChatOutcome {
    Complete(ChatResponse, Served),
    Stream(ChatStream, Served),
}

pub struct Gateway {
    providers: Vec<Provider>,
    by_name: HashMap<String, usize>,
    routes: Vec<RouteConfig>,
    images: ImageFetcher,
    /// Upstream model lists per provider (index-aligned with `providers`), refreshed off the hot path.
    discovered: RwLock<(Option<Instant>, Vec<Vec<String>>)>,
}

impl Gateway {
    pub fn new(cfg: &Config) -> Result<Self, GatewayError> {
        let mut providers = Vec::with_capacity(cfg.providers.len());
        let mut by_name = HashMap::new();
        for p in &cfg.providers {
            by_name.insert(p.name.clone(), providers.len());
            providers.push(Provider { client: upstream::build_client(&p.timeouts)?, cfg: p.clone() });
        }
        let n = providers.len();
        Ok(Gateway {
            providers,
            by_name,
            routes: cfg.routes.clone(),
            images: ImageFetcher::new(&cfg.images)?,
            discovered: RwLock::new((None, vec![Vec::new(); n])),
        })
    }

    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|p| p.cfg.name.as_str())
    }

    /// The request path for chat completions:
    ///
    /// 1. **Accept** (server): the body was decoded into a [`ChatRequest`]; here it is checked.
    /// 2. **Plan**: the model (`provider/model` or a bare name), the request's `fallbacks` and the config's
    ///    `routes[].fallbacks` become an ordered list of targets.
    /// 3. **Execute**: for each target, pick a key by weight, inline image URLs if the provider needs bytes,
    ///    build the provider request (pure codec), send it with connect / first-byte / idle / total timeouts,
    ///    and classify the outcome. Success returns; a failure another target could survive (network,
    ///    timeout, 429, 5xx, 529, an error event before the first chunk) moves on; a caller fault returns.
    ///    A stream is committed to its target when its first chunk arrives, never before.
    /// 4. **Respond** (server): the caller's API shape, with headers saying who served it.
    pub async fn chat(&self, req: ChatRequest, ctx: &RequestCtx) -> Result<ChatOutcome, GatewayError> {
        validate_chat(&req)?;
        let plan = self.plan(&req.model, req.fallbacks.as_deref().unwrap_or(&[]))?;
        let stream = req.is_stream();
        // A copy with image URLs replaced by their bytes, made once for the first target that needs it.
        let mut inlined: Option<ChatRequest> = None;
        let mut run = Attempts::new(self, &plan);
        while let Some(a) = run.next_target() {
            let (p, label, started) = (a.provider, a.label(), Instant::now());
            let body: &ChatRequest = if p.cfg.kind.accepts_image_urls() {
                &req
            } else {
                if inlined.is_none() {
                    inlined = Some(self.images.inline_images(&req).await?.unwrap_or_else(|| req.clone()));
                }
                inlined.as_ref().unwrap_or(&req)
            };
            let rctx = ResponseCtx { id: &ctx.id, created: ctx.created, model: &a.target.model };
            let result = match codec::build_chat(&endpoint(p, a.key), body, &a.target.model) {
                Err(e) => Err(upstream::wire_failure(&label, started, e)),
                Ok(wire) if stream => {
                    let decoder = StreamDecoder::new(p.cfg.kind, rctx);
                    upstream::open_stream(&p.client, p.cfg.kind, &p.cfg.timeouts, &label, wire, decoder)
                        .await
                        .map(|s| ChatOutcome::Stream(s, run.served(&a)))
                }
                Ok(wire) => match upstream::send_complete(&p.client, p.cfg.kind, &p.cfg.timeouts, &label, wire).await {
                    Ok(bytes) => codec::parse_chat(p.cfg.kind, &bytes, rctx)
                        .map(|r| ChatOutcome::Complete(r, run.served(&a)))
                        .map_err(|e| upstream::wire_failure(&label, started, e)),
                    Err(f) => Err(f),
                },
            };
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(f) => run.failed(f)?,
            }
        }
        Err(run.exhausted())
    }

    /// `POST /v1/embeddings`: the same plan and fallback rules as chat, one body back.
    pub async fn embeddings(&self, req: EmbeddingsRequest, ctx: &RequestCtx) -> Result<(EmbeddingsResponse, Served), GatewayError> {
        if req.model.trim().is_empty() {
            return Err(GatewayError::bad_request("model is required", Some("model")));
        }
        let plan = self.plan(&req.model, req.fallbacks.as_deref().unwrap_or(&[]))?;
        let mut run = Attempts::new(self, &plan);
        while let Some(a) = run.next_target() {
            let (p, label, started) = (a.provider, a.label(), Instant::now());
            let rctx = ResponseCtx { id: &ctx.id, created: ctx.created, model: &a.target.model };
            let result = match codec::build_embeddings(&endpoint(p, a.key), &req, &a.target.model) {
                Err(e) => Err(upstream::wire_failure(&label, started, e)),
                Ok(wire) => match upstream::send_complete(&p.client, p.cfg.kind, &p.cfg.timeouts, &label, wire).await {
                    Ok(bytes) => codec::parse_embeddings(p.cfg.kind, &bytes, rctx, req.encoding_format.as_deref())
                        .map_err(|e| upstream::wire_failure(&label, started, e)),
                    Err(f) => Err(f),
                },
            };
            match result {
                Ok(resp) => return Ok((resp, run.served(&a))),
                Err(f) => run.failed(f)?,
            }
        }
        Err(run.exhausted())
    }

    /// Turns the requested model and fallbacks into the ordered targets to try.
    ///
    /// Order: the primary, then the request body's `fallbacks`, then the matching route's `fallbacks`, each
    /// target once.
    pub fn plan(&self, model: &str, request_fallbacks: &[String]) -> Result<Vec<Target>, GatewayError> {
        let primary = self.resolve(model)?;
        let mut plan = vec![primary];
        for (i, f) in request_fallbacks.iter().enumerate() {
            let t = self.resolve(f).map_err(|e| GatewayError::BadRequest {
                message: format!("fallbacks[{i}]: {e}"),
                param: Some(format!("fallbacks[{i}]")),
                code: "invalid_fallback",
            })?;
            if !plan.contains(&t) {
                plan.push(t);
            }
        }
        let primary_label = plan[0].label.clone();
        if let Some(route) = self.routes.iter().find(|r| r.models.iter().any(|m| m == model || *m == primary_label)) {
            for f in &route.fallbacks {
                // Config fallbacks were checked at load time.
                if let Ok(t) = self.resolve(f) {
                    if !plan.contains(&t) {
                        plan.push(t);
                    }
                }
            }
        }
        Ok(plan)
    }

    /// `provider/model` when the prefix is a configured provider; otherwise a bare model name served by
    /// exactly one provider (or any name when only one provider is configured).
    fn resolve(&self, model: &str) -> Result<Target, GatewayError> {
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
                return Ok(self.target(i, rest));
            }
        }
        if self.providers.len() == 1 {
            return Ok(self.target(0, model));
        }
        let candidates: Vec<usize> = {
            let discovered = self.discovered.read();
            let listed = |i: usize| discovered.as_ref().is_ok_and(|d| d.1.get(i).is_some_and(|l| l.iter().any(|m| m == model)));
            (0..self.providers.len()).filter(|&i| self.providers[i].cfg.models.iter().any(|m| m == model) || listed(i)).collect()
        };
        match candidates.as_slice() {
            [i] => Ok(self.target(*i, model)),
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
                let list: Vec<String> = many.iter().map(|&i| format!("{}/{model}", self.providers[i].cfg.name)).collect();
                Err(GatewayError::AmbiguousModel {
                    message: format!("model \"{model}\" is served by several providers; choose one of: {}", list.join(", ")),
                })
            }
        }
    }

    fn target(&self, provider: usize, model: &str) -> Target {
        Target { provider, model: model.to_string(), label: format!("{}/{model}", self.providers[provider].cfg.name) }
    }

    /// Asks every provider that lists models for its list and remembers them (used for bare model names and
    /// `/v1/models`). Failures leave the provider's previous list in place.
    pub async fn refresh_models(&self) {
        let futures = self.providers.iter().map(|p| async move {
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
        for (i, p) in self.providers.iter().enumerate() {
            let mut seen = std::collections::HashSet::new();
            for m in p.cfg.models.iter().chain(discovered.get(i).into_iter().flatten()) {
                if seen.insert(m.as_str()) {
                    data.push(ModelInfo {
                        id: format!("{}/{m}", p.cfg.name),
                        object: "model".into(),
                        created: 0,
                        owned_by: p.cfg.name.clone(),
                    });
                }
            }
        }
        ModelList { object: "list".into(), data }
    }
}

/// One target of a plan, with the key chosen for this attempt.
struct Candidate<'g> {
    provider: &'g Provider,
    target: &'g Target,
    key: Option<&'g KeyConfig>,
    index: usize,
}

impl<'g> Candidate<'g> {
    fn label(&self) -> Label<'g> {
        Label { target: &self.target.label, key: self.key.map(|k| k.name.as_str()) }
    }
}

/// The attempt loop's state, shared by every operation: walks the plan, chooses keys, records failures and
/// decides when to stop. Each operation only says how to make one attempt.
struct Attempts<'g> {
    gateway: &'g Gateway,
    plan: &'g [Target],
    next: usize,
    attempts: Vec<Attempt>,
    retry_after: Option<u64>,
    rng: fastrand::Rng,
}

impl<'g> Attempts<'g> {
    fn new(gateway: &'g Gateway, plan: &'g [Target]) -> Self {
        Attempts { gateway, plan, next: 0, attempts: Vec::new(), retry_after: None, rng: fastrand::Rng::new() }
    }

    /// The next target with a key that may serve its model; a target without one is recorded as failed.
    fn next_target(&mut self) -> Option<Candidate<'g>> {
        while let Some(target) = self.plan.get(self.next) {
            let index = self.next;
            self.next += 1;
            let provider = &self.gateway.providers[target.provider];
            if provider.cfg.keys.is_empty() {
                return Some(Candidate { provider, target, key: None, index });
            }
            match keys::choose(&provider.cfg.keys, &target.model, &mut self.rng) {
                Some(k) => return Some(Candidate { provider, target, key: Some(k), index }),
                None => self.attempts.push(Attempt {
                    target: target.label.clone(),
                    key: None,
                    status: None,
                    class: FailureClass::Unsupported,
                    message: format!("no key of provider {} is allowed to use model {}", provider.cfg.name, target.model),
                    latency_ms: 0,
                }),
            }
        }
        None
    }

    /// Attribution for a success on `c`.
    fn served(&self, c: &Candidate<'_>) -> Served {
        if !self.attempts.is_empty() {
            tracing::info!(target = %c.target.label, failed_before = self.attempts.len(), "served after fallback");
        }
        Served {
            provider: c.provider.cfg.name.clone(),
            model: c.target.model.clone(),
            key: c.key.map(|k| k.name.clone()),
            attempts: self.attempts.len() + 1,
            fallback_index: c.index,
        }
    }

    /// Records a failed attempt. `Err` when no other target should be tried (a caller fault).
    fn failed(&mut self, f: Failure) -> Result<(), GatewayError> {
        let class = f.attempt.class;
        tracing::warn!(target = %f.attempt.target, key = ?f.attempt.key, status = ?f.attempt.status, class = class.as_str(),
            latency_ms = f.attempt.latency_ms, "upstream attempt failed: {}", f.attempt.message);
        if f.retry_after.is_some() {
            self.retry_after = f.retry_after;
        }
        let status = f.attempt.status;
        let provider = f.attempt.target.split('/').next().unwrap_or_default().to_string();
        self.attempts.push(f.attempt);
        if class.falls_back() {
            return Ok(());
        }
        let error = Box::new(f.upstream.unwrap_or_default());
        Err(GatewayError::Upstream { status: status.unwrap_or(502), error, provider, class, attempts: std::mem::take(&mut self.attempts) })
    }

    /// Every target failed.
    fn exhausted(self) -> GatewayError {
        GatewayError::all_failed(self.attempts, self.retry_after)
    }
}

fn endpoint<'a>(p: &'a Provider, key: Option<&'a KeyConfig>) -> Endpoint<'a> {
    Endpoint { kind: p.cfg.kind, base_url: &p.cfg.base_url, api_key: key.map(|k| k.secret.expose_secret()), options: &p.cfg.options }
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

impl From<WireError> for GatewayError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Unsupported { message, param } => GatewayError::BadRequest { message, param, code: "unsupported_parameter" },
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
routes:
  - models: ["openai/gpt-4o-mini"]
    fallbacks: ["local/llava", "openrouter/gpt-4o-mini"]
"#;

    #[test]
    fn provider_prefix_splits_on_the_first_slash_only() {
        let g = gw(TWO);
        let p = g.plan("openrouter/openai/gpt-4o", &[]).unwrap();
        assert_eq!((p[0].label.as_str(), p[0].model.as_str()), ("openrouter/openai/gpt-4o", "openai/gpt-4o"));
    }

    #[test]
    fn bare_names_resolve_when_unambiguous() {
        let g = gw(TWO);
        assert_eq!(g.plan("llava", &[]).unwrap()[0].label, "local/llava");
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
        let p = g.plan("openai/gpt-4o-mini", &["openrouter/gpt-4o-mini".into()]).unwrap();
        let labels: Vec<&str> = p.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, vec!["openai/gpt-4o-mini", "openrouter/gpt-4o-mini", "local/llava"]);
        let e = g.plan("openai/gpt-4o-mini", &["bogus/x".into()]).unwrap_err();
        assert!(matches!(e, GatewayError::BadRequest { code: "invalid_fallback", .. }));
    }

    #[test]
    fn single_provider_takes_any_bare_name() {
        let g = gw("providers:\n  vllm:\n    base_url: http://127.0.0.1:1\n");
        assert_eq!(g.plan("meta-llama/Llama-3-8B", &[]).unwrap()[0].label, "vllm/meta-llama/Llama-3-8B");
    }
}
