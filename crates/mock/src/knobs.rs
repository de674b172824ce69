//! The knobs in force for one request: the mock's [`Behavior`], overridden by `x-mock-*` headers,
//! overridden by the model-name suffix, and the fault they draw. It exists apart from `faults` (which
//! applies a drawn fault to an answer and needs the request context) so that the request context in
//! `common` can hold the resolved knobs without `common` and `faults` importing each other.

use std::time::Duration;

use axum::http::HeaderMap;

use crate::{Behavior, FaultKind, KeyEcho};

/// The knobs in force for one request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Knobs {
    pub latency: Duration,
    /// `latency` varies uniformly by up to this much either way.
    pub jitter: Duration,
    pub ttft: Duration,
    pub chunk_delay: Duration,
    pub fault_rate: f64,
    pub fault_codes: Vec<u16>,
    pub fault_kind: Option<FaultKind>,
    pub retry_after: Option<u64>,
    /// Prompts of more tokens than this get the flavour's context-length error.
    pub context_window: Option<u64>,
    /// Error messages quote the presented key in this form.
    pub echo_key: Option<KeyEcho>,
    /// Streams: after the first content frame, a line of this many bytes that never ends.
    pub endless_line: Option<u64>,
    /// Non-stream JSON answers are padded with whitespace to this many bytes.
    pub huge_body: Option<u64>,
    /// The body stops after this many bytes and sends nothing more until the client leaves.
    pub stall_after: Option<u64>,
    /// The body goes out one byte at a time with this pause before each byte.
    pub trickle: Option<Duration>,
}

/// A drawn fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Status(u16),
    Kind(FaultKind),
}

/// Splits `model+key=value+key=value` into the model and the pairs. If any segment after a `+` is not
/// `key=value`, the name is taken as it is (a `+` can be part of a real model name).
pub(crate) fn split_model_suffix(model: &str) -> (String, Vec<(String, String)>) {
    let mut segments = model.split('+');
    let base = segments.next().unwrap_or_default();
    let mut pairs = Vec::new();
    for seg in segments {
        match seg.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => pairs.push((k.trim().to_ascii_lowercase(), v.trim().to_string())),
            _ => return (model.to_string(), Vec::new()),
        }
    }
    (base.to_string(), pairs)
}

fn parse_codes(s: &str) -> Option<Vec<u16>> {
    let codes: Vec<u16> = s
        .split([',', ' ', '|'])
        .filter(|c| !c.is_empty())
        .filter_map(|c| c.trim().parse().ok())
        .filter(|c| (100..=999).contains(c))
        .collect();
    (!codes.is_empty()).then_some(codes)
}

fn ms(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_millis)
}

impl Knobs {
    /// Behaviour, overridden by `x-mock-*` headers, overridden by the model suffix.
    pub fn resolve(b: &Behavior, headers: &HeaderMap, suffix: &[(String, String)]) -> Knobs {
        let mut k = Knobs {
            latency: Duration::from_millis(b.latency_ms),
            jitter: Duration::from_millis(b.latency_jitter_ms),
            ttft: Duration::from_millis(b.ttft_ms),
            chunk_delay: Duration::from_millis(b.chunk_delay_ms),
            fault_rate: b.fault_rate,
            fault_codes: b.fault_codes.clone(),
            fault_kind: b.fault_kind,
            retry_after: b.retry_after_secs,
            context_window: b.context_window,
            echo_key: b.echo_key,
            endless_line: b.endless_line_bytes,
            huge_body: b.huge_body_bytes,
            stall_after: b.stall_after_bytes,
            trickle: (b.trickle_ms > 0).then(|| Duration::from_millis(b.trickle_ms)),
        };
        let mut rate: Option<f64> = None;
        let mut codes: Option<Vec<u16>> = None;
        let mut kind: Option<FaultKind> = None;
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (name, key) in [
            ("x-mock-latency-ms", "latency"),
            ("x-mock-jitter-ms", "jitter"),
            ("x-mock-ttft-ms", "ttft"),
            ("x-mock-chunk-delay-ms", "chunk_delay"),
            ("x-mock-fault-rate", "fault"),
            ("x-mock-fault-codes", "code"),
            ("x-mock-fault-kind", "kind"),
            ("x-mock-retry-after", "retry_after"),
            ("x-mock-context-window", "context"),
            ("x-mock-echo-key", "echo_key"),
            ("x-mock-endless-line", "endless_line"),
            ("x-mock-huge-body", "huge_body"),
            ("x-mock-stall-after", "stall_after"),
            ("x-mock-trickle-ms", "trickle"),
        ] {
            if let Some(v) = header(name) {
                pairs.push((key, v));
            }
        }
        pairs.extend(suffix.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        for (key, v) in pairs {
            match key {
                "latency" | "latency_ms" => k.latency = ms(v).unwrap_or(k.latency),
                "jitter" | "jitter_ms" => k.jitter = ms(v).unwrap_or(k.jitter),
                "ttft" | "ttft_ms" => k.ttft = ms(v).unwrap_or(k.ttft),
                "chunk_delay" | "chunk_delay_ms" | "delay" => k.chunk_delay = ms(v).unwrap_or(k.chunk_delay),
                "fault" | "fault_rate" | "rate" => {
                    rate = v.trim().parse::<f64>().ok().or(rate);
                }
                "code" | "codes" | "fault_codes" => codes = parse_codes(v).or(codes),
                "kind" | "fault_kind" => kind = FaultKind::parse(v).or(kind),
                "retry_after" => k.retry_after = v.trim().parse().ok().or(k.retry_after),
                "context" | "context_window" => k.context_window = v.trim().parse().ok().or(k.context_window),
                "echo_key" => k.echo_key = KeyEcho::parse(v).or(k.echo_key),
                "endless_line" => k.endless_line = v.trim().parse().ok().or(k.endless_line),
                "huge_body" => k.huge_body = v.trim().parse().ok().or(k.huge_body),
                "stall_after" => k.stall_after = v.trim().parse().ok().or(k.stall_after),
                "trickle" | "trickle_ms" => k.trickle = ms(v).filter(|d| !d.is_zero()).or(k.trickle),
                other => tracing::debug!(key = %other, "unknown mock override ignored"),
            }
        }
        if codes.is_some() || kind.is_some() {
            // Naming a fault in the request means "fail this one" unless a rate says otherwise.
            k.fault_rate = rate.unwrap_or(1.0);
            if let Some(c) = codes {
                k.fault_codes = c;
                k.fault_kind = kind;
            } else {
                k.fault_kind = kind;
            }
        } else if let Some(r) = rate {
            k.fault_rate = r;
        }
        k
    }

    /// The latency for this request: `latency` ± up to `jitter`, uniformly.
    pub fn jittered_latency(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.latency;
        }
        let j = self.jitter.as_secs_f64();
        let ms = self.latency.as_secs_f64() + (fastrand::f64() * 2.0 - 1.0) * j;
        Duration::from_secs_f64(ms.max(0.0))
    }

    /// Draws a fault at `fault_rate`: the kind if one is set, else a status from `fault_codes` (or 500).
    pub fn draw(&self) -> Option<Fault> {
        if self.fault_rate.is_nan() || self.fault_rate <= 0.0 {
            return None;
        }
        if self.fault_rate < 1.0 && fastrand::f64() >= self.fault_rate {
            return None;
        }
        if let Some(kind) = self.fault_kind {
            return Some(Fault::Kind(kind));
        }
        let code = if self.fault_codes.is_empty() { 500 } else { self.fault_codes[fastrand::usize(..self.fault_codes.len())] };
        Some(Fault::Status(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_split() {
        let (m, p) = split_model_suffix("gpt-4o-mini+fault=1+code=529");
        assert_eq!(m, "gpt-4o-mini");
        assert_eq!(p, vec![("fault".to_string(), "1".to_string()), ("code".to_string(), "529".to_string())]);
        let (m, p) = split_model_suffix("weird+name");
        assert_eq!(m, "weird+name");
        assert!(p.is_empty());
        assert_eq!(split_model_suffix("plain").0, "plain");
    }

    #[test]
    fn precedence() {
        let b = Behavior { latency_ms: 5, fault_rate: 0.0, fault_kind: Some(FaultKind::Hang), ..Behavior::default() };
        let mut h = HeaderMap::new();
        h.insert("x-mock-latency-ms", "7".parse().unwrap());
        let k = Knobs::resolve(&b, &h, &[]);
        assert_eq!(k.latency, Duration::from_millis(7));
        assert_eq!(k.fault_rate, 0.0);
        let (_, s) = split_model_suffix("m+latency=9+code=429");
        let k = Knobs::resolve(&b, &h, &s);
        assert_eq!(k.latency, Duration::from_millis(9));
        assert_eq!(k.fault_rate, 1.0);
        assert_eq!(k.fault_kind, None);
        assert_eq!(k.draw(), Some(Fault::Status(429)));
        let (_, s) = split_model_suffix("m+kind=reset+fault=0");
        let k = Knobs::resolve(&b, &h, &s);
        assert_eq!(k.draw(), None);
        let (_, s) = split_model_suffix("m+kind=reset");
        assert_eq!(Knobs::resolve(&b, &h, &s).draw(), Some(Fault::Kind(FaultKind::Reset)));
    }

    #[test]
    fn context_window_precedence() {
        let b = Behavior { context_window: Some(100), ..Behavior::default() };
        assert_eq!(Knobs::resolve(&b, &HeaderMap::new(), &[]).context_window, Some(100));
        let mut h = HeaderMap::new();
        h.insert("x-mock-context-window", "50".parse().unwrap());
        assert_eq!(Knobs::resolve(&b, &h, &[]).context_window, Some(50));
        let (_, s) = split_model_suffix("m+context=7");
        assert_eq!(Knobs::resolve(&b, &h, &s).context_window, Some(7));
        let (_, s) = split_model_suffix("m+context=lots");
        assert_eq!(Knobs::resolve(&b, &h, &s).context_window, Some(50), "an unparsable value is ignored");
    }

    #[test]
    fn misbehaviour_knobs() {
        let b = Behavior { huge_body_bytes: Some(10), trickle_ms: 0, ..Behavior::default() };
        let k = Knobs::resolve(&b, &HeaderMap::new(), &[]);
        assert_eq!((k.huge_body, k.trickle, k.echo_key), (Some(10), None, None));
        let mut h = HeaderMap::new();
        h.insert("x-mock-echo-key", "masked".parse().unwrap());
        let (_, s) = split_model_suffix("m+endless_line=1000+stall_after=5+trickle=2+huge_body=99");
        let k = Knobs::resolve(&b, &h, &s);
        assert_eq!(k.echo_key, Some(KeyEcho::Masked));
        assert_eq!((k.endless_line, k.stall_after, k.huge_body), (Some(1000), Some(5), Some(99)));
        assert_eq!(k.trickle, Some(Duration::from_millis(2)));
        let (_, s) = split_model_suffix("m+echo_key=bearer");
        assert_eq!(Knobs::resolve(&b, &h, &s).echo_key, Some(KeyEcho::Bearer));
    }

    #[test]
    fn default_code_is_500() {
        let b = Behavior { fault_rate: 1.0, ..Behavior::default() };
        let k = Knobs::resolve(&b, &HeaderMap::new(), &[]);
        assert_eq!(k.draw(), Some(Fault::Status(500)));
    }
}
