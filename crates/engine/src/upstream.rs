//! Talking to upstreams: one HTTP client pool per provider, timeouts on every phase, and the classification
//! of each attempt's outcome.
//!
//! Nothing here knows a provider's JSON: requests arrive built by the codecs, and bodies leave as bytes (or
//! as a decoded stream). What this module owns is time (connect, first byte, idle, total) and turning
//! transport and HTTP failures into an [`Attempt`] with a [`FailureClass`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_wire::codec::{Method, StreamDecoder, StreamEvent, WireRequest};
use switchyard_wire::types::ChatChunk;
use switchyard_wire::{ProviderKind, UpstreamError, WireError};

use crate::config::Timeouts;
use crate::error::{Attempt, FailureClass, GatewayError};
use crate::images::error_chain;

/// Largest upstream response body we read (a guard against a runaway upstream, not a product limit).
const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// Error bodies are only read this far: enough for any provider's message.
const MAX_ERROR_BYTES: usize = 64 << 10;

pub fn build_client(t: &Timeouts) -> Result<reqwest::Client, GatewayError> {
    // reqwest is built without a bundled crypto provider; ring is ours. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(t.connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| GatewayError::Internal(format!("cannot build the upstream HTTP client: {}", error_chain(&e))))
}

/// A failed attempt: what to record, and the upstream's own error when it sent one.
#[derive(Debug)]
pub struct Failure {
    pub attempt: Attempt,
    pub upstream: Option<UpstreamError>,
    /// When the upstream said to come back (`retry-after-ms`, `Retry-After`, or a used-up limit's reset).
    pub retry_after: Option<Duration>,
}

/// Who the attempt went to, for the record.
pub struct Label<'a> {
    pub target: &'a str,
    pub key: Option<&'a str>,
}

impl Label<'_> {
    pub fn fail(&self, started: Instant, status: Option<u16>, class: FailureClass, message: impl Into<String>) -> Failure {
        Failure {
            attempt: Attempt {
                target: self.target.to_string(),
                key: self.key.map(str::to_string),
                status,
                class,
                message: message.into(),
                latency_ms: started.elapsed().as_millis() as u64,
                skipped: false,
            },
            upstream: None,
            retry_after: None,
        }
    }
}

fn to_request(client: &reqwest::Client, w: WireRequest) -> reqwest::RequestBuilder {
    let mut rb = match w.method {
        Method::Get => client.get(&w.url),
        Method::Post => client.post(&w.url),
    };
    for (k, v) in &w.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    if w.method == Method::Post {
        rb = rb.body(w.body);
    }
    rb
}

fn transport_failure(label: &Label<'_>, started: Instant, e: &reqwest::Error) -> Failure {
    let class = if e.is_timeout() { FailureClass::Timeout } else { FailureClass::Transient };
    let what = if e.is_connect() { "could not connect" } else { "request failed" };
    label.fail(started, None, class, format!("{what}: {}", error_chain(e)))
}

/// When the upstream says to come back: `retry-after-ms`, `retry-after`, then the reset headers
/// of the rate limits that are used up (OpenAI/Groq `x-ratelimit-reset-*` as Go-style durations, Anthropic
/// `anthropic-ratelimit-*-reset` as RFC 3339 times; the latest of them, since any exhausted limit blocks).
fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let h = resp.headers();
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|s| s.parse::<f64>().ok()).filter(|ms| ms.is_finite() && *ms >= 0.0) {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    if let Some(s) = text("retry-after").and_then(|s| s.parse::<u64>().ok()) {
        return Some(Duration::from_secs(s.min(86_400)));
    }
    // Only the limits that are used up say when to come back (a reset header also rides on answers whose
    // limit still has room).
    let exhausted = |remaining: &str| text(remaining) == Some("0");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let openai = ["requests", "tokens"]
        .into_iter()
        .filter(|l| exhausted(&format!("x-ratelimit-remaining-{l}")))
        .filter_map(|l| text(&format!("x-ratelimit-reset-{l}")).and_then(parse_go_duration));
    let anthropic = ["requests", "tokens", "input-tokens", "output-tokens"]
        .into_iter()
        .filter(|l| exhausted(&format!("anthropic-ratelimit-{l}-remaining")))
        .filter_map(|l| text(&format!("anthropic-ratelimit-{l}-reset")).and_then(parse_rfc3339_utc))
        .map(|at| Duration::from_secs(at.saturating_sub(now)));
    openai.chain(anthropic).max().filter(|d| !d.is_zero())
}

/// `6s`, `1m30s`, `172ms`, `1.57s`, `2h0m0s`.
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..n_end].parse().ok()?;
        let unit_end = rest[n_end..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| n_end + i);
        total += n * match &rest[n_end..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Unix seconds of `2025-08-21T12:40:59Z` (fractional seconds and `+00:00` accepted; other offsets are not
/// used by the providers we read and are refused).
fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, se) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's well-known algorithm.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_header_formats() {
        assert_eq!(parse_go_duration("6s"), Some(Duration::from_secs(6)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("172ms"), Some(Duration::from_millis(172)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_utc("2025-08-21T12:40:59Z"), Some(1_755_780_059));
        assert_eq!(parse_rfc3339_utc("2024-02-29T23:59:59.123+00:00"), Some(1_709_251_199));
        assert_eq!(parse_rfc3339_utc("2025-08-21T12:40:59+02:00"), None);
    }

    fn response(headers: &[(&str, &str)]) -> reqwest::Response {
        let mut b = http::Response::builder().status(429);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        reqwest::Response::from(b.body(Vec::<u8>::new()).unwrap())
    }

    #[test]
    fn retry_after_prefers_explicit_headers_then_exhausted_limits() {
        assert_eq!(retry_after(&response(&[("retry-after-ms", "1500"), ("retry-after", "9")])), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(&response(&[("retry-after", "9")])), Some(Duration::from_secs(9)));
        let used_up = [("x-ratelimit-remaining-tokens", "0"), ("x-ratelimit-reset-tokens", "1m3s"), ("x-ratelimit-reset-requests", "9m")];
        assert_eq!(retry_after(&response(&used_up)), Some(Duration::from_secs(63)), "only the exhausted limit counts");
        assert_eq!(retry_after(&response(&[("x-ratelimit-reset-requests", "9m")])), None, "a limit with room says nothing");
        let reset = "2099-01-01T00:00:00Z";
        let r = retry_after(&response(&[("anthropic-ratelimit-requests-remaining", "0"), ("anthropic-ratelimit-requests-reset", reset)]))
            .unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let want = parse_rfc3339_utc(reset).unwrap() - now;
        assert!(want.abs_diff(r.as_secs()) <= 1, "{r:?} vs {want}");
    }
}

async fn read_limited(resp: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut buf = Vec::with_capacity(resp.content_length().map(|n| (n as usize).min(limit)).unwrap_or(1024));
    while let Some(chunk) = resp.chunk().await? {
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= limit {
            break;
        }
    }
    Ok(buf)
}

/// A non-2xx answer: read its body and classify.
async fn http_failure(kind: ProviderKind, label: &Label<'_>, started: Instant, mut resp: reqwest::Response) -> Failure {
    let status = resp.status().as_u16();
    let ra = retry_after(&resp);
    let body = read_limited(&mut resp, MAX_ERROR_BYTES).await.unwrap_or_default();
    let err = switchyard_wire::codec::parse_error(kind, status, &body);
    let class = FailureClass::of_status(status, &err);
    let mut f = label.fail(started, Some(status), class, err.message.clone());
    f.upstream = Some(err);
    f.retry_after = ra;
    f
}

/// Sends a request whose answer is one body (non-streaming chat, embeddings, model lists).
pub async fn send_complete(
    client: &reqwest::Client,
    kind: ProviderKind,
    timeouts: &Timeouts,
    label: &Label<'_>,
    w: WireRequest,
) -> Result<Bytes, Failure> {
    let started = Instant::now();
    let work = async {
        let mut resp = to_request(client, w).send().await.map_err(|e| transport_failure(label, started, &e))?;
        if !resp.status().is_success() {
            return Err(http_failure(kind, label, started, resp).await);
        }
        let body = read_limited(&mut resp, MAX_RESPONSE_BYTES).await.map_err(|e| transport_failure(label, started, &e))?;
        Ok(Bytes::from(body))
    };
    match tokio::time::timeout(timeouts.total, work).await {
        Ok(r) => r,
        Err(_) => Err(label.fail(started, None, FailureClass::Timeout, format!("no complete answer within {:?}", timeouts.total))),
    }
}

/// Classifies a body the codec could not accept.
pub fn wire_failure(label: &Label<'_>, started: Instant, e: WireError) -> Failure {
    match e {
        WireError::Upstream(u) => {
            let status = if u.status == 0 { None } else { Some(u.status) };
            let mut f = label.fail(started, status, FailureClass::Transient, u.message.clone());
            f.upstream = Some(u);
            f
        }
        WireError::Malformed { .. } => label.fail(started, None, FailureClass::Malformed, e.to_string()),
        WireError::Unsupported { .. } => label.fail(started, None, FailureClass::Unsupported, e.to_string()),
    }
}

/// An error event inside a 200 stream, before anything reached the client: classified like its status.
fn stream_error_failure(label: &Label<'_>, started: Instant, e: UpstreamError) -> Failure {
    let class = if e.status == 0 { FailureClass::Transient } else { FailureClass::of_status(e.status, &e) };
    let status = if e.status == 0 { None } else { Some(e.status) };
    let mut f = label.fail(started, status, class, format!("error event in the stream: {}", e.message));
    f.upstream = Some(e);
    f
}

/// Opens a stream and reads it until the first chunk, so that a failure before anything reached the
/// client can still move to the next target. The returned stream replays what was read.
pub async fn open_stream(
    client: &reqwest::Client,
    kind: ProviderKind,
    timeouts: &Timeouts,
    label: &Label<'_>,
    w: WireRequest,
    decoder: StreamDecoder,
) -> Result<ChatStream, Failure> {
    let started = Instant::now();
    let deadline = started + timeouts.total;
    let first_byte_deadline = started + timeouts.first_byte.min(timeouts.total);
    let remaining = |until: Instant| until.saturating_duration_since(Instant::now());

    let resp = match tokio::time::timeout(remaining(first_byte_deadline), to_request(client, w).send()).await {
        Err(_) => {
            return Err(label.fail(started, None, FailureClass::Timeout, format!("no response headers within {:?}", timeouts.first_byte)))
        }
        Ok(Err(e)) => return Err(transport_failure(label, started, &e)),
        Ok(Ok(r)) => r,
    };
    if !resp.status().is_success() {
        return Err(http_failure(kind, label, started, resp).await);
    }
    let mut stream = ChatStream { resp, slot: None, decoder, pending: VecDeque::new(), idle: timeouts.stream_idle, deadline, done: false };
    let mut events = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(remaining(first_byte_deadline), stream.resp.chunk()).await {
            Err(_) => {
                return Err(label.fail(
                    started,
                    Some(200),
                    FailureClass::Timeout,
                    format!("no first chunk within {:?}", timeouts.first_byte),
                ))
            }
            Ok(Err(e)) => return Err(transport_failure(label, started, &e)),
            Ok(Ok(c)) => c,
        };
        let fed = match &chunk {
            Some(bytes) => stream.decoder.feed(bytes, &mut events),
            None => stream.decoder.finish(&mut events),
        };
        if let Err(e) = fed {
            return Err(wire_failure(label, started, e));
        }
        // Anything before the first chunk with content may still fail over (a role-only opening chunk is
        // held back); that chunk commits the stream to this target.
        let mut committed = false;
        for ev in events.drain(..) {
            match &ev {
                StreamEvent::Error(e) if !committed => return Err(stream_error_failure(label, started, e.clone())),
                StreamEvent::Chunk(c) if carries_content(c) => committed = true,
                _ => {}
            }
            stream.pending.push_back(ev);
        }
        if committed || chunk.is_none() {
            if chunk.is_none() {
                stream.done = stream.pending.is_empty();
            }
            return Ok(stream);
        }
    }
}

/// A chunk that says something: text, a tool call, a finish reason or usage (not just the opening role).
fn carries_content(c: &ChatChunk) -> bool {
    c.usage.is_some()
        || c.choices.iter().any(|ch| {
            let d = &ch.delta;
            ch.finish_reason.is_some()
                || d.content.as_deref().is_some_and(|t| !t.is_empty())
                || d.tool_calls.is_some()
                || d.refusal.is_some()
                || !d.extra.is_empty()
        })
}

/// What a committed stream yields.
#[derive(Debug)]
pub enum StreamItem {
    Chunk(ChatChunk),
    /// The upstream ended the stream properly.
    End,
    /// The stream broke after it had started; the client gets an error event.
    Failed(GatewayError),
}

/// An upstream stream after its first chunk: decoded lazily as the client reads, with an idle timeout
/// between chunks and the attempt's total deadline. Dropping it closes the upstream connection, which is how
/// a client disconnect cancels the upstream request.
pub struct ChatStream {
    resp: reqwest::Response,
    /// The provider's in-flight slot, held until the stream ends.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    decoder: StreamDecoder,
    pending: VecDeque<StreamEvent>,
    idle: Duration,
    deadline: Instant,
    done: bool,
}

impl ChatStream {
    /// Keeps the provider's in-flight slot until the stream is dropped.
    pub fn hold(&mut self, slot: tokio::sync::OwnedSemaphorePermit) {
        self.slot = Some(slot);
    }

    pub async fn next(&mut self) -> Option<StreamItem> {
        let mut events = Vec::new();
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(match ev {
                    StreamEvent::Chunk(c) => StreamItem::Chunk(c),
                    StreamEvent::Done => {
                        self.pending.clear();
                        self.done = true;
                        StreamItem::End
                    }
                    StreamEvent::Error(e) => {
                        self.pending.clear();
                        self.done = true;
                        StreamItem::Failed(GatewayError::StreamInterrupted {
                            message: format!("the upstream reported an error mid-stream: {}", e.message),
                            class: FailureClass::Transient,
                        })
                    }
                });
            }
            if self.done {
                return None;
            }
            let wait = self.idle.min(self.deadline.saturating_duration_since(Instant::now()));
            let fed = match tokio::time::timeout(wait, self.resp.chunk()).await {
                Err(_) => Err(GatewayError::StreamInterrupted {
                    message: format!("the upstream sent nothing for {wait:?}"),
                    class: FailureClass::Timeout,
                }),
                Ok(Err(e)) => Err(GatewayError::StreamInterrupted {
                    message: format!("the upstream connection failed mid-stream: {}", error_chain(&e)),
                    class: FailureClass::Transient,
                }),
                Ok(Ok(Some(bytes))) => self.decoder.feed(&bytes, &mut events).map_err(stream_wire_error),
                Ok(Ok(None)) => self.decoder.finish(&mut events).map_err(stream_wire_error),
            };
            if let Err(e) = fed {
                self.done = true;
                return Some(StreamItem::Failed(e));
            }
            self.pending.extend(events.drain(..));
        }
    }
}

fn stream_wire_error(e: WireError) -> GatewayError {
    GatewayError::StreamInterrupted { message: e.to_string(), class: FailureClass::Malformed }
}

// Read by the server, which must not let a client that stops reading hold the stream (and its in-flight
// slot) past the limits the provider was given.
impl ChatStream {
    /// The provider's `stream_idle_timeout`: the longest this stream may stand still.
    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// When the attempt's total `timeout` runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}
