//! The upstreams one gateway talks to: each configured provider with its HTTP client and live health
//! (outlier score, key cooldowns, in-flight limit, latencies), plus the routes and settings the executor
//! reads, and the plan's types. The gateway owns it; the executor borrows it, so neither imports the other.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, KeyConfig, ProviderConfig, RouteConfig, RoutingSettings};
use crate::error::GatewayError;
use crate::health::{Clock, CooldownReason, Health, HealthView, HedgeBudget, KeyHealth, Latency, Limiter};
use crate::images::ImageFetcher;
use crate::upstream;

pub(crate) struct Provider {
    pub(crate) cfg: ProviderConfig,
    pub(crate) client: upstream::Client,
    /// Shared with probes that run on beside a request (see `HealthPolicy::mirror_probes`).
    pub(crate) health: Arc<Health>,
    /// Index-aligned with `cfg.keys`.
    pub(crate) keys: Vec<KeyHealth>,
    pub(crate) limiter: Limiter,
    /// Times to first byte of successful attempts (for the `p95` hedge delay).
    pub(crate) latency: Latency,
}

pub(crate) struct Upstreams {
    pub(crate) providers: Vec<Provider>,
    pub(crate) routes: Vec<RouteConfig>,
    /// Index-aligned with `routes`.
    pub(crate) hedge_budgets: Vec<HedgeBudget>,
    pub(crate) routing: RoutingSettings,
    pub(crate) images: ImageFetcher,
    pub(crate) clock: Clock,
}

impl Upstreams {
    pub(crate) fn new(cfg: &Config) -> Result<Self, GatewayError> {
        let mut providers = Vec::with_capacity(cfg.providers.len());
        let shared = upstream::Shared::new(cfg);
        for p in &cfg.providers {
            providers.push(Provider {
                client: upstream::build_client(&p.timeouts, &shared)?,
                health: Arc::new(Health::new(p.name.clone(), p.health)),
                keys: p.keys.iter().map(|_| KeyHealth::default()).collect(),
                limiter: Limiter::new(p.overload),
                latency: Latency::default(),
                cfg: p.clone(),
            });
        }
        Ok(Upstreams {
            providers,
            routes: cfg.routes.clone(),
            hedge_budgets: cfg.routes.iter().map(|_| HedgeBudget::default()).collect(),
            routing: cfg.routing,
            images: ImageFetcher::new(&cfg.images)?,
            clock: Clock::new(),
        })
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

pub(crate) fn endpoint<'a>(p: &'a Provider, key: Option<&'a KeyConfig>) -> switchyard_wire::Endpoint<'a> {
    use secrecy::ExposeSecret;
    switchyard_wire::Endpoint {
        kind: p.cfg.kind,
        base_url: &p.cfg.base_url,
        api_key: key.map(|k| k.secret.expose_secret()),
        options: &p.cfg.options,
    }
}
