//! The gateway: configured providers with their health, and the entry points of the request path. [`Gateway::chat`] is where a request's journey is written down in order;
//! the attempt machinery it calls (health ordering, retries, key rotation, hedging) is in `executor`, the
//! providers and their live state in `pool`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use switchyard_wire::codec;
use switchyard_wire::types::{ChatRequest, ChatResponse, EmbeddingInput, EmbeddingsRequest, EmbeddingsResponse, ModelInfo, ModelList};

use crate::account::{self, Account, StreamMeter};
use crate::config::Config;
use crate::ctx::{RequestCtx, Served};
use crate::error::GatewayError;
use crate::executor::{Metering, Op, Output, Run};
use crate::governance::live::Live;
use crate::governance::meter::Hold;
use crate::governance::store::UsageRecord;
use crate::governance::{Governance, Principal};
use crate::plan::{Plan, Planner};
use crate::pool::{endpoint, ProviderHealthView, Upstreams};
use crate::pricing::PriceTable;
use crate::providers::Catalog;
use crate::telemetry::metrics::{RequestMetrics, Vocabulary};
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

/// The providers a request works with and the planner that knows their names, swapped as one: a request
/// loads it once and keeps it to its end (see `pool`).
pub(crate) struct Pool {
    pub(crate) up: Upstreams,
    pub(crate) planner: Planner,
}

pub struct Gateway {
    pool: ArcSwap<Pool>,
    /// The providers the gateway started with and those the management API wrote (see `providers`).
    pub(crate) catalog: Catalog,
    governance: Live,
    pricing: PriceTable,
    ledger: std::sync::OnceLock<account::Ledger>,
    /// Where each finished request's record goes (request log, metrics, traces).
    sinks: crate::observe::Sinks,
    /// The request metrics (a sink once registered), told the providers' names as they change.
    metrics: Arc<RequestMetrics>,
}

impl Gateway {
    pub fn new(cfg: &Config) -> Result<Self, GatewayError> {
        Gateway::with_governance(cfg, Live::new(cfg))
    }

    /// A gateway whose governance was loaded from a store (see `governance::live`).
    pub fn with_governance(cfg: &Config, governance: Live) -> Result<Self, GatewayError> {
        Gateway::build(cfg, Catalog::new(cfg), governance)
    }

    /// A gateway with the providers `catalog` holds (the configuration's and those a store kept) and
    /// governance loaded against all of them (`Live::with_store(&catalog.config().await, ..)`).
    pub async fn with_catalog(catalog: Catalog, governance: Live) -> Result<Self, GatewayError> {
        let cfg = catalog.config().await;
        Gateway::build(&cfg, catalog, governance)
    }

    fn build(cfg: &Config, catalog: Catalog, governance: Live) -> Result<Self, GatewayError> {
        let gateway = Gateway {
            pool: ArcSwap::from_pointee(Pool { up: Upstreams::new(cfg)?, planner: Planner::new(cfg) }),
            catalog,
            governance,
            pricing: PriceTable::new(&cfg.pricing),
            ledger: std::sync::OnceLock::new(),
            sinks: Default::default(),
            metrics: Arc::new(RequestMetrics::new(&cfg.metrics)),
        };
        gateway.teach_metrics(&gateway.pool.load());
        Ok(gateway)
    }

    /// The request metrics: add them to [`Gateway::sinks`] to have requests counted; `/metrics` renders
    /// what they hold beside the recorder's output.
    pub fn request_metrics(&self) -> &Arc<RequestMetrics> {
        &self.metrics
    }

    /// Tells the metrics which provider, route and model names may be label values (see `telemetry`).
    fn teach_metrics(&self, pool: &Pool) {
        let providers = pool.up.providers.iter().map(|p| &p.cfg);
        self.metrics.learn(Vocabulary::new(providers, &pool.up.routes, |name| pool.planner.list_of(name), self.pricing.clone()));
    }

    /// Reads every budget's use into the budget gauges (see [`crate::telemetry::metrics::BUDGET_INTERVAL`]).
    pub fn refresh_budget_gauges(&self) {
        self.metrics.refresh_budgets(&self.governance.snapshot());
    }

    /// Whether inference needs a virtual key (`governance.require_virtual_key`, on once any key exists).
    pub fn requires_virtual_key(&self) -> bool {
        self.governance.snapshot().requires_key()
    }

    /// Governance as the management API changes it.
    pub fn governance(&self) -> &Live {
        &self.governance
    }

    pub fn provider_names(&self) -> Vec<String> {
        self.pool.load().up.providers.iter().map(|p| p.cfg.name.clone()).collect()
    }

    /// How long a stream may wait for its first chunk before the server starts sending keep-alives.
    pub fn stream_keepalive(&self) -> Duration {
        self.pool.load().up.routing.stream_keepalive
    }

    /// The snapshot that serves with these providers: every provider that keeps its name keeps what its
    /// health learnt (see `pool`). The caller has checked `providers` as a configuration is checked, and
    /// serialises calls until [`Gateway::install_pool`].
    pub(crate) fn next_pool(&self, providers: &[crate::config::ProviderConfig]) -> Result<Pool, GatewayError> {
        let now = self.pool.load();
        let up = now.up.with_providers(providers)?;
        let planner = Planner::with_lists(providers, now.planner.shared_lists());
        Ok(Pool { up, planner })
    }

    /// Serves with `pool` from now on; requests in flight finish with the snapshot they started with.
    /// The providers' model lists are fetched again on the next `/v1/models`.
    pub(crate) fn install_pool(&self, pool: Pool) {
        pool.planner.adopt_lists();
        self.teach_metrics(&pool);
        self.pool.store(Arc::new(pool));
    }

    /// The request path for chat completions, in the order of its stages:
    ///
    /// 1. **Accept** (server): the body was decoded into a [`ChatRequest`] and the caller's key and trace
    ///    header put on the [`RequestCtx`]; here the request is checked.
    /// 2. **Identify** (`governance`): the presented key becomes the caller's virtual key, or the request
    ///    is refused (401 without one once keys exist, 403 for a key switched off).
    /// 3. **Plan** (`plan`): the model (`provider/model`, a bare name, a named chain, or the key's provider
    ///    configs choosing by weight), the request's `fallbacks` and the route's become an ordered list of
    ///    targets; every target the key may not use or its residency may not reach is dropped before
    ///    anything is sent (403 when none is left).
    /// 4. **Admit** (`governance`): one request on the key's, team's and customer's rate limits and a place
    ///    under the key's concurrency limit are reserved (429 when there is no room).
    /// 5. **Execute** (`executor`): order the targets by health (degraded providers after healthy ones,
    ///    but never dropped unless the route fails fast); per target reserve the attempt's estimated cost
    ///    and tokens on every budget and limit that applies (a target without room is skipped: 402/429 when
    ///    none has room); choose a key by weight among keys that are not cooling down; fetch image URLs if
    ///    the provider needs bytes (bounded, concurrent, inside the deadline, and before any slot is
    ///    held); wait for a slot under the provider's in-flight limit; build the provider request (pure
    ///    codec); send it with connect / first-byte / idle / total timeouts bounded by the request's
    ///    deadline; classify the outcome and let `retry` decide: 429/401/quota rotate to another key at once
    ///    and cool the key down; transient failures move to the next target, and the plan is retried in
    ///    rounds with backoff; caller faults return at once; a context-length error moves to the context
    ///    fallbacks; a short rate-limit reset is waited for once. A hedged route sends the next target too
    ///    when the first is slow. A stream is committed to its target when its first content chunk
    ///    arrives, never before.
    /// 6. **Account** (`account`): the reservations are settled from the real usage (a complete answer now,
    ///    with its cost in `x-switchyard-cost`; a stream when it ends, fails or is dropped).
    /// 7. **Respond** (server): the caller's API shape, with headers saying who served it.
    pub async fn chat(&self, req: ChatRequest, ctx: &RequestCtx) -> Result<ChatOutcome, GatewayError> {
        validate_chat(&req)?;
        let pool = self.pool.load_full();
        let up = &pool.up;
        let gov = self.governance.snapshot();
        let who = gov.identify(ctx.credential.as_ref())?;
        observe_caller(ctx, who.as_deref());
        let plan = pool.planner.plan(up, &req.model, req.fallbacks.as_deref().unwrap_or(&[]), who.as_deref())?;
        ctx.observed.with(|o| o.route = plan.route.and_then(|i| up.routes[i].models.first().cloned()));
        let admission = self.admit(up, &gov, who.as_deref(), ctx).await?;
        // The estimate walks the whole prompt and encodes the tools: worked out before the call only when a
        // meter needs its bound or a stream may end without usage, otherwise only for an answer without usage.
        let prompt = if self.estimates(&gov) || req.is_stream() { account::prompt_tokens(&req) } else { 0 };
        let max_output = req.max_completion_tokens.or(req.max_tokens).unwrap_or(gov.default_max_tokens);
        let op = Op::chat(&req);
        let metering = self.metering(&gov, who.as_deref(), prompt, u64::from(max_output));
        let (out, mut served, won, admitted) = match Run::new(up, &plan, &op, ctx, metering).execute().await {
            Ok(x) => x,
            Err(e) => {
                Account { admission, ..Account::default() }.failed();
                return Err(e);
            }
        };
        let admission = if admission.is_empty() { admitted } else { admission };
        let (attempt, price) = won.unwrap_or_default();
        let ledger = self.ledger_entry(ctx, who.as_deref(), &served);
        let mut account = Account { admission, attempt, price, prompt_estimate: prompt, ledger };
        match out {
            Output::Complete(r) => {
                if r.usage.is_none() && prompt == 0 {
                    account.prompt_estimate = account::prompt_tokens(&req);
                }
                let generated = r.choices.iter().map(|c| c.message.content.as_ref().map_or(0, |t| t.len() as u64)).sum();
                served.cost_nano_usd = account.settle(r.usage.as_ref(), generated).map(account::nano_usd);
                Ok(ChatOutcome::Complete(r, served))
            }
            Output::Stream(mut s) => {
                s.meter(StreamMeter::new(account));
                Ok(ChatOutcome::Stream(s, served))
            }
            Output::Embeddings(_) => Err(GatewayError::Internal("a chat request produced embeddings".into())),
        }
    }

    /// Whether anything reads a request's token estimate: a governance meter (its reservation bound) or
    /// the usage ledger (for an answer that reports no usage).
    fn estimates(&self, gov: &Governance) -> bool {
        gov.is_active() || self.ledger.get().is_some()
    }

    /// The ledger record of a served request, its usage still to come (none without a ledger).
    fn ledger_entry(&self, ctx: &RequestCtx, who: Option<&Principal>, served: &Served) -> Option<(account::Ledger, UsageRecord)> {
        let ledger = self.ledger.get()?.clone();
        let record = UsageRecord {
            at_ms: 0,
            request_id: ctx.request_id.clone(),
            virtual_key: who.map(|w| w.key.id.clone()),
            team: who.and_then(|w| w.team.as_ref().map(|t| t.id.clone())),
            customer: who.and_then(|w| w.customer.as_ref().map(|c| c.id.clone())),
            provider: served.provider.clone(),
            model: served.model.clone(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
        };
        Some((ledger, record))
    }

    /// Where finished requests' records go: add a sink at start, before serving.
    pub fn sinks(&self) -> &crate::observe::Sinks {
        &self.sinks
    }

    /// Sends every settled request to `ledger` from now on (set once, at start).
    pub fn set_ledger(&self, ledger: account::Ledger) {
        let _ = self.ledger.set(ledger);
    }

    /// Whether settled requests go to a usage ledger (only with a store: `--data-dir`, `--database-url`).
    pub fn keeps_usage(&self) -> bool {
        self.ledger.get().is_some()
    }

    /// Stage 4 for an identified caller; nothing to hold for an anonymous one. With the counters in Redis
    /// the admission is reserved with the first attempt instead (see `metering`), saving a round trip.
    async fn admit(&self, up: &Upstreams, gov: &Governance, who: Option<&Principal>, ctx: &RequestCtx) -> Result<Hold, GatewayError> {
        match who {
            Some(_) if gov.defers_admission() => Ok(Hold::default()),
            Some(w) => gov.admit(w, up.routing.deadline.saturating_sub(ctx.arrived.elapsed())).await,
            None => Ok(Hold::default()),
        }
    }

    fn metering<'a>(&'a self, gov: &'a Governance, who: Option<&'a Principal>, prompt_tokens: u64, max_output_tokens: u64) -> Metering<'a> {
        let admission = match who {
            Some(w) if gov.defers_admission() => gov.admission(w),
            _ => Vec::new(),
        };
        Metering { governance: gov.is_active().then_some(gov), who, pricing: &self.pricing, prompt_tokens, max_output_tokens, admission }
    }

    /// `POST /v1/embeddings`: the same stages as chat, one body back.
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
        let pool = self.pool.load_full();
        let up = &pool.up;
        let gov = self.governance.snapshot();
        let who = gov.identify(ctx.credential.as_ref())?;
        observe_caller(ctx, who.as_deref());
        let plan = pool.planner.plan(up, &req.model, req.fallbacks.as_deref().unwrap_or(&[]), who.as_deref())?;
        ctx.observed.with(|o| o.route = plan.route.and_then(|i| up.routes[i].models.first().cloned()));
        let admission = self.admit(up, &gov, who.as_deref(), ctx).await?;
        let prompt = if self.estimates(&gov) { account::embedding_tokens(&req) } else { 0 };
        let op = Op::Embeddings(&req);
        let metering = self.metering(&gov, who.as_deref(), prompt, 0);
        match Run::new(up, &plan, &op, ctx, metering).execute().await {
            Ok((Output::Embeddings(r), mut served, won, admitted)) => {
                let admission = if admission.is_empty() { admitted } else { admission };
                let (attempt, price) = won.unwrap_or_default();
                let ledger = self.ledger_entry(ctx, who.as_deref(), &served);
                let account = Account { admission, attempt, price, prompt_estimate: prompt, ledger };
                let usage = switchyard_wire::types::Usage::new(r.usage.prompt_tokens, 0);
                served.cost_nano_usd = account.settle(Some(&usage), 0).map(account::nano_usd);
                Ok((r, served))
            }
            Ok(_) => Err(GatewayError::Internal("an embeddings request produced a chat answer".into())),
            Err(e) => {
                Account { admission, ..Account::default() }.failed();
                Err(e)
            }
        }
    }

    /// Anthropic's `count_tokens` for any model: the caller is identified and the model planned as for
    /// [`Gateway::chat`] (an unknown model is a 404, a model the key may not use a 403), then the prompt is
    /// estimated with the gateway's own bound (`account::prompt_tokens`, about four characters a token)
    /// instead of asking an upstream: most providers have no counting endpoint, the answer must not cost a
    /// provider call (clients ask before every turn), and the same request gets the same count whichever
    /// target would serve it. Nothing is admitted or metered.
    pub fn count_tokens(&self, req: &ChatRequest, ctx: &RequestCtx) -> Result<u64, GatewayError> {
        let pool = self.pool.load();
        let gov = self.governance.snapshot();
        let who = gov.identify(ctx.credential.as_ref())?;
        pool.planner.plan(&pool.up, &req.model, req.fallbacks.as_deref().unwrap_or(&[]), who.as_deref())?;
        Ok(account::prompt_tokens(req))
    }

    /// The ordered targets for a model and the request body's fallbacks (see `plan`).
    pub fn plan(&self, model: &str, request_fallbacks: &[String]) -> Result<Plan, GatewayError> {
        let pool = self.pool.load();
        pool.planner.plan(&pool.up, model, request_fallbacks, None)
    }

    /// Asks every provider that lists models for its list and remembers them (used for bare model names and
    /// `/v1/models`). Failures leave the provider's previous list in place.
    pub async fn refresh_models(&self) {
        let pool = self.pool.load_full();
        let futures = pool.up.providers.iter().map(|p| async move {
            let key = p.cfg.keys.first();
            let ep = endpoint(p, key, None);
            let Some(mut req) = codec::build_list_models(&ep) else { return (p.cfg.name.clone(), None) };
            if codec::authorize(&ep, &mut req, crate::executor::unix_now()).is_err() {
                return (p.cfg.name.clone(), None);
            }
            let label = Label { target: &p.cfg.name, key: key.map(|k| k.name.as_str()) };
            let t = crate::config::Timeouts { total: MODEL_LIST_TIMEOUT, ..p.cfg.timeouts };
            let list = match upstream::send_complete(&p.client, p.cfg.kind, &t, &label, req).await {
                Ok(body) => codec::parse_models(p.cfg.kind, &body).ok(),
                Err(f) => {
                    tracing::debug!(provider = %p.cfg.name, "model list unavailable: {}", f.attempt.message);
                    None
                }
            };
            (p.cfg.name.clone(), list)
        });
        let lists = futures_util::future::join_all(futures).await;
        // By name, into the lists every snapshot shares: a change of providers meanwhile loses nothing.
        pool.planner.set_lists(lists);
        self.teach_metrics(&self.pool.load());
    }

    /// `GET /v1/models` for a caller: with a virtual key, only what the key may use and reach (a named
    /// chain when any of its targets is).
    pub async fn models_for(&self, ctx: &RequestCtx) -> Result<ModelList, GatewayError> {
        let who = self.governance.snapshot().identify(ctx.credential.as_ref())?;
        let pool = self.pool.load_full();
        let mut list = self.models_of(&pool).await;
        if let Some(w) = who {
            let up = &pool.up;
            let usable = |label: &str| {
                label.split_once('/').is_some_and(|(p, m)| w.may_use(p, m) && up.provider(p).is_some_and(|x| w.may_reach(&x.cfg.tags)))
            };
            let chains: HashMap<&str, &Vec<crate::config::Fallback>> = up
                .routes
                .iter()
                .filter(|r| !r.targets.is_empty())
                .flat_map(|r| r.models.iter().map(move |m| (m.as_str(), &r.targets)))
                .collect();
            list.data.retain(|m| match chains.get(m.id.as_str()) {
                Some(targets) => targets.iter().any(|t| usable(&t.target)),
                None => usable(&m.id),
            });
        }
        Ok(list)
    }

    /// `GET /v1/models`: `provider/model` ids from configuration and from the upstreams' own lists.
    pub async fn models(&self) -> ModelList {
        self.models_of(&self.pool.load_full()).await
    }

    async fn models_of(&self, pool: &Pool) -> ModelList {
        if pool.planner.lists_stale(MODEL_LIST_TTL) {
            self.refresh_models().await;
        }
        let mut data = Vec::new();
        for p in &pool.up.providers {
            let mut seen = HashSet::new();
            let discovered = pool.planner.list_of(&p.cfg.name);
            let declared = p.cfg.declared_models();
            for m in declared.chain(discovered.iter().map(String::as_str)) {
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
        for r in pool.up.routes.iter().filter(|r| !r.targets.is_empty()) {
            for m in &r.models {
                data.push(ModelInfo { id: m.clone(), object: "model".into(), created: 0, owned_by: "switchyard".into() });
            }
        }
        ModelList { object: "list".into(), data }
    }

    /// Health, key and load state of every provider, for `GET /api/health/providers`.
    pub fn health(&self) -> Vec<ProviderHealthView> {
        self.pool.load().up.health()
    }
}

/// Who called, on the request's record (see `observe`), as soon as it is known: a request refused later
/// is still logged under its key.
fn observe_caller(ctx: &RequestCtx, who: Option<&Principal>) {
    let Some(w) = who else { return };
    let caller = crate::observe::Caller {
        virtual_key_id: w.key.id.clone(),
        virtual_key: w.name().to_string(),
        team: w.team.as_ref().map(|t| t.id.clone()),
        customer: w.customer.as_ref().map(|c| c.id.clone()),
        restricted: w.restricted(),
        log_bodies: w.key.log_bodies,
    };
    ctx.observed.with(|o| o.caller = Some(caller));
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
