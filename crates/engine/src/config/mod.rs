//! Configuration: the YAML (or JSON) file, the environment-only default, and validation.
//!
//! The file is read into a generic YAML tree first and then each section is decoded on its own, so one run
//! of `switchyard check` reports every mistake in the file at once, each with its path
//! (`providers.openai.keys[1].weight: …`) and, where we can, the fix. What comes out is an immutable
//! [`Config`] with secrets resolved and cross-references checked: nothing is validated again per request.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

mod credentials;
mod decode;
pub mod governance;
pub mod logs;
pub mod metrics;
pub mod policy;
pub mod pricing;
pub mod traces;
use decode::Issues;
pub use governance::{GovernanceConfig, LevelLimits, SharedCountersConfig, WhenUnreachable};
pub use metrics::MetricsConfig;
pub use policy::{CooldownPolicy, Fallback, HealthPolicy, HedgeDelay, HedgePolicy, OverloadPolicy, RetryPolicy};
use policy::{RawCooldown, RawFallback, RawHealth, RawHedge, RawRetry};
pub use pricing::{PriceOverride, PricingConfig};
use switchyard_wire::codec::normalize_base_url;
use switchyard_wire::kind::{BaseUrl, Credential, Setting};
use switchyard_wire::{ProviderKind, ProviderOptions};
pub use traces::TracesConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// A validated configuration snapshot.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub server: ServerSettings,
    pub routing: RoutingSettings,
    pub images: ImageSettings,
    pub upstream: UpstreamSettings,
    pub providers: Vec<ProviderConfig>,
    pub routes: Vec<RouteConfig>,
    pub governance: GovernanceConfig,
    /// Price overrides on top of the built-in table (`crate::pricing`).
    pub pricing: PricingConfig,
    /// OpenTelemetry export (`traces:`); `None`: off.
    pub traces: Option<TracesConfig>,
    /// What `/metrics` may label, and its histograms' buckets (`crate::telemetry::metrics`).
    pub metrics: MetricsConfig,
    /// The request log (`logs:`).
    pub logs: logs::LogSettings,
}

/// How the gateway treats its own clients' connections and requests (the `server:` section). Every limit
/// here exists so that no client, however slow or hostile, can pin the gateway; the defaults are meant to
/// be safe for a user who never sets them (docs/configuration.md explains each choice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Largest request body accepted; larger bodies get a 413.
    pub max_body_bytes: usize,
    /// A connection must deliver a request's complete headers within this long: from its accept for the
    /// first request, from the request's first byte for later ones. Otherwise it is closed.
    pub header_read_timeout: Duration,
    /// The whole request body must arrive within this long of the handler starting to read it; otherwise
    /// the answer is 408 `request_timeout`.
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// A response write that the client has not taken any of for this long closes the connection.
    pub write_timeout: Duration,
    /// Open client connections at most; above it new ones are answered 503 and closed. `None`: 10 000,
    /// lowered at start so that the open-file limit leaves room for an upstream connection per client.
    pub max_connections: Option<usize>,
    /// Extra `Host` values accepted (lowercase; `name`, `name:port`, `*.suffix`, or `*` for any). When
    /// the gateway listens on a loopback address only loopback names are accepted without this; on other
    /// addresses any `Host` is, unless this is set.
    pub allowed_hosts: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_body_bytes: 32 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            max_connections: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// Beyond this a cap is no cap: no process holds ten million sockets.
const MAX_CONNECTIONS_CEILING: usize = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingSettings {
    /// How long one request may spend on retries, fallbacks and waits before it must have an answer
    /// (a stream: its first chunk). A route's `deadline` overrides it.
    pub deadline: Duration,
    /// A stream whose first chunk has not arrived after this long gets its 200 headers and SSE comment
    /// keep-alives at this interval, so proxies do not cut it.
    pub stream_keepalive: Duration,
    /// Longest a request waits for a rate-limited key to reset when every target failed for that reason
    /// alone; a longer reset is answered at once with 429 and `Retry-After`.
    pub max_key_wait: Duration,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            deadline: Duration::from_secs(600),
            stream_keepalive: Duration::from_secs(10),
            max_key_wait: Duration::from_secs(3),
        }
    }
}

/// How much of the upstreams' answers the gateway holds in memory. Without these bounds one broken or
/// hostile upstream (a line that never ends, a body that never stops) can take all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// Largest non-streaming answer buffered for one attempt; past it the attempt fails
    /// (`too_large`) and the next target is tried.
    pub max_response_bytes: usize,
    /// Every buffered non-streaming answer of the gateway together; when it is used up, an attempt that
    /// needs more fails at once as `overloaded` rather than waiting.
    pub max_buffered_total_bytes: usize,
    /// Longest SSE line, SSE event (its joined `data:`) or NDJSON line of an upstream stream.
    pub max_stream_event_bytes: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            // The largest legitimate answers are embeddings: 2048 inputs of 3072 dimensions come to 32 MiB
            // as base64, more as JSON floats. Chat answers are far smaller.
            max_response_bytes: 64 << 20,
            max_buffered_total_bytes: 512 << 20,
            max_stream_event_bytes: switchyard_wire::sse::DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// Below this, `upstream.*` sizes would refuse ordinary answers.
const MIN_UPSTREAM_SIZE: usize = 64 << 10;

/// Image URLs the gateway fetches for providers that only take bytes (see `crate::images`).
#[derive(Debug, Clone)]
pub struct ImageSettings {
    /// One image, redirects included.
    pub fetch_timeout: Duration,
    /// Largest single image.
    pub max_bytes: usize,
    /// Image URLs fetched for one request; more is a 400.
    pub max_images: usize,
    /// One request's images together (decoded), inline `data:` images included; more is a 413.
    pub max_request_bytes: usize,
    /// Fetched image bytes the whole gateway holds at once; a request that does not fit gets a 503.
    pub max_total_bytes: usize,
    /// Images of one request fetched at the same time.
    pub max_concurrent_fetches: usize,
    /// The only proxy image fetches use (the environment's `HTTP_PROXY` and friends never are). A secret,
    /// since a proxy URL may carry credentials.
    pub proxy: Option<SecretString>,
    /// Networks that image fetches may reach although they are private, loopback or link-local.
    pub allow_private: Vec<ipnet::IpNet>,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            fetch_timeout: Duration::from_secs(10),
            max_bytes: 20 << 20,
            max_images: 20,
            max_request_bytes: 32 << 20,
            max_total_bytes: 256 << 20,
            max_concurrent_fetches: 4,
            proxy: None,
            allow_private: vec![],
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Normalised API base (see `switchyard_wire::codec::normalize_base_url`).
    pub base_url: String,
    pub keys: Vec<KeyConfig>,
    pub timeouts: Timeouts,
    pub tags: Vec<String>,
    /// The only models this provider serves (`providers.NAME.models`, an allow-list); empty: any model.
    /// See [`ProviderConfig::declared_models`] for every name the file ties to the provider.
    pub models: Vec<String>,
    pub options: ProviderOptions,
    pub retry: RetryPolicy,
    pub health: HealthPolicy,
    pub cooldown: CooldownPolicy,
    pub overload: OverloadPolicy,
    /// Bedrock without an API key: the AWS credentials its requests are signed with.
    pub aws: Option<std::sync::Arc<switchyard_wire::AwsCredentials>>,
    /// Vertex: the Google credential exchanged for access tokens.
    pub google: Option<std::sync::Arc<switchyard_wire::google_auth::GoogleCredential>>,
}

#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub name: String,
    pub secret: SecretString,
    pub weight: f64,
    /// Empty: any model.
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Streams: until the response headers and the first chunk have arrived.
    pub first_byte: Duration,
    /// Streams: longest silence between two chunks.
    pub stream_idle: Duration,
    /// One attempt from start to the last byte.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            stream_idle: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RouteConfig {
    /// Model strings this route applies to, as callers write them (`openai/gpt-4o-mini` or a bare name).
    pub models: Vec<String>,
    /// A named chain: when not empty, a request for one of `models` is served by these targets in order
    /// (then by `fallbacks`), and the name itself is never sent to a provider.
    pub targets: Vec<Fallback>,
    /// Targets tried in order after the primary. For a bare name that no provider serves, they serve it
    /// (the route then acts as a named chain).
    pub fallbacks: Vec<Fallback>,
    /// Targets tried when a target says the prompt is longer than its context (a bigger model).
    pub context_fallbacks: Vec<Fallback>,
    /// Also fall back after a caller fault (400/404/413/422), which by default is returned at once.
    pub fallback_on_caller_fault: bool,
    pub hedge: Option<HedgePolicy>,
    /// Overrides `routing.deadline`.
    pub deadline: Option<Duration>,
    /// Overrides the providers' retry policy for this route.
    pub retry: Option<RetryPolicy>,
    /// Skip degraded targets even when none healthier is left, and answer 503 at once instead: for callers
    /// that prefer a fast refusal to a likely failure. Off by default, so a request always tries something.
    pub fail_fast: bool,
}

impl RouteConfig {
    pub fn new(models: &[&str], fallbacks: &[&str]) -> Self {
        RouteConfig {
            models: models.iter().map(|m| m.to_string()).collect(),
            fallbacks: fallbacks.iter().map(|f| Fallback::plain(*f)).collect(),
            ..RouteConfig::default()
        }
    }
}

/// Every problem found in a configuration, each with its path.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub issues: Vec<ConfigIssue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "configuration".into());
        let n = self.issues.len();
        writeln!(f, "{origin}: {n} error{}", if n == 1 { "" } else { "s" })?;
        for i in &self.issues {
            if i.path.is_empty() {
                writeln!(f, "  - {}", i.message)?;
            } else {
                writeln!(f, "  - {}: {}", i.path, i.message)?;
            }
        }
        Ok(())
    }
}

/// Where secrets and environment-dependent defaults come from; a trait so tests need not touch the process
/// environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Raw shapes (what the file may say)
// ---------------------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default)]
    max_body_size: Option<ByteSize>,
    #[serde(default)]
    header_read_timeout: Option<DurationStr>,
    #[serde(default)]
    body_read_timeout: Option<DurationStr>,
    #[serde(default)]
    idle_timeout: Option<DurationStr>,
    #[serde(default)]
    write_timeout: Option<DurationStr>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawImages {
    #[serde(default)]
    fetch_timeout: Option<DurationStr>,
    #[serde(default)]
    max_size: Option<ByteSize>,
    #[serde(default)]
    allow_private_networks: Vec<String>,
    #[serde(default)]
    max_images: Option<usize>,
    #[serde(default)]
    max_request_size: Option<ByteSize>,
    #[serde(default)]
    max_total_size: Option<ByteSize>,
    #[serde(default)]
    max_concurrent_fetches: Option<usize>,
    #[serde(default)]
    proxy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default)]
    max_response_size: Option<ByteSize>,
    #[serde(default)]
    max_buffered_total: Option<ByteSize>,
    #[serde(default)]
    max_stream_event_size: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
    /// Decoded one by one, so that each key's mistakes are reported at its own index.
    #[serde(default)]
    keys: Vec<Yaml>,
    #[serde(default)]
    timeout: Option<DurationStr>,
    #[serde(default)]
    connect_timeout: Option<DurationStr>,
    #[serde(default)]
    first_byte_timeout: Option<DurationStr>,
    #[serde(default)]
    stream_idle_timeout: Option<DurationStr>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    deployments: BTreeMap<String, String>,
    #[serde(default)]
    default_max_tokens: Option<u32>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    aws: Option<credentials::RawAws>,
    /// Vertex: a Google credentials JSON (service account key or application-default credentials).
    #[serde(default)]
    credentials_file: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    retry: Option<RawRetry>,
    #[serde(default)]
    health: Option<RawHealth>,
    /// Replaced by `health`; kept only to say so.
    #[serde(default)]
    circuit_breaker: Option<Yaml>,
    #[serde(default)]
    key_cooldown: Option<RawCooldown>,
    #[serde(default)]
    max_in_flight: Option<usize>,
    #[serde(default)]
    max_queue: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    #[serde(default)]
    deadline: Option<DurationStr>,
    #[serde(default)]
    stream_keepalive: Option<DurationStr>,
    #[serde(default)]
    max_key_wait: Option<DurationStr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    name: Option<String>,
    /// The key itself, or `env.NAME`.
    #[serde(default)]
    value: Option<String>,
    /// `env: NAME`, the same as `value: env.NAME` (a shape published field reports use).
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    models: Vec<String>,
    /// Bedrock keys in published field reports carry their region; it must agree with the provider's.
    #[serde(default)]
    region: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    models: Vec<String>,
    /// Targets (each decoded on its own, so that every bad one is reported at its index).
    #[serde(default)]
    targets: Vec<Yaml>,
    #[serde(default)]
    fallbacks: Vec<Yaml>,
    #[serde(default)]
    context_fallbacks: Vec<Yaml>,
    #[serde(default)]
    fallback_on_caller_fault: Option<bool>,
    #[serde(default)]
    hedge: Option<RawHedge>,
    #[serde(default)]
    deadline: Option<DurationStr>,
    #[serde(default)]
    retry: Option<RawRetry>,
    #[serde(default)]
    fail_fast: Option<bool>,
}

/// `30s`, `5m`, `1h`, `1d`, `250ms`, or a bare number of seconds.
#[derive(Debug, Clone, Copy)]
struct DurationStr(Duration);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Yaml::deserialize(d)?;
        let parsed = match &v {
            Yaml::Number(n) => n.as_f64().filter(|f| *f >= 0.0 && f.is_finite()).map(Duration::from_secs_f64),
            Yaml::String(s) => parse_duration(s),
            _ => None,
        };
        parsed
            .map(DurationStr)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a duration such as 30s, 5m, 1h or 250ms, got {}", yaml_brief(&v))))
    }
}

/// A size: a number of bytes or `512KiB`, `20MiB`, `1GiB` (also KB/MB/GB as powers of 1000).
#[derive(Debug, Clone, Copy)]
struct ByteSize(usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Yaml::deserialize(d)?;
        let parsed = match &v {
            Yaml::Number(n) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
            Yaml::String(s) => parse_size(s),
            _ => None,
        };
        parsed
            .map(ByteSize)
            .ok_or_else(|| serde::de::Error::custom(format!("expected a size such as 20MiB or 1048576, got {}", yaml_brief(&v))))
    }
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok().filter(|f: &f64| f.is_finite() && *f >= 0.0)?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn yaml_brief(v: &Yaml) -> String {
    match v {
        Yaml::Null => "null".into(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::String(s) => format!("\"{s}\""),
        Yaml::Sequence(_) => "a list".into(),
        Yaml::Mapping(_) => "a mapping".into(),
        Yaml::Tagged(_) => "a tagged value".into(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------------------

/// Reads and validates a configuration file.
pub fn load_file(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        issues: vec![ConfigIssue { path: String::new(), message: format!("cannot read the file: {e}") }],
    })?;
    parse_str(&text, env).map_err(|mut e| {
        e.file = Some(path.to_path_buf());
        e
    })
}

/// Parses and validates configuration text (YAML; JSON is YAML too).
pub fn parse_str(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    let root: Yaml = serde_yaml_ng::from_str(text).map_err(|e| ConfigError {
        file: None,
        issues: vec![ConfigIssue { path: String::new(), message: format!("not valid YAML: {e}") }],
    })?;
    let mut issues = Issues(Vec::new());
    let cfg = build(root, env, &mut issues);
    if issues.0.is_empty() {
        cfg.ok_or_else(|| ConfigError { file: None, issues: vec![] })
    } else {
        Err(ConfigError { file: None, issues: issues.0 })
    }
}

fn build(root: Yaml, env: &dyn Env, issues: &mut Issues) -> Option<Config> {
    let map = match root {
        Yaml::Mapping(m) => m,
        Yaml::Null => Default::default(),
        other => {
            issues.push("", format!("the file must be a mapping with listen/providers/routes, got {}", yaml_brief(&other)));
            return None;
        }
    };
    let mut listen = None;
    let mut server = RawServer::default();
    let mut routing = RawRouting::default();
    let mut images = RawImages::default();
    let mut upstream = RawUpstream::default();
    let mut providers = Vec::new();
    // Every name under `providers:`, also those whose settings are wrong: a route naming one of them is
    // not a second mistake.
    let mut declared = HashSet::new();
    let mut pending = Vec::new();
    let mut raw_governance = None;
    // Checked against the providers once they are all known (the section may come first).
    let mut prices = Vec::new();
    let mut raw_traces = None;
    let mut raw_metrics = metrics::RawMetrics::default();
    let mut raw_logs = logs::RawLogs::default();
    for (k, v) in map {
        let Some(key) = k.as_str().map(str::to_string) else {
            issues.push("", format!("top-level keys must be strings, got {}", yaml_brief(&k)));
            continue;
        };
        match key.as_str() {
            "listen" => listen = issues.decode::<String>("listen", v),
            "server" => server = issues.decode("server", v).unwrap_or_default(),
            "routing" => routing = issues.decode("routing", v).unwrap_or_default(),
            "images" => images = issues.decode("images", v).unwrap_or_default(),
            "upstream" => upstream = issues.decode("upstream", v).unwrap_or_default(),
            "providers" => match v {
                Yaml::Mapping(m) => {
                    for (name, pv) in m {
                        let Some(name) = name.as_str().map(str::to_string) else {
                            issues.push("providers", format!("provider names must be strings, got {}", yaml_brief(&name)));
                            continue;
                        };
                        declared.insert(name.clone());
                        let path = format!("providers.{name}");
                        let before = issues.len();
                        if let Some(raw) = issues.decode::<RawProvider>(&path, pv) {
                            if let Some(p) = provider(&name, raw, env, issues, before) {
                                providers.push(p);
                            }
                        }
                    }
                }
                Yaml::Null => {}
                other => issues.push("providers", format!("expected a mapping of provider name to settings, got {}", yaml_brief(&other))),
            },
            "routes" => match v {
                Yaml::Sequence(s) => {
                    for (i, rv) in s.into_iter().enumerate() {
                        let path = format!("routes[{i}]");
                        if let Some(r) = issues.decode::<RawRoute>(&path, rv) {
                            pending.push(PendingRoute::from_raw(path, r, issues));
                        }
                    }
                }
                Yaml::Null => {}
                other => issues.push("routes", format!("expected a list of routes, got {}", yaml_brief(&other))),
            },
            "fallbacks" => top_level_fallbacks(v, &mut pending, issues),
            "governance" => raw_governance = issues.decode::<governance::RawGovernance>("governance", v),
            "pricing" => prices = pricing::decode(v, issues),
            "traces" => raw_traces = traces::decode(v, issues),
            "metrics" => raw_metrics = issues.decode("metrics", v).unwrap_or_default(),
            "logs" => raw_logs = issues.decode("logs", v).unwrap_or_default(),
            other => {
                let msg = match decode::top_level_hint(other) {
                    Some(hint) => format!("unknown top-level key; {hint}"),
                    None => {
                        const KEYS: [&str; 13] = [
                            "listen",
                            "server",
                            "routing",
                            "images",
                            "upstream",
                            "providers",
                            "routes",
                            "fallbacks",
                            "governance",
                            "pricing",
                            "traces",
                            "metrics",
                            "logs",
                        ];
                        match decode::closest(other, KEYS) {
                            Some(k) => format!("unknown top-level key; did you mean `{k}`?"),
                            None => format!("unknown top-level key; expected {}", KEYS.join(", ")),
                        }
                    }
                };
                issues.push(other, msg)
            }
        }
    }

    let listen = match listen.as_deref().unwrap_or(DEFAULT_LISTEN).parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            issues.push("listen", "expected an address such as 127.0.0.1:8080 or 0.0.0.0:8080");
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };
    let images = image_settings(images, env, issues);
    let known = Known { configured: providers.iter().map(|p| (p.name.as_str(), p)).collect(), declared: &declared };
    let routes = routes(pending, &known, issues);
    let governance = governance::governance(raw_governance.unwrap_or_default(), &providers, &declared, env, issues);
    let pricing = pricing::resolve(prices, &declared, issues);
    let traces = traces::resolve(raw_traces, env, issues);

    let rd = RoutingSettings::default();
    let cfg = Config {
        listen,
        server: server_settings(server, issues),
        routing: RoutingSettings {
            deadline: routing.deadline.map(|d| d.0).unwrap_or(rd.deadline),
            stream_keepalive: routing.stream_keepalive.map(|d| d.0).unwrap_or(rd.stream_keepalive),
            max_key_wait: routing.max_key_wait.map(|d| d.0).unwrap_or(rd.max_key_wait),
        },
        images,
        upstream: upstream_settings(upstream, issues),
        providers,
        routes,
        governance,
        pricing,
        traces,
        metrics: metrics::metrics(raw_metrics, issues),
        logs: logs::settings(raw_logs, issues),
    };
    // Only a configuration whose parts are sound can be proved about.
    if issues.len() == 0 {
        for (path, message) in crate::governance::residency::violations(&cfg) {
            issues.push(path, message);
        }
    }
    Some(cfg)
}

/// The top-level `fallbacks:` of published field reports, in either of their shapes: a list of
/// `{from, to}` (a route with fallbacks), or a mapping of chain name to targets (a named chain).
fn top_level_fallbacks(v: Yaml, pending: &mut Vec<PendingRoute>, issues: &mut Issues) {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawFromTo {
        from: String,
        to: Yaml,
    }
    match v {
        Yaml::Sequence(list) => {
            for (i, e) in list.into_iter().enumerate() {
                let path = format!("fallbacks[{i}]");
                if e.is_string() {
                    issues.push(
                        &path,
                        "a top-level fallbacks list holds {from: provider/model, to: provider/model} entries; the fallbacks of one model are written routes: [{models: [provider/model], fallbacks: [...]}]",
                    );
                    continue;
                }
                let Some(ft) = issues.decode::<RawFromTo>(&path, e) else { continue };
                let to = match ft.to {
                    Yaml::Sequence(s) => decode_targets(&format!("{path}.to"), s, issues),
                    one => {
                        let at = format!("{path}.to");
                        issues.decode::<RawFallback>(&at, one).map(|f| TargetAt { at, target: f.0 }).into_iter().collect()
                    }
                };
                // Several entries from one model make one chain, in the file's order.
                if let Some(r) =
                    pending.iter_mut().find(|r| r.path.starts_with("fallbacks[") && r.models.iter().any(|(_, m)| *m == ft.from))
                {
                    r.fallbacks.extend(to);
                } else {
                    pending.push(PendingRoute {
                        models: vec![(format!("{path}.from"), ft.from)],
                        fallbacks: to,
                        ..PendingRoute::new(path)
                    });
                }
            }
        }
        Yaml::Mapping(chains) => {
            for (name, list) in chains {
                let Some(name) = name.as_str().map(str::to_string) else {
                    issues.push("fallbacks", format!("chain names must be strings, got {}", yaml_brief(&name)));
                    continue;
                };
                let path = format!("fallbacks.{name}");
                let Yaml::Sequence(list) = list else {
                    issues.push(&path, format!("expected the chain's targets in order, such as [{{provider: ollama, model: \"qwen2.5-vl:7b\"}}, anthropic/claude-sonnet-4-6], got {}", yaml_brief(&list)));
                    continue;
                };
                if list.is_empty() {
                    issues.push(&path, "a chain needs at least one target");
                    continue;
                }
                let targets = decode_targets(&path, list, issues);
                pending.push(PendingRoute { models: vec![(path.clone(), name)], targets, ..PendingRoute::new(path) });
            }
        }
        Yaml::Null => {}
        other => issues.push(
            "fallbacks",
            format!("expected a list of {{from, to}} or a mapping of chain name to targets, got {}", yaml_brief(&other)),
        ),
    }
}

/// The `upstream:` section: each size at least [`MIN_UPSTREAM_SIZE`], and room in the gateway-wide budget
/// for at least one answer of the largest size.
fn upstream_settings(raw: RawUpstream, issues: &mut Issues) -> UpstreamSettings {
    let d = UpstreamSettings::default();
    let s = UpstreamSettings {
        max_response_bytes: raw.max_response_size.map_or(d.max_response_bytes, |b| b.0),
        max_buffered_total_bytes: raw.max_buffered_total.map_or(d.max_buffered_total_bytes, |b| b.0),
        max_stream_event_bytes: raw.max_stream_event_size.map_or(d.max_stream_event_bytes, |b| b.0),
    };
    for (field, v) in [
        ("max_response_size", s.max_response_bytes),
        ("max_buffered_total", s.max_buffered_total_bytes),
        ("max_stream_event_size", s.max_stream_event_bytes),
    ] {
        if v < MIN_UPSTREAM_SIZE {
            issues.push(format!("upstream.{field}"), format!("must be at least 64KiB (got {v} bytes); ordinary answers are larger"));
        }
    }
    if s.max_buffered_total_bytes < s.max_response_bytes {
        issues.push(
            "upstream.max_buffered_total",
            format!(
                "must be at least upstream.max_response_size ({} bytes), or no answer of that size could ever be read; raise it or lower max_response_size",
                s.max_response_bytes
            ),
        );
    }
    s
}

/// Decodes `server:`; every mistake is reported at its path and the default stands in for it.
fn server_settings(raw: RawServer, issues: &mut Issues) -> ServerSettings {
    let d = ServerSettings::default();
    let mut timeout = |field: &str, v: Option<DurationStr>, default: Duration| match v {
        Some(t) if t.0.is_zero() => {
            issues.push(format!("server.{field}"), "must be greater than zero (there is no \"off\"; write a long duration instead)");
            default
        }
        Some(t) => t.0,
        None => default,
    };
    let header_read_timeout = timeout("header_read_timeout", raw.header_read_timeout, d.header_read_timeout);
    let body_read_timeout = timeout("body_read_timeout", raw.body_read_timeout, d.body_read_timeout);
    let idle_timeout = timeout("idle_timeout", raw.idle_timeout, d.idle_timeout);
    let write_timeout = timeout("write_timeout", raw.write_timeout, d.write_timeout);
    let max_connections = match raw.max_connections {
        Some(0) => {
            issues.push("server.max_connections", "must be at least 1; remove it for the default (10000, fitted to the open-file limit)");
            None
        }
        Some(n) if n > MAX_CONNECTIONS_CEILING => {
            issues.push("server.max_connections", format!("must be at most {MAX_CONNECTIONS_CEILING}, got {n}"));
            None
        }
        other => other,
    };
    let max_body_bytes = match raw.max_body_size {
        Some(b) if b.0 == 0 => {
            issues.push("server.max_body_size", "must be greater than zero");
            d.max_body_bytes
        }
        Some(b) => b.0,
        None => d.max_body_bytes,
    };
    let mut allowed_hosts = Vec::new();
    for (i, h) in raw.allowed_hosts.iter().enumerate() {
        match host_pattern(h) {
            Ok(p) => allowed_hosts.push(p),
            Err(why) => issues.push(format!("server.allowed_hosts[{i}]"), why),
        }
    }
    ServerSettings { max_body_bytes, header_read_timeout, body_read_timeout, idle_timeout, write_timeout, max_connections, allowed_hosts }
}

/// Checks one `server.allowed_hosts` entry and returns it lowercased: `*`, `name`, `name:port`, `*.suffix`
/// (any subdomain, not the bare suffix), an IPv4 address or a bracketed IPv6 one, each with an optional port.
fn host_pattern(raw: &str) -> Result<String, String> {
    let h = raw.trim().to_ascii_lowercase();
    let fix =
        "write a host as it appears in the Host header: gateway.example.com, gateway.example.com:8443, *.example.com, [::1]:8080 or *";
    if h == "*" {
        return Ok(h);
    }
    if h.is_empty() || h.contains("://") || h.contains('/') || h.contains(char::is_whitespace) {
        return Err(format!("\"{raw}\" is not a host; {fix}"));
    }
    let (host, port) = match h.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, tail)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => match tail {
                "" => (&h[..v6.len() + 2], None),
                t => (&h[..v6.len() + 2], Some(t.strip_prefix(':').unwrap_or(t))),
            },
            _ => return Err(format!("\"{raw}\" is not a bracketed IPv6 address; {fix}")),
        },
        None => match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h.as_str(), None),
        },
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("\"{raw}\": the port must be a number from 1 to 65535; {fix}"));
        }
    }
    if !host.starts_with('[') {
        let name = host.strip_prefix("*.").unwrap_or(host);
        let label_ok = |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if name.contains('*') || !name.trim_end_matches('.').split('.').all(label_ok) {
            return Err(format!("\"{raw}\" is not a host name; {fix}"));
        }
    }
    Ok(h)
}

/// Decodes `images:`; every mistake is reported at its path and the default stands in for it.
fn image_settings(raw: RawImages, env: &dyn Env, issues: &mut Issues) -> ImageSettings {
    let d = ImageSettings::default();
    let fetch_timeout = match raw.fetch_timeout {
        Some(t) if t.0.is_zero() => {
            issues.push("images.fetch_timeout", "must be greater than zero");
            d.fetch_timeout
        }
        Some(t) => t.0,
        None => d.fetch_timeout,
    };
    let mut size = |field: &str, v: Option<ByteSize>, default: usize| match v {
        Some(b) if b.0 == 0 => {
            issues.push(format!("images.{field}"), "must be greater than zero");
            default
        }
        Some(b) => b.0,
        None => default,
    };
    let max_bytes = size("max_size", raw.max_size, d.max_bytes);
    let max_request_bytes = size("max_request_size", raw.max_request_size, d.max_request_bytes);
    let max_total_bytes = size("max_total_size", raw.max_total_size, d.max_total_bytes);
    let mut count = |field: &str, v: Option<usize>, default: usize| match v {
        Some(0) => {
            issues.push(format!("images.{field}"), format!("must be at least 1; remove it for the default ({default})"));
            default
        }
        Some(n) => n,
        None => default,
    };
    let max_images = count("max_images", raw.max_images, d.max_images);
    let max_concurrent_fetches = count("max_concurrent_fetches", raw.max_concurrent_fetches, d.max_concurrent_fetches);
    if max_total_bytes < max_request_bytes {
        issues.push(
            "images.max_total_size",
            format!(
                "is smaller than images.max_request_size ({max_request_bytes} bytes), so a request within its own limit could never be served; raise max_total_size or lower max_request_size"
            ),
        );
    }
    let proxy = raw.proxy.and_then(|p| {
        let url = match p.strip_prefix("env.") {
            Some(var) => match env.var(var) {
                Some(v) => v,
                None => {
                    issues.push(
                        "images.proxy",
                        format!("environment variable {var} is not set (or empty); export it or remove images.proxy"),
                    );
                    return None;
                }
            },
            None => p,
        };
        // The URL may hold the proxy's password: it is never repeated in the message.
        let usable = (url.starts_with("http://") || url.starts_with("https://")) && reqwest::Proxy::all(url.as_str()).is_ok();
        if !usable {
            issues.push("images.proxy", "expected a proxy URL such as http://proxy.internal:3128 (http:// or https://)");
            return None;
        }
        Some(SecretString::from(url))
    });
    let mut allow_private = Vec::new();
    for (i, n) in raw.allow_private_networks.iter().enumerate() {
        match parse_net(n) {
            Some(net) => allow_private.push(net),
            None => issues.push(
                format!("images.allow_private_networks[{i}]"),
                format!("\"{n}\" is not an IP address or CIDR network such as 127.0.0.1/32"),
            ),
        }
    }
    ImageSettings { fetch_timeout, max_bytes, max_images, max_request_bytes, max_total_bytes, max_concurrent_fetches, proxy, allow_private }
}

/// A target with the path it was written at.
struct TargetAt {
    at: String,
    target: Fallback,
}

fn decode_targets(base: &str, list: Vec<Yaml>, issues: &mut Issues) -> Vec<TargetAt> {
    list.into_iter()
        .enumerate()
        .filter_map(|(j, v)| {
            let at = format!("{base}[{j}]");
            issues.decode::<RawFallback>(&at, v).map(|f| TargetAt { at, target: f.0 })
        })
        .collect()
}

/// A route as written (in `routes:` or the top-level `fallbacks:`), before it is checked against the
/// providers.
struct PendingRoute {
    /// `routes[2]`, `fallbacks[0]` or `fallbacks.NAME`.
    path: String,
    models: Vec<(String, String)>,
    targets: Vec<TargetAt>,
    fallbacks: Vec<TargetAt>,
    context_fallbacks: Vec<TargetAt>,
    settings: RouteConfig,
}

impl PendingRoute {
    fn new(path: String) -> Self {
        PendingRoute {
            path,
            models: vec![],
            targets: vec![],
            fallbacks: vec![],
            context_fallbacks: vec![],
            settings: RouteConfig::default(),
        }
    }

    fn from_raw(path: String, r: RawRoute, issues: &mut Issues) -> Self {
        if r.models.is_empty() {
            issues.push(format!("{path}.models"), "list at least one model the route applies to");
        }
        let models = r.models.into_iter().enumerate().map(|(j, m)| (format!("{path}.models[{j}]"), m)).collect();
        let hedge = match r.hedge.map(RawHedge::resolve) {
            Some(Ok(h)) => Some(h),
            Some(Err((field, msg))) => {
                issues.push(format!("{path}.hedge.{field}"), msg);
                None
            }
            None => None,
        };
        PendingRoute {
            models,
            targets: decode_targets(&format!("{path}.targets"), r.targets, issues),
            fallbacks: decode_targets(&format!("{path}.fallbacks"), r.fallbacks, issues),
            context_fallbacks: decode_targets(&format!("{path}.context_fallbacks"), r.context_fallbacks, issues),
            settings: RouteConfig {
                fallback_on_caller_fault: r.fallback_on_caller_fault.unwrap_or(false),
                hedge,
                deadline: r.deadline.map(|d| d.0),
                retry: r.retry.map(|x| x.resolve(RetryPolicy::default())),
                fail_fast: r.fail_fast.unwrap_or(false),
                ..RouteConfig::default()
            },
            path,
        }
    }
}

/// The providers as the routes see them.
struct Known<'a> {
    configured: std::collections::HashMap<&'a str, &'a ProviderConfig>,
    declared: &'a HashSet<String>,
}

impl Known<'_> {
    /// Checks a `provider/model` target: the provider exists and its allow-list (if any) has the model. A
    /// provider that is in the file but has mistakes of its own is not reported again here.
    fn check_target(&self, at: &str, t: &str, issues: &mut Issues) {
        match t.split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => match self.configured.get(p) {
                Some(pc) => {
                    if !pc.allows_model(m) {
                        issues.push(at, not_allowed(pc, m));
                    }
                }
                None if self.declared.contains(p) => {}
                None => {
                    issues.push(
                        at,
                        format!("\"{t}\" names provider \"{p}\", which is not configured; providers in the file: {}", self.names()),
                    );
                }
            },
            _ => issues.push(at, format!("\"{t}\" must be written provider/model")),
        }
    }

    /// Whether a bare model name can reach a provider without a route's help: one provider lists it, or
    /// the only provider takes any name. With several providers that list nothing, a name is known only
    /// from their model lists at run time, which a file check cannot rely on.
    fn may_serve_bare(&self, model: &str) -> bool {
        if self.declared.len() > self.configured.len() {
            // A provider with mistakes of its own might be the one; it is reported already.
            return true;
        }
        let serving: Vec<&&ProviderConfig> = self.configured.values().filter(|p| p.allows_model(model)).collect();
        serving.iter().any(|p| p.declared_models().any(|d| d == model)) || (self.configured.len() == 1 && serving.len() == 1)
    }

    fn names(&self) -> String {
        let mut v: Vec<&str> = self.declared.iter().map(String::as_str).collect();
        v.sort_unstable();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

/// Why `provider/model` is refused by the provider's `models` allow-list, and how to allow it.
fn not_allowed(p: &ProviderConfig, model: &str) -> String {
    format!(
        "providers.{}.models does not list \"{model}\"; that list is an allow-list (only {} are served), so add the model there or remove the list to allow any",
        p.name,
        p.models.join(", ")
    )
}

/// Checks every route against the providers and against each other.
fn routes(pending: Vec<PendingRoute>, known: &Known, issues: &mut Issues) -> Vec<RouteConfig> {
    let mut owner: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for r in pending {
        for (at, m) in &r.models {
            if m.trim().is_empty() {
                issues.push(at, "must not be empty");
                continue;
            }
            if let Some(first) = owner.get(m) {
                issues.push(
                    at,
                    format!(
                        "\"{m}\" is also routed by {first}; a request uses only the first route that names its model, so merge the two"
                    ),
                );
                continue;
            }
            owner.insert(m.clone(), r.path.clone());
            // A route for provider/model is checked like a target; a bare name is a name callers use.
            let prefixed = m.split_once('/').and_then(|(p, rest)| known.configured.get(p).map(|pc| (pc, rest)));
            if let Some((pc, rest)) = prefixed {
                if !rest.is_empty() && !pc.allows_model(rest) && r.targets.is_empty() {
                    issues.push(at, not_allowed(pc, rest));
                }
            } else if r.targets.is_empty() && r.fallbacks.is_empty() && !known.may_serve_bare(m) {
                // Accepted, it would answer every request with a 404: say so now.
                issues.push(
                    at,
                    format!(
                        "no provider serves \"{m}\", and the route has no targets to serve it; write it as provider/model, list it under providers.NAME.models, or give the route `targets:` (a named chain)"
                    ),
                );
            }
        }
        for t in r.targets.iter().chain(&r.fallbacks).chain(&r.context_fallbacks) {
            known.check_target(&t.at, &t.target.target, issues);
        }
        out.push(RouteConfig {
            models: r.models.into_iter().map(|(_, m)| m).collect(),
            targets: r.targets.into_iter().map(|t| t.target).collect(),
            fallbacks: r.fallbacks.into_iter().map(|t| t.target).collect(),
            context_fallbacks: r.context_fallbacks.into_iter().map(|t| t.target).collect(),
            ..r.settings
        });
    }
    out
}

fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>().ok().or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// What is wrong with a `base_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BaseUrlProblem {
    NotHttp,
    Unparsable,
    /// `https://user:pass@host`: the password would be logged and sent on every request.
    Credentials,
    /// `?key=…` or `#…`: the codecs append paths, so a query ends up inside the path (and in logs).
    QueryOrFragment,
}

impl BaseUrlProblem {
    fn what(self) -> &'static str {
        match self {
            BaseUrlProblem::NotHttp => "no http:// or https:// scheme",
            BaseUrlProblem::Unparsable => "something that is not a URL",
            BaseUrlProblem::Credentials => "a user name or password",
            BaseUrlProblem::QueryOrFragment => "a query string or fragment",
        }
    }

    /// The message for `providers.NAME.base_url`. It never repeats the URL: it may hold a secret.
    fn message(self, path: &str, kind: ProviderKind) -> String {
        let keys = kind.key_env_var().map_or_else(
            || format!("{path}.keys (value: env.NAME keeps it out of the file)"),
            |v| format!("{path}.keys (for example value: env.{v})"),
        );
        match self {
            BaseUrlProblem::NotHttp => "must start with http:// or https://".into(),
            BaseUrlProblem::Unparsable => "is not a valid URL".into(),
            BaseUrlProblem::Credentials => format!(
                "must not hold a user name or password (user:pass@host): it would be logged and sent with every request; put the credential in {keys}, and any other header in {path}.headers"
            ),
            BaseUrlProblem::QueryOrFragment => format!(
                "must not hold a query string or fragment (?key=… or #…): the gateway appends the API path, so it would break the URL and show in logs; a key passed as ?key= belongs in {keys}, which the gateway sends in the provider's own key header"
            ),
        }
    }
}

/// Refuses base URLs that carry credentials or that the codecs cannot extend with a path.
fn check_base_url(u: &str) -> Result<(), BaseUrlProblem> {
    let lower = u.trim_start().to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(BaseUrlProblem::NotHttp);
    }
    // The authority is checked by hand first so that even a URL the parser refuses is never echoed
    // with its password.
    let after_scheme = &u[u.find("://").map_or(0, |i| i + 3)..];
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(BaseUrlProblem::Credentials);
    }
    if u.contains(['?', '#']) {
        return Err(BaseUrlProblem::QueryOrFragment);
    }
    let parsed = reqwest::Url::parse(u.trim()).map_err(|_| BaseUrlProblem::Unparsable)?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(BaseUrlProblem::Credentials);
    }
    Ok(())
}

/// A key's secret from `value` (a literal or `env.NAME`) or `env: NAME`. Forms other tools use for an
/// environment variable are refused with the right form: sent literally they would be a wrong key.
fn key_secret(kpath: &str, value: Option<String>, env_name: Option<String>, env: &dyn Env, issues: &mut Issues) -> Option<String> {
    let (field, var) = match (value, env_name) {
        (Some(_), Some(_)) => {
            issues.push(kpath, "write either value: (a literal or env.NAME) or env: NAME, not both");
            return None;
        }
        (None, None) => {
            issues.push(kpath, "each key needs `value:` (the key, or env.NAME to read it from the environment) or `env: NAME`");
            return None;
        }
        (None, Some(var)) => {
            let var = var.strip_prefix("env.").unwrap_or(&var).to_string();
            ("env", var)
        }
        (Some(v), None) => match v.strip_prefix("env.") {
            Some(var) => ("value", var.to_string()),
            None => {
                let foreign = v
                    .strip_prefix("os.environ/")
                    .or_else(|| v.strip_prefix("${").and_then(|r| r.strip_suffix('}')))
                    .or_else(|| v.strip_prefix('$').filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')));
                if let Some(var) = foreign {
                    issues.push(
                        format!("{kpath}.value"),
                        format!("\"{v}\" would be sent as the key itself; to read the variable write value: env.{var} (or env: {var})"),
                    );
                    return None;
                }
                if v.is_empty() {
                    issues.push(format!("{kpath}.value"), "must not be empty");
                    return None;
                }
                return Some(v);
            }
        },
    };
    if var.is_empty() {
        issues.push(format!("{kpath}.{field}"), "names no environment variable");
        return None;
    }
    match env.var(&var) {
        Some(v) => Some(v),
        None => {
            issues.push(
                format!("{kpath}.{field}"),
                format!("environment variable {var} is not set (or empty); export it or write the key literally"),
            );
            None
        }
    }
}

impl ProviderConfig {
    /// Whether the provider's `models` allow-list admits `model` (an empty list admits any). An Azure
    /// deployment's model name is allowed too: mapping it is saying it is served.
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model) || self.options.deployments.contains_key(model)
    }

    /// Model names the file says this provider serves: its allow-list, its keys' lists and its Azure
    /// deployments. Used to resolve bare model names and to list models; the upstream's own list is
    /// added at run time.
    pub fn declared_models(&self) -> impl Iterator<Item = &str> {
        let mut seen = HashSet::new();
        self.models
            .iter()
            .chain(self.keys.iter().flat_map(|k| &k.models))
            .chain(self.options.deployments.keys())
            .map(String::as_str)
            .filter(move |m| seen.insert(*m))
    }
}

fn valid_provider_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn kind_list() -> String {
    ProviderKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// Checks one decoded provider. `before` is the issue count before its section was decoded: a provider
/// with any mistake is not configured (its other checks still run and report), so that nothing downstream
/// reports its absence as a second mistake.
fn provider(name: &str, raw: RawProvider, env: &dyn Env, issues: &mut Issues, before: usize) -> Option<ProviderConfig> {
    let path = format!("providers.{name}");
    if !valid_provider_name(name) {
        issues.push(&path, "provider names may hold letters, digits, '-', '_' and '.' only (the name is the prefix in \"name/model\")");
    }
    let kind = match raw.kind.as_deref() {
        Some(t) => match ProviderKind::parse(t) {
            Some(k) => Some(k),
            None => {
                let hint = match decode::kind_suggestion(t) {
                    Some(k) => format!("did you mean \"{}\"? (types: {})", k.as_str(), kind_list()),
                    None => format!("expected one of {}", kind_list()),
                };
                issues.push(format!("{path}.type"), format!("unknown provider type \"{t}\"; {hint}"));
                None
            }
        },
        None => match ProviderKind::parse(name) {
            Some(k) => Some(k),
            None => {
                let hint = match decode::kind_suggestion(name) {
                    Some(k) => format!("add `type: {}` if that is what it is (types: {})", k.as_str(), kind_list()),
                    None => format!("add `type:` with one of {}", kind_list()),
                };
                issues.push(format!("{path}.type"), format!("missing, and \"{name}\" is not a provider type; {hint}"));
                None
            }
        },
    };
    let kind = kind?;

    let mut keys = Vec::new();
    let mut key_names = HashSet::new();
    let mut key_regions: Vec<(usize, String)> = Vec::new();
    for (i, k) in raw.keys.into_iter().enumerate() {
        let kpath = format!("{path}.keys[{i}]");
        let Some(k) = issues.decode::<RawKey>(&kpath, k) else { continue };
        let key_name = k.name.unwrap_or_else(|| format!("key-{}", i + 1));
        if !key_names.insert(key_name.clone()) {
            issues.push(format!("{kpath}.name"), format!("duplicate key name \"{key_name}\"; key names must be unique per provider"));
        }
        let weight = k.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            issues.push(format!("{kpath}.weight"), format!("must be a number greater than 0, got {weight}"));
        }
        if let Some(r) = k.region.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            if kind == ProviderKind::Bedrock {
                key_regions.push((i, r.to_string()));
            } else {
                issues.push(format!("{kpath}.region"), "only bedrock keys take a region");
            }
        }
        let Some(secret) = key_secret(&kpath, k.value, k.env, env, issues) else { continue };
        keys.push(KeyConfig { name: key_name, secret: SecretString::from(secret), weight, models: k.models });
    }
    if keys.is_empty() && kind.requires_key() && issues.len() == before {
        let hint = kind.key_env_var().map(|v| format!(" (for example value: env.{v})")).unwrap_or_default();
        issues.push(format!("{path}.keys"), format!("type {} needs at least one key{hint}", kind.as_str()));
    }

    let mut region = raw.region.as_deref().map(str::trim).filter(|r| !r.is_empty()).map(str::to_string);
    if region.is_none() {
        region = key_regions.first().map(|(_, r)| r.clone());
    }
    for (i, r) in &key_regions {
        if region.as_deref() != Some(r.as_str()) {
            issues.push(
                format!("{path}.keys[{i}].region"),
                format!("\"{r}\" differs from the provider's region; one provider serves one region: declare a provider per region, with `region:` under it"),
            );
        }
    }
    let project = raw.project.as_deref().map(str::trim).filter(|r| !r.is_empty()).map(str::to_string);
    let spec = kind.spec();
    let given = [
        (Setting::ApiVersion, raw.api_version.is_some()),
        (Setting::Deployments, !raw.deployments.is_empty()),
        (Setting::DefaultMaxTokens, raw.default_max_tokens.is_some()),
        (Setting::Region, region.is_some()),
        (Setting::Project, project.is_some()),
        (Setting::Aws, raw.aws.is_some()),
        (Setting::CredentialsFile, raw.credentials_file.is_some()),
    ];
    for (setting, present) in given {
        let at = format!("{path}.{}", setting.field());
        if present && !spec.takes(setting) {
            issues.push(at, format!("only {} providers take {}", setting.taken_by(), setting.described()));
        } else if !present && spec.requires(setting) {
            let example = match setting {
                Setting::Region => format!("e.g. region: {}", spec.region_example.unwrap_or("<region>")),
                Setting::Project => "the Google Cloud project id, e.g. project: my-project".to_string(),
                other => format!("e.g. {}: <value>", other.field()),
            };
            issues.push(at, format!("required for type {}; {example}", kind.as_str()));
        }
    }
    if let Some(r) = region.as_deref().filter(|_| spec.takes(Setting::Region)) {
        if !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            issues.push(format!("{path}.region"), format!("\"{r}\" is not a region name (lowercase letters, digits and '-')"));
        }
    }
    let regional = region.as_deref().and_then(|r| kind.regional_base_url(r));
    let base_url = match raw.base_url.as_deref().or(kind.default_base_url()).or(regional.as_deref()) {
        Some(u) => match check_base_url(u) {
            Ok(()) => normalize_base_url(kind, u),
            Err(problem) => {
                issues.push(format!("{path}.base_url"), problem.message(&path, kind));
                String::new()
            }
        },
        // A regional service without its region was reported at `region`, which is what to fix.
        None if matches!(spec.base_url, BaseUrl::Regional(_)) => String::new(),
        None => {
            issues
                .push(format!("{path}.base_url"), format!("required for type {}; e.g. base_url: \"http://127.0.0.1:8000\"", kind.as_str()));
            String::new()
        }
    };

    let aws = match spec.credential {
        Credential::KeyOrAws if keys.is_empty() && issues.len() == before => {
            let c = credentials::aws(&path, raw.aws, env, issues);
            if c.is_none() && issues.len() == before {
                issues.push(
                    format!("{path}.keys"),
                    "type bedrock needs credentials: a Bedrock API key (keys: [{value: env.AWS_BEARER_TOKEN_BEDROCK}]), an `aws:` section (access_key_id and secret_access_key, or profile), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
                );
            }
            c
        }
        Credential::KeyOrAws if raw.aws.is_some() && !keys.is_empty() => {
            issues.push(format!("{path}.aws"), "write either keys (Bedrock API keys) or aws (credentials to sign with), not both");
            None
        }
        _ => None,
    };
    let google = match spec.credential {
        Credential::KeyOrGoogle if keys.is_empty() && issues.len() == before => {
            credentials::google(&path, raw.credentials_file, env, issues)
        }
        Credential::KeyOrGoogle if raw.credentials_file.is_some() && !keys.is_empty() => {
            issues.push(
                format!("{path}.credentials_file"),
                "write either keys (Vertex express-mode API keys) or credentials_file (OAuth for the project's paths), not both",
            );
            None
        }
        _ => None,
    };
    let mut timeouts = Timeouts::default();
    if let Some(t) = raw.timeout {
        timeouts.total = t.0;
    }
    if let Some(t) = raw.connect_timeout {
        timeouts.connect = t.0;
    }
    if let Some(t) = raw.first_byte_timeout {
        timeouts.first_byte = t.0;
    }
    if let Some(t) = raw.stream_idle_timeout {
        timeouts.stream_idle = t.0;
    }
    for (field, d) in [
        ("timeout", timeouts.total),
        ("connect_timeout", timeouts.connect),
        ("first_byte_timeout", timeouts.first_byte),
        ("stream_idle_timeout", timeouts.stream_idle),
    ] {
        if d.is_zero() {
            issues.push(format!("{path}.{field}"), "must be greater than zero");
        }
    }
    let models = raw.models;
    if !models.is_empty() {
        for (i, k) in keys.iter().enumerate() {
            for m in k.models.iter().filter(|m| !models.contains(m)) {
                issues.push(
                    format!("{path}.keys[{i}].models"),
                    format!("lists \"{m}\", which {path}.models (an allow-list) does not; add it there or take it off the key"),
                );
            }
        }
    }
    if raw.circuit_breaker.is_some() {
        issues.push(
            format!("{path}.circuit_breaker"),
            "circuit breakers were replaced by outlier detection: write `health:` instead (fields enabled, window, window_size, min_failures, failure_rate, slow_factor, slow_floor, probe_interval, mirror_probes; see docs/resilience.md), or remove it to use the defaults",
        );
    }
    let health = match raw.health.unwrap_or_default().resolve() {
        Ok(b) => b,
        Err((field, msg)) => {
            issues.push(format!("{path}.health.{field}"), msg);
            HealthPolicy::default()
        }
    };
    let od = OverloadPolicy::default();
    let overload =
        OverloadPolicy { max_in_flight: raw.max_in_flight.unwrap_or(od.max_in_flight), max_queue: raw.max_queue.unwrap_or(od.max_queue) };
    if overload.max_in_flight == 0 {
        issues.push(format!("{path}.max_in_flight"), "must be at least 1");
    }
    if issues.len() > before {
        return None;
    }
    Some(ProviderConfig {
        aws,
        google,
        retry: raw.retry.unwrap_or_default().resolve(RetryPolicy::default()),
        health,
        cooldown: raw.key_cooldown.unwrap_or_default().resolve(),
        overload,
        name: name.to_string(),
        kind,
        base_url,
        keys,
        timeouts,
        tags: raw.tags,
        models,
        options: ProviderOptions {
            api_version: raw.api_version,
            default_max_tokens: raw.default_max_tokens,
            deployments: raw.deployments,
            extra_headers: raw.headers.into_iter().collect(),
            region,
            project,
        },
    })
}

/// Checks a whole `governance:` section against an already loaded configuration's providers and routes,
/// as a management-API write is checked before it is applied: the same decoding and cross-reference checks
/// as a file, and the residency proof. `Env` is empty: an API write cannot read the gateway's environment.
pub fn check_governance(cfg: &Config, section: Yaml) -> Result<GovernanceConfig, Vec<ConfigIssue>> {
    let mut issues = Issues(Vec::new());
    let declared: HashSet<String> = cfg.providers.iter().map(|p| p.name.clone()).collect();
    let raw = issues.decode::<governance::RawGovernance>("governance", section).unwrap_or_default();
    let g = governance::governance(raw, &cfg.providers, &declared, &BTreeMap::<String, String>::new(), &mut issues);
    if issues.0.is_empty() {
        let with = Config { governance: g.clone(), ..cfg.clone() };
        for (path, message) in crate::governance::residency::violations(&with) {
            issues.push(path, message);
        }
    }
    if issues.0.is_empty() {
        Ok(g)
    } else {
        Err(issues.0)
    }
}

/// Decodes one provider written as the file's `providers.NAME` section would be, with every check the file
/// gets (a management-API write): issues carry the file's paths (`providers.NAME.base_url`). `env` resolves
/// `env.NAME` key values, as for the file.
pub fn decode_provider(name: &str, section: Yaml, env: &dyn Env) -> Result<ProviderConfig, Vec<ConfigIssue>> {
    let mut issues = Issues(Vec::new());
    let path = format!("providers.{name}");
    let p = issues.decode::<RawProvider>(&path, section).and_then(|raw| provider(name, raw, env, &mut issues, 0));
    match p {
        Some(p) if issues.0.is_empty() => Ok(p),
        _ => Err(issues.0),
    }
}

/// Checks the routes of `cfg` against its providers again, as they are checked at load: for a
/// configuration whose providers changed while the gateway serves (a bare route name the only provider
/// served, say, is no longer served once a second provider exists).
pub fn check_routes(cfg: &Config) -> Vec<ConfigIssue> {
    let declared: HashSet<String> = cfg.providers.iter().map(|p| p.name.clone()).collect();
    let known = Known { configured: cfg.providers.iter().map(|p| (p.name.as_str(), p)).collect(), declared: &declared };
    let at = |base: &str, list: &[Fallback]| -> Vec<TargetAt> {
        list.iter().enumerate().map(|(j, f)| TargetAt { at: format!("{base}[{j}]"), target: f.clone() }).collect()
    };
    let pending = cfg
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let path = format!("routes[{i}]");
            PendingRoute {
                models: r.models.iter().enumerate().map(|(j, m)| (format!("{path}.models[{j}]"), m.clone())).collect(),
                targets: at(&format!("{path}.targets"), &r.targets),
                fallbacks: at(&format!("{path}.fallbacks"), &r.fallbacks),
                context_fallbacks: at(&format!("{path}.context_fallbacks"), &r.context_fallbacks),
                settings: r.clone(),
                path,
            }
        })
        .collect();
    let mut issues = Issues(Vec::new());
    routes(pending, &known, &mut issues);
    issues.0
}

/// The configuration used when no file is given: every provider whose standard environment variable is
/// set (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `AZURE_OPENAI_API_KEY` with `AZURE_OPENAI_ENDPOINT`, ...).
/// A local Ollama is added by the caller after probing it, since that needs I/O.
pub fn from_env(env: &dyn Env) -> Config {
    let mut providers = Vec::new();
    for kind in ProviderKind::ALL {
        let spec = kind.spec();
        let Some((var, key)) = spec.key_env.iter().copied().find_map(|v| env.var(v).map(|k| (v, k))) else { continue };
        let mut region = None;
        let base = match (spec.base_url, spec.base_url_env) {
            (BaseUrl::Configured, Some(base_var)) => match env.var(base_var) {
                Some(e) => e,
                None => {
                    tracing::warn!("{var} is set but {base_var} is not; {} is not enabled", kind.as_str());
                    continue;
                }
            },
            (BaseUrl::Configured, None) => continue,
            (BaseUrl::Fixed(u), base_var) => base_var.and_then(|v| env.var(v)).unwrap_or_else(|| u.to_string()),
            (BaseUrl::Regional(regional), _) => match spec.region_env.iter().copied().find_map(|v| env.var(v)) {
                Some(r) => {
                    let base = regional(&r);
                    region = Some(r);
                    base
                }
                None => {
                    let wanted = spec.region_env.first().copied().unwrap_or("a region variable");
                    tracing::warn!("{var} is set but {wanted} is not; {} is not enabled", kind.as_str());
                    continue;
                }
            },
        };
        if let Err(problem) = check_base_url(&base) {
            // Never the URL itself: it may hold the very credential this refuses.
            tracing::warn!(
                "{} is refused: it holds {}, which would be logged and sent with every request; put the key in {var} alone; {} is not enabled",
                spec.base_url_env.unwrap_or("the base URL"),
                problem.what(),
                kind.as_str()
            );
            continue;
        }
        let mut options = ProviderOptions::default();
        if kind == ProviderKind::Azure {
            options.api_version = env.var("OPENAI_API_VERSION");
        }
        options.region = region;
        providers.push(ProviderConfig {
            name: kind.as_str().to_string(),
            kind,
            base_url: normalize_base_url(kind, &base),
            keys: vec![KeyConfig { name: var.to_ascii_lowercase(), secret: SecretString::from(key), weight: 1.0, models: vec![] }],
            timeouts: Timeouts::default(),
            tags: vec!["cloud".into()],
            models: vec![],
            options,
            retry: RetryPolicy::default(),
            health: HealthPolicy::default(),
            cooldown: CooldownPolicy::default(),
            overload: OverloadPolicy::default(),
            aws: None,
            google: None,
        });
    }
    Config {
        listen: DEFAULT_LISTEN.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
        server: ServerSettings::default(),
        routing: RoutingSettings::default(),
        images: ImageSettings::default(),
        upstream: UpstreamSettings::default(),
        providers,
        routes: vec![],
        governance: GovernanceConfig::default(),
        pricing: PricingConfig::default(),
        traces: traces_from_env(env),
        metrics: MetricsConfig::default(),
        logs: logs::LogSettings::default(),
    }
}

/// Traces with no file: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only variable) is set.
fn traces_from_env(env: &dyn Env) -> Option<TracesConfig> {
    let mut issues = decode::Issues(Vec::new());
    let t = traces::resolve(None, env, &mut issues);
    for i in &issues.0 {
        tracing::warn!("traces are off: {}: {}", i.path, i.message);
    }
    t.filter(|_| issues.0.is_empty())
}

/// A keyless provider entry, for auto-detected or built-in (demo) upstreams.
pub fn keyless_provider(name: &str, kind: ProviderKind, base_url: &str, tags: &[&str]) -> ProviderConfig {
    ProviderConfig {
        name: name.to_string(),
        kind,
        base_url: normalize_base_url(kind, base_url),
        keys: vec![],
        timeouts: Timeouts::default(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        models: vec![],
        options: ProviderOptions::default(),
        retry: RetryPolicy::default(),
        health: HealthPolicy::default(),
        cooldown: CooldownPolicy::default(),
        overload: OverloadPolicy::default(),
        aws: None,
        google: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("OPENAI_KEY_PRIMARY".to_string(), "sk-primary".to_string()),
            ("ANTHROPIC_KEY".to_string(), "sk-ant".to_string()),
            ("BEDROCK_KEY".to_string(), "ABSKbedrock".to_string()),
        ])
    }

    const GOOD: &str = r#"
listen: "127.0.0.1:9090"
providers:
  openai:
    base_url: "https://api.openai.com"
    keys:
      - name: primary
        value: env.OPENAI_KEY_PRIMARY
        weight: 0.7
        models: ["gpt-4o-mini"]
      - name: failover
        value: sk-literal
        weight: 0.3
    timeout: 30s
    tags: [cloud, us]
  anthropic:
    keys: [{value: env.ANTHROPIC_KEY}]
    default_max_tokens: 1024
  local:
    type: ollama
    base_url: "http://127.0.0.1:11434"
    tags: [on-prem]
  vllm-local:
    type: openai-compatible
    base_url: "http://127.0.0.1:8000"
    keys: [{value: "dummy"}]
routes:
  - models: ["openai/gpt-4o-mini"]
    fallbacks: ["anthropic/claude-sonnet-4-6"]
"#;

    #[test]
    fn parses_the_documented_example() {
        let c = parse_str(GOOD, &env()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.providers.len(), 4);
        let o = &c.providers[0];
        assert_eq!((o.kind, o.base_url.as_str()), (ProviderKind::OpenAi, "https://api.openai.com/v1"));
        assert_eq!(o.keys[0].secret.expose_secret(), "sk-primary");
        assert_eq!(o.keys[1].name, "failover");
        assert_eq!(o.timeouts.total, Duration::from_secs(30));
        // Key allow-lists are declared models, not the provider's allow-list.
        assert!(o.models.is_empty());
        assert_eq!(o.declared_models().collect::<Vec<_>>(), vec!["gpt-4o-mini"]);
        assert_eq!(c.providers[1].keys[0].name, "key-1");
        assert_eq!(c.providers[2].kind, ProviderKind::Ollama);
        assert_eq!(c.providers[3].base_url, "http://127.0.0.1:8000/v1");
        assert_eq!(c.routes[0].fallbacks, vec![Fallback::plain("anthropic/claude-sonnet-4-6")]);
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let bad = r#"
listen: "nowhere"
providers:
  openai:
    keys:
      - value: env.MISSING_VAR
  groq:
    keys:
      - value: sk-x
        weight: "heavy"
  mystery:
    base_url: "http://x"
  azure:
    keys: [{value: k}]
  anthropic:
    keys: [{value: k}]
    colour: blue
routes:
  - models: ["openai/gpt-4o-mini"]
    fallbacks: ["nobody/model", "bare"]
extra: 1
"#;
        let e = parse_str(bad, &env()).unwrap_err();
        let text = e.to_string();
        for needle in [
            "providers.openai.keys[0].value: environment variable MISSING_VAR is not set",
            "providers.groq.keys[0].weight: invalid type",
            "providers.mystery.type: missing, and \"mystery\" is not a provider type",
            "providers.azure.base_url: required for type azure",
            "providers.anthropic.colour: unknown field `colour`",
            "routes[0].fallbacks[0]: \"nobody/model\" names provider \"nobody\", which is not configured",
            "routes[0].fallbacks[1]: \"bare\" must be written provider/model",
            "extra: unknown top-level key",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn bad_listen_and_durations() {
        let e = parse_str("listen: nope\n", &env()).unwrap_err();
        assert!(e.to_string().contains("listen: expected an address"));
        let e = parse_str("providers:\n  vllm:\n    timeout: soon\n", &env()).unwrap_err();
        assert!(e.to_string().contains("providers.vllm.timeout: expected a duration"), "{e}");
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_size("20MiB"), Some(20 << 20));
    }

    #[test]
    fn env_only_defaults() {
        let env = BTreeMap::from([
            ("OPENAI_API_KEY".to_string(), "sk-o".to_string()),
            ("AZURE_OPENAI_API_KEY".to_string(), "az".to_string()),
            ("AZURE_OPENAI_ENDPOINT".to_string(), "https://r.openai.azure.com/".to_string()),
            ("GROQ_API_KEY".to_string(), "gsk".to_string()),
        ]);
        let c = from_env(&env);
        let names: Vec<&str> = c.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["openai", "azure", "groq"]);
        assert_eq!(c.providers[1].base_url, "https://r.openai.azure.com");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn base_urls_with_credentials_are_refused_without_being_echoed() {
        let yaml = r#"
providers:
  openai:
    base_url: "https://user:hunter2@api.openai.com/v1"
    keys: [{value: k}]
  gemini:
    type: openai-compatible
    base_url: "https://generativelanguage.googleapis.com/v1beta/openai?key=AIzaSecret"
  frag:
    type: vllm
    base_url: "http://127.0.0.1:8000/v1#token"
  nouser:
    type: vllm
    base_url: "http://:hunter3@127.0.0.1:8000"
"#;
        let text = parse_str(yaml, &env()).unwrap_err().to_string();
        for needle in [
            "providers.openai.base_url: must not hold a user name or password",
            "put the credential in providers.openai.keys (for example value: env.OPENAI_API_KEY)",
            "providers.gemini.base_url: must not hold a query string or fragment",
            "a key passed as ?key= belongs in providers.gemini.keys",
            "providers.frag.base_url: must not hold a query string",
            "providers.nouser.base_url: must not hold a user name or password",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        for secret in ["hunter2", "hunter3", "AIzaSecret", "#token"] {
            assert!(!text.contains(secret), "{secret} echoed in:\n{text}");
        }
        assert!(parse_str("providers:\n  vllm:\n    base_url: \"ftp://x\"\n", &env())
            .unwrap_err()
            .to_string()
            .contains("must start with http"));
    }

    #[test]
    fn env_base_urls_with_credentials_disable_the_provider() {
        let env = BTreeMap::from([
            ("OPENAI_API_KEY".to_string(), "sk-o".to_string()),
            ("OPENAI_BASE_URL".to_string(), "https://u:p@proxy.example/v1".to_string()),
            ("ANTHROPIC_API_KEY".to_string(), "sk-a".to_string()),
        ]);
        let names: Vec<String> = from_env(&env).providers.into_iter().map(|p| p.name).collect();
        assert_eq!(names, vec!["anthropic"]);
    }

    #[test]
    fn every_conventional_key_variable_enables_its_provider() {
        // The second names of the table: what Cohere's and Google's other tools read.
        let env = BTreeMap::from([
            ("COHERE_API_KEY".to_string(), "co-1".to_string()),
            ("GOOGLE_API_KEY".to_string(), "AIza-1".to_string()),
            ("AWS_BEARER_TOKEN_BEDROCK".to_string(), "ABSK-1".to_string()),
            ("AWS_DEFAULT_REGION".to_string(), "eu-central-1".to_string()),
        ]);
        let c = from_env(&env);
        let got: Vec<(&str, &str, &str)> =
            c.providers.iter().map(|p| (p.name.as_str(), p.base_url.as_str(), p.keys[0].name.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("bedrock", "https://bedrock-runtime.eu-central-1.amazonaws.com", "aws_bearer_token_bedrock"),
                ("gemini", "https://generativelanguage.googleapis.com", "google_api_key"),
                ("cohere", "https://api.cohere.com", "cohere_api_key"),
            ]
        );
        assert_eq!(c.providers[0].options.region.as_deref(), Some("eu-central-1"));
        // A region-bound key without its region is not a provider.
        let env = BTreeMap::from([("AWS_BEARER_TOKEN_BEDROCK".to_string(), "ABSK-1".to_string())]);
        assert!(from_env(&env).providers.is_empty());
    }

    #[test]
    fn a_setting_another_type_takes_is_refused_by_name() {
        let e = parse_str(
            "providers:\n  openai:\n    keys: [{value: sk}]\n    region: eu-west-1\n    project: p\n    deployments: {a: b}\n",
            &env(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("providers.openai.region: only bedrock and vertex providers take a region"), "{e}");
        assert!(e.contains("providers.openai.project: only vertex providers take a project"), "{e}");
        assert!(e.contains("providers.openai.deployments: only azure providers take deployments"), "{e}");
        let e = parse_str("providers:\n  v:\n    type: vertex\n", &env()).unwrap_err().to_string();
        assert!(e.contains("providers.v.region: required for type vertex; e.g. region: europe-west4 (or global)"), "{e}");
        assert!(e.contains("providers.v.project: required for type vertex; the Google Cloud project id"), "{e}");
        let e = parse_str(
            "providers:\n  v:\n    type: vertex\n    region: global\n    project: p\n    keys: [{value: AQ.k}]\n    credentials_file: /x.json\n",
            &env(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("providers.v.credentials_file: write either keys"), "{e}");
    }

    #[test]
    fn upstream_section() {
        let c = parse_str("", &env()).unwrap();
        assert_eq!(c.upstream, UpstreamSettings::default());
        assert_eq!(c.upstream.max_response_bytes, 64 << 20);
        let c = parse_str("upstream:\n  max_response_size: 2MiB\n  max_buffered_total: 3MiB\n  max_stream_event_size: 128KiB\n", &env())
            .unwrap();
        assert_eq!(
            c.upstream,
            UpstreamSettings { max_response_bytes: 2 << 20, max_buffered_total_bytes: 3 << 20, max_stream_event_bytes: 128 << 10 }
        );
        let e = parse_str("upstream:\n  max_response_size: 1GiB\n  max_stream_event_size: 10\n  colour: red\n", &env()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("upstream.colour: unknown field"), "{text}");
        let e = parse_str("upstream:\n  max_response_size: 1GiB\n  max_stream_event_size: 10\n", &env()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("upstream.max_stream_event_size: must be at least 64KiB"), "{text}");
        assert!(text.contains("upstream.max_buffered_total: must be at least upstream.max_response_size"), "{text}");
        let e = parse_str("upstream:\n  max_response_size: lots\n", &env()).unwrap_err();
        assert!(e.to_string().contains("upstream.max_response_size: expected a size"), "{e}");
    }

    #[test]
    fn server_section_defaults_and_overrides() {
        let c = parse_str("", &env()).unwrap();
        assert_eq!(c.server, ServerSettings::default());
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_connections, None);
        let c = parse_str(
            "server:\n  header_read_timeout: 2s\n  body_read_timeout: 5s\n  idle_timeout: 90s\n  write_timeout: 1m\n  max_connections: 500\n  allowed_hosts: [Gateway.Example.com, \"*.corp.example\", \"[::1]:9000\", \"10.0.0.5:8080\"]\n",
            &env(),
        )
        .unwrap();
        let s = &c.server;
        assert_eq!((s.header_read_timeout, s.body_read_timeout), (Duration::from_secs(2), Duration::from_secs(5)));
        assert_eq!((s.idle_timeout, s.write_timeout), (Duration::from_secs(90), Duration::from_secs(60)));
        assert_eq!(s.max_connections, Some(500));
        assert_eq!(s.allowed_hosts, vec!["gateway.example.com", "*.corp.example", "[::1]:9000", "10.0.0.5:8080"]);
    }

    #[test]
    fn server_section_mistakes_name_their_path() {
        let bad = "server:\n  header_read_timeout: 0s\n  idle_timeout: soon\n  max_connections: 0\n  allowed_hosts: [\"https://x.example\", \"x.example:99999\", \"a*b.example\", \"[nope]\"]\n";
        let text = parse_str(bad, &env()).unwrap_err().to_string();
        assert!(text.contains("server.idle_timeout: expected a duration"), "{text}");
        // A section that does not decode is reported once; the rest is checked when it decodes.
        let bad = "server:\n  header_read_timeout: 0s\n  max_connections: 0\n  allowed_hosts: [\"https://x.example\", \"x.example:99999\", \"a*b.example\", \"[nope]\"]\n";
        let text = parse_str(bad, &env()).unwrap_err().to_string();
        for needle in [
            "server.header_read_timeout: must be greater than zero",
            "server.max_connections: must be at least 1",
            "server.allowed_hosts[0]: \"https://x.example\" is not a host",
            "server.allowed_hosts[1]: \"x.example:99999\": the port must be a number",
            "server.allowed_hosts[2]: \"a*b.example\" is not a host name",
            "server.allowed_hosts[3]: \"[nope]\" is not a bracketed IPv6 address",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        let text = parse_str("server:\n  read_timeout: 5s\n", &env()).unwrap_err().to_string();
        assert!(text.contains("server.read_timeout: unknown field `read_timeout`"), "{text}");
    }

    #[test]
    fn images_section_defaults_overrides_and_mistakes() {
        let c = parse_str("", &env()).unwrap();
        let d = &c.images;
        assert_eq!((d.max_images, d.max_request_bytes, d.max_total_bytes, d.max_concurrent_fetches), (20, 32 << 20, 256 << 20, 4));
        assert!(d.proxy.is_none());

        let e = BTreeMap::from([("IMG_PROXY".to_string(), "http://user:pw@proxy.example:3128".to_string())]);
        let c = parse_str(
            "images:\n  max_images: 3\n  max_request_size: 8MiB\n  max_total_size: 64MiB\n  max_concurrent_fetches: 2\n  proxy: env.IMG_PROXY\n",
            &e,
        )
        .unwrap();
        let i = &c.images;
        assert_eq!((i.max_images, i.max_request_bytes, i.max_total_bytes, i.max_concurrent_fetches), (3, 8 << 20, 64 << 20, 2));
        assert_eq!(i.proxy.as_ref().map(|p| p.expose_secret().to_string()).as_deref(), Some("http://user:pw@proxy.example:3128"));
        assert!(!format!("{i:?}").contains("pw@"), "the proxy URL may hold a password and is never printed");

        let bad = "images:\n  max_images: 0\n  max_size: 0\n  fetch_timeout: 0s\n  max_total_size: 1MiB\n  max_concurrent_fetches: 0\n  proxy: \"socks5://x:1\"\n";
        let text = parse_str(bad, &env()).unwrap_err().to_string();
        for needle in [
            "images.max_images: must be at least 1",
            "images.max_size: must be greater than zero",
            "images.fetch_timeout: must be greater than zero",
            "images.max_total_size: is smaller than images.max_request_size",
            "images.max_concurrent_fetches: must be at least 1",
            "images.proxy: expected a proxy URL",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        let text = parse_str("images:\n  proxy: env.NOT_SET\n  max_imgs: 3\n", &env()).unwrap_err().to_string();
        assert!(text.contains("images.max_imgs: unknown field"), "{text}");
        let text = parse_str("images:\n  proxy: env.NOT_SET\n", &env()).unwrap_err().to_string();
        assert!(text.contains("images.proxy: environment variable NOT_SET is not set"), "{text}");
    }

    #[test]
    fn json_is_accepted() {
        let c = parse_str(r#"{"providers":{"vllm":{"base_url":"http://127.0.0.1:8000/v1"}}}"#, &env()).unwrap();
        assert_eq!(c.providers[0].base_url, "http://127.0.0.1:8000/v1");
    }

    fn errors(yaml: &str) -> Vec<String> {
        parse_str(yaml, &env()).unwrap_err().issues.into_iter().map(|i| format!("{}: {}", i.path, i.message)).collect()
    }

    #[test]
    fn pasted_keys_with_env_are_keys() {
        let c = parse_str("providers:\n  openai:\n    keys:\n      - env: OPENAI_KEY_PRIMARY\n        weight: 0.7\n      - value: env.ANTHROPIC_KEY\n        weight: 0.3\n", &env()).unwrap();
        let k = &c.providers[0].keys;
        assert_eq!((k[0].secret.expose_secret(), k[0].weight), ("sk-primary", 0.7));
        assert_eq!((k[1].secret.expose_secret(), k[1].weight), ("sk-ant", 0.3));
        let e = errors("providers:\n  openai:\n    keys:\n      - env: NOPE\n      - {env: OPENAI_KEY_PRIMARY, value: x}\n      - {weight: 1}\n      - value: os.environ/OPENAI_KEY_PRIMARY\n      - value: ${OPENAI_KEY_PRIMARY}\n");
        for needle in [
            "providers.openai.keys[0].env: environment variable NOPE is not set",
            "providers.openai.keys[1]: write either value: (a literal or env.NAME) or env: NAME, not both",
            "providers.openai.keys[2]: each key needs `value:`",
            "providers.openai.keys[3].value: \"os.environ/OPENAI_KEY_PRIMARY\" would be sent as the key itself; to read the variable write value: env.OPENAI_KEY_PRIMARY",
            "providers.openai.keys[4].value: \"${OPENAI_KEY_PRIMARY}\" would be sent as the key itself",
        ] {
            assert!(e.iter().any(|x| x.starts_with(needle)), "missing {needle:?} in {e:#?}");
        }
        assert_eq!(e.len(), 5, "{e:#?}");
    }

    #[test]
    fn the_field_reports_bedrock_provider_with_its_key_region() {
        // The published shape: the region written on the key, not the provider.
        let c = parse_str("providers:\n  openai:\n    keys:\n      - env: OPENAI_KEY_PRIMARY\n        weight: 0.7\n  bedrock:\n    keys:\n      - env: BEDROCK_KEY\n        region: eu-central-1\nroutes:\n  - models: [openai/gpt-4o]\n    fallbacks: [bedrock/anthropic.claude-3-5-haiku]\n", &env()).unwrap();
        let b = c.providers.iter().find(|p| p.name == "bedrock").unwrap();
        assert_eq!(b.kind, ProviderKind::Bedrock);
        assert_eq!(b.options.region.as_deref(), Some("eu-central-1"));
        assert_eq!(b.base_url, "https://bedrock-runtime.eu-central-1.amazonaws.com");
        // Keys in two regions are two providers.
        let e =
            errors("providers:\n  bedrock:\n    region: us-east-1\n    keys:\n      - env: BEDROCK_KEY\n        region: eu-central-1\n");
        assert!(e[0].starts_with("providers.bedrock.keys[0].region: \"eu-central-1\" differs from the provider's region"), "{e:#?}");
        // Elsewhere a region is explained, not just unknown.
        let e = errors("providers:\n  openai:\n    keys:\n      - env: OPENAI_KEY_PRIMARY\n        region: eu-central-1\n");
        assert_eq!(e, vec!["providers.openai.keys[0].region: only bedrock keys take a region".to_string()]);
        let e = errors("providers:\n  bedrock: {}\n");
        assert_eq!(e, vec!["providers.bedrock.region: required for type bedrock; e.g. region: eu-central-1".to_string()]);
        let e = errors("providers:\n  vertex: {region: global}\n");
        assert!(e[0].starts_with("providers.vertex.project: required for type vertex"), "{e:#?}");
        // A route naming a provider that is not configured says which are.
        let e = errors("providers:\n  openai:\n    keys: [{env: OPENAI_KEY_PRIMARY}]\nroutes:\n  - models: [openai/gpt-4o]\n    fallbacks: [bedrock/anthropic.claude-3-5-haiku]\n");
        assert_eq!(e, vec!["routes[0].fallbacks[0]: \"bedrock/anthropic.claude-3-5-haiku\" names provider \"bedrock\", which is not configured; providers in the file: openai".to_string()]);
    }

    #[test]
    fn bedrock_signs_with_the_aws_section_or_the_standard_chain() {
        let mut e = env();
        e.insert("AKID".into(), "AKIDEXAMPLE".into());
        e.insert("AWS_SECRET".into(), "wJalrXUtnFEMI".into());
        let c = parse_str(
            "providers:\n  bedrock:\n    region: eu-central-1\n    aws: {access_key_id: env.AKID, secret_access_key: env.AWS_SECRET}\n",
            &e,
        )
        .unwrap();
        let aws = c.providers[0].aws.as_deref().unwrap();
        assert_eq!((aws.access_key_id.as_str(), aws.secret_access_key.as_str()), ("AKIDEXAMPLE", "wJalrXUtnFEMI"));
        // The standard variables, as every AWS SDK reads them.
        e.insert("AWS_ACCESS_KEY_ID".into(), "AKIDENV".into());
        e.insert("AWS_SECRET_ACCESS_KEY".into(), "secret".into());
        e.insert("AWS_SESSION_TOKEN".into(), "tok".into());
        let c = parse_str("providers:\n  bedrock: {region: us-east-1}\n", &e).unwrap();
        let aws = c.providers[0].aws.as_deref().unwrap();
        assert_eq!((aws.access_key_id.as_str(), aws.session_token.as_deref()), ("AKIDENV", Some("tok")));
        // Nothing anywhere (HOME unset, so no shared file): one error naming every way.
        let err = errors("providers:\n  bedrock: {region: us-east-1}\n");
        assert_eq!(err.len(), 1, "{err:#?}");
        assert!(err[0].starts_with("providers.bedrock.keys: type bedrock needs credentials"), "{err:#?}");
        let err = errors("providers:\n  bedrock:\n    region: us-east-1\n    aws: {access_key_id: env.NOPE, secret_access_key: x}\n");
        assert_eq!(err, vec!["providers.bedrock.aws.access_key_id: environment variable NOPE is not set".to_string()]);
        let err = errors("providers:\n  openai:\n    keys: [{env: OPENAI_KEY_PRIMARY}]\n    aws: {profile: x}\n");
        assert_eq!(err, vec!["providers.openai.aws: only bedrock providers take AWS credentials".to_string()]);
    }

    #[test]
    fn vertex_reads_its_service_account_from_the_file_or_the_standard_variable() {
        let sa = concat!(env!("CARGO_MANIFEST_DIR"), "/../wire/tests/fixtures/google/service_account.json");
        let c = parse_str(&format!("providers:\n  vertex:\n    project: p1\n    region: global\n    credentials_file: {sa}\n"), &env())
            .unwrap();
        let v = &c.providers[0];
        assert_eq!(v.google.as_ref().unwrap().principal(), "gateway@switchyard-test.iam.gserviceaccount.com");
        assert_eq!(v.base_url, "https://aiplatform.googleapis.com");
        assert_eq!((v.options.project.as_deref(), v.options.region.as_deref()), (Some("p1"), Some("global")));
        let mut e = env();
        e.insert("GOOGLE_APPLICATION_CREDENTIALS".into(), sa.into());
        let c = parse_str("providers:\n  vertex: {project: p1, region: europe-west4}\n", &e).unwrap();
        assert!(c.providers[0].google.is_some());
        assert_eq!(c.providers[0].base_url, "https://europe-west4-aiplatform.googleapis.com");
        let err = errors("providers:\n  vertex: {project: p1, region: europe-west4}\n");
        assert!(err[0].starts_with("providers.vertex.credentials_file: type vertex needs Google credentials"), "{err:#?}");
        let err = errors("providers:\n  vertex: {project: p1, region: global, credentials_file: /nonexistent.json}\n");
        assert!(err[0].starts_with("providers.vertex.credentials_file: cannot read /nonexistent.json"), "{err:#?}");
    }

    #[test]
    fn top_level_fallbacks_in_both_published_shapes() {
        let c = parse_str("providers:\n  anthropic: {keys: [{env: ANTHROPIC_KEY}]}\n  openai: {keys: [{env: OPENAI_KEY_PRIMARY}]}\nfallbacks:\n  - from: anthropic/claude-sonnet-4-6\n    to: openai/gpt-4o\n", &env()).unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].models, vec!["anthropic/claude-sonnet-4-6"]);
        assert_eq!(c.routes[0].fallbacks, vec![Fallback::plain("openai/gpt-4o")]);
        assert!(c.routes[0].targets.is_empty());

        let chain = "providers:\n  ollama: {base_url: \"http://127.0.0.1:11434\"}\n  anthropic: {keys: [{env: ANTHROPIC_KEY}]}\nfallbacks:\n  synthetic-captions:\n    - provider: ollama\n      model: \"qwen2.5-vl:7b\"\n    - provider: anthropic\n      model: \"claude-sonnet-4-6\"\n";
        let c = parse_str(chain, &env()).unwrap();
        assert_eq!(c.routes[0].models, vec!["synthetic-captions"]);
        assert_eq!(c.routes[0].targets, vec![Fallback::plain("ollama/qwen2.5-vl:7b"), Fallback::plain("anthropic/claude-sonnet-4-6")]);

        let e = errors("providers:\n  openai: {keys: [{env: OPENAI_KEY_PRIMARY}]}\nfallbacks:\n  - openai/gpt-4o\n  - from: openai/gpt-4o\n    to: nobody/x\n  - {from: openai/a, too: openai/b}\n");
        assert!(e.iter().any(|x| x.starts_with("fallbacks[0]: a top-level fallbacks list holds {from")), "{e:#?}");
        assert!(e.iter().any(|x| x.starts_with("fallbacks[1].to: \"nobody/x\" names provider \"nobody\"")), "{e:#?}");
        assert!(e.iter().any(|x| x.starts_with("fallbacks[2]") && x.contains("too")), "{e:#?}");
        let e = errors("fallbacks:\n  chain:\n    - {provider: ollama}\n    - {model: x}\n  empty: []\n");
        assert!(e.iter().any(|x| x.starts_with("fallbacks.chain[0]: provider \"ollama\" needs a model")), "{e:#?}");
        assert!(e.iter().any(|x| x.starts_with("fallbacks.chain[1]: model \"x\" needs its provider")), "{e:#?}");
        assert!(e.iter().any(|x| x.starts_with("fallbacks.empty: a chain needs at least one target")), "{e:#?}");
    }

    #[test]
    fn every_independent_mistake_in_one_pass_and_no_consequences() {
        let bad = r#"
providers:
  openai:
    api_base: https://api.openai.com
    keys:
      - env: OPENAI_KEY_PRIMARY
        wieght: 0.7
  anthropic:
    type: claude
    keys: [{env: ANTHROPIC_KEY}]
  local:
    type: ollama
    timeout: soon
    tags: [on-prem, 5]
routes:
  - models: [anthropic/claude-sonnet-4-6]
    fallbacks: [openai/gpt-4o, local/llava]
  - model: gpt-4o
  - models: [anthropic/claude-sonnet-4-6]
model_list: []
"#;
        let e = errors(bad);
        let expected = [
            "providers.openai.api_base: unknown field `api_base`; the provider's address is `base_url`",
            "providers.openai.keys[0].wieght: unknown field `wieght`; did you mean `weight`?",
            "providers.anthropic.type: unknown provider type \"claude\"; did you mean \"anthropic\"?",
            "providers.local.timeout: expected a duration",
            "providers.local.tags[1]: invalid type",
            "routes[1].model: unknown field `model`; write `models: [...]`",
            "routes[1].models: list at least one model",
            "routes[2].models[0]: \"anthropic/claude-sonnet-4-6\" is also routed by routes[0]",
            "model_list: unknown top-level key; this is LiteLLM's model_list",
        ];
        for needle in expected {
            assert_eq!(e.iter().filter(|x| x.starts_with(needle)).count(), 1, "{needle:?} not reported exactly once in {e:#?}");
        }
        // Nothing else: in particular no "not configured" for the providers whose own settings are wrong.
        assert_eq!(e.len(), expected.len(), "{e:#?}");
    }

    #[test]
    fn allow_lists_are_checked_against_routes_and_keys() {
        let e = errors("providers:\n  openai:\n    models: [gpt-4o]\n    keys: [{value: k, models: [gpt-4o-mini]}]\n");
        assert!(
            e[0].starts_with(
                "providers.openai.keys[0].models: lists \"gpt-4o-mini\", which providers.openai.models (an allow-list) does not"
            ),
            "{e:#?}"
        );
        let e = errors("providers:\n  openai:\n    models: [gpt-4o]\n    keys: [{value: k}]\nroutes:\n  - models: [openai/gpt-4o-mini]\n  - models: [x]\n    fallbacks: [openai/o3]\n");
        for needle in [
            "routes[0].models[0]: providers.openai.models does not list \"gpt-4o-mini\"; that list is an allow-list",
            "routes[1].fallbacks[0]: providers.openai.models does not list \"o3\"",
        ] {
            assert!(e.iter().any(|x| x.starts_with(needle)), "missing {needle:?} in {e:#?}");
        }
    }

    #[test]
    fn a_route_whose_name_nothing_can_serve_is_refused_not_accepted_and_dead() {
        let two = "providers:\n  openai: {keys: [{value: k}]}\n  anthropic: {keys: [{value: k}]}\n";
        let e = errors(&format!("{two}routes:\n  - models: [synthetic-captions]\n    hedge: {{after: 1s}}\n"));
        assert!(e[0].starts_with("routes[0].models[0]: no provider serves \"synthetic-captions\""), "{e:#?}");
        // With fallbacks the name is served by them; listed by a provider, or with one provider, it resolves.
        parse_str(&format!("{two}routes:\n  - models: [synthetic-captions]\n    fallbacks: [openai/gpt-4o]\n"), &env()).unwrap();
        parse_str("providers:\n  openai: {keys: [{value: k}], models: [gpt-4o]}\n  anthropic: {keys: [{value: k}]}\nroutes:\n  - models: [gpt-4o]\n    hedge: {after: 1s}\n", &env()).unwrap();
        parse_str("providers:\n  openai: {keys: [{value: k}]}\nroutes:\n  - models: [gpt-4o]\n    deadline: 5s\n", &env()).unwrap();
    }

    /// Mutated files (lines dropped, repeated, re-indented, or cut; bytes flipped) never panic the loader
    /// nor make it loop: each is a config or a list of issues, every issue with a message.
    #[test]
    fn mutated_files_are_refused_cleanly() {
        let seeds = [GOOD, "providers:\n  openai:\n    api_base: x\n    keys:\n      - {env: OPENAI_KEY_PRIMARY, wieght: 2, models: [a, [b]]}\nfallbacks:\n  chain:\n    - {provider: openai, model: a}\n  - from: x\nroutes:\n  - models: [chain]\n    targets: [openai/a, {target: openai/b, params: {max_tokens: 3}}]\n    hedge: {after: p95, delay: 1}\n"];
        let mut rng = fastrand::Rng::with_seed(8);
        for i in 0..3000 {
            let seed = seeds[i % seeds.len()];
            let mut lines: Vec<String> = seed.lines().map(str::to_string).collect();
            for _ in 0..rng.usize(1..4) {
                let n = rng.usize(0..lines.len());
                match rng.u8(0..5) {
                    0 => {
                        lines.remove(n);
                    }
                    1 => lines.insert(n, lines[n].clone()),
                    2 => lines[n] = format!("  {}", lines[n]),
                    3 => lines[n] = lines[n].trim_start().to_string(),
                    _ => {
                        let mut b = lines[n].clone().into_bytes();
                        if !b.is_empty() {
                            let at = rng.usize(0..b.len());
                            b[at] = b"-:[]{}, \"x0"[rng.usize(0..11)];
                        }
                        lines[n] = String::from_utf8_lossy(&b).into_owned();
                    }
                }
                if lines.is_empty() {
                    break;
                }
            }
            if let Err(e) = parse_str(&lines.join("\n"), &env()) {
                assert!(e.issues.iter().all(|i| !i.message.is_empty()), "{e}");
            }
        }
    }
}
