//! The `metrics:` section: what `/metrics` may label and how its histograms are bucketed.
//!
//! Every setting exists to keep the exposition bounded whatever the traffic: which operator-named
//! entities (virtual keys, teams) may appear as label values at all, how many distinct values one label may
//! take before the rest become `other`, and the histogram buckets (the main size lever: every bucket is a
//! line per label set). The defaults are safe with any amount of traffic; docs/configuration.md explains them.

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::decode::Issues;

/// Seconds. Wide enough for a 10-minute generation, fine enough under a second for a cached or local answer.
pub const DEFAULT_LATENCY_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];

/// Seconds. The gateway's own time is usually well under a millisecond; a bucket above 100 ms means trouble.
pub const DEFAULT_OVERHEAD_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Distinct values one label takes at most by default; past it a value shows as `other`.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 200;

const MAX_LABEL_VALUES_CEILING: usize = 100_000;
const MAX_BUCKETS: usize = 40;

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Virtual-key names as label values: on the residency-split counters (requests, tokens, cost per key,
    /// provider and provider tags) and the budget gauges. Never on histograms.
    pub virtual_key_labels: bool,
    /// Team ids as label values, on the same counters and gauges per team.
    pub team_labels: bool,
    /// Distinct values one label (`model`, `virtual_key`, ...) may take; later ones are `other`, counted in
    /// `switchyard_metric_label_overflow_total`.
    pub max_label_values: usize,
    /// Buckets (seconds) of total latency, upstream latency, time to first token and inter-token gap.
    pub latency_buckets: Vec<f64>,
    /// Buckets (seconds) of the gateway's own overhead.
    pub overhead_buckets: Vec<f64>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            virtual_key_labels: true,
            team_labels: true,
            max_label_values: DEFAULT_MAX_LABEL_VALUES,
            latency_buckets: DEFAULT_LATENCY_BUCKETS.to_vec(),
            overhead_buckets: DEFAULT_OVERHEAD_BUCKETS.to_vec(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    #[serde(default)]
    virtual_key_labels: Option<bool>,
    #[serde(default)]
    team_labels: Option<bool>,
    #[serde(default)]
    max_label_values: Option<usize>,
    #[serde(default)]
    latency_buckets: Option<Vec<Yaml>>,
    #[serde(default)]
    overhead_buckets: Option<Vec<Yaml>>,
}

pub(super) fn metrics(raw: RawMetrics, issues: &mut Issues) -> MetricsConfig {
    let d = MetricsConfig::default();
    let max_label_values = match raw.max_label_values {
        Some(0) => {
            issues.push("metrics.max_label_values", "must be at least 1 (every value past it is shown as `other`)");
            d.max_label_values
        }
        Some(n) if n > MAX_LABEL_VALUES_CEILING => {
            issues.push(
                "metrics.max_label_values",
                format!(
                    "must be at most {MAX_LABEL_VALUES_CEILING}, got {n}; more distinct values than that make /metrics too large to scrape"
                ),
            );
            d.max_label_values
        }
        Some(n) => n,
        None => d.max_label_values,
    };
    MetricsConfig {
        virtual_key_labels: raw.virtual_key_labels.unwrap_or(d.virtual_key_labels),
        team_labels: raw.team_labels.unwrap_or(d.team_labels),
        max_label_values,
        latency_buckets: raw
            .latency_buckets
            .map_or(d.latency_buckets, |b| buckets("metrics.latency_buckets", b, &DEFAULT_LATENCY_BUCKETS, issues)),
        overhead_buckets: raw
            .overhead_buckets
            .map_or(d.overhead_buckets, |b| buckets("metrics.overhead_buckets", b, &DEFAULT_OVERHEAD_BUCKETS, issues)),
    }
}

/// Upper bounds in seconds, strictly increasing: a number (`0.5`) or a duration (`500ms`, `2s`).
fn buckets(path: &str, raw: Vec<Yaml>, default: &[f64], issues: &mut Issues) -> Vec<f64> {
    if raw.is_empty() || raw.len() > MAX_BUCKETS {
        issues.push(path, format!("expected 1 to {MAX_BUCKETS} bucket bounds (seconds, increasing), got {}", raw.len()));
        return default.to_vec();
    }
    let before = issues.len();
    let mut out: Vec<f64> = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let secs = match v {
            Yaml::Number(n) => n.as_f64(),
            Yaml::String(s) => super::parse_duration(s).map(|d| d.as_secs_f64()),
            _ => None,
        };
        match secs {
            Some(s) if s.is_finite() && s > 0.0 => {
                if out.last().is_some_and(|&prev| s <= prev) {
                    issues.push(at, format!("bounds must increase: {s} is not above the one before it"));
                }
                out.push(s);
            }
            _ => issues.push(at, "expected a positive number of seconds (0.25) or a duration (250ms, 2s)"),
        }
    }
    if issues.len() == before {
        out
    } else {
        default.to_vec()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::parse_str;

    fn parse(yaml: &str) -> Result<MetricsConfig, Vec<String>> {
        parse_str(yaml, &BTreeMap::new())
            .map(|c| c.metrics)
            .map_err(|e| e.issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect())
    }

    #[test]
    fn defaults_are_bounded_and_a_section_overrides_them() {
        assert_eq!(parse("{}").unwrap(), MetricsConfig::default());
        let m = parse("metrics:\n  virtual_key_labels: false\n  max_label_values: 50\n  latency_buckets: [0.1, 500ms, 2s, 10]\n").unwrap();
        assert!(!m.virtual_key_labels && m.team_labels);
        assert_eq!(m.max_label_values, 50);
        assert_eq!(m.latency_buckets, vec![0.1, 0.5, 2.0, 10.0]);
        assert_eq!(m.overhead_buckets, DEFAULT_OVERHEAD_BUCKETS.to_vec());
    }

    #[test]
    fn every_mistake_is_named_with_its_path() {
        let e = parse("metrics:\n  max_label_values: 0\n  latency_buckets: [1, 0.5, -1, soon]\n  overhead_buckets: []\n  labels: all\n")
            .unwrap_err();
        let has = |p: &str| e.iter().any(|l| l.starts_with(p));
        assert!(has("metrics.max_label_values: must be at least 1"), "{e:#?}");
        assert!(has("metrics.latency_buckets[1]: bounds must increase"), "{e:#?}");
        assert!(has("metrics.latency_buckets[2]: expected a positive number"), "{e:#?}");
        assert!(has("metrics.latency_buckets[3]: expected a positive number"), "{e:#?}");
        assert!(has("metrics.overhead_buckets: expected 1 to 40"), "{e:#?}");
        assert!(e.iter().any(|l| l.starts_with("metrics") && l.contains("labels")), "{e:#?}");
        let e = parse("metrics:\n  max_label_values: 1000000\n").unwrap_err();
        assert!(e[0].contains("at most 100000"), "{e:#?}");
    }
}
