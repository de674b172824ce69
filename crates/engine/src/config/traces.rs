//! The `traces:` section: OpenTelemetry export of each request's spans over OTLP (HTTP, protobuf).
//!
//! ```yaml
//! traces:
//!   otlp_endpoint: http://collector:4318     # /v1/traces is added unless the URL already ends with it
//!   headers: {authorization: env.OTLP_AUTH}  # sent with every export (values may come from the environment)
//!   service_name: switchyard
//!   sample_ratio: 1.0                        # of the traces the caller did not decide (see below)
//! ```
//!
//! Off unless an endpoint is given (here, with `--otlp-endpoint`, or in `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, as every OpenTelemetry SDK reads them). A caller's `traceparent`
//! decides its trace's sampling (parent-based, as the W3C flag says); `sample_ratio` applies to the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::decode::Issues;
use super::Env;

/// The decoded section; `None` on `Config` means traces are off.
#[derive(Debug, Clone, PartialEq)]
pub struct TracesConfig {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub service_name: String,
    /// 0..=1, of the traces whose caller sent no sampling decision.
    pub sample_ratio: f64,
    /// Requests whose spans wait for export at most; more are dropped and counted.
    pub queue: usize,
    /// Requests exported in one POST at most.
    pub batch: usize,
    /// How often a partial batch is sent.
    pub flush: Duration,
    /// One export's time limit.
    pub timeout: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraces {
    #[serde(default)]
    otlp_endpoint: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    sample_ratio: Option<f64>,
    #[serde(default)]
    queue: Option<usize>,
    #[serde(default)]
    batch: Option<usize>,
    #[serde(default)]
    flush: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

/// The section, or `None` when no endpoint is configured anywhere. Every mistake is reported at its path.
pub(super) fn resolve(raw: Option<RawTraces>, env: &dyn Env, issues: &mut Issues) -> Option<TracesConfig> {
    let at = "traces";
    let raw = raw.unwrap_or_default();
    let from_env = || {
        env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .map(|u| (u, true))
            .or_else(|| env.var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|u| (u, false)))
    };
    let (url, full) = match raw.otlp_endpoint.clone() {
        Some(u) => match u.strip_prefix("env.") {
            Some(var) => match env.var(var) {
                Some(v) => (v, false),
                None => {
                    issues.push(format!("{at}.otlp_endpoint"), format!("environment variable {var} is not set (or empty)"));
                    return None;
                }
            },
            None => (u, false),
        },
        None => from_env()?,
    };
    let url = url.trim().trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len() {
        issues.push(
            format!("{at}.otlp_endpoint"),
            format!("expected an http:// or https:// URL such as http://localhost:4318 (OTLP over HTTP), got {url:?}"),
        );
        return None;
    }
    // The per-signal variable is the full URL; the general one and this file's key name the collector.
    let endpoint = if full || url.ends_with("/v1/traces") { url } else { format!("{url}/v1/traces") };
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let path = format!("{at}.headers.{name}");
        let value = match value.strip_prefix("env.") {
            Some(var) => match env.var(var) {
                Some(v) => v,
                None => {
                    issues.push(path, format!("environment variable {var} is not set (or empty)"));
                    continue;
                }
            },
            None => value,
        };
        if http::HeaderName::try_from(name.as_str()).is_err() || http::HeaderValue::try_from(value.as_str()).is_err() {
            issues.push(path, "not a valid HTTP header name and value");
            continue;
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        issues.push(format!("{at}.sample_ratio"), format!("must be between 0 and 1, got {sample_ratio}"));
    }
    let mut count = |field: &str, v: Option<usize>, default: usize| match v {
        Some(0) => {
            issues.push(format!("{at}.{field}"), "must be at least 1");
            default
        }
        Some(n) => n,
        None => default,
    };
    let queue = count("queue", raw.queue, 4096);
    let batch = count("batch", raw.batch, 256);
    let mut duration = |field: &str, v: Option<String>, default: Duration| match v {
        None => default,
        Some(s) => super::parse_duration(&s).filter(|d| !d.is_zero()).unwrap_or_else(|| {
            issues.push(format!("{at}.{field}"), format!("expected a duration such as 1s or 500ms, got {s:?}"));
            default
        }),
    };
    let flush = duration("flush", raw.flush, Duration::from_secs(1));
    let timeout = duration("timeout", raw.timeout, Duration::from_secs(5));
    let service_name = raw.service_name.or_else(|| env.var("OTEL_SERVICE_NAME")).unwrap_or_else(|| "switchyard".into());
    Some(TracesConfig { endpoint, headers, service_name, sample_ratio, queue, batch, flush, timeout })
}

/// `traces:` as a YAML value, decoded at its path.
pub(super) fn decode(v: Yaml, issues: &mut Issues) -> Option<RawTraces> {
    match v {
        Yaml::Null => None,
        v => issues.decode::<RawTraces>("traces", v),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use crate::config::parse_str;

    fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn traces_are_off_without_an_endpoint_and_on_from_the_file_or_the_standard_variables() {
        assert_eq!(parse_str("", &env(&[])).unwrap().traces, None);
        let t = parse_str("traces:\n  otlp_endpoint: http://collector:4318/\n", &env(&[])).unwrap().traces.unwrap();
        assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
        assert_eq!((t.service_name.as_str(), t.sample_ratio, t.queue, t.batch), ("switchyard", 1.0, 4096, 256));
        // The general variable names the collector; the traces-only one is the full URL, as the spec says.
        let t = parse_str("", &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SERVICE_NAME", "edge-3")]));
        let t = t.unwrap().traces.unwrap();
        assert_eq!((t.endpoint.as_str(), t.service_name.as_str()), ("http://c:4318/v1/traces", "edge-3"));
        let t = parse_str("", &env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")])).unwrap().traces.unwrap();
        assert_eq!(t.endpoint, "http://c:4318/custom");
        let t =
            parse_str("traces:\n  otlp_endpoint: http://c:4318\n  headers: {Authorization: env.TOKEN}\n", &env(&[("TOKEN", "Bearer x")]));
        assert_eq!(t.unwrap().traces.unwrap().headers, vec![("authorization".to_string(), "Bearer x".to_string())]);
    }

    #[test]
    fn every_mistake_in_the_traces_section_is_named_with_its_path() {
        let text = parse_str("traces:\n  otlp_endpoint: collector:4317\n", &env(&[])).unwrap_err().to_string();
        assert!(text.contains("traces.otlp_endpoint: expected an http:// or https:// URL"), "{text}");
        let bad =
            "traces:\n  otlp_endpoint: http://c:4318\n  sample_ratio: 2\n  queue: 0\n  flush: soon\n  headers: {x-auth: env.MISSING}\n";
        let text = parse_str(bad, &env(&[])).unwrap_err().to_string();
        for needle in [
            "traces.sample_ratio: must be between 0 and 1",
            "traces.queue: must be at least 1",
            "traces.flush: expected a duration",
            "traces.headers.x-auth: environment variable MISSING is not set",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        let text = parse_str("traces:\n  endpoint: http://c:4318\n", &env(&[])).unwrap_err().to_string();
        assert!(text.contains("traces.endpoint: unknown field") && text.contains("otlp_endpoint"), "{text}");
    }
}
