//! The request-level Prometheus metrics, with a label set that stays bounded whatever callers send.
//!
//! Peers learnt the hard way that a metrics endpoint grows with its labels: virtual-key and key labels on
//! every histogram made one gateway's `/metrics` hundreds of megabytes. So here:
//!
//! - **No caller-chosen string is a label value.** Providers, routes, provider keys, virtual keys, teams
//!   and tags are named by the operator. A model is labelled only when the configuration (a provider's
//!   `models`, its keys' or deployments' models, a route's targets), the provider's own model list, or the
//!   price table names it; any other model is `other`. Endpoints are a fixed set; an unknown route of the
//!   HTTP surface never makes a record at all.
//! - **Each label has a cap** (`metrics.max_label_values`, 200 by default): past it new values are `other`,
//!   counted in `switchyard_metric_label_overflow_total{label}`.
//! - **Histograms carry no key, virtual-key or team label**: those appear only on a few counters (the
//!   residency split, requests, tokens and cost per key) and the budget gauges, and only when enabled.
//!
//! The metrics come from the finished [`RequestRecord`] (this is a [`RequestSink`]), so they agree with the
//! request log: what a dashboard shows can be found in the log it links to. Recording is a few atomic
//! updates per request; nothing here blocks. State that is not about one request (each provider's health
//! and circuit, each budget's use) is not counted per request: health is read when `/metrics` is rendered
//! (a handful of providers, always fresh), budgets every few seconds (there may be thousands of keys).
//!
//! Costs are dollars with fractions, which the `metrics` crate's integer counters cannot hold, so their
//! counters live here and are rendered beside the recorder's output, as are the gauges above.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_wire::ProviderKind;

use crate::config::{MetricsConfig, ProviderConfig, RouteConfig};
use crate::error::FailureClass;
use crate::governance::meter::Reading;
use crate::governance::Governance;
use crate::observe::{RequestRecord, RequestSink};
use crate::pool::ProviderHealthView;
use crate::pricing::PriceTable;

/// The value of a label whose real value may not be shown: an unknown model, or past the label's cap.
pub const OTHER: &str = "other";
/// The value of a label that does not apply: no provider answered, no route matched, no key was used.
pub const NONE: &str = "none";

/// How often the budget gauges are read from governance.
pub const BUDGET_INTERVAL: Duration = Duration::from_secs(5);

/// Every metric this module records or renders, by name.
pub mod names {
    pub const REQUESTS: &str = "switchyard_requests_total";
    pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
    pub const UPSTREAM_DURATION: &str = "switchyard_upstream_duration_seconds";
    pub const OVERHEAD: &str = "switchyard_overhead_seconds";
    pub const TIME_TO_FIRST_TOKEN: &str = "switchyard_time_to_first_token_seconds";
    pub const INTER_TOKEN_GAP: &str = "switchyard_inter_token_gap_seconds";
    pub const ATTEMPTS: &str = "switchyard_upstream_attempts_total";
    pub const RETRIES: &str = "switchyard_retries_total";
    pub const FALLBACKS: &str = "switchyard_fallbacks_total";
    pub const HEDGE_WINS: &str = "switchyard_hedge_wins_total";
    pub const TOKENS: &str = "switchyard_tokens_total";
    pub const COST: &str = "switchyard_cost_usd_total";
    pub const VK_REQUESTS: &str = "switchyard_virtual_key_requests_total";
    pub const VK_TOKENS: &str = "switchyard_virtual_key_tokens_total";
    pub const VK_COST: &str = "switchyard_virtual_key_cost_usd_total";
    pub const TEAM_REQUESTS: &str = "switchyard_team_requests_total";
    pub const TEAM_TOKENS: &str = "switchyard_team_tokens_total";
    pub const TEAM_COST: &str = "switchyard_team_cost_usd_total";
    pub const LABEL_OVERFLOW: &str = "switchyard_metric_label_overflow_total";
    pub const PROVIDER_DEGRADED: &str = "switchyard_provider_degraded";
    pub const PROVIDER_HEALTH_SIGNALS: &str = "switchyard_provider_health_signals";
    pub const PROVIDER_HEALTH_FAILURES: &str = "switchyard_provider_health_failures";
    pub const PROVIDER_IN_FLIGHT: &str = "switchyard_provider_in_flight";
    pub const PROVIDER_QUEUED: &str = "switchyard_provider_queued";
    pub const PROVIDER_KEYS: &str = "switchyard_provider_keys";
    pub const VK_BUDGET_USED: &str = "switchyard_virtual_key_budget_used_usd";
    pub const VK_BUDGET_LIMIT: &str = "switchyard_virtual_key_budget_limit_usd";
    pub const VK_BUDGET_RATIO: &str = "switchyard_virtual_key_budget_used_ratio";
    pub const TEAM_BUDGET_USED: &str = "switchyard_team_budget_used_usd";
    pub const TEAM_BUDGET_LIMIT: &str = "switchyard_team_budget_limit_usd";
    pub const TEAM_BUDGET_RATIO: &str = "switchyard_team_budget_used_ratio";
    /// Emitted by the request log (named here so that they are described and exist from the start).
    pub const REQUEST_LOG_DROPPED: &str = "switchyard_request_log_dropped_total";
    pub const REQUEST_LOG_WRITTEN: &str = "switchyard_request_log_written_total";
    pub const REQUEST_LOG_QUEUE: &str = "switchyard_request_log_queue";
    pub const USAGE_LEDGER_DROPPED: &str = "switchyard_usage_ledger_dropped_total";
}

/// The histograms bucketed with `metrics.latency_buckets`.
pub const LATENCY_HISTOGRAMS: [&str; 4] =
    [names::REQUEST_DURATION, names::UPSTREAM_DURATION, names::TIME_TO_FIRST_TOKEN, names::INTER_TOKEN_GAP];
/// The histograms bucketed with `metrics.overhead_buckets`.
pub const OVERHEAD_HISTOGRAMS: [&str; 1] = [names::OVERHEAD];

/// The labels whose values are admitted one by one under the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Provider,
    Model,
    Route,
    Key,
    VirtualKey,
    Team,
    Tags,
    Status,
}

const LABELS: [Label; 8] =
    [Label::Provider, Label::Model, Label::Route, Label::Key, Label::VirtualKey, Label::Team, Label::Tags, Label::Status];

impl Label {
    fn name(self) -> &'static str {
        match self {
            Label::Provider => "provider",
            Label::Model => "model",
            Label::Route => "route",
            Label::Key => "key",
            Label::VirtualKey => "virtual_key",
            Label::Team => "team",
            Label::Tags => "provider_tags",
            Label::Status => "status",
        }
    }
}

/// The values one label has taken, up to its cap. Read-mostly: a value is admitted once and then only
/// looked up (a read lock held for one hash lookup, never across anything else).
struct Admitted {
    label: Label,
    max: usize,
    values: RwLock<HashSet<Arc<str>>>,
}

impl Admitted {
    fn value(&self, v: &str) -> Arc<str> {
        if let Some(known) = self.values.read().unwrap_or_else(|e| e.into_inner()).get(v) {
            return Arc::clone(known);
        }
        let mut values = self.values.write().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = values.get(v) {
            return Arc::clone(known);
        }
        if values.len() >= self.max {
            drop(values);
            metrics::counter!(names::LABEL_OVERFLOW, "label" => self.label.name()).increment(1);
            return other();
        }
        let admitted: Arc<str> = Arc::from(v);
        values.insert(Arc::clone(&admitted));
        admitted
    }

    fn len(&self) -> usize {
        self.values.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn other() -> Arc<str> {
    static V: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(V.get_or_init(|| Arc::from(OTHER)))
}

fn none() -> Arc<str> {
    static V: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(V.get_or_init(|| Arc::from(NONE)))
}

/// The names the gateway's configuration and its providers give, which alone may become label values.
#[derive(Debug, Default)]
pub struct Vocabulary {
    providers: HashMap<String, KnownProvider>,
    routes: HashSet<String>,
    pricing: PriceTable,
}

#[derive(Debug)]
struct KnownProvider {
    kind: ProviderKind,
    models: HashSet<String>,
}

impl Vocabulary {
    /// From the providers and routes in force, each provider's own model list (`listed`, by provider
    /// name), and the price table.
    pub fn new<'a>(
        providers: impl IntoIterator<Item = &'a ProviderConfig>,
        routes: &[RouteConfig],
        listed: impl Fn(&str) -> Vec<String>,
        pricing: PriceTable,
    ) -> Vocabulary {
        let mut known: HashMap<String, KnownProvider> = providers
            .into_iter()
            .map(|p| {
                let mut models: HashSet<String> = p.declared_models().map(str::to_string).collect();
                models.extend(listed(&p.name));
                (p.name.clone(), KnownProvider { kind: p.kind, models })
            })
            .collect();
        let mut names = HashSet::new();
        for r in routes {
            names.extend(r.models.iter().cloned());
            let targets = r.targets.iter().chain(&r.fallbacks).chain(&r.context_fallbacks).map(|f| f.target.as_str());
            for t in r.models.iter().map(String::as_str).chain(targets) {
                if let Some((p, m)) = t.split_once('/') {
                    if let Some(k) = known.get_mut(p) {
                        k.models.insert(m.to_string());
                    }
                }
            }
        }
        Vocabulary { providers: known, routes: names, pricing }
    }

    /// The label value of `model` served by `provider`: the name itself when the configuration or the
    /// provider's list names it, the price table's spelling when only the table does, `None` otherwise.
    fn model<'a>(&self, provider: &str, model: &'a str) -> Option<std::borrow::Cow<'a, str>> {
        let p = self.providers.get(provider)?;
        if p.models.contains(model) {
            return Some(model.into());
        }
        self.pricing.names(provider, p.kind, model).then(|| model.to_ascii_lowercase().into())
    }
}

/// Which family a fractional counter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum CostFamily {
    /// `provider`, `model`.
    Model,
    /// `virtual_key`, `provider`, `provider_tags`.
    VirtualKey,
    /// `team`, `provider`, `provider_tags`.
    Team,
}

impl CostFamily {
    const ALL: [CostFamily; 3] = [CostFamily::Model, CostFamily::VirtualKey, CostFamily::Team];

    fn name(self) -> &'static str {
        match self {
            CostFamily::Model => names::COST,
            CostFamily::VirtualKey => names::VK_COST,
            CostFamily::Team => names::TEAM_COST,
        }
    }

    fn labels(self) -> &'static [&'static str] {
        match self {
            CostFamily::Model => &["provider", "model"],
            CostFamily::VirtualKey => &["virtual_key", "provider", "provider_tags"],
            CostFamily::Team => &["team", "provider", "provider_tags"],
        }
    }

    fn help(self) -> &'static str {
        match self {
            CostFamily::Model => "USD spent on answered requests, by serving provider and model (priced targets only).",
            CostFamily::VirtualKey => "USD spent per virtual key, by serving provider and its tags.",
            CostFamily::Team => "USD spent per team, by serving provider and its tags.",
        }
    }
}

type CostKey = (CostFamily, [Arc<str>; 3]);

/// Cost counters in billionths of a dollar (exact sums), shown in dollars.
#[derive(Default)]
struct Costs(RwLock<HashMap<CostKey, AtomicU64>>);

impl Costs {
    fn add(&self, family: CostFamily, labels: [Arc<str>; 3], nano_usd: u64) {
        let key = (family, labels);
        if let Some(c) = self.0.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            c.fetch_add(nano_usd, Ordering::Relaxed);
            return;
        }
        self.0.write().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().fetch_add(nano_usd, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(&CostKey, u64)> = map.iter().map(|(k, v)| (k, v.load(Ordering::Relaxed))).collect();
        // Sorted: scrapes diff cleanly and tests read a stable order.
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for family in CostFamily::ALL {
            let mut family_rows = rows.iter().filter(|(k, _)| k.0 == family).peekable();
            if family_rows.peek().is_none() {
                continue;
            }
            header(out, family.name(), "counter", family.help());
            for ((_, values), nano) in family_rows {
                let labels: Vec<(&str, &str)> = family.labels().iter().copied().zip(values.iter().map(|v| &**v)).collect();
                sample(out, family.name(), &labels, *nano as f64 / 1e9);
            }
        }
    }
}

/// The request metrics of one gateway: the sink every finished request's record goes to, and what
/// `/metrics` adds to the recorder's output.
pub struct RequestMetrics {
    cfg: MetricsConfig,
    vocabulary: ArcSwap<Vocabulary>,
    admitted: Vec<Admitted>,
    costs: Costs,
    /// The budget gauges as last read (see [`RequestMetrics::refresh_budgets`]).
    budgets: ArcSwap<String>,
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl RequestMetrics {
    pub fn new(cfg: &MetricsConfig) -> RequestMetrics {
        RequestMetrics {
            cfg: cfg.clone(),
            vocabulary: ArcSwap::from_pointee(Vocabulary::default()),
            admitted: LABELS.iter().map(|&label| Admitted { label, max: cfg.max_label_values, values: RwLock::default() }).collect(),
            costs: Costs::default(),
            budgets: ArcSwap::from_pointee(String::new()),
        }
    }

    pub fn config(&self) -> &MetricsConfig {
        &self.cfg
    }

    /// The names that may be label values from now on (the gateway calls it when its providers, or their
    /// model lists, change).
    pub fn learn(&self, v: Vocabulary) {
        self.vocabulary.store(Arc::new(v));
    }

    /// Distinct values `label` holds now (for tests and benchmarks).
    pub fn label_values(&self, label: &str) -> usize {
        self.admitted.iter().find(|a| a.label.name() == label).map_or(0, Admitted::len)
    }

    fn admit(&self, label: Label, v: &str) -> Arc<str> {
        match self.admitted.iter().find(|a| a.label == label) {
            Some(a) => a.value(v),
            None => other(),
        }
    }

    fn provider(&self, vocab: &Vocabulary, provider: Option<&str>) -> Arc<str> {
        match provider {
            None => none(),
            Some(p) if vocab.providers.contains_key(p) => self.admit(Label::Provider, p),
            Some(_) => other(),
        }
    }

    fn model(&self, vocab: &Vocabulary, provider: Option<&str>, model: Option<&str>) -> Arc<str> {
        match (provider, model) {
            (Some(p), Some(m)) => match vocab.model(p, m) {
                Some(name) => self.admit(Label::Model, &name),
                None => other(),
            },
            _ => none(),
        }
    }

    /// The histogram a stream's gaps between chunks go to, taken once per stream: recording into it is
    /// then one atomic push per chunk.
    pub fn inter_token_gaps(&self, provider: &str, model: &str) -> metrics::Histogram {
        let vocab = self.vocabulary.load();
        let p = self.provider(&vocab, Some(provider));
        let m = self.model(&vocab, Some(provider), Some(model));
        metrics::histogram!(names::INTER_TOKEN_GAP, "provider" => p, "model" => m)
    }

    /// Reads every budget's use from `gov` into the budget gauges (called every [`BUDGET_INTERVAL`]).
    pub fn refresh_budgets(&self, gov: &Governance) {
        let crate::governance::BudgetUse { keys, teams } = gov.budget_use();
        let mut out = String::new();
        if self.cfg.virtual_key_labels {
            self.budget_gauges(&mut out, Label::VirtualKey, keys, [names::VK_BUDGET_USED, names::VK_BUDGET_LIMIT, names::VK_BUDGET_RATIO]);
        }
        if self.cfg.team_labels {
            self.budget_gauges(&mut out, Label::Team, teams, [names::TEAM_BUDGET_USED, names::TEAM_BUDGET_LIMIT, names::TEAM_BUDGET_RATIO]);
        }
        self.budgets.store(Arc::new(out));
    }

    fn budget_gauges(&self, out: &mut String, label: Label, mut readings: Vec<(String, Reading)>, [used, limit, ratio]: [&str; 3]) {
        readings.sort_by(|a, b| a.0.cmp(&b.0));
        // Past the label's cap a budget is not shown: a gauge summed into `other` would mean nothing.
        let shown: Vec<(Arc<str>, Reading)> =
            readings.into_iter().map(|(n, r)| (self.admit(label, &n), r)).filter(|(n, _)| &**n != OTHER).collect();
        if shown.is_empty() {
            return;
        }
        let who = if label == Label::Team { "team" } else { "virtual key" };
        let name = label.name();
        header(out, used, "gauge", &format!("USD used of the {who}'s budget in its current window."));
        for (n, r) in &shown {
            sample(out, used, &[(name, n)], r.used);
        }
        header(out, limit, "gauge", &format!("The {who}'s budget in USD per window."));
        for (n, r) in &shown {
            sample(out, limit, &[(name, n)], r.limit);
        }
        header(out, ratio, "gauge", &format!("Share of the {who}'s budget used in its current window (1 = all of it)."));
        for (n, r) in shown.iter().filter(|(_, r)| r.limit > 0.0) {
            sample(out, ratio, &[(name, n)], r.used / r.limit);
        }
    }

    /// Appends what the recorder cannot hold to a `/metrics` page: the cost counters, every provider's
    /// health and load (from `health`, read now), and the budget gauges as last read.
    pub fn render_into(&self, out: &mut String, health: &[ProviderHealthView]) {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        self.costs.render(out);
        self.render_health(out, health);
        out.push_str(&self.budgets.load());
    }

    fn render_health(&self, out: &mut String, health: &[ProviderHealthView]) {
        if health.is_empty() {
            return;
        }
        let vocab = self.vocabulary.load();
        let mut seen = HashSet::new();
        let rows: Vec<(Arc<str>, &ProviderHealthView)> = health
            .iter()
            .map(|h| (self.provider(&vocab, Some(&h.name)), h))
            // One row per label value: two providers past the cap must not make duplicate series.
            .filter(|(p, _)| seen.insert(Arc::clone(p)))
            .collect();
        let gauges: [HealthGauge; 5] = [
            (
                names::PROVIDER_DEGRADED,
                "1 while the provider is degraded (its circuit is open: healthy targets are tried first and probes test it), else 0.",
                |h| f64::from(u8::from(h.health.state == "degraded")),
            ),
            (names::PROVIDER_HEALTH_SIGNALS, "Health signals (answers, failures, slow answers) in the provider's window.", |h| {
                f64::from(h.health.signals)
            }),
            (names::PROVIDER_HEALTH_FAILURES, "Failures and slow answers among the provider's health signals in its window.", |h| {
                f64::from(h.health.failures)
            }),
            (names::PROVIDER_IN_FLIGHT, "Requests in flight to the provider now.", |h| h.in_flight as f64),
            (names::PROVIDER_QUEUED, "Requests waiting for a slot under the provider's max_in_flight now.", |h| h.queued as f64),
        ];
        for (name, help, value) in gauges {
            header(out, name, "gauge", help);
            for (p, h) in &rows {
                sample(out, name, &[("provider", p)], value(h));
            }
        }
        header(
            out,
            names::PROVIDER_KEYS,
            "gauge",
            "The provider's keys by state: available, or cooling_down after a 429, 401 or quota error.",
        );
        for (p, h) in &rows {
            let cooling = h.keys.iter().filter(|k| k.cooling_down_ms.is_some()).count();
            sample(out, names::PROVIDER_KEYS, &[("provider", p), ("state", "available")], (h.keys.len() - cooling) as f64);
            sample(out, names::PROVIDER_KEYS, &[("provider", p), ("state", "cooling_down")], cooling as f64);
        }
    }
}

/// A per-provider gauge: name, help, and how it is read from the provider's health view.
type HealthGauge = (&'static str, &'static str, fn(&ProviderHealthView) -> f64);

fn endpoint(e: &str) -> &'static str {
    match e {
        "chat" => "chat",
        "responses" => "responses",
        "completions" => "completions",
        "embeddings" => "embeddings",
        "models" => "models",
        _ => OTHER,
    }
}

fn outcome(o: &str) -> &'static str {
    if o == "success" {
        return "success";
    }
    FailureClass::ALL.iter().map(|c| c.as_str()).find(|c| *c == o).unwrap_or(OTHER)
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl RequestSink for RequestMetrics {
    fn record(&self, r: &Arc<RequestRecord>) {
        let vocab = self.vocabulary.load();
        let endpoint = endpoint(&r.endpoint);
        let provider = self.provider(&vocab, r.provider.as_deref());
        let model = self.model(&vocab, r.provider.as_deref(), r.served_model.as_deref());
        let route = match r.route.as_deref() {
            None => none(),
            Some(x) if vocab.routes.contains(x) => self.admit(Label::Route, x),
            Some(_) => other(),
        };
        let status = r.status.map_or_else(none, |s| self.admit(Label::Status, &s.to_string()));
        metrics::counter!(names::REQUESTS, "endpoint" => endpoint, "route" => Arc::clone(&route), "provider" => Arc::clone(&provider),
            "model" => Arc::clone(&model), "status" => status, "status_class" => r.status_class())
        .increment(1);
        metrics::histogram!(names::REQUEST_DURATION, "endpoint" => endpoint, "provider" => Arc::clone(&provider), "model" => Arc::clone(&model))
            .record(secs(r.latency_ms));
        if let Some(us) = r.overhead_us {
            metrics::histogram!(names::OVERHEAD, "endpoint" => endpoint).record(us as f64 / 1e6);
        }
        if let Some(t) = r.ttft_ms {
            metrics::histogram!(names::TIME_TO_FIRST_TOKEN, "provider" => Arc::clone(&provider), "model" => Arc::clone(&model))
                .record(secs(t));
        }
        let mut sent = 0;
        for a in &r.attempts {
            let ap = self.provider(&vocab, Some(&a.provider));
            let key = a.key.as_deref().map_or_else(none, |k| self.admit(Label::Key, k));
            metrics::counter!(names::ATTEMPTS, "provider" => Arc::clone(&ap), "key" => key, "outcome" => outcome(&a.outcome)).increment(1);
            if a.skipped {
                continue;
            }
            sent += 1;
            // A hedge races the first attempt: it is not a retry of it.
            if sent > 1 && !a.hedged {
                metrics::counter!(names::RETRIES, "provider" => Arc::clone(&ap)).increment(1);
            }
            let am = self.model(&vocab, Some(&a.provider), Some(&a.model));
            metrics::histogram!(names::UPSTREAM_DURATION, "provider" => ap, "model" => am).record(secs(a.latency_ms));
        }
        if r.fell_back() {
            metrics::counter!(names::FALLBACKS, "route" => route, "provider" => Arc::clone(&provider)).increment(1);
        }
        if r.hedged {
            metrics::counter!(names::HEDGE_WINS, "provider" => Arc::clone(&provider)).increment(1);
        }
        for (kind, n) in [("input", r.tokens_in), ("output", r.tokens_out), ("cached", r.tokens_cached)] {
            if let Some(n) = n.filter(|n| *n > 0) {
                metrics::counter!(names::TOKENS, "provider" => Arc::clone(&provider), "model" => Arc::clone(&model), "type" => kind)
                    .increment(n);
            }
        }
        if r.provider.is_none() {
            return;
        }
        let cost = r.cost_nano_usd.unwrap_or(0);
        if cost > 0 {
            self.costs.add(CostFamily::Model, [Arc::clone(&provider), Arc::clone(&model), none()], cost);
        }
        let Some(caller) = &r.caller else { return };
        let tags = self.admit(Label::Tags, &r.provider_tags.join(","));
        let tokens = r.tokens_in.unwrap_or(0) + r.tokens_out.unwrap_or(0);
        let split = |who: Arc<str>, requests: &'static str, tokens_name: &'static str, family: CostFamily, label: &'static str| {
            let labels = [(label, Arc::clone(&who)), ("provider", Arc::clone(&provider)), ("provider_tags", Arc::clone(&tags))];
            metrics::counter!(requests, &labels).increment(1);
            metrics::counter!(tokens_name, &labels).increment(tokens);
            if cost > 0 {
                self.costs.add(family, [who, Arc::clone(&provider), Arc::clone(&tags)], cost);
            }
        };
        if self.cfg.virtual_key_labels {
            split(
                self.admit(Label::VirtualKey, &caller.virtual_key),
                names::VK_REQUESTS,
                names::VK_TOKENS,
                CostFamily::VirtualKey,
                "virtual_key",
            );
        }
        if let Some(team) = caller.team.as_deref().filter(|_| self.cfg.team_labels) {
            split(self.admit(Label::Team, team), names::TEAM_REQUESTS, names::TEAM_TOKENS, CostFamily::Team, "team");
        }
    }
}

/// Describes every metric the gateway exports through the recorder (the `# HELP` lines), and creates the
/// counters that have no labels at zero, so that a dashboard or alert reads 0 rather than "no data" before
/// the first event. Call once, after the recorder is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(names::REQUESTS, "Finished requests by endpoint, matched route, serving provider and model, and HTTP status.");
    describe_histogram!(
        names::REQUEST_DURATION,
        "Total time of a request, from arrival to its last byte (a stream: to its end), in seconds."
    );
    describe_histogram!(
        names::UPSTREAM_DURATION,
        "Time each sent upstream attempt waited on its provider (a stream: to its first chunk), in seconds."
    );
    describe_histogram!(
        names::OVERHEAD,
        "The gateway's own time per request: total time minus time waiting on upstreams (a stream: up to its first token), in seconds."
    );
    describe_histogram!(names::TIME_TO_FIRST_TOKEN, "Time from a stream's arrival to its first chunk sent to the client, in seconds.");
    describe_histogram!(names::INTER_TOKEN_GAP, "Time between consecutive chunks of a stream sent to the client, in seconds.");
    describe_counter!(
        names::ATTEMPTS,
        "Upstream attempts and skipped targets by provider, key name and outcome (success or failure class)."
    );
    describe_counter!(names::RETRIES, "Upstream attempts sent beyond a request's first (hedges excluded), by the retried provider.");
    describe_counter!(names::FALLBACKS, "Requests served by a fallback target (not the plan's first), by route and serving provider.");
    describe_counter!(names::HEDGE_WINS, "Requests served by a hedge (the concurrent second attempt), by serving provider.");
    describe_counter!(names::TOKENS, "Tokens of answered requests by provider, model and type (input, output, cached input).");
    describe_counter!(names::VK_REQUESTS, "Answered requests per virtual key by serving provider and its tags: the residency split.");
    describe_counter!(names::VK_TOKENS, "Input and output tokens per virtual key by serving provider and its tags.");
    describe_counter!(names::TEAM_REQUESTS, "Answered requests per team by serving provider and its tags.");
    describe_counter!(names::TEAM_TOKENS, "Input and output tokens per team by serving provider and its tags.");
    describe_counter!(names::LABEL_OVERFLOW, "Label values shown as `other` because the label reached metrics.max_label_values.");
    describe_counter!(names::REQUEST_LOG_DROPPED, "Request log records dropped because the log's queue was full.");
    describe_counter!(names::REQUEST_LOG_WRITTEN, "Request log records written to the store.");
    describe_gauge!(names::REQUEST_LOG_QUEUE, "Request log records waiting to be written.");
    describe_counter!(names::USAGE_LEDGER_DROPPED, "Usage ledger records dropped because the ledger's queue was full.");
    for name in [names::REQUEST_LOG_DROPPED, names::REQUEST_LOG_WRITTEN, names::USAGE_LEDGER_DROPPED] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(names::REQUEST_LOG_QUEUE).increment(0.0);
    for label in LABELS {
        metrics::counter!(names::LABEL_OVERFLOW, "label" => label.name()).increment(0);
    }
}

/// `# HELP` and `# TYPE` of one family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line, label values escaped as the text format wants.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::parse_str;
    use crate::observe::{AttemptRecord, Caller};

    const CONFIG: &str = "providers:
  cloud:
    type: openai
    base_url: http://127.0.0.1:1
    keys: [{name: primary, value: sk-1}, {name: backup, value: sk-2}]
    tags: [cloud]
  local:
    type: vllm
    base_url: http://127.0.0.1:2
    models: [llama-3-8b]
    tags: [on-prem]
routes:
  - models: [chat-default]
    targets: [cloud/gpt-4o-mini, local/llama-3-8b]
governance:
  teams:
    - {id: research, name: Research, budget: {max_limit: 50}}
  virtual_keys:
    - {id: vk-batch, name: batch, team_id: research, budget: {max_limit: 10}}
    - {id: vk-ui, name: chat-ui}
";

    /// The request metrics of CONFIG (with `extra` appended to it) and a recorder rendering like /metrics.
    fn setup(extra: &str) -> (RequestMetrics, metrics_exporter_prometheus::PrometheusRecorder, crate::Gateway) {
        let cfg = parse_str(&format!("{CONFIG}{extra}"), &BTreeMap::new()).unwrap();
        let m = RequestMetrics::new(&cfg.metrics);
        m.learn(Vocabulary::new(&cfg.providers, &cfg.routes, |_| Vec::new(), PriceTable::new(&cfg.pricing)));
        let rec = metrics_exporter_prometheus::PrometheusBuilder::new().set_buckets(&cfg.metrics.latency_buckets).unwrap().build_recorder();
        let gw = crate::Gateway::new(&cfg).unwrap();
        (m, rec, gw)
    }

    fn attempt(provider: &str, model: &str, key: Option<&str>, outcome: &str, skipped: bool) -> AttemptRecord {
        AttemptRecord {
            target: format!("{provider}/{model}"),
            provider: provider.into(),
            model: model.into(),
            key: key.map(str::to_string),
            outcome: outcome.into(),
            latency_ms: if skipped { 0 } else { 40 },
            skipped,
            ..AttemptRecord::default()
        }
    }

    /// A chat request answered by `provider`/`model` for virtual key `vk`.
    fn served(provider: &str, model: &str, vk: Option<&str>) -> RequestRecord {
        RequestRecord {
            id: "r".into(),
            endpoint: "chat".into(),
            provider: Some(provider.into()),
            served_model: Some(model.into()),
            key: Some("primary".into()),
            provider_tags: vec![if provider == "local" { "on-prem" } else { "cloud" }.into()],
            attempts: vec![attempt(provider, model, Some("primary"), "success", false)],
            fallback_index: Some(0),
            status: Some(200),
            latency_ms: 50,
            upstream_ms: 40,
            overhead_us: Some(300),
            tokens_in: Some(10),
            tokens_out: Some(5),
            cost_nano_usd: Some(1_500_000),
            caller: vk.map(|v| Caller {
                virtual_key_id: format!("vk-{v}"),
                virtual_key: v.into(),
                team: (v == "batch").then(|| "research".into()),
                ..Caller::default()
            }),
            ..RequestRecord::default()
        }
    }

    fn render(m: &RequestMetrics, rec: &metrics_exporter_prometheus::PrometheusRecorder, gw: &crate::Gateway) -> String {
        let mut text = rec.handle().render();
        m.render_into(&mut text, &gw.health());
        text
    }

    fn lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])).collect()
    }

    #[test]
    fn a_model_the_configuration_names_is_a_label_and_any_other_is_other() {
        let (m, rec, gw) = setup("");
        metrics::with_local_recorder(&rec, || {
            m.record(&Arc::new(served("local", "llama-3-8b", None)));
            // A route target's model, and the price table's own spelling of a model it lists.
            m.record(&Arc::new(served("cloud", "gpt-4o-mini", None)));
            m.record(&Arc::new(served("cloud", "GPT-4o", None)));
            // What a caller may write: a dated name the table would price by shortening, and noise.
            m.record(&Arc::new(served("cloud", "gpt-4o-2099-01-01", None)));
            m.record(&Arc::new(served("cloud", "x7f3-anything", None)));
        });
        let text = render(&m, &rec, &gw);
        let requests = lines(&text, names::REQUESTS);
        let with = |model: &str| requests.iter().filter(|l| l.contains(&format!("model=\"{model}\""))).count();
        assert_eq!((with("llama-3-8b"), with("gpt-4o-mini"), with("gpt-4o")), (1, 1, 1), "{text}");
        assert!(requests.iter().any(|l| l.contains("model=\"other\"") && l.ends_with(" 2")), "{text}");
        assert!(!text.contains("2099") && !text.contains("x7f3") && !text.contains("GPT-4o"), "{text}");
        assert_eq!(m.label_values("model"), 3);
    }

    #[test]
    fn past_the_cap_a_label_value_is_other_and_the_overflow_is_counted() {
        let (m, rec, gw) = setup("metrics:\n  max_label_values: 3\n");
        metrics::with_local_recorder(&rec, || {
            for i in 0..10 {
                m.record(&Arc::new(served("cloud", "gpt-4o-mini", Some(&format!("key-{i}")))));
            }
        });
        let text = render(&m, &rec, &gw);
        let vk = lines(&text, names::VK_REQUESTS);
        assert_eq!(vk.len(), 4, "three keys and other: {text}");
        assert!(vk.iter().any(|l| l.contains("virtual_key=\"other\"") && l.ends_with(" 7")), "{text}");
        assert!(text.contains("switchyard_metric_label_overflow_total{label=\"virtual_key\"} 7"), "{text}");
        assert_eq!(m.label_values("virtual_key"), 3);
    }

    #[test]
    fn histograms_never_carry_key_virtual_key_or_team_labels() {
        let (m, rec, gw) = setup("");
        metrics::with_local_recorder(&rec, || {
            let mut r = served("cloud", "gpt-4o-mini", Some("batch"));
            r.stream = true;
            r.ttft_ms = Some(20);
            m.record(&Arc::new(r));
            m.inter_token_gaps("cloud", "gpt-4o-mini").record(0.01);
        });
        let text = render(&m, &rec, &gw);
        let buckets: Vec<&str> = text.lines().filter(|l| l.contains("_bucket{")).collect();
        for name in LATENCY_HISTOGRAMS {
            assert!(buckets.iter().any(|l| l.starts_with(name)), "{name} missing: {text}");
        }
        for l in &buckets {
            assert!(!l.contains("key=") && !l.contains("team="), "{l}");
        }
        // The counters of the residency split do carry them.
        assert!(
            text.contains("switchyard_virtual_key_requests_total{virtual_key=\"batch\",provider=\"cloud\",provider_tags=\"cloud\"} 1"),
            "{text}"
        );
        assert!(text.contains("switchyard_team_requests_total{team=\"research\",provider=\"cloud\",provider_tags=\"cloud\"} 1"), "{text}");
        assert!(lines(&text, names::ATTEMPTS).iter().any(|l| l.contains("key=\"primary\"")), "{text}");
    }

    #[test]
    fn virtual_key_and_team_labels_can_be_turned_off() {
        let (m, rec, gw) = setup("metrics:\n  virtual_key_labels: false\n  team_labels: false\n");
        metrics::with_local_recorder(&rec, || m.record(&Arc::new(served("cloud", "gpt-4o-mini", Some("batch")))));
        m.refresh_budgets(&gw.governance().snapshot());
        let text = render(&m, &rec, &gw);
        assert!(!text.contains("virtual_key=") && !text.contains("team="), "{text}");
        assert_eq!(lines(&text, names::REQUESTS).len(), 1, "{text}");
    }

    #[test]
    fn a_failover_counts_its_attempts_retries_and_fallback_once_each() {
        let (m, rec, gw) = setup("");
        let mut r = served("local", "llama-3-8b", None);
        r.route = Some("chat-default".into());
        r.fallback_index = Some(1);
        r.attempts = vec![
            attempt("cloud", "gpt-4o-mini", Some("primary"), "transient", false),
            attempt("cloud", "gpt-4o-mini", Some("backup"), "rate_limited", false),
            attempt("local", "llama-3-8b", None, "success", false),
        ];
        let mut refused = RequestRecord { endpoint: "chat".into(), status: Some(402), ..RequestRecord::default() };
        refused.attempts = vec![attempt("cloud", "gpt-4o-mini", None, "budget_exceeded", true)];
        metrics::with_local_recorder(&rec, || {
            m.record(&Arc::new(r));
            m.record(&Arc::new(refused));
        });
        let text = render(&m, &rec, &gw);
        for line in [
            "switchyard_fallbacks_total{route=\"chat-default\",provider=\"local\"} 1",
            "switchyard_upstream_attempts_total{provider=\"cloud\",key=\"primary\",outcome=\"transient\"} 1",
            "switchyard_upstream_attempts_total{provider=\"cloud\",key=\"backup\",outcome=\"rate_limited\"} 1",
            "switchyard_upstream_attempts_total{provider=\"local\",key=\"none\",outcome=\"success\"} 1",
            "switchyard_upstream_attempts_total{provider=\"cloud\",key=\"none\",outcome=\"budget_exceeded\"} 1",
            "switchyard_retries_total{provider=\"cloud\"} 1",
            "switchyard_retries_total{provider=\"local\"} 1",
            "switchyard_upstream_duration_seconds_count{provider=\"cloud\",model=\"gpt-4o-mini\"} 2",
            "switchyard_requests_total{endpoint=\"chat\",route=\"none\",provider=\"none\",model=\"none\",status=\"402\",status_class=\"4xx\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // A skipped target is an attempt on the trail but no retry and no upstream time.
        assert_eq!(lines(&text, names::RETRIES).len(), 2, "{text}");
    }

    #[test]
    fn costs_are_dollars_and_health_and_budgets_are_gauges() {
        let (m, rec, gw) = setup("");
        metrics::with_local_recorder(&rec, || {
            m.record(&Arc::new(served("cloud", "gpt-4o-mini", Some("batch"))));
            m.record(&Arc::new(served("cloud", "gpt-4o-mini", Some("batch"))));
        });
        m.refresh_budgets(&gw.governance().snapshot());
        let text = render(&m, &rec, &gw);
        for line in [
            "# TYPE switchyard_cost_usd_total counter",
            "switchyard_cost_usd_total{provider=\"cloud\",model=\"gpt-4o-mini\"} 0.003",
            "switchyard_virtual_key_cost_usd_total{virtual_key=\"batch\",provider=\"cloud\",provider_tags=\"cloud\"} 0.003",
            "switchyard_team_cost_usd_total{team=\"research\",provider=\"cloud\",provider_tags=\"cloud\"} 0.003",
            "switchyard_provider_degraded{provider=\"cloud\"} 0",
            "switchyard_provider_keys{provider=\"cloud\",state=\"available\"} 2",
            "switchyard_provider_keys{provider=\"local\",state=\"cooling_down\"} 0",
            "switchyard_virtual_key_budget_limit_usd{virtual_key=\"batch\"} 10",
            "switchyard_virtual_key_budget_used_ratio{virtual_key=\"batch\"} 0",
            "switchyard_team_budget_limit_usd{team=\"research\"} 50",
            "switchyard_tokens_total{provider=\"cloud\",model=\"gpt-4o-mini\",type=\"input\"} 20",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // A key without a budget has no budget gauges.
        assert!(!text.contains("virtual_key=\"chat-ui\""), "{text}");
        // Every family is declared once, before its samples.
        let mut declared = HashSet::new();
        for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            assert!(declared.insert(l.split(' ').next().unwrap().to_string()), "{l} declared twice:\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped_in_what_this_module_renders() {
        let mut out = String::new();
        sample(&mut out, "m", &[("k", "a\"b\\c\nd")], 1.5);
        assert_eq!(out, "m{k=\"a\\\"b\\\\c\\nd\"} 1.5\n");
    }
}
