//! The routing plan: how a requested model name (`provider/model`, a bare name, or a named chain), the
//! request body's `fallbacks` and the configuration's routes become the ordered targets a request tries.
//! Decisions over the configuration and the providers' model lists only; no I/O (the gateway fetches the
//! lists and hands them in). docs/configuration.md ("How a requested model becomes the targets to try")
//! states the same rules for users.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{Denial, GatewayError};
use crate::governance::Principal;
use crate::pool::Upstreams;

/// One entry of a routing plan.
#[derive(Debug, Clone)]
pub struct Target {
    pub(crate) provider: usize,
    /// The upstream model name (the provider prefix removed).
    pub model: String,
    /// `provider/model`, for headers and logs.
    pub label: String,
    /// Parameters that replace the caller's for this target (from a route's fallback entry).
    pub(crate) params: Option<Arc<Map<String, Value>>>,
}

impl Target {
    pub(crate) fn with_params(mut self, params: &Map<String, Value>) -> Self {
        if !params.is_empty() {
            self.params = Some(Arc::new(params.clone()));
        }
        self
    }
}

/// What the gateway will try for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
    /// Tried instead of the remaining targets when one says the prompt is too long for its context.
    pub context: Vec<Target>,
    /// Index of the matching route, whose hedging, retries, deadline and fail-fast apply.
    pub(crate) route: Option<usize>,
    /// How the requested model became the first targets.
    pub via: Via,
}

/// How a requested model name was resolved; `switchyard check` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `provider/model`.
    Provider,
    /// A bare name that exactly one provider lists (in the file or in its own model list).
    Listed,
    /// A bare name, sent to the only configured provider.
    OnlyProvider,
    /// A named chain (`routes[].targets`, or a named top-level `fallbacks:` chain).
    Chain,
    /// A bare name no provider serves, served by its route's fallbacks in order.
    RouteFallbacks,
    /// A bare name, through the caller's virtual key's provider configs.
    KeyConfigs,
}

impl Via {
    pub fn describe(self) -> &'static str {
        match self {
            Via::Provider => "provider/model",
            Via::Listed => "a bare name one provider lists",
            Via::OnlyProvider => "a bare name, sent to the only provider",
            Via::Chain => "a named chain",
            Via::RouteFallbacks => "a name no provider lists, served by the route's fallbacks in order",
            Via::KeyConfigs => "a bare name, through the virtual key's provider configs",
        }
    }
}

/// The same provider and model is one target, whatever its parameters.
fn push_new(list: &mut Vec<Target>, t: Target) {
    if !list.iter().any(|x| x.provider == t.provider && x.model == t.model) {
        list.push(t);
    }
}

/// The providers' own model lists, by provider name: shared by every planner of one gateway, so that a
/// change of providers keeps what was learnt about the others.
#[derive(Default)]
pub(crate) struct ModelLists {
    fetched: Option<Instant>,
    by_provider: HashMap<String, Vec<String>>,
}

/// Resolves model names: holds what resolution needs besides the configuration (provider names, the model
/// names the file ties to each provider, the providers' own lists). One planner per providers snapshot.
pub(crate) struct Planner {
    by_name: HashMap<String, usize>,
    /// Per provider (index-aligned), the model names the file ties to it.
    declared: Vec<HashSet<String>>,
    lists: Arc<RwLock<ModelLists>>,
}

impl Planner {
    pub(crate) fn new(cfg: &Config) -> Self {
        Planner::with_lists(&cfg.providers, Arc::default())
    }

    /// A planner for these providers that shares `lists` with the planner it replaces.
    pub(crate) fn with_lists(providers: &[crate::config::ProviderConfig], lists: Arc<RwLock<ModelLists>>) -> Self {
        Planner {
            by_name: providers.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect(),
            declared: providers.iter().map(|p| p.declared_models().map(str::to_string).collect()).collect(),
            lists,
        }
    }

    /// The lists, for the planner of the next snapshot.
    pub(crate) fn shared_lists(&self) -> Arc<RwLock<ModelLists>> {
        Arc::clone(&self.lists)
    }

    /// Once this planner serves: drops the lists of providers it does not know and marks the rest stale,
    /// so that the next `/v1/models` fetches them again (a new provider's first of all).
    pub(crate) fn adopt_lists(&self) {
        if let Ok(mut l) = self.lists.write() {
            l.by_provider.retain(|name, _| self.by_name.contains_key(name));
            l.fetched = None;
        }
    }

    /// Whether the providers' lists were never fetched or are older than `ttl`.
    pub(crate) fn lists_stale(&self, ttl: Duration) -> bool {
        self.lists.read().map(|l| l.fetched.is_none_or(|t| t.elapsed() > ttl)).unwrap_or(true)
    }

    /// Takes freshly fetched lists by provider name (`None`: that provider's fetch failed, and its previous
    /// list stays).
    pub(crate) fn set_lists(&self, fetched: Vec<(String, Option<Vec<String>>)>) {
        if let Ok(mut l) = self.lists.write() {
            for (name, list) in fetched {
                if let Some(list) = list {
                    l.by_provider.insert(name, list);
                }
            }
            l.fetched = Some(Instant::now());
        }
    }

    /// A provider's own list as last fetched (empty when never fetched).
    pub(crate) fn list_of(&self, provider: &str) -> Vec<String> {
        self.lists.read().ok().and_then(|l| l.by_provider.get(provider).cloned()).unwrap_or_default()
    }

    /// Turns the requested model and fallbacks into the ordered targets to try.
    ///
    /// Order: the requested model's targets (one, or a named chain's), then the request body's
    /// `fallbacks`, then the matching route's `fallbacks`, each target once. The route (if one matches)
    /// also brings its context fallbacks, hedging and deadline.
    /// The plan for a caller: `who`'s provider configs choose the provider of a bare model name (by
    /// weight, the others following as fallbacks) and every target the key may not use, or its residency
    /// may not reach, is dropped before anything is sent.
    pub(crate) fn plan(
        &self,
        up: &Upstreams,
        model: &str,
        request_fallbacks: &[String],
        who: Option<&Principal>,
    ) -> Result<Plan, GatewayError> {
        let mut plan = match who.and_then(|w| self.by_key_configs(up, w, model)) {
            Some(targets) => self.extend(up, model, request_fallbacks, targets, Via::KeyConfigs)?,
            None => {
                let (targets, via) = match self.resolve_requested(up, model) {
                    Ok(x) => x,
                    // A name this key cannot use anywhere is the key's refusal, not a missing model.
                    Err(GatewayError::ModelNotFound { .. } | GatewayError::AmbiguousModel { .. })
                        if who.is_some_and(|w| w.grants().next().is_some()) =>
                    {
                        return Err(not_allowed(who, model));
                    }
                    Err(e) => return Err(e),
                };
                self.extend(up, model, request_fallbacks, targets, via)?
            }
        };
        if let Some(who) = who {
            let allowed = |t: &Target| who.may_use(&up.providers[t.provider].cfg.name, &t.model);
            let reachable = |t: &Target| who.may_reach(&up.providers[t.provider].cfg.tags);
            let before = plan.targets.len();
            let forbidden = plan.targets.iter().filter(|t| allowed(t) && !reachable(t)).count();
            plan.targets.retain(|t| allowed(t) && reachable(t));
            plan.context.retain(|t| allowed(t) && reachable(t));
            if before > plan.targets.len() {
                tracing::debug!(key = %who.name(), dropped = before - plan.targets.len(), "targets the virtual key may not use were dropped");
            }
            if plan.targets.is_empty() {
                return Err(if forbidden > 0 {
                    GatewayError::denied(
                        Denial::Residency,
                        format!(
                            "virtual key \"{}\" may not send \"{model}\" anywhere: every target is a provider its residency policy forbids ({}); nothing was sent",
                            who.name(),
                            who.residency_text()
                        ),
                    )
                } else {
                    not_allowed(Some(who), model)
                });
            }
        }
        Ok(plan)
    }

    /// A bare model name through the key's provider configs that allow it: one chosen by weight first,
    /// then the others in weight order (a weight of 0 is only ever a fallback). `None` when the name is a
    /// named chain, names a provider, or no config of the key allows it.
    fn by_key_configs(&self, up: &Upstreams, who: &Principal, model: &str) -> Option<Vec<Target>> {
        let model = model.trim();
        let is_chain = self.route_of(up, model).is_some_and(|i| !up.routes[i].targets.is_empty());
        let prefixed = model.split_once('/').is_some_and(|(p, _)| self.by_name.contains_key(p));
        if is_chain || prefixed {
            return None;
        }
        let mut eligible: Vec<(usize, f64)> = who
            .grants()
            .filter(|g| g.allows(model))
            .filter_map(|g| self.by_name.get(&g.provider).map(|&i| (i, g.weight)))
            .filter(|&(i, _)| up.providers[i].cfg.allows_model(model))
            .collect();
        if eligible.is_empty() {
            return None;
        }
        eligible.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = eligible.iter().map(|e| e.1).sum();
        let first = if total > 0.0 {
            let mut x = fastrand::f64() * total;
            eligible
                .iter()
                .position(|e| {
                    x -= e.1;
                    x < 0.0 && e.1 > 0.0
                })
                .unwrap_or(0)
        } else {
            0
        };
        let chosen = eligible.remove(first);
        Some(std::iter::once(chosen).chain(eligible).map(|(i, _)| self.target(up, i, model)).collect())
    }

    /// The requested model's targets followed by the request body's fallbacks and the route's.
    fn extend(
        &self,
        up: &Upstreams,
        model: &str,
        request_fallbacks: &[String],
        mut targets: Vec<Target>,
        via: Via,
    ) -> Result<Plan, GatewayError> {
        for (i, f) in request_fallbacks.iter().enumerate() {
            let (ts, _) = self.resolve_requested(up, f).map_err(|e| GatewayError::BadRequest {
                message: format!("fallbacks[{i}]: {e}"),
                param: Some(format!("fallbacks[{i}]")),
                code: "invalid_fallback",
            })?;
            for t in ts {
                push_new(&mut targets, t);
            }
        }
        let primary_label = targets.first().map(|t| t.label.clone()).unwrap_or_default();
        let route = self.route_of(up, model).or_else(|| self.route_of(up, &primary_label));
        let mut context = Vec::new();
        if let Some(r) = route.map(|i| &up.routes[i]) {
            for f in &r.fallbacks {
                // Config fallbacks were checked at load time.
                if let Ok(t) = self.resolve(up, &f.target) {
                    push_new(&mut targets, t.with_params(&f.params));
                }
            }
            for f in &r.context_fallbacks {
                if let Ok(t) = self.resolve(up, &f.target) {
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
    fn route_of(&self, up: &Upstreams, model: &str) -> Option<usize> {
        up.routes.iter().position(|r| r.models.iter().any(|m| m == model))
    }

    /// The targets a requested model name stands for: a named chain's (`routes[].targets`), or the one
    /// provider that serves it; a bare name no provider serves is served by its route's fallbacks, if it
    /// has a route with any.
    fn resolve_requested(&self, up: &Upstreams, model: &str) -> Result<(Vec<Target>, Via), GatewayError> {
        let model = model.trim();
        if let Some(r) = self.route_of(up, model).map(|i| &up.routes[i]) {
            if !r.targets.is_empty() {
                let ts = r.targets.iter().filter_map(|f| self.resolve(up, &f.target).ok().map(|t| t.with_params(&f.params))).collect();
                return Ok((ts, Via::Chain));
            }
        }
        match self.resolve_one(up, model) {
            Ok(x) => Ok(x),
            Err(e @ GatewayError::ModelNotFound { .. }) => match self.route_of(up, model).map(|i| &up.routes[i]) {
                Some(r) if !r.fallbacks.is_empty() => {
                    let ts =
                        r.fallbacks.iter().filter_map(|f| self.resolve(up, &f.target).ok().map(|t| t.with_params(&f.params))).collect();
                    Ok((ts, Via::RouteFallbacks))
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    fn resolve(&self, up: &Upstreams, model: &str) -> Result<Target, GatewayError> {
        self.resolve_one(up, model).map(|(mut ts, _)| ts.remove(0))
    }

    /// `provider/model` when the prefix is a configured provider; otherwise a bare model name served by
    /// exactly one provider (or any name when only one provider is configured). A provider's `models`
    /// allow-list is respected either way. Always one target.
    fn resolve_one(&self, up: &Upstreams, model: &str) -> Result<(Vec<Target>, Via), GatewayError> {
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
                let p = &up.providers[i].cfg;
                if !p.allows_model(rest) {
                    return Err(GatewayError::ModelNotFound {
                        message: format!(
                            "model \"{model}\": provider {prefix} serves only {} (providers.{prefix}.models)",
                            p.models.join(", ")
                        ),
                    });
                }
                return Ok((vec![self.target(up, i, rest)], Via::Provider));
            }
        }
        let candidates: Vec<usize> = {
            let lists = self.lists.read();
            let listed = |i: usize| {
                lists.as_ref().is_ok_and(|d| d.by_provider.get(&up.providers[i].cfg.name).is_some_and(|l| l.iter().any(|m| m == model)))
            };
            (0..up.providers.len())
                .filter(|&i| {
                    let p = &up.providers[i].cfg;
                    p.allows_model(model) && (self.declared[i].contains(model) || listed(i))
                })
                .collect()
        };
        match candidates.as_slice() {
            [i] => Ok((vec![self.target(up, *i, model)], Via::Listed)),
            [] if up.providers.len() == 1 && up.providers[0].cfg.allows_model(model) => {
                Ok((vec![self.target(up, 0, model)], Via::OnlyProvider))
            }
            [] => {
                let names: Vec<&str> = up.providers.iter().map(|p| p.cfg.name.as_str()).collect();
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
                let list: Vec<String> = many.iter().map(|&i| format!("{}/{model}", up.providers[i].cfg.name)).collect();
                Err(GatewayError::AmbiguousModel {
                    message: format!("model \"{model}\" is served by several providers; choose one of: {}", list.join(", ")),
                })
            }
        }
    }

    fn target(&self, up: &Upstreams, provider: usize, model: &str) -> Target {
        Target { provider, model: model.to_string(), label: format!("{}/{model}", up.providers[provider].cfg.name), params: None }
    }
}

/// The 403 for a model the caller's key may not use, saying what it may.
fn not_allowed(who: Option<&Principal>, model: &str) -> GatewayError {
    let Some(who) = who else {
        return GatewayError::denied(Denial::NotAllowed, format!("model \"{model}\" is not allowed"));
    };
    let may: Vec<String> = who
        .grants()
        .map(|g| {
            if g.allowed_models.is_empty() {
                format!("{}/*", g.provider)
            } else {
                g.allowed_models.iter().map(|m| format!("{}/{m}", g.provider)).collect::<Vec<_>>().join(", ")
            }
        })
        .collect();
    GatewayError::denied(
        Denial::NotAllowed,
        format!(
            "virtual key \"{}\" may not use \"{model}\"; it may use {}",
            who.name(),
            if may.is_empty() { "nothing".into() } else { may.join(", ") }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use crate::Gateway;
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
