//! Resilience settings: retries, circuit breakers, key cooldowns, overload limits, hedging and fallbacks
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
        let exp = self.initial_backoff.saturating_mul(1u32 << (n.saturating_sub(1)).min(16));
        exp.min(self.max_backoff).mul_f64(0.5 + rng.f64() * 0.5)
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

/// When a provider (or one of its keys) is taken out of rotation, and how it comes back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    pub enabled: bool,
    /// The rolling window the error rate is measured over.
    pub window: Duration,
    /// Fewest requests in the window before the error rate can open the breaker.
    pub min_requests: u32,
    /// Error rate (0..1) in the window that opens the breaker.
    pub failure_rate: f64,
    /// Consecutive failures that open the breaker whatever the rate (0: off).
    pub consecutive_failures: u32,
    /// How long an open breaker refuses traffic before letting probes through.
    pub open_for: Duration,
    /// Share of requests let through as probes while half-open.
    pub half_open_share: f64,
    /// Successful probes that close the breaker again.
    pub half_open_successes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            enabled: true,
            window: Duration::from_secs(10),
            min_requests: 20,
            // 0.5 would never trip on a provider failing 40% of requests, which must leave the path.
            failure_rate: 0.3,
            consecutive_failures: 5,
            open_for: Duration::from_secs(15),
            half_open_share: 0.1,
            half_open_successes: 3,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    enabled: Option<bool>,
    window: Option<DurationStr>,
    min_requests: Option<u32>,
    failure_rate: Option<f64>,
    consecutive_failures: Option<u32>,
    open_for: Option<DurationStr>,
    half_open_share: Option<f64>,
    half_open_successes: Option<u32>,
}

impl RawBreaker {
    /// Resolves against the defaults; `Err` names the field that is out of range.
    pub(super) fn resolve(self) -> Result<BreakerPolicy, (&'static str, String)> {
        let d = BreakerPolicy::default();
        let p = BreakerPolicy {
            enabled: self.enabled.unwrap_or(d.enabled),
            window: self.window.map(|x| x.0).unwrap_or(d.window),
            min_requests: self.min_requests.unwrap_or(d.min_requests),
            failure_rate: self.failure_rate.unwrap_or(d.failure_rate),
            consecutive_failures: self.consecutive_failures.unwrap_or(d.consecutive_failures),
            open_for: self.open_for.map(|x| x.0).unwrap_or(d.open_for),
            half_open_share: self.half_open_share.unwrap_or(d.half_open_share),
            half_open_successes: self.half_open_successes.unwrap_or(d.half_open_successes),
        };
        if !(p.failure_rate > 0.0 && p.failure_rate <= 1.0) {
            return Err(("failure_rate", format!("must be in (0, 1], got {}", p.failure_rate)));
        }
        if !(p.half_open_share > 0.0 && p.half_open_share <= 1.0) {
            return Err(("half_open_share", format!("must be in (0, 1], got {}", p.half_open_share)));
        }
        if p.window < Duration::from_secs(1) {
            return Err(("window", "must be at least 1s".into()));
        }
        if p.half_open_successes == 0 {
            return Err(("half_open_successes", "must be at least 1".into()));
        }
        Ok(p)
    }
}

/// How long a key sits out after the provider refused it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CooldownPolicy {
    /// After a 429 without `Retry-After` (with one, its value is used).
    pub rate_limited: Duration,
    /// After a 401/402/403: the key is out until this passes, then one request probes it.
    pub key_invalid: Duration,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy { rate_limited: Duration::from_secs(5), key_invalid: Duration::from_secs(300) }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCooldown {
    rate_limited: Option<DurationStr>,
    key_invalid: Option<DurationStr>,
}

impl RawCooldown {
    pub(super) fn resolve(self) -> CooldownPolicy {
        let d = CooldownPolicy::default();
        CooldownPolicy {
            rate_limited: self.rate_limited.map(|x| x.0).unwrap_or(d.rate_limited),
            key_invalid: self.key_invalid.map(|x| x.0).unwrap_or(d.key_invalid),
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

/// `"provider/model"` or `{target: "provider/model", params: {max_tokens: 512}}`.
pub(super) struct RawFallback(pub(super) Fallback);

impl<'de> Deserialize<'de> for RawFallback {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Obj {
            target: String,
            #[serde(default)]
            params: Map<String, Value>,
        }
        let v = Yaml::deserialize(d)?;
        match v {
            Yaml::String(s) => Ok(RawFallback(Fallback::plain(s))),
            Yaml::Mapping(_) => {
                let o: Obj = serde_yaml_ng::from_value(v).map_err(serde::de::Error::custom)?;
                if o.params.contains_key("model") || o.params.contains_key("messages") {
                    return Err(serde::de::Error::custom("params may not replace model or messages"));
                }
                Ok(RawFallback(Fallback { target: o.target, params: o.params }))
            }
            other => Err(serde::de::Error::custom(format!(
                "expected \"provider/model\" or {{target: provider/model, params: {{...}}}}, got {}",
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
