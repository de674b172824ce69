//! The `logs:` section: the request log (see [`crate::reqlog`]), one record per request, kept in the
//! gateway's store (SQLite in the data directory, or PostgreSQL), or in memory without one.
//!
//! ```yaml
//! logs:
//!   enabled: true        # the request log (the per-request log line is `--no-request-log`)
//!   bodies: false        # also keep request and response bodies
//!   max_body_size: 16KiB # each body cut to this
//!   retention: 7d        # rows older than this are deleted
//!   max_rows: 1000000    # and the oldest beyond this many
//!   stats_retention: 90d # the dashboard's rollups are kept this long
//!   queue: 10000         # records waiting for the writer; more are dropped and counted
//!   batch: 500           # records per write
//!   flush: 500ms         # the writer waits this long between writes
//! ```
//!
//! The defaults are safe with no configuration at all: bodies off, a bounded queue whose memory is a few
//! tens of megabytes at worst, and a table that cannot grow past `max_rows`.

use std::time::Duration;

use serde::Deserialize;

use super::decode::Issues;
use super::{ByteSize, DurationStr};

/// The decoded `logs:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub enabled: bool,
    pub bodies: bool,
    pub max_body_bytes: usize,
    pub retention: Duration,
    pub max_rows: u64,
    /// How long the rollups behind `/api/stats` are kept (at least `retention`).
    pub stats_retention: Duration,
    pub queue: usize,
    pub batch: usize,
    pub flush: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            enabled: true,
            bodies: false,
            max_body_bytes: 16 << 10,
            retention: Duration::from_secs(7 * 86_400),
            max_rows: 1_000_000,
            stats_retention: Duration::from_secs(90 * 86_400),
            queue: 10_000,
            batch: 500,
            flush: Duration::from_millis(500),
        }
    }
}

impl LogSettings {
    /// The batch writer's sizing.
    pub fn batching(&self) -> crate::batch::BatchSettings {
        crate::batch::BatchSettings {
            queue: self.queue,
            batch: self.batch,
            linger: self.flush,
            dropped_metric: "switchyard_request_log_dropped_total",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogs {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    bodies: Option<bool>,
    #[serde(default)]
    max_body_size: Option<ByteSize>,
    #[serde(default)]
    retention: Option<DurationStr>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    stats_retention: Option<DurationStr>,
    #[serde(default)]
    queue: Option<usize>,
    #[serde(default)]
    batch: Option<usize>,
    #[serde(default)]
    flush: Option<DurationStr>,
}

/// Rows per write statement are bounded by the databases' parameter limits; a batch is split as needed,
/// but more than this in one transaction only makes the writer's lock longer.
const MAX_BATCH: usize = 10_000;

/// Checks the section; every mistake is reported at its path and the default stands in for it.
pub(super) fn settings(raw: RawLogs, issues: &mut Issues) -> LogSettings {
    let d = LogSettings::default();
    let positive = |issues: &mut Issues, field: &str, v: Option<u64>, default: u64, max: u64| match v {
        Some(0) => {
            issues.push(format!("logs.{field}"), format!("must be at least 1; remove it for the default ({default})"));
            default
        }
        Some(n) if n > max => {
            issues.push(format!("logs.{field}"), format!("must be at most {max}"));
            default
        }
        Some(n) => n,
        None => default,
    };
    let duration = |issues: &mut Issues, field: &str, v: Option<DurationStr>, default: Duration, min: Duration| match v {
        Some(t) if t.0 < min => {
            issues.push(format!("logs.{field}"), format!("must be at least {}", crate::human::duration(min)));
            default
        }
        Some(t) => t.0,
        None => default,
    };
    let max_body_bytes = match raw.max_body_size {
        Some(b) if b.0 == 0 => {
            issues.push("logs.max_body_size", "must be greater than zero; set logs.bodies: false to keep no bodies");
            d.max_body_bytes
        }
        Some(b) if b.0 > 16 << 20 => {
            issues.push("logs.max_body_size", "must be at most 16MiB: bodies are held in the writer's queue until written");
            d.max_body_bytes
        }
        Some(b) => b.0,
        None => d.max_body_bytes,
    };
    let retention = duration(issues, "retention", raw.retention, d.retention, Duration::from_secs(1));
    let stats_retention = duration(issues, "stats_retention", raw.stats_retention, d.stats_retention, Duration::from_secs(1));
    if stats_retention < retention {
        issues.push(
            "logs.stats_retention",
            format!(
                "is shorter than logs.retention ({}): the dashboard would lose what the log still shows; raise it or remove it",
                crate::human::duration(retention)
            ),
        );
    }
    let queue = positive(issues, "queue", raw.queue.map(|n| n as u64), d.queue as u64, 10_000_000) as usize;
    let batch = positive(issues, "batch", raw.batch.map(|n| n as u64), d.batch as u64, MAX_BATCH as u64) as usize;
    LogSettings {
        enabled: raw.enabled.unwrap_or(d.enabled),
        bodies: raw.bodies.unwrap_or(d.bodies),
        max_body_bytes,
        retention,
        max_rows: positive(issues, "max_rows", raw.max_rows, d.max_rows, i64::MAX as u64),
        stats_retention: stats_retention.max(retention),
        queue,
        batch,
        flush: duration(issues, "flush", raw.flush, d.flush, Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::parse_str;

    fn env() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn the_logs_section_has_safe_defaults_takes_overrides_and_names_each_mistake() {
        let c = parse_str("", &env()).unwrap();
        assert_eq!(c.logs, LogSettings::default());
        assert!(c.logs.enabled && !c.logs.bodies);

        let c = parse_str(
            "logs:\n  bodies: true\n  max_body_size: 4KiB\n  retention: 1d\n  max_rows: 5000\n  stats_retention: 30d\n  queue: 64\n  batch: 8\n  flush: 0s\n",
            &env(),
        )
        .unwrap();
        let l = &c.logs;
        assert!(l.bodies && l.enabled);
        assert_eq!((l.max_body_bytes, l.max_rows, l.queue, l.batch), (4096, 5000, 64, 8));
        assert_eq!(
            (l.retention, l.stats_retention, l.flush),
            (Duration::from_secs(86_400), Duration::from_secs(30 * 86_400), Duration::ZERO)
        );
        assert!(!parse_str("logs:\n  enabled: false\n", &env()).unwrap().logs.enabled);

        let bad = "logs:\n  queue: 0\n  batch: 20000\n  max_rows: 0\n  max_body_size: 0\n  retention: 10d\n  stats_retention: 1d\n  flush: soon\n";
        let text = parse_str(bad, &env()).unwrap_err().to_string();
        for needle in [
            "logs.queue: must be at least 1",
            "logs.batch: must be at most 10000",
            "logs.max_rows: must be at least 1",
            "logs.max_body_size: must be greater than zero",
            "logs.stats_retention: is shorter than logs.retention",
            "logs.flush: expected a duration",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        let text = parse_str("logs:\n  max_body_bytes: 10\n", &env()).unwrap_err().to_string();
        assert!(text.contains("logs.max_body_bytes: unknown field") && text.contains("max_body_size"), "{text}");
        let text = parse_str("log:\n  bodies: true\n", &env()).unwrap_err().to_string();
        assert!(text.contains("did you mean `logs`"), "{text}");
    }
}
