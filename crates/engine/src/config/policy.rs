//! Resilience settings: retries, provider health, key cooldowns, overload limits, hedging and fallbacks
//! with per-target overrides. Each has a raw shape (what the file may say, every field optional) and a
//! resolved shape with the documented defaults filled in.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use serde_yaml_ng::Value as Yaml;

use super::{yaml_brief, DurationStr};

/// Retries of the same target after a transient failure, with exponential backoff and full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: none).
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_retries: 1, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// The pause before retry number `n` (1-based): `initial × 2^(n-1)`, capped, times a random factor in
    /// [0.5, 1) so that many clients retrying at once do not stay in step.
    pub fn backoff(&self, n: u32, rng: &mut fastrand::Rng) -> Duration {
        self.backoff_at(n, rng.f64())
    }

    /// [`RetryPolicy::backoff`] with the random draw given (`jitter` in [0, 1)).
    pub fn backoff_at(&self, n: u32, jitter: f64) -> Duration {
        let exp = self.initial_backoff.saturating_mul(1u32 << (n.saturating_sub(1)).min(16));
        exp.min(self.max_backoff).mul_f64(0.5 + jitter.clamp(0.0, 1.0) * 0.5)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    max_retries: Option<u32>,
    initial_backoff: Option<DurationStr>,
    max_backoff: Option<DurationStr>,
}

impl RawRetry {
    pub(super) fn resolve(self, base: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries.unwrap_or(base.max_retries),
            initial_backoff: self.initial_backoff.map(|d| d.0).unwrap_or(base.initial_backoff),
            max_backoff: self.max_backoff.map(|d| d.0).unwrap_or(base.max_backoff),
        }
    }
}

/// How a provider's recent outcomes decide whether it is healthy. A provider is *degraded* while, among its
/// last `window_size` health signals that are younger than `window`, at least `min_failures` are failures
/// (or slow answers) and they make up at least `failure_rate` of them. A degraded provider is tried after
/// the healthy targets of a request, except for one probe every `probe_interval`; it is still tried when
/// nothing healthier is left (a lone provider is never skipped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    pub enabled: bool,
    /// Signals older than this are forgotten.
    pub window: Duration,
    /// At most this many of the latest signals count.
    pub window_size: u32,
    /// Fewest failures in the window before the provider can be degraded (so a blip never moves traffic).
    pub min_failures: u32,
    /// Share of failures (0..1] in the window that degrades the provider.
    pub failure_rate: f64,
    /// A success slower than `slow_floor` and than `slow_factor` × the provider's usual pace (streams: time
    /// to first byte; complete answers: time per output token) counts as a slow signal, which weighs like
    /// a failure (0: latency is ignored).
    pub slow_factor: f64,
    pub slow_floor: Duration,
    /// While degraded, one request this often goes to the provider first, as a probe; from the second
    /// successful probe in a row each one halves the gap to the next, so a recovered provider is back
    /// within seconds.
    pub probe_interval: Duration,
    /// While a request has a healthy target to serve it, the degraded provider's probe is a copy of that
    /// request sent beside it, whose answer only feeds health: the caller never waits on a probe. Costs
    /// one extra upstream call per probe. Off: the probe is the request itself, and a failed probe costs
    /// its caller a second round trip.
    pub mirror_probes: bool,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            enabled: true,
            window: Duration::from_secs(30),
            // Ten signals: a provider failing 40% of requests leaves the path within a few requests even
            // when its window is full of old successes; two failures in ten (a blip) move nothing.
            window_size: 10,
            min_failures: 3,
            failure_rate: 0.3,
            slow_factor: 5.0,
            slow_floor: Duration::from_secs(1),
            probe_interval: Duration::from_secs(2),
            mirror_probes: true,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    enabled: Option<bool>,
    window: Option<DurationStr>,
    window_size: Option<u32>,
    min_failures: Option<u32>,
    failure_rate: Option<f64>,
    slow_factor: Option<f64>,
    slow_floor: Option<DurationStr>,
    probe_interval: Option<DurationStr>,
    mirror_probes: Option<bool>,
}

impl RawHealth {
    /// Resolves against the defaults; `Err` names the field that is out of range.
    pub(super) fn resolve(self) -> Result<HealthPolicy, (&'static str, String)> {
        let d = HealthPolicy::default();
        let p = HealthPolicy {
            enabled: self.enabled.unwrap_or(d.enabled),
            window: self.window.map(|x| x.0).unwrap_or(d.window),
            window_size: self.window_size.unwrap_or(d.window_size),
            min_failures: self.min_failures.unwrap_or(d.min_failures),
            failure_rate: self.failure_rate.unwrap_or(d.failure_rate),
            slow_factor: self.slow_factor.unwrap_or(d.slow_factor),
            slow_floor: self.slow_floor.map(|x| x.0).unwrap_or(d.slow_floor),
            probe_interval: self.probe_interval.map(|x| x.0).unwrap_or(d.probe_interval),
            mirror_probes: self.mirror_probes.unwrap_or(d.mirror_probes),
        };
        if !(p.failure_rate > 0.0 && p.failure_rate <= 1.0) {
            return Err(("failure_rate", format!("must be in (0, 1], got {}", p.failure_rate)));
        }
        if !(1..=1000).contains(&p.window_size) {
            return Err(("window_size", format!("must be between 1 and 1000, got {}", p.window_size)));
        }
        if p.min_failures == 0 {
            return Err(("min_failures", "must be at least 1".into()));
        }
        if !(p.slow_factor == 0.0 || (p.slow_factor >= 1.0 && p.slow_factor.is_finite())) {
            return Err(("slow_factor", format!("must be 0 (off) or at least 1, got {}", p.slow_factor)));
        }
        if p.window < Duration::from_secs(1) {
            return Err(("window", "must be at least 1s".into()));
        }
        if p.probe_interval.is_zero() {
            return Err(("probe_interval", "must be greater than zero".into()));
        }
        Ok(p)
    }
}

/// How long a key sits out after the provider refused it. A rejected key (invalid, out of quota) is
/// skipped while another key or target can serve; when none can, it is tried anyway (one quick round
/// trip, and a fixed key is noticed at once). A rate-limited key is never sent to before its reset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CooldownPolicy {
    /// After a 429 that says no reset (with `Retry-After` or a reset header, that is used).
    pub rate_limited: Duration,
    /// After a 401/403.
    pub key_invalid: Duration,
    /// After the provider said the key's quota or credit is used up (OpenAI `insufficient_quota`, 402).
    pub quota_exhausted: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy {
            rate_limited: Duration::from_secs(5),
            key_invalid: Duration::from_secs(300),
            quota_exhausted: Duration::from_secs(3600),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCooldown {
    rate_limited: Option<DurationStr>,
    key_invalid: Option<DurationStr>,
    quota_exhausted: Option<DurationStr>,
}

impl RawCooldown {
    pub(super) fn resolve(self) -> CooldownPolicy {
        let d = CooldownPolicy::default();
        CooldownPolicy {
            rate_limited: self.rate_limited.map(|x| x.0).unwrap_or(d.rate_limited),
            key_invalid: self.key_invalid.map(|x| x.0).unwrap_or(d.key_invalid),
            quota_exhausted: self.quota_exhausted.map(|x| x.0).unwrap_or(d.quota_exhausted),
        }
    }
}

/// Bounded concurrency towards one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverloadPolicy {
    /// Upstream requests in flight at once.
    pub max_in_flight: usize,
    /// Requests waiting for a slot; beyond this the target is skipped at once (503 if it was the last).
    pub max_queue: usize,
}

impl Default for OverloadPolicy {
    fn default() -> Self {
        OverloadPolicy { max_in_flight: 512, max_queue: 1024 }
    }
}

/// When to send the same request to the next target too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    Fixed(Duration),
    /// The first target's observed p95 time to first byte (the fixed floor until enough samples exist).
    P95 {
        floor: Duration,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    pub delay: HedgeDelay,
    /// Most requests (0..1) that may be hedged, over time.
    pub max_share: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHedge {
    /// `p95` or a duration.
    after: Yaml,
    #[serde(default)]
    floor: Option<DurationStr>,
    #[serde(default)]
    max_share: Option<f64>,
}

impl RawHedge {
    pub(super) fn resolve(self) -> Result<HedgePolicy, (&'static str, String)> {
        let delay = match &self.after {
            Yaml::String(s) if s == "p95" => HedgeDelay::P95 { floor: self.floor.map(|d| d.0).unwrap_or(Duration::from_millis(200)) },
            Yaml::String(s) => match super::parse_duration(s) {
                Some(d) => HedgeDelay::Fixed(d),
                None => return Err(("after", format!("expected p95 or a duration such as 400ms, got \"{s}\""))),
            },
            other => return Err(("after", format!("expected p95 or a duration such as 400ms, got {}", yaml_brief(other)))),
        };
        let max_share = self.max_share.unwrap_or(0.1);
        if !(0.0..=1.0).contains(&max_share) {
            return Err(("max_share", format!("must be between 0 and 1, got {max_share}")));
        }
        Ok(HedgePolicy { delay, max_share })
    }
}

/// A fallback target, with parameters that replace the caller's for this target only
/// (a smaller model may need a smaller `max_tokens`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// `provider/model`.
    pub target: String,
    pub params: Map<String, Value>,
}

impl Fallback {
    pub fn plain(target: impl Into<String>) -> Self {
        Fallback { target: target.into(), params: Map::new() }
    }
}

/// `"provider/model"`, `{target: "provider/model", params: {max_tokens: 512}}`, or the shape published
/// field reports use, `{provider: ollama, model: "qwen2.5-vl:7b"}` (with optional `params`).
pub(super) struct RawFallback(pub(super) Fallback);

impl<'de> Deserialize<'de> for RawFallback {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Obj {
            #[serde(default)]
            target: Option<String>,
            #[serde(default)]
            provider: Option<String>,
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            params: Map<String, Value>,
        }
        let v = Yaml::deserialize(d)?;
        match v {
            Yaml::String(s) => Ok(RawFallback(Fallback::plain(s))),
            Yaml::Mapping(_) => {
                let o: Obj = serde_yaml_ng::from_value(v).map_err(|e| {
                    let msg = e.to_string();
                    serde::de::Error::custom(msg.split(" at line ").next().unwrap_or(&msg).to_string())
                })?;
                let target = match (o.target, o.provider, o.model) {
                    (Some(t), None, None) => t,
                    (None, Some(p), Some(m)) => format!("{p}/{m}"),
                    (None, Some(p), None) => {
                        return Err(serde::de::Error::custom(format!("provider \"{p}\" needs a model: {{provider: {p}, model: NAME}}")))
                    }
                    (None, None, Some(m)) => {
                        return Err(serde::de::Error::custom(format!(
                            "model \"{m}\" needs its provider: {{provider: NAME, model: {m}}} or \"NAME/{m}\""
                        )))
                    }
                    (None, None, None) => {
                        return Err(serde::de::Error::custom("name the target: \"provider/model\" or {provider: NAME, model: MODEL}"))
                    }
                    (Some(_), _, _) => {
                        return Err(serde::de::Error::custom("write either target: provider/model or provider + model, not both"))
                    }
                };
                if o.params.contains_key("model") || o.params.contains_key("messages") {
                    return Err(serde::de::Error::custom("params may not replace model or messages"));
                }
                Ok(RawFallback(Fallback { target, params: o.params }))
            }
            other => Err(serde::de::Error::custom(format!(
                "expected \"provider/model\", {{provider: NAME, model: MODEL}} or {{target: provider/model, params: {{...}}}}, got {}",
                yaml_brief(&other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let p = RetryPolicy { max_retries: 5, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_millis(350) };
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..100 {
            let b1 = p.backoff(1, &mut rng);
            assert!(b1 >= Duration::from_millis(50) && b1 < Duration::from_millis(100), "{b1:?}");
            let b3 = p.backoff(3, &mut rng);
            assert!(b3 >= Duration::from_millis(175) && b3 < Duration::from_millis(350), "{b3:?}");
        }
    }
}
