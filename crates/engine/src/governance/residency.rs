//! Residency, proved before serving: for each virtual key, every provider its requests can reach through
//! its provider configs and the routes' targets, fallbacks and context fallbacks (hedges race the same
//! targets). A configuration in which a residency-restricted key could reach a provider its policy forbids
//! is refused, naming the path, so the operator settles the contradiction instead of the gateway dropping
//! a configured fallback in silence. What the request body asks for (its own `fallbacks`) is not known
//! here: at run time such targets are dropped from the plan before anything is sent (`plan`).
//!
//! [`report`] gives the same reachability for people: the artifact an auditor reads, printed by
//! `switchyard check --explain` ([`explain`]) and answered by the management API's `GET /api/residency`.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::{Config, ProviderConfig, RouteConfig};
use crate::governance::model::{Residency, VirtualKeySpec};

/// One key's view of the configuration.
struct KeyView<'a> {
    path: String,
    spec: &'a VirtualKeySpec,
    residency: Vec<&'a Residency>,
}

impl KeyView<'_> {
    fn restricted(&self) -> bool {
        self.residency.iter().any(|r| r.is_restrictive())
    }

    fn reaches_tags(&self, p: &ProviderConfig) -> bool {
        self.residency.iter().all(|r| r.allows(&p.tags))
    }

    /// What the key's provider configs let it send to `provider` (none given: everything its residency
    /// allows, since an empty list must not widen a restricted key).
    fn granted(&self, p: &ProviderConfig, model: &str) -> bool {
        if self.spec.provider_configs.is_empty() {
            return self.reaches_tags(p);
        }
        self.spec.provider_configs.iter().any(|g| g.provider == p.name && g.allows(model))
    }

    fn rules(&self) -> String {
        let r: Vec<String> = self.residency.iter().filter(|r| r.is_restrictive()).map(|r| r.to_string()).collect();
        if r.is_empty() {
            "no residency restriction".into()
        } else {
            r.join("; and ")
        }
    }
}

fn views(cfg: &Config) -> Vec<KeyView<'_>> {
    cfg.governance
        .keys
        .iter()
        .enumerate()
        .map(|(i, (spec, _))| {
            let team = spec.team_id.as_deref().and_then(|t| cfg.governance.teams.iter().find(|x| x.id == t));
            let residency = spec.residency.iter().chain(team.and_then(|t| t.residency.as_ref())).collect();
            KeyView { path: format!("governance.virtual_keys[{i}]"), spec, residency }
        })
        .collect()
}

fn split<'c>(cfg: &'c Config, target: &str) -> Option<(&'c ProviderConfig, String)> {
    let (p, m) = target.split_once('/')?;
    cfg.providers.iter().find(|x| x.name == p).map(|x| (x, m.to_string()))
}

/// The route's name for people: its first model.
fn route_name(r: &RouteConfig) -> String {
    r.models.first().cloned().unwrap_or_default()
}

/// Whether a request of the key can enter the route (ask for one of its models and be planned onto it).
fn enters(cfg: &Config, key: &KeyView, r: &RouteConfig) -> bool {
    if !r.targets.is_empty() {
        return r.targets.iter().filter_map(|t| split(cfg, &t.target)).any(|(p, m)| key.granted(p, &m));
    }
    r.models.iter().any(|m| match split(cfg, m) {
        Some((p, model)) => key.granted(p, &model),
        // A bare name: served by a provider that lists it, or else by the route's fallbacks.
        None => {
            let listed: Vec<&ProviderConfig> = cfg.providers.iter().filter(|p| p.declared_models().any(|d| d == m)).collect();
            if listed.is_empty() {
                cfg.providers.len() == 1 && key.granted(&cfg.providers[0], m)
                    || r.fallbacks.iter().filter_map(|t| split(cfg, &t.target)).any(|(p, x)| key.granted(p, &x))
            } else {
                listed.iter().any(|p| key.granted(p, m))
            }
        }
    })
}

/// Every reachable provider of a key, with how it is reached; and the forbidden ones it could reach.
struct Reach {
    /// Provider name → the ways it is reached.
    reached: BTreeMap<String, Vec<String>>,
    /// (path, message) for each way to a forbidden provider.
    violations: Vec<(String, String)>,
}

fn reach(cfg: &Config, key: &KeyView) -> Reach {
    let mut out = Reach { reached: BTreeMap::new(), violations: Vec::new() };
    let name = &key.spec.name;
    for (j, g) in key.spec.provider_configs.iter().enumerate() {
        let Some(p) = cfg.providers.iter().find(|p| p.name == g.provider) else { continue };
        out.reached.entry(p.name.clone()).or_default().push(format!("provider_configs[{j}]"));
        if !key.reaches_tags(p) {
            out.violations.push((
                format!("{}.provider_configs[{j}]", key.path),
                format!(
                    "provider {} is tagged [{}], which the residency of virtual key \"{name}\" forbids ({}); remove this provider config or change the policy",
                    p.name,
                    p.tags.join(", "),
                    key.rules()
                ),
            ));
        }
    }
    if key.spec.provider_configs.is_empty() {
        for p in cfg.providers.iter().filter(|p| key.reaches_tags(p)) {
            out.reached.entry(p.name.clone()).or_default().push("provider/model".into());
        }
    }
    for r in cfg.routes.iter().filter(|r| enters(cfg, key, r)) {
        let lists = [("targets", &r.targets), ("fallbacks", &r.fallbacks), ("context_fallbacks", &r.context_fallbacks)];
        for (field, list) in lists {
            for (j, t) in list.iter().enumerate() {
                let Some((p, m)) = split(cfg, &t.target) else { continue };
                let explicit = !key.spec.provider_configs.is_empty();
                if explicit && !key.spec.provider_configs.iter().any(|g| g.provider == p.name && g.allows(&m)) {
                    // Left out by the key's own provider configs: explicit, and shown by `explain`.
                    continue;
                }
                let via = format!("the route for {}: {field}[{j}] {}", route_name(r), t.target);
                if key.reaches_tags(p) {
                    out.reached.entry(p.name.clone()).or_default().push(via);
                } else {
                    out.violations.push((
                        key.path.clone(),
                        format!(
                            "virtual key \"{name}\" ({}) could reach provider {} (tagged [{}]) through {via}; remove that target, list the key's providers in provider_configs (which leaves the others out), or give this key's traffic a model name of its own",
                            key.rules(),
                            p.name,
                            p.tags.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// Every way a residency-restricted key could reach a forbidden provider, as (path, message).
pub fn violations(cfg: &Config) -> Vec<(String, String)> {
    views(cfg).iter().filter(|k| k.restricted()).flat_map(|k| reach(cfg, k).violations).collect()
}

/// One virtual key's reachability: what `switchyard check --explain` prints for it and what the management
/// API's `GET /api/residency` answers, computed once by [`report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyReach {
    /// The key's id; a secret when `id_is_value` (then only the name may be shown).
    pub id: String,
    #[serde(skip)]
    pub id_is_value: bool,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    pub active: bool,
    /// The key's and its team's residency policy, or `no residency restriction`.
    pub rules: String,
    pub restricted: bool,
    /// Every configured provider, in the configuration's order, reached or not.
    pub providers: Vec<ProviderReach>,
    /// Ways the key could reach a provider its policy forbids (a configuration with any is refused; shown
    /// so that the report says what is wrong rather than hiding it).
    pub violations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderReach {
    pub provider: String,
    pub tags: Vec<String>,
    pub reached: bool,
    /// How it is reached (`provider_configs[0]`, `the route for gpt-4o: fallbacks[1] local/llama3`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// Why it is never reached: `residency forbids it` or `not in its provider_configs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<&'static str>,
}

/// For each key: its residency and every provider it can reach with that provider's tags and how, then
/// the providers it cannot reach.
pub fn report(cfg: &Config) -> Vec<KeyReach> {
    views(cfg)
        .iter()
        .zip(&cfg.governance.keys)
        .map(|(key, (_, value))| {
            let r = reach(cfg, key);
            let providers = cfg
                .providers
                .iter()
                .map(|p| {
                    let via = r.reached.get(&p.name).cloned();
                    let why_not = match via {
                        Some(_) => None,
                        None if !key.reaches_tags(p) => Some("residency forbids it"),
                        None => Some("not in its provider_configs"),
                    };
                    ProviderReach {
                        provider: p.name.clone(),
                        tags: p.tags.clone(),
                        reached: via.is_some(),
                        via: via.unwrap_or_default(),
                        why_not,
                    }
                })
                .collect();
            KeyReach {
                id: key.spec.id.clone(),
                id_is_value: super::key_hash(value.expose_secret()) == super::key_hash(&key.spec.id),
                name: key.spec.name.clone(),
                team: key.spec.team_id.clone(),
                customer: key.spec.customer_id.clone(),
                active: key.spec.is_active,
                rules: key.rules(),
                restricted: key.restricted(),
                providers,
                violations: r.violations.into_iter().map(|(_, v)| v).collect(),
            }
        })
        .collect()
}

/// [`report`] as the lines `switchyard check --explain` prints.
pub fn explain(cfg: &Config) -> Vec<String> {
    let mut lines = Vec::new();
    for key in report(cfg) {
        let owner = match (&key.team, &key.customer) {
            (Some(t), _) => format!(", team {t}"),
            (_, Some(c)) => format!(", customer {c}"),
            _ => String::new(),
        };
        let active = if key.active { "" } else { ", switched off" };
        lines.push(format!("virtual key \"{}\"{owner}{active}: {}", key.name, key.rules));
        for p in &key.providers {
            let tags = if p.tags.is_empty() { "no tags".to_string() } else { p.tags.join(", ") };
            match p.why_not {
                None => lines.push(format!("  reaches {} [{tags}] via {}", p.provider, p.via.join("; "))),
                Some(why) => lines.push(format!("  never   {} [{tags}]: {why}", p.provider)),
            }
        }
        for v in &key.violations {
            lines.push(format!("  VIOLATION: {v}"));
        }
    }
    lines
}
