//! The `governance:` section: customers, teams and virtual keys (Bifrost's shapes), global budgets and
//! rate limits per provider and per model. Every mistake is reported at its path, all in one pass; what
//! comes out has its cross-references checked (a key's team exists, its provider configs name configured
//! providers) and its secrets resolved.

use std::collections::{BTreeMap, HashMap, HashSet};

use secrecy::SecretString;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::decode::Issues;
use super::{Env, ProviderConfig};
use crate::governance::model::{Budget, Customer, RateLimit, Team, VirtualKeySpec};

/// Output tokens reserved for a request that sets no `max_tokens` (a request may produce up to the
/// model's limit, which the gateway does not know; this bound keeps one request from reserving a budget
/// whole).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// How a virtual key's `value` is written as the SHA-256 of the value instead of the value itself.
pub const SHA256_VALUE: &str = "sha256:";

fn is_sha256_hex(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Limits of one level that has no entity of its own (a provider, a model).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelLimits {
    #[serde(default)]
    pub budget: Option<Budget>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone)]
pub struct GovernanceConfig {
    /// `None`: required once any key exists.
    pub require_virtual_key: Option<bool>,
    pub default_max_tokens: u32,
    pub customers: Vec<Customer>,
    pub teams: Vec<Team>,
    /// Each key with its value (the secret callers present).
    pub keys: Vec<(VirtualKeySpec, SecretString)>,
    /// Global limits per provider name.
    pub providers: BTreeMap<String, LevelLimits>,
    /// Global limits per `provider/model`.
    pub models: BTreeMap<String, LevelLimits>,
    /// Counters shared by several replicas (`governance.redis`); `None`: each process counts alone.
    pub redis: Option<SharedCountersConfig>,
}

/// What a process does when the shared counters cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnreachable {
    /// Keep serving on this process's own counters, which start from the last use Redis reported; each
    /// replica then enforces every limit on its own, so together they may pass it by up to the number of
    /// replicas until Redis is back. What was used meanwhile is added to Redis when it returns.
    Local,
    /// Refuse every metered request with 503 `counters_unavailable` until Redis answers again.
    Refuse,
}

/// `governance.redis`: the counters every replica shares.
#[derive(Debug, Clone)]
pub struct SharedCountersConfig {
    /// `redis://[user:password@]host:port[/db]` or `unix:///path`; secret, as it may hold a password.
    pub url: SecretString,
    /// Every key the gateway writes starts with `{prefix}:`, braces included, so that one script's keys
    /// share one Redis Cluster slot.
    pub prefix: String,
    /// How long one call to Redis may take before the process treats Redis as unreachable.
    pub timeout: std::time::Duration,
    /// How long a reservation holds if its process never settles it (it died): then it is let go.
    pub lease: std::time::Duration,
    pub when_unreachable: WhenUnreachable,
}

impl SharedCountersConfig {
    /// The defaults, with `url` (for `--redis-url` without a `governance.redis` section).
    pub fn with_url(url: &str) -> SharedCountersConfig {
        SharedCountersConfig {
            url: SecretString::from(url.to_string()),
            prefix: "switchyard".into(),
            timeout: std::time::Duration::from_millis(250),
            lease: std::time::Duration::from_secs(15 * 60),
            when_unreachable: WhenUnreachable::Local,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: String,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    lease: Option<String>,
    #[serde(default)]
    when_unreachable: Option<String>,
}

/// `governance.redis`, every mistake at its path.
fn shared_counters(v: Yaml, env: &dyn Env, issues: &mut Issues) -> Option<SharedCountersConfig> {
    let at = "governance.redis";
    let raw = issues.decode::<RawRedis>(at, v)?;
    let before = issues.len();
    let url = match raw.url.strip_prefix("env.") {
        Some(var) => env.var(var).unwrap_or_else(|| {
            issues.push(format!("{at}.url"), format!("environment variable {var} is not set (or empty)"));
            String::new()
        }),
        None => raw.url.clone(),
    };
    if issues.len() == before && url.starts_with("rediss://") {
        issues.push(
            format!("{at}.url"),
            "TLS to Redis (rediss://) is not supported yet; reach Redis over a private network or a TLS tunnel with redis://",
        );
    } else if issues.len() == before && !(url.starts_with("redis://") || url.starts_with("unix://")) {
        issues.push(format!("{at}.url"), "must be a redis://[user:password@]host:port[/db] or unix:///path/to/redis.sock URL");
    }
    let prefix = raw.prefix.unwrap_or_else(|| "switchyard".into());
    if prefix.is_empty() || prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
        issues.push(format!("{at}.prefix"), "must be a plain word without braces or spaces, such as switchyard");
    }
    let mut duration = |field: &str, v: Option<String>, default: std::time::Duration| match v {
        None => default,
        Some(s) => match super::parse_duration(&s).filter(|d| !d.is_zero()) {
            Some(d) => d,
            None => {
                issues.push(format!("{at}.{field}"), format!("expected a duration above zero such as 250ms or 15m, got \"{s}\""));
                default
            }
        },
    };
    let timeout = duration("timeout", raw.timeout, std::time::Duration::from_millis(250));
    let lease = duration("lease", raw.lease, std::time::Duration::from_secs(15 * 60));
    let when_unreachable = match raw.when_unreachable.as_deref() {
        None | Some("local") => WhenUnreachable::Local,
        Some("refuse") => WhenUnreachable::Refuse,
        Some(other) => {
            issues.push(format!("{at}.when_unreachable"), format!("expected local or refuse, got \"{other}\""));
            WhenUnreachable::Local
        }
    };
    (issues.len() == before).then(|| SharedCountersConfig { url: SecretString::from(url), prefix, timeout, lease, when_unreachable })
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            require_virtual_key: None,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            customers: vec![],
            teams: vec![],
            keys: vec![],
            providers: BTreeMap::new(),
            models: BTreeMap::new(),
            redis: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGovernance {
    #[serde(default)]
    require_virtual_key: Option<bool>,
    #[serde(default)]
    default_max_tokens: Option<u32>,
    #[serde(default)]
    customers: Vec<Yaml>,
    #[serde(default)]
    teams: Vec<Yaml>,
    #[serde(default)]
    virtual_keys: Vec<Yaml>,
    #[serde(default)]
    providers: BTreeMap<String, Yaml>,
    #[serde(default)]
    models: BTreeMap<String, Yaml>,
    #[serde(default)]
    redis: Option<Yaml>,
}

fn check_budget(at: &str, b: &Budget, issues: &mut Issues) {
    if !(b.max_limit.is_finite() && b.max_limit >= 0.0) {
        issues.push(format!("{at}.max_limit"), format!("must be a number of US dollars, 0 or more, got {}", b.max_limit));
    }
    if b.calendar_aligned && b.reset_duration.is_none() {
        issues.push(format!("{at}.calendar_aligned"), "needs a reset_duration to align (1d, 1w, 1M, ...)");
    }
}

fn check_rate(at: &str, r: &RateLimit, issues: &mut Issues) {
    for (what, max, reset) in [
        ("request", r.request_max_limit.is_some(), r.request_reset_duration.is_some()),
        ("token", r.token_max_limit.is_some(), r.token_reset_duration.is_some()),
    ] {
        if max && !reset {
            issues.push(
                format!("{at}.{what}_reset_duration"),
                format!("{what}_max_limit needs a {what}_reset_duration (the window it counts in, such as 1m or 1h)"),
            );
        }
        if reset && !max {
            issues.push(format!("{at}.{what}_max_limit"), format!("{what}_reset_duration is given without a {what}_max_limit"));
        }
    }
}

fn check_limits(at: &str, budget: Option<&Budget>, rate: Option<&RateLimit>, issues: &mut Issues) {
    if let Some(b) = budget {
        check_budget(&format!("{at}.budget"), b, issues);
    }
    if let Some(r) = rate {
        check_rate(&format!("{at}.rate_limit"), r, issues);
    }
}

/// Decodes and checks the section. `providers` are the configured providers, `declared` every provider
/// name in the file (a provider with mistakes of its own is not reported again here).
pub(super) fn governance(
    raw: RawGovernance,
    providers: &[ProviderConfig],
    declared: &HashSet<String>,
    env: &dyn Env,
    issues: &mut Issues,
) -> GovernanceConfig {
    let by_name: HashMap<&str, &ProviderConfig> = providers.iter().map(|p| (p.name.as_str(), p)).collect();
    let provider_ok = |at: &str, name: &str, issues: &mut Issues| -> bool {
        if by_name.contains_key(name) {
            return true;
        }
        if !declared.contains(name) {
            let mut names: Vec<&str> = declared.iter().map(String::as_str).collect();
            names.sort_unstable();
            issues.push(
                at,
                format!(
                    "provider \"{name}\" is not configured; providers in the file: {}",
                    if names.is_empty() { "none".into() } else { names.join(", ") }
                ),
            );
        }
        false
    };

    let mut customers = Vec::new();
    let mut seen = HashSet::new();
    for (i, v) in raw.customers.into_iter().enumerate() {
        let at = format!("governance.customers[{i}]");
        let Some(c) = issues.decode::<Customer>(&at, v) else { continue };
        if c.id.trim().is_empty() || !seen.insert(c.id.clone()) {
            issues.push(format!("{at}.id"), format!("\"{}\" is empty or not unique among the customers", c.id));
        }
        check_limits(&at, c.budget.as_ref(), c.rate_limit.as_ref(), issues);
        customers.push(c);
    }
    let customer_ids: HashSet<String> = customers.iter().map(|c| c.id.clone()).collect();

    let mut teams = Vec::new();
    let mut seen = HashSet::new();
    for (i, v) in raw.teams.into_iter().enumerate() {
        let at = format!("governance.teams[{i}]");
        let Some(t) = issues.decode::<Team>(&at, v) else { continue };
        if t.id.trim().is_empty() || !seen.insert(t.id.clone()) {
            issues.push(format!("{at}.id"), format!("\"{}\" is empty or not unique among the teams", t.id));
        }
        if let Some(c) = &t.customer_id {
            if !customer_ids.contains(c) {
                issues.push(format!("{at}.customer_id"), format!("no customer has the id \"{c}\""));
            }
        }
        check_limits(&at, t.budget.as_ref(), t.rate_limit.as_ref(), issues);
        teams.push(t);
    }
    let team_ids: HashSet<String> = teams.iter().map(|t| t.id.clone()).collect();

    let mut keys = Vec::new();
    let key_entries = raw.virtual_keys.len();
    let (mut ids, mut names, mut values) = (HashSet::new(), HashSet::new(), HashMap::new());
    for (i, v) in raw.virtual_keys.into_iter().enumerate() {
        let at = format!("governance.virtual_keys[{i}]");
        let before = issues.len();
        let Some(mut k) = issues.decode::<VirtualKeySpec>(&at, v) else { continue };
        if k.id.trim().is_empty() || !ids.insert(k.id.clone()) {
            issues.push(format!("{at}.id"), "is empty or not unique among the virtual keys");
        }
        if k.name.trim().is_empty() {
            if k.value.is_some() {
                k.name = k.id.clone();
            } else {
                // The id is the key's value then: it must never be shown, so the key needs a name.
                issues.push(
                    format!("{at}.name"),
                    "required when the key has no value: its id is then its value (a secret), and keys are shown by name",
                );
            }
        }
        if !k.name.is_empty() && !names.insert(k.name.clone()) {
            issues.push(format!("{at}.name"), format!("\"{}\" is the name of another virtual key; names must be unique", k.name));
        }
        let value = match k.value.as_deref() {
            None => Some(k.id.clone()),
            Some(v) => match v.strip_prefix("env.") {
                Some(var) => match env.var(var) {
                    Some(s) => Some(s),
                    None => {
                        issues.push(
                            format!("{at}.value"),
                            format!("environment variable {var} is not set (or empty); export it or write the key literally"),
                        );
                        None
                    }
                },
                None if v.is_empty() => {
                    issues.push(format!("{at}.value"), "must not be empty (remove it to use the id as the value)");
                    None
                }
                // A key known only by its hash (what `switchyard export` writes): callers present the value
                // whose SHA-256 this is, and the file holds no secret.
                None if v.starts_with(SHA256_VALUE) => match v.strip_prefix(SHA256_VALUE).filter(|h| is_sha256_hex(h)) {
                    Some(hex) => Some(format!("{}{}", crate::governance::HASHED, hex.to_ascii_lowercase())),
                    None => {
                        issues.push(format!("{at}.value"), "sha256: must be followed by the value's SHA-256 as 64 hex digits");
                        None
                    }
                },
                None => Some(v.to_string()),
            },
        };
        if let Some(v) = &value {
            if let Some(other) = values.insert(crate::governance::key_hash(v), i) {
                issues.push(
                    format!("{at}.value"),
                    format!("is the same as governance.virtual_keys[{other}]'s; each key needs its own value"),
                );
            }
        }
        match (&k.team_id, &k.customer_id) {
            (Some(_), Some(_)) => {
                issues.push(&at, "belongs to a team or to a customer, not both (a team's customer is the key's customer)")
            }
            (Some(t), None) if !team_ids.contains(t) => issues.push(format!("{at}.team_id"), format!("no team has the id \"{t}\"")),
            (None, Some(c)) if !customer_ids.contains(c) => {
                issues.push(format!("{at}.customer_id"), format!("no customer has the id \"{c}\""))
            }
            _ => {}
        }
        if k.max_concurrent == Some(0) {
            issues.push(format!("{at}.max_concurrent"), "must be at least 1; remove it for no limit");
        }
        check_limits(&at, k.budget.as_ref(), k.rate_limit.as_ref(), issues);
        let mut granted = HashSet::new();
        for (j, g) in k.provider_configs.iter().enumerate() {
            let gat = format!("{at}.provider_configs[{j}]");
            if !granted.insert(g.provider.clone()) {
                issues.push(format!("{gat}.provider"), format!("provider {} is listed twice; merge the two", g.provider));
            }
            if !(g.weight.is_finite() && g.weight >= 0.0) {
                issues.push(format!("{gat}.weight"), format!("must be 0 (fallback only) or more, got {}", g.weight));
            }
            if provider_ok(&format!("{gat}.provider"), &g.provider, issues) {
                let p = by_name[g.provider.as_str()];
                for (m, model) in g.allowed_models.iter().enumerate() {
                    if !p.allows_model(model) {
                        issues.push(
                            format!("{gat}.allowed_models[{m}]"),
                            format!("providers.{}.models (an allow-list) does not list \"{model}\"", p.name),
                        );
                    }
                }
            }
            check_limits(&gat, g.budget.as_ref(), g.rate_limit.as_ref(), issues);
        }
        if issues.len() == before {
            if let Some(v) = value {
                keys.push((k, SecretString::from(v)));
            }
        }
    }
    // Values never linger beyond what was needed to check them.
    drop(values);

    let level = |section: &str, list: BTreeMap<String, Yaml>, issues: &mut Issues| -> BTreeMap<String, LevelLimits> {
        let mut out = BTreeMap::new();
        for (name, v) in list {
            let at = format!("governance.{section}.{name}");
            let target_ok = match section {
                "providers" => provider_ok(&at, &name, issues),
                _ => match name.split_once('/') {
                    Some((p, m)) if !m.is_empty() => provider_ok(&at, p, issues),
                    _ => {
                        issues.push(&at, "write the model as provider/model");
                        false
                    }
                },
            };
            if let Some(l) = issues.decode::<LevelLimits>(&at, v) {
                check_limits(&at, l.budget.as_ref(), l.rate_limit.as_ref(), issues);
                if target_ok {
                    out.insert(name, l);
                }
            }
        }
        out
    };
    let providers_limits = level("providers", raw.providers, issues);
    let models = level("models", raw.models, issues);
    let default_max_tokens = match raw.default_max_tokens {
        Some(0) => {
            issues.push("governance.default_max_tokens", "must be at least 1");
            DEFAULT_MAX_TOKENS
        }
        Some(n) => n,
        None => DEFAULT_MAX_TOKENS,
    };
    let keys_exist = key_entries > 0;
    let g = GovernanceConfig {
        require_virtual_key: raw.require_virtual_key,
        default_max_tokens,
        customers,
        teams,
        keys,
        providers: providers_limits,
        models,
        redis: raw.redis.and_then(|v| shared_counters(v, env, issues)),
    };
    if g.require_virtual_key == Some(true) && !keys_exist {
        issues.push("governance.require_virtual_key", "is true but no virtual key is configured, so every request would be refused");
    }
    g
}
