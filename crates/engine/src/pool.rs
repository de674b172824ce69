//! The upstreams one gateway talks to: each configured provider with its HTTP client and live health
//! (outlier score, key cooldowns, in-flight limit, latencies), plus the routes and settings the executor
//! reads, and the plan's types. The gateway owns it; the executor borrows it, so neither imports the other.
//!
//! [`Upstreams`] is an immutable snapshot: a request takes one at its start and keeps it to its end, so it
//! never sees half a change. What a provider *has learnt* (its outlier detection, its keys' cooldowns, its
//! in-flight slots, its latencies) is not part of the snapshot's identity: it is held behind `Arc`s and handed
//! from one snapshot to the next by provider name (and key name and secret), so replacing the providers
//! through the management API resets nothing for a provider or key that is still there.

use std::sync::Arc;

use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::{Config, KeyConfig, ProviderConfig, RouteConfig, RoutingSettings};
use crate::error::GatewayError;
use crate::health::{Clock, CooldownReason, Health, HealthView, HedgeBudget, KeyHealth, Latency, Limiter};
use crate::images::ImageFetcher;
use crate::upstream;

pub(crate) struct Provider {
    pub(crate) cfg: ProviderConfig,
    pub(crate) client: upstream::Client,
    /// Shared with probes that run on beside a request (see `HealthPolicy::mirror_probes`), and with the
    /// next snapshot when the provider is still there.
    pub(crate) health: Arc<Health>,
    /// Index-aligned with `cfg.keys`.
    pub(crate) keys: Vec<Arc<KeyHealth>>,
    pub(crate) limiter: Arc<Limiter>,
    /// Times to first byte of successful attempts (for the `p95` hedge delay).
    pub(crate) latency: Arc<Latency>,
    /// Vertex: its access tokens, kept across snapshots while the credential is the same.
    pub(crate) tokens: Option<Arc<crate::google::TokenSource>>,
}

impl Provider {
    /// The provider `p` describes, taking over what `before` (the provider of that name in the previous
    /// snapshot, if any) has learnt wherever it still applies.
    fn new(p: &ProviderConfig, before: Option<&Provider>, shared: &Arc<upstream::Shared>) -> Result<Provider, GatewayError> {
        let client = match before {
            // The client holds connection pools; its only setting of ours is the connect timeout.
            Some(b) if b.cfg.timeouts.connect == p.timeouts.connect => b.client.clone(),
            _ => upstream::build_client(&p.timeouts, shared)?,
        };
        let health = match before {
            Some(b) if b.cfg.health == p.health => Arc::clone(&b.health),
            _ => Arc::new(Health::new(p.name.clone(), p.health)),
        };
        let limiter = match before {
            Some(b) if b.cfg.overload == p.overload => Arc::clone(&b.limiter),
            // Requests holding the old limiter's slots finish under it; new ones count against the new bound.
            _ => Arc::new(Limiter::new(p.overload)),
        };
        // A key is the same key when both its name and its secret are: a new secret under an old name is a
        // new key, and must not inherit the old one's "invalid" cooldown.
        let keys = p
            .keys
            .iter()
            .map(|k| {
                before
                    .and_then(|b| b.cfg.keys.iter().position(|o| o.name == k.name && o.secret.expose_secret() == k.secret.expose_secret()))
                    .and_then(|i| before.map(|b| Arc::clone(&b.keys[i])))
                    .unwrap_or_default()
            })
            .collect();
        let latency = before.map(|b| Arc::clone(&b.latency)).unwrap_or_default();
        let tokens = p.google.as_ref().map(|g| match before.and_then(|b| b.tokens.as_ref()) {
            Some(t) if Arc::ptr_eq(t.credential(), g) => Arc::clone(t),
            _ => Arc::new(crate::google::TokenSource::new(Arc::clone(g))),
        });
        Ok(Provider { cfg: p.clone(), client, health, keys, limiter, latency, tokens })
    }
}

pub(crate) struct Upstreams {
    pub(crate) providers: Vec<Provider>,
    pub(crate) routes: Vec<RouteConfig>,
    /// Index-aligned with `routes`.
    pub(crate) hedge_budgets: Arc<Vec<HedgeBudget>>,
    pub(crate) routing: RoutingSettings,
    pub(crate) images: ImageFetcher,
    /// One clock for every snapshot: health state carried over keeps its meaning.
    pub(crate) clock: Clock,
    /// The gateway-wide buffer budget every provider's client draws on.
    shared: Arc<upstream::Shared>,
}

impl Upstreams {
    pub(crate) fn new(cfg: &Config) -> Result<Self, GatewayError> {
        let shared = upstream::Shared::new(cfg);
        let providers = cfg.providers.iter().map(|p| Provider::new(p, None, &shared)).collect::<Result<_, _>>()?;
        Ok(Upstreams {
            providers,
            routes: cfg.routes.clone(),
            hedge_budgets: Arc::new(cfg.routes.iter().map(|_| HedgeBudget::default()).collect()),
            routing: cfg.routing,
            images: ImageFetcher::new(&cfg.images)?,
            clock: Clock::new(),
            shared,
        })
    }

    /// The next snapshot, with `providers` instead of this one's (routes and settings stay: only providers
    /// change while the gateway serves). Every provider that keeps its name keeps its health, key cooldowns,
    /// slots and latencies.
    pub(crate) fn with_providers(&self, providers: &[ProviderConfig]) -> Result<Self, GatewayError> {
        upstream::remember_secrets(providers);
        let next = providers
            .iter()
            .map(|p| Provider::new(p, self.providers.iter().find(|b| b.cfg.name == p.name), &self.shared))
            .collect::<Result<_, _>>()?;
        Ok(Upstreams {
            providers: next,
            routes: self.routes.clone(),
            hedge_budgets: Arc::clone(&self.hedge_budgets),
            routing: self.routing,
            images: self.images.clone(),
            clock: self.clock,
            shared: Arc::clone(&self.shared),
        })
    }

    pub(crate) fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.cfg.name == name)
    }

    /// Health, key and load state of every provider, for `GET /api/health/providers`.
    pub(crate) fn health(&self) -> Vec<ProviderHealthView> {
        let now = self.clock.now_ms();
        self.providers
            .iter()
            .map(|p| ProviderHealthView {
                name: p.cfg.name.clone(),
                kind: p.cfg.kind.as_str(),
                health: p.health.view(now),
                in_flight: p.limiter.in_flight(),
                queued: p.limiter.waiting(),
                latency_p95_ms: p.latency.p95(1).map(|d| d.as_secs_f64() * 1000.0),
                keys: p
                    .cfg
                    .keys
                    .iter()
                    .zip(&p.keys)
                    .map(|(k, h)| KeyHealthView {
                        name: k.name.clone(),
                        cooling_down_ms: h.cooling(now),
                        cooldown_reason: h.cooling(now).and(h.reason()),
                    })
                    .collect(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderHealthView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub health: HealthView,
    pub in_flight: usize,
    pub queued: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p95_ms: Option<f64>,
    pub keys: Vec<KeyHealthView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyHealthView {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooling_down_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_reason: Option<CooldownReason>,
}

/// Where and how one attempt reaches `p`: a static key wins; otherwise the provider's AWS credentials, or
/// the Google access token the caller obtained (`token`).
pub(crate) fn endpoint<'a>(p: &'a Provider, key: Option<&'a KeyConfig>, token: Option<&'a str>) -> switchyard_wire::Endpoint<'a> {
    switchyard_wire::Endpoint {
        kind: p.cfg.kind,
        base_url: &p.cfg.base_url,
        auth: match (key, &p.cfg.aws) {
            (Some(k), _) => switchyard_wire::Auth::Key(k.secret.expose_secret()),
            (None, Some(aws)) => switchyard_wire::Auth::Aws(aws),
            (None, None) => token.map_or(switchyard_wire::Auth::None, switchyard_wire::Auth::Bearer),
        },
        options: &p.cfg.options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn cfg(yaml: &str) -> Config {
        parse_str(yaml, &BTreeMap::new()).unwrap()
    }

    #[tokio::test]
    async fn a_new_snapshot_keeps_what_every_remaining_provider_and_key_learnt() {
        let one =
            cfg("providers:\n  openai:\n    base_url: http://127.0.0.1:1\n    keys: [{name: a, value: sk-a}, {name: b, value: sk-b}]\n");
        let up = Upstreams::new(&one).unwrap();
        let now = up.clock.now_ms();
        up.providers[0].keys[0].cool_down(now, Duration::from_secs(300), CooldownReason::KeyInvalid);
        for i in 0..5 {
            up.providers[0].health.failure(now + i, false);
        }
        // Another provider comes first, key b's secret changes, key a stays as it was.
        let two = cfg("providers:\n  vllm:\n    base_url: http://127.0.0.1:2\n  openai:\n    base_url: http://127.0.0.1:1\n    keys: [{name: b, value: sk-new}, {name: a, value: sk-a}]\n");
        let next = up.with_providers(&two.providers).unwrap();
        let openai = next.provider("openai").unwrap();
        let now = next.clock.now_ms();
        assert!(openai.keys[1].cooling(now).is_some(), "key a is still cooling down");
        assert!(openai.keys[0].cooling(now).is_none(), "a new secret is a new key");
        assert!(Arc::ptr_eq(&openai.health, &up.providers[0].health));
        assert_eq!(openai.health.view(now).state, "degraded");
        assert_eq!(next.provider("vllm").unwrap().health.view(now).state, "healthy");
    }
}
