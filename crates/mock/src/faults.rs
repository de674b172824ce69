//! Latency and fault injection, shared by every flavour: resolving the effective knobs of one request
//! (behaviour, then `x-mock-*` headers, then the model-name suffix), drawing a fault, and turning a list of
//! stream frames into a timed body that can stall, break or abort the connection on command. It exists so
//! that the flavours only describe *what* they send; *how* it arrives (late, broken, cut) lives here.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use crate::common::{bytes_response, ApiError, Ctx};
use crate::{Behavior, FaultKind, MockHandle};

/// How long a `hang` fault waits before giving up on its own (the client or shutdown usually ends it first).
const HANG: Duration = Duration::from_secs(3_600);
/// The delay of a `slow_first_byte` fault.
const SLOW_FIRST_BYTE: Duration = Duration::from_secs(30);
/// A pause before a `reset` abort so the bytes before it reach the client.
const ABORT_FLUSH: Duration = Duration::from_millis(30);

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
                other => tracing::debug!(key = other, "unknown mock override ignored"),
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

/// Sleeps `d`, cut short when the mock shuts down.
pub(crate) async fn pause(handle: &MockHandle, d: Duration) {
    if d.is_zero() {
        return;
    }
    let mut closing = handle.closing();
    if *closing.borrow() {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = closing.changed() => {}
    }
}

/// Draws and applies the request's fault before the flavour answers. `Err` is a status to answer
/// with; `Ok(Some(kind))` is a fault the flavour's renderer applies to the body (reset, malformed,
/// stream_error).
pub(crate) async fn gate(ctx: &Ctx) -> Result<Option<FaultKind>, ApiError> {
    let Some(fault) = ctx.knobs.draw() else {
        return Ok(None);
    };
    ctx.handle.count_fault();
    match fault {
        Fault::Status(s) => Err(ApiError::Status(s)),
        Fault::Kind(FaultKind::Hang) => {
            pause(&ctx.handle, HANG).await;
            Err(ApiError::Status(503))
        }
        Fault::Kind(FaultKind::SlowFirstByte) => {
            pause(&ctx.handle, SLOW_FIRST_BYTE).await;
            Ok(None)
        }
        Fault::Kind(k) => Ok(Some(k)),
    }
}

/// How frames are put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `event: name\n` (optional) + `data: json\n\n`.
    Sse,
    /// One JSON object per line.
    Ndjson,
}

/// One stream event as the flavour describes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Frame {
    pub event: Option<&'static str>,
    pub data: String,
    /// Carries answer content (text or tool arguments); `reset` counts these.
    pub content: bool,
}

impl Frame {
    pub fn data(v: &Value) -> Frame {
        Frame { event: None, data: v.to_string(), content: false }
    }

    pub fn raw(data: &str) -> Frame {
        Frame { event: None, data: data.to_string(), content: false }
    }

    pub fn named(event: &'static str, v: &Value) -> Frame {
        Frame { event: Some(event), data: v.to_string(), content: false }
    }

    pub fn content(mut self) -> Frame {
        self.content = true;
        self
    }

    fn encode(&self, framing: Framing) -> Bytes {
        match framing {
            Framing::Sse => {
                let mut s = String::with_capacity(self.data.len() + 32);
                if let Some(e) = self.event {
                    s.push_str("event: ");
                    s.push_str(e);
                    s.push('\n');
                }
                s.push_str("data: ");
                s.push_str(&self.data);
                s.push_str("\n\n");
                Bytes::from(s)
            }
            Framing::Ndjson => Bytes::from(format!("{}\n", self.data)),
        }
    }

    /// The same frame with its JSON cut in half.
    fn broken(&self) -> Frame {
        let mut cut = self.data.len() / 2;
        while cut > 0 && !self.data.is_char_boundary(cut) {
            cut -= 1;
        }
        Frame { event: self.event, data: self.data[..cut].to_string(), content: self.content }
    }
}

enum Step {
    Send(Bytes),
    Abort,
}

/// Applies a body fault to the frames of a stream.
fn plan(frames: Vec<Frame>, framing: Framing, error_frame: Frame, kind: Option<FaultKind>) -> Vec<Step> {
    let send = |f: &Frame| Step::Send(f.encode(framing));
    match kind {
        Some(FaultKind::StreamError) => vec![send(&error_frame)],
        Some(FaultKind::Reset) => {
            let content: Vec<usize> = frames.iter().enumerate().filter(|(_, f)| f.content).map(|(i, _)| i).collect();
            let last = content.get(1).or(content.last()).copied().unwrap_or(0);
            let mut steps: Vec<Step> = frames.iter().take(last + 1).map(send).collect();
            steps.push(Step::Abort);
            steps
        }
        Some(FaultKind::Malformed) => {
            let first = frames.iter().position(|f| f.content).unwrap_or(0);
            let mut steps: Vec<Step> = frames.iter().take(first + 1).map(send).collect();
            let victim = frames.get(first + 1).or(frames.get(first));
            if let Some(v) = victim {
                steps.push(send(&v.broken()));
            }
            steps
        }
        _ => frames.iter().map(send).collect(),
    }
}

fn timed_body(steps: Vec<Step>, ttft: Duration, gap: Duration) -> Body {
    let state = (steps.into_iter(), 0usize);
    Body::from_stream(futures_util::stream::unfold(state, move |(mut it, i)| async move {
        let step = it.next()?;
        let item = match step {
            Step::Send(b) => {
                let d = if i == 0 { ttft } else { gap };
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
                Ok(b)
            }
            Step::Abort => {
                // Let hyper flush what was sent so far (it flushes while the body is pending),
                // so the client really sees a body cut short rather than no response at all.
                tokio::time::sleep(ABORT_FLUSH).await;
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock fault: connection reset"))
            }
        };
        Some((item, (it, i + 1)))
    }))
}

/// A 200 stream response for `frames`, with the request's timing and body fault applied.
pub(crate) fn stream_response(
    ctx: &Ctx,
    framing: Framing,
    frames: Vec<Frame>,
    error_frame: Frame,
    kind: Option<FaultKind>,
    mut headers: Vec<(&'static str, String)>,
) -> Response {
    let content_type = match framing {
        Framing::Sse => "text/event-stream; charset=utf-8",
        Framing::Ndjson => "application/x-ndjson",
    };
    headers.push(("cache-control", "no-cache".to_string()));
    let steps = plan(frames, framing, error_frame, kind);
    let body = timed_body(steps, ctx.knobs.ttft, ctx.knobs.chunk_delay);
    bytes_response(200, content_type, &headers, body)
}

/// A 200 JSON response, broken as the body fault says (reset: abort halfway; malformed: half a document).
pub(crate) fn json_ok(kind: Option<FaultKind>, headers: &[(&'static str, String)], body: &Value) -> Response {
    let full = body.to_string();
    let half = {
        let mut cut = full.len() / 2;
        while cut > 0 && !full.is_char_boundary(cut) {
            cut -= 1;
        }
        full[..cut].to_string()
    };
    let body = match kind {
        Some(FaultKind::Reset) => timed_body(vec![Step::Send(Bytes::from(half)), Step::Abort], Duration::ZERO, Duration::ZERO),
        Some(FaultKind::Malformed) => Body::from(half),
        _ => Body::from(full),
    };
    bytes_response(200, "application/json", headers, body)
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
    fn default_code_is_500() {
        let b = Behavior { fault_rate: 1.0, ..Behavior::default() };
        let k = Knobs::resolve(&b, &HeaderMap::new(), &[]);
        assert_eq!(k.draw(), Some(Fault::Status(500)));
    }
}
