//! Governance: who is calling (virtual keys, their teams and customers), what they may use (provider
//! configs and residency), and how much (budgets and rate limits, held exactly by [`meter`]).
//!
//! Three stages of the request path live here (see `gateway`):
//! - **identify**: the key the caller presented becomes a [`Principal`], or the request is refused (401,
//!   403). With no virtual key configured the gateway is open, as before; once any exists, inference needs
//!   one (`governance.require_virtual_key`).
//! - **plan** (with `plan`): the principal's provider configs choose among providers for a bare model name
//!   and limit what `provider/model` it may name; residency drops every target the key may not reach
//!   before anything is sent.
//! - **admit**: the request's request and concurrency meters are reserved at once ([`Governance::admit`]);
//!   each attempt then reserves the upper bound of its cost and tokens on every level that applies to its
//!   target ([`Governance::reserve_attempt`]), settled from the real usage when it is known (streams: when
//!   they end, however they end).

pub mod export;
pub mod live;
pub mod meter;
pub mod model;
pub mod residency;
pub mod shared;
pub mod store;
pub mod usage;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::{GovernanceConfig, LevelLimits, ProviderConfig};
use crate::error::{Denial, FailureClass, GatewayError};
use meter::{Hold, Measure, Meter, Refusal, Refused, Registry};
use model::{Budget, Customer, ProviderGrant, RateLimit, Residency, Team, VirtualKeySpec};

/// The meters of one level; a level without a limit has no meter.
#[derive(Debug, Default)]
pub struct Limits {
    pub budget: Option<Arc<Meter>>,
    pub requests: Option<Arc<Meter>>,
    pub tokens: Option<Arc<Meter>>,
}

impl Limits {
    /// The meters of level `name` (a stable name: `vk:<handle>`, `team:<id>`, `provider:<name>`, ...),
    /// taken from `registry` so that a level keeps its use when the configuration changes.
    fn new(registry: &Registry, name: &str, level: &str, budget: Option<&Budget>, rate: Option<&RateLimit>) -> Arc<Limits> {
        let budget = budget
            .map(|b| registry.meter(&format!("{name}:budget"), Measure::Usd, level, b.max_limit, b.reset_duration, b.calendar_aligned));
        let rate = rate.cloned().unwrap_or_default();
        let requests = rate
            .request_max_limit
            .map(|n| registry.meter(&format!("{name}:requests"), Measure::Requests, level, n as f64, rate.request_reset_duration, false));
        let tokens = rate
            .token_max_limit
            .map(|n| registry.meter(&format!("{name}:tokens"), Measure::Tokens, level, n as f64, rate.token_reset_duration, false));
        Arc::new(Limits { budget, requests, tokens })
    }

    fn read(&self, now: i64) -> LevelReadings {
        let read = |m: &Option<Arc<Meter>>| m.as_ref().map(|m| m.read(now));
        LevelReadings { budget: read(&self.budget), requests: read(&self.requests), tokens: read(&self.tokens) }
    }
}

/// What one level's meters read now: its budget, its request limit, its token limit (each when it has one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LevelReadings {
    pub budget: Option<meter::Reading>,
    pub requests: Option<meter::Reading>,
    pub tokens: Option<meter::Reading>,
}

/// What an entity's meters read now: its own level's, and for a virtual key those of each provider config
/// (by provider) and its concurrency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings {
    pub own: LevelReadings,
    pub provider_configs: Vec<(String, LevelReadings)>,
    pub concurrent: Option<meter::Reading>,
}

impl Readings {
    /// Every reading in one list: the level's, its provider configs', its concurrency.
    pub fn flat(&self) -> Vec<meter::Reading> {
        let levels = std::iter::once(&self.own).chain(self.provider_configs.iter().map(|(_, l)| l));
        levels.flat_map(|l| [&l.budget, &l.requests, &l.tokens].into_iter().flatten().cloned()).chain(self.concurrent.clone()).collect()
    }
}

/// A stable, non-secret name for a key's meters: its id may be its value.
fn handle(id: &str) -> String {
    hash(id).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A caller identified by its virtual key, with everything the key's policy says.
#[derive(Debug)]
pub struct Principal {
    /// The key as configured, without its value.
    pub key: VirtualKeySpec,
    pub team: Option<Team>,
    pub customer: Option<Customer>,
    /// The key's, its team's and its customer's limits, in that order.
    levels: Vec<Arc<Limits>>,
    concurrent: Option<Arc<Meter>>,
    /// Per provider config, its limits.
    grants: Vec<(ProviderGrant, Arc<Limits>)>,
    /// The key's and its team's residency: a provider must satisfy each.
    residency: Vec<Residency>,
}

impl Principal {
    /// The key's name, the only way it is shown (its id may be its value).
    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// The key or its team limits where its requests may go: its bodies are kept out of the request log
    /// unless the key says otherwise.
    pub fn restricted(&self) -> bool {
        !self.residency.is_empty()
    }

    pub fn grants(&self) -> impl Iterator<Item = &ProviderGrant> {
        self.grants.iter().map(|(g, _)| g)
    }

    /// Whether the key's provider configs let it send `model` to `provider` (no configs: any).
    pub fn may_use(&self, provider: &str, model: &str) -> bool {
        self.grants.is_empty() || self.grants.iter().any(|(g, _)| g.provider == provider && g.allows(model))
    }

    /// Whether residency lets the key's requests reach a provider with these tags.
    pub fn may_reach(&self, tags: &[String]) -> bool {
        self.residency.iter().all(|r| r.allows(tags))
    }

    pub fn is_residency_restricted(&self) -> bool {
        self.residency.iter().any(Residency::is_restrictive)
    }

    /// The residency rules in words, for errors and `check --explain`.
    pub fn residency_text(&self) -> String {
        let rules: Vec<String> = self.residency.iter().filter(|r| r.is_restrictive()).map(|r| r.to_string()).collect();
        if rules.is_empty() {
            "no residency restriction".into()
        } else {
            rules.join("; and ")
        }
    }
}

/// Every budget's reading: virtual keys' by name, teams' by id.
#[derive(Debug, Clone, Default)]
pub struct BudgetUse {
    pub keys: Vec<(String, meter::Reading)>,
    pub teams: Vec<(String, meter::Reading)>,
}

/// The governance state of one configuration.
pub struct Governance {
    /// Once any key exists, inference requires one (unless the configuration says otherwise).
    require_key: bool,
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
    /// Every team's and customer's limits by id (also those of a team without keys), for their readings.
    teams: HashMap<String, Arc<Limits>>,
    customers: HashMap<String, Arc<Limits>>,
    providers: HashMap<String, Arc<Limits>>,
    models: HashMap<String, Arc<Limits>>,
    /// Output tokens reserved for a request that sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// The meters are counted in Redis.
    shared: bool,
}

fn hash(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// Marks a key value that is already a SHA-256 (hex after the marker): a key loaded from a store, which
/// keeps only hashes. No presented key can start with it: HTTP header values cannot hold a NUL.
pub const HASHED: &str = "\0sha256:";

/// The hash a key is found by: its value's, or the stored one.
pub fn key_hash(value: &str) -> [u8; 32] {
    let Some(hex) = value.strip_prefix(HASHED) else { return hash(value) };
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = hex.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
    }
    out
}

/// The hex SHA-256 of a key's value, as a store keeps it.
pub fn value_sha256(value: &str) -> String {
    key_hash(value).iter().map(|b| format!("{b:02x}")).collect()
}

/// What an attempt is expected to cost at most.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimate {
    pub usd: f64,
    pub tokens: u64,
}

impl Governance {
    /// The governance state of `cfg`; meters come from `registry`, so that a level existing before keeps
    /// its use (a rebuild after a management-API write resets nothing).
    pub fn new(cfg: &GovernanceConfig, registry: &Registry) -> Governance {
        let customers: HashMap<&str, (&Customer, Arc<Limits>)> = cfg
            .customers
            .iter()
            .map(|c| {
                let level = format!("customer \"{}\"", display(&c.name, &c.id));
                (c.id.as_str(), (c, Limits::new(registry, &format!("customer:{}", c.id), &level, c.budget.as_ref(), c.rate_limit.as_ref())))
            })
            .collect();
        let teams: HashMap<&str, (&Team, Arc<Limits>)> = cfg
            .teams
            .iter()
            .map(|t| {
                let level = format!("team \"{}\"", display(&t.name, &t.id));
                (t.id.as_str(), (t, Limits::new(registry, &format!("team:{}", t.id), &level, t.budget.as_ref(), t.rate_limit.as_ref())))
            })
            .collect();
        let mut by_hash = HashMap::new();
        for (spec, value) in &cfg.keys {
            let level = format!("virtual key \"{}\"", spec.name);
            let name = format!("vk:{}", handle(&spec.id));
            let team = spec.team_id.as_deref().and_then(|id| teams.get(id));
            let customer_id = spec.customer_id.as_deref().or_else(|| team.and_then(|t| t.0.customer_id.as_deref()));
            let customer = customer_id.and_then(|id| customers.get(id));
            let mut levels = vec![Limits::new(registry, &name, &level, spec.budget.as_ref(), spec.rate_limit.as_ref())];
            levels.extend(team.map(|t| t.1.clone()));
            levels.extend(customer.map(|c| c.1.clone()));
            let grants = spec
                .provider_configs
                .iter()
                .map(|g| {
                    let l = Limits::new(
                        registry,
                        &format!("{name}:provider:{}", g.provider),
                        &format!("{level}, provider {}", g.provider),
                        g.budget.as_ref(),
                        g.rate_limit.as_ref(),
                    );
                    (g.clone(), l)
                })
                .collect();
            let residency = spec.residency.iter().chain(team.and_then(|t| t.0.residency.as_ref())).cloned().collect();
            let concurrent = spec
                .max_concurrent
                .map(|n| registry.meter(&format!("{name}:concurrent"), Measure::Concurrent, &level, f64::from(n), None, false));
            let principal = Principal {
                key: VirtualKeySpec { value: None, ..spec.clone() },
                team: team.map(|t| t.0.clone()),
                customer: customer.map(|c| c.0.clone()),
                levels,
                concurrent,
                grants,
                residency,
            };
            by_hash.insert(key_hash(value.expose_secret()), Arc::new(principal));
        }
        let level = |kind: &str, n: &str, l: &LevelLimits| {
            Limits::new(registry, &format!("{kind}:{n}"), &format!("{kind} {n}"), l.budget.as_ref(), l.rate_limit.as_ref())
        };
        Governance {
            require_key: cfg.require_virtual_key.unwrap_or(!cfg.keys.is_empty()),
            by_hash,
            teams: teams.into_iter().map(|(id, (_, l))| (id.to_string(), l)).collect(),
            customers: customers.into_iter().map(|(id, (_, l))| (id.to_string(), l)).collect(),
            providers: cfg.providers.iter().map(|(p, l)| (p.clone(), level("provider", p, l))).collect(),
            models: cfg.models.iter().map(|(m, l)| (m.clone(), level("model", m, l))).collect(),
            default_max_tokens: cfg.default_max_tokens,
            shared: registry.shared().is_some(),
        }
    }

    /// Whether anything is metered: a key, or a global budget or limit. Otherwise the request path skips
    /// every reservation.
    pub fn is_active(&self) -> bool {
        !self.by_hash.is_empty() || !self.providers.is_empty() || !self.models.is_empty()
    }

    /// The current readings of the meters of the key whose value is `value`: its own budget and limits,
    /// its concurrency, and those of its provider configs.
    pub fn readings_of(&self, value: &SecretString) -> Vec<meter::Reading> {
        self.key_readings(value).map(|r| r.flat()).unwrap_or_default()
    }

    /// The same, level by level (none for a value that is not a key's).
    pub fn key_readings(&self, value: &SecretString) -> Option<Readings> {
        let p = self.by_hash.get(&key_hash(value.expose_secret()))?;
        let now = meter::now_ms();
        Some(Readings {
            own: p.levels.first().map(|l| l.read(now)).unwrap_or_default(),
            provider_configs: p.grants.iter().map(|(g, l)| (g.provider.clone(), l.read(now))).collect(),
            concurrent: p.concurrent.as_ref().map(|m| m.read(now)),
        })
    }

    /// The readings of team `id`'s meters (none for an unknown team).
    pub fn team_readings(&self, id: &str) -> Option<Readings> {
        let l = self.teams.get(id)?;
        Some(Readings { own: l.read(meter::now_ms()), ..Readings::default() })
    }

    /// The readings of customer `id`'s meters.
    pub fn customer_readings(&self, id: &str) -> Option<Readings> {
        let l = self.customers.get(id)?;
        Some(Readings { own: l.read(meter::now_ms()), ..Readings::default() })
    }

    /// Every budget in force and its use now, for the budget gauges: each virtual key's own (by the key's
    /// name, never its id, which may be its value) and each team's (by id). Keys and teams without a
    /// budget are left out.
    pub fn budget_use(&self) -> BudgetUse {
        let now = meter::now_ms();
        let keys = self
            .by_hash
            .values()
            .filter_map(|p| p.levels.first().and_then(|l| l.budget.as_ref()).map(|m| (p.name().to_string(), m.read(now))))
            .collect();
        let teams = self.teams.iter().filter_map(|(id, l)| l.budget.as_ref().map(|m| (id.clone(), m.read(now)))).collect();
        BudgetUse { keys, teams }
    }

    pub fn requires_key(&self) -> bool {
        self.require_key
    }

    pub fn has_keys(&self) -> bool {
        !self.by_hash.is_empty()
    }

    pub fn principals(&self) -> impl Iterator<Item = &Arc<Principal>> {
        self.by_hash.values()
    }

    /// Stage 2: the caller behind `presented` (the value of its key header), `None` when keys are not
    /// required and none of ours was presented.
    pub fn identify(&self, presented: Option<&SecretString>) -> Result<Option<Arc<Principal>>, GatewayError> {
        let Some(value) = presented.map(|v| v.expose_secret()).filter(|v| !v.is_empty()) else {
            return if self.require_key {
                Err(GatewayError::denied(
                    Denial::MissingKey,
                    "this gateway needs a virtual key: send it as Authorization: Bearer <key> (the SDK's api_key), x-api-key or x-switchyard-vk",
                ))
            } else {
                Ok(None)
            };
        };
        match self.by_hash.get(&hash(value)) {
            Some(p) if !p.key.is_active => {
                Err(GatewayError::denied(Denial::InactiveKey, format!("virtual key \"{}\" is switched off (is_active: false)", p.name())))
            }
            Some(p) => Ok(Some(Arc::clone(p))),
            // Without keys configured, whatever an SDK sends as its api_key is not ours to judge.
            None if !self.has_keys() && !self.require_key => Ok(None),
            None => Err(GatewayError::denied(Denial::UnknownKey, "the virtual key presented is not one of this gateway's")),
        }
    }

    /// Reserves the request itself: one request on the rate limits of the key, its team and its customer,
    /// and a place under the key's concurrency limit. Held until the request is over (its stream included).
    pub async fn admit(&self, who: &Principal, within: Duration) -> Result<Hold, GatewayError> {
        let wanted = self.admission(who);
        if wanted.is_empty() {
            return Ok(Hold::default());
        }
        meter::reserve(&wanted, within).await.map_err(denial)
    }

    /// What [`Governance::admit`] reserves: a request on each of the caller's request limits and a place
    /// under its concurrency limit.
    pub fn admission(&self, who: &Principal) -> Vec<(Arc<Meter>, f64)> {
        let mut wanted: Vec<(Arc<Meter>, f64)> = who.levels.iter().filter_map(|l| l.requests.clone()).map(|m| (m, 1.0)).collect();
        wanted.extend(who.concurrent.clone().map(|m| (m, 1.0)));
        wanted
    }

    /// Whether the meters are counted in Redis: then the admission is reserved with the first attempt, in
    /// one round trip ([`Governance::reserve_attempt`]'s `admission`), instead of on its own.
    pub fn defers_admission(&self) -> bool {
        self.shared
    }

    /// Reserves an attempt on `provider`/`model`: its estimated cost and tokens on every budget and token
    /// limit of the caller's levels, its provider config, the provider and the model, and one request on
    /// the per-provider and per-model request limits. `Err` is the class the attempt is skipped with.
    pub async fn reserve_attempt(
        &self,
        who: Option<&Principal>,
        provider: &str,
        model: &str,
        estimate: Estimate,
        within: Duration,
        admission: &[(Arc<Meter>, f64)],
    ) -> Result<(Hold, Option<Hold>), AttemptRefused> {
        let label = format!("{provider}/{model}");
        let mut levels: Vec<&Arc<Limits>> = Vec::new();
        if let Some(who) = who {
            levels.extend(who.levels.iter());
            levels.extend(who.grants.iter().filter(|(g, _)| g.provider == provider).map(|(_, l)| l));
        }
        levels.extend(self.providers.get(provider));
        levels.extend(self.models.get(&label));
        let caller_levels = who.map_or(0, |w| w.levels.len());
        let mut wanted = Vec::new();
        for (i, l) in levels.iter().enumerate() {
            wanted.extend(l.budget.clone().map(|m| (m, estimate.usd)));
            wanted.extend(l.tokens.clone().map(|m| (m, estimate.tokens as f64)));
            // The caller's own request limits were taken by `admit`, once per request.
            if i >= caller_levels {
                wanted.extend(l.requests.clone().map(|m| (m, 1.0)));
            }
        }
        let attempt_meters = wanted.len();
        wanted.extend(admission.iter().cloned());
        if wanted.is_empty() {
            return Ok((Hold::default(), None));
        }
        match meter::reserve(&wanted, within).await {
            Ok(mut hold) if !admission.is_empty() => {
                let admitted = hold.split_off(&admission.iter().map(|(m, _)| Arc::clone(m)).collect::<Vec<_>>());
                Ok((hold, Some(admitted)))
            }
            Ok(hold) => Ok((hold, None)),
            // No room for the request itself: refused as `admit` refuses it.
            Err(Refusal::Full(r)) if wanted[attempt_meters..].iter().any(|(m, _)| Arc::ptr_eq(m, &r.meter)) => {
                Err(AttemptRefused::Admission(denial(Refusal::Full(r))))
            }
            Err(Refusal::Full(r)) => {
                let class = if r.meter.measure == Measure::Usd { FailureClass::BudgetExceeded } else { FailureClass::LimitReached };
                Err(AttemptRefused::Skip(class, refusal_text(&r), r.retry_after_ms))
            }
            Err(Refusal::Unavailable(message)) => Err(AttemptRefused::Skip(FailureClass::CountersUnavailable, message, Some(1000))),
        }
    }
}

/// Why an attempt was not reserved.
#[derive(Debug)]
pub enum AttemptRefused {
    /// The target is skipped with this class, message and reset.
    Skip(FailureClass, String, Option<u64>),
    /// The admission reserved with it has no room: the whole request is refused.
    Admission(GatewayError),
}

fn display<'a>(name: &'a str, id: &'a str) -> &'a str {
    if name.is_empty() {
        id
    } else {
        name
    }
}

fn refusal_text(r: &Refused) -> String {
    let m = &r.meter;
    let reading = m.read(meter::now_ms());
    let amount = |x: f64| match m.measure {
        Measure::Usd => format!("${x:.4}"),
        _ => format!("{x:.0}"),
    };
    let window = reading.period.map(|p| format!(" per {p}")).unwrap_or_default();
    format!(
        "the {} of {} ({}{window}) has no room: {} used, {} reserved by requests in flight",
        m.measure.as_str(),
        reading.level,
        amount(reading.limit),
        amount(reading.used),
        amount(reading.reserved)
    )
}

fn denial(r: Refusal) -> GatewayError {
    let r = match r {
        Refusal::Full(r) => r,
        Refusal::Unavailable(message) => {
            return GatewayError::Denied { denial: Denial::CountersUnavailable, message, retry_after_ms: Some(1000) }
        }
    };
    let d = if r.meter.measure == Measure::Usd { Denial::Budget } else { Denial::RateLimit };
    GatewayError::Denied { denial: d, message: refusal_text(&r), retry_after_ms: r.retry_after_ms.or(Some(1000)) }
}

/// A provider's tags by name, for residency.
pub fn tags_of<'a>(providers: &'a [ProviderConfig], name: &str) -> &'a [String] {
    providers.iter().find(|p| p.name == name).map_or(&[], |p| p.tags.as_slice())
}
