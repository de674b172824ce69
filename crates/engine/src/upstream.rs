//! Talking to upstreams: one HTTP client pool per provider, timeouts on every phase, bounded reads, and the
//! classification of each attempt's outcome.
//!
//! Nothing here knows a provider's JSON: requests arrive built by the codecs, and bodies leave as bytes (or
//! as a decoded stream). What this module owns is time (connect, first byte, idle, total), memory (how much
//! of an answer is held, per attempt and gateway-wide), and turning transport and HTTP failures into an
//! [`Attempt`] with a [`FailureClass`].
//!
//! Every piece of upstream text that leaves this module (attempt messages, the upstream's error fields,
//! mid-stream errors) has been through [`scrub::clean`]: [`Label::fail`], [`Failure::with_upstream`] and
//! [`interrupted`] are the only ways such text gets out, and each of them cleans it.
//!
//! Memory: a non-streaming body is read chunk by chunk against two bounds, `upstream.max_response_size`
//! for the attempt and `upstream.max_buffered_total` for the gateway (a [`ByteBudget`] taken as bytes
//! arrive and given back when the body is dropped, never waited on). A stream holds only its unfinished
//! line, bounded by `upstream.max_stream_event_size` in the codec's parser.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchyard_wire::codec::{Method, StreamDecoder, StreamEvent, WireRequest};
use switchyard_wire::types::ChatChunk;
use switchyard_wire::{ProviderKind, UpstreamError, WireError};

use crate::config::{Config, Timeouts, UpstreamSettings};
use crate::error::{Attempt, FailureClass, GatewayError};
use crate::health::{Clock, Health};
use crate::human;
use crate::images::error_chain;
use crate::scrub;

/// Error bodies are only read this far: enough for any provider's message.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// What a refusal for a full byte budget suggests as `Retry-After`: buffered answers drain in moments.
const BUDGET_RETRY: Duration = Duration::from_secs(1);

/// What the clients of every provider share: the read limits and the gateway-wide byte budget. Building
/// it also teaches the scrubber every secret of the configuration, so no upstream text is read before
/// the gateway knows what to remove from it.
#[derive(Debug)]
pub struct Shared {
    limits: UpstreamSettings,
    budget: Arc<ByteBudget>,
}

impl Shared {
    pub fn new(cfg: &Config) -> Arc<Shared> {
        remember_secrets(&cfg.providers);
        Arc::new(Shared { limits: cfg.upstream, budget: Arc::new(ByteBudget::new(cfg.upstream.max_buffered_total_bytes)) })
    }

    /// Bytes of upstream answers held right now, gateway-wide.
    pub fn buffered(&self) -> usize {
        self.budget.used()
    }
}

/// Teaches the scrubber the providers' secrets (keys and credential headers) before any of their answers is
/// read; for providers added while the gateway serves too.
pub fn remember_secrets(providers: &[crate::config::ProviderConfig]) {
    use secrecy::ExposeSecret;
    let keys = providers.iter().flat_map(|p| p.keys.iter().map(|k| k.secret.expose_secret()));
    let headers = providers
        .iter()
        .flat_map(|p| p.options.extra_headers.iter())
        .filter(|(name, _)| scrub::is_secret_header(name))
        .map(|(_, value)| value.as_str());
    let aws = providers
        .iter()
        .filter_map(|p| p.aws.as_deref())
        .flat_map(|c| std::iter::once(c.secret_access_key.as_str()).chain(c.session_token.as_deref()));
    scrub::remember(keys.chain(headers).chain(aws));
}

/// One provider's upstream client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    shared: Arc<Shared>,
}

pub fn build_client(t: &Timeouts, shared: &Arc<Shared>) -> Result<Client, GatewayError> {
    // reqwest is built without a bundled crypto provider; ring is ours. Installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .connect_timeout(t.connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| GatewayError::Internal(format!("cannot build the upstream HTTP client: {}", error_chain(&e))))?;
    Ok(Client { http, shared: shared.clone() })
}

/// A count of bytes that may be held at once, taken without waiting: when it is used up the taker is
/// refused at once (a full gateway answers 503 rather than queueing memory).
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    cap: usize,
}

/// The budget is used up: `cap` bytes are held already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gateway-wide budget of {cap} bytes for buffered upstream answers is used up")]
pub struct BudgetExhausted {
    pub cap: usize,
}

impl ByteBudget {
    pub fn new(cap: usize) -> Self {
        ByteBudget { used: AtomicUsize::new(0), cap }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, n: usize) -> Result<(), BudgetExhausted> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.checked_add(n).filter(|v| *v <= self.cap).ok_or(BudgetExhausted { cap: self.cap })?;
            match self.used.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    metrics::gauge!(BUFFERED_GAUGE).increment(n as f64);
                    return Ok(());
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        metrics::gauge!(BUFFERED_GAUGE).decrement(n as f64);
    }
}

/// What the byte budgets hold now, in bytes. Moved by increments, so concurrent updates cannot leave it
/// showing a stale total.
const BUFFERED_GAUGE: &str = "switchyard_upstream_buffered_bytes";

/// Bytes taken from a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Held {
    pub fn new(budget: &Arc<ByteBudget>) -> Self {
        Held { budget: budget.clone(), bytes: 0 }
    }

    pub fn grow(&mut self, n: usize) -> Result<(), BudgetExhausted> {
        self.budget.take(n)?;
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give(self.bytes);
        }
    }
}

/// A buffered body and its share of the budget: the budget is given back exactly when the last view of
/// the bytes is dropped, wherever that happens (usually after the codec parsed them).
struct Owned<B> {
    data: B,
    _held: Held,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Owned<B> {
    fn as_ref(&self) -> &[u8] {
        self.data.as_ref()
    }
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading the body failed: {}", error_chain(.0))]
    Transport(#[source] reqwest::Error),
    /// The body is larger than the attempt may hold (`declared`: the upstream said so in `content-length`).
    #[error("the answer is larger than {limit} bytes")]
    TooLarge { limit: usize, declared: Option<u64> },
    #[error(transparent)]
    Budget(#[from] BudgetExhausted),
}

/// Reads a whole body, at most `limit` bytes, taking each chunk from `budget` as it arrives. Refuses at
/// once a body whose `content-length` is over the limit. What was read is freed (and given back) on
/// every error.
pub async fn read_body(resp: &mut reqwest::Response, limit: usize, budget: &Arc<ByteBudget>) -> Result<Bytes, ReadError> {
    if let Some(n) = resp.content_length().filter(|n| *n > limit as u64) {
        return Err(ReadError::TooLarge { limit, declared: Some(n) });
    }
    let mut held = Held::new(budget);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        if total + chunk.len() > limit {
            return Err(ReadError::TooLarge { limit, declared: None });
        }
        held.grow(chunk.len())?;
        total += chunk.len();
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => Bytes::from_owner(Owned { data: chunks.swap_remove(0), _held: held }),
        _ => {
            // One exact allocation; the chunks are freed as soon as they are copied.
            let mut whole = Vec::with_capacity(total);
            for c in chunks.drain(..) {
                whole.extend_from_slice(&c);
            }
            Bytes::from_owner(Owned { data: whole, _held: held })
        }
    })
}

/// Reads an error body: at most [`MAX_ERROR_BYTES`], no more than the budget allows, and only until
/// `until`. A cut-short error body still says enough to classify the failure, so running out of any of
/// them is not an error here (and an upstream that stalls its error body cannot hold the attempt).
async fn read_error_body(resp: &mut reqwest::Response, budget: &Arc<ByteBudget>, until: Instant) -> (Vec<u8>, Held) {
    let mut held = Held::new(budget);
    let mut buf = Vec::new();
    let left = || until.saturating_duration_since(Instant::now());
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(left(), resp.chunk()).await {
        let take = chunk.len().min(MAX_ERROR_BYTES - buf.len());
        if held.grow(take).is_err() {
            break;
        }
        buf.extend_from_slice(&chunk[..take]);
        if buf.len() >= MAX_ERROR_BYTES {
            break;
        }
    }
    (buf, held)
}

/// A failed attempt: what to record, and the upstream's own error when it sent one.
#[derive(Debug)]
pub struct Failure {
    pub attempt: Attempt,
    pub upstream: Option<UpstreamError>,
    /// When the upstream said to come back (`retry-after-ms`, `Retry-After`, or a used-up limit's reset).
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// Attaches the upstream's own error, cleaned of secrets like every other upstream text.
    pub fn with_upstream(mut self, e: UpstreamError) -> Self {
        self.upstream = Some(clean_upstream(e));
        self
    }
}

/// The upstream's error with every text field scrubbed: each may be shown to the caller (`code` becomes
/// the error's `code` when it is a word).
fn clean_upstream(e: UpstreamError) -> UpstreamError {
    let clean = |s: Option<String>| s.map(|v| scrub::clean(&v));
    UpstreamError { status: e.status, message: scrub::clean(&e.message), kind: clean(e.kind), code: clean(e.code), param: clean(e.param) }
}

/// Who the attempt went to, for the record.
pub struct Label<'a> {
    pub target: &'a str,
    pub key: Option<&'a str>,
}

impl Label<'_> {
    /// A failed attempt. `message` may hold upstream text; it is cleaned here.
    pub fn fail(&self, started: Instant, status: Option<u16>, class: FailureClass, message: impl Into<String>) -> Failure {
        Failure {
            attempt: Attempt {
                target: self.target.to_string(),
                key: self.key.map(str::to_string),
                status,
                class,
                message: scrub::clean(&message.into()),
                latency_ms: started.elapsed().as_millis() as u64,
                skipped: false,
            },
            upstream: None,
            retry_after: None,
        }
    }

    /// A body that could not be read whole, with the limit it hit named and logged.
    fn read_failure(&self, started: Instant, status: u16, e: ReadError) -> Failure {
        match e {
            ReadError::Transport(e) => transport_failure(self, started, &e),
            ReadError::TooLarge { limit, declared } => {
                let size = declared.map(|n| format!(" ({n} bytes declared)")).unwrap_or_default();
                // Usually the request asked for too much at once (see `FailureClass::TooLarge`): INFO.
                tracing::info!(upstream = %self.target, limit = %"upstream.max_response_size", bytes = limit, "upstream answer too large{size}; the attempt is abandoned");
                self.fail(
                    started,
                    Some(status),
                    FailureClass::TooLarge,
                    format!("the upstream's answer is larger than upstream.max_response_size ({limit} bytes){size}; it was not read on"),
                )
            }
            ReadError::Budget(BudgetExhausted { cap }) => {
                tracing::warn!(upstream = %self.target, limit = %"upstream.max_buffered_total", bytes = cap, "the gateway-wide buffer for upstream answers is full; the attempt is refused");
                let mut f = self.fail(
                    started,
                    Some(status),
                    FailureClass::Overloaded,
                    format!("the gateway is holding as many upstream answers as it may (upstream.max_buffered_total, {cap} bytes); retry shortly"),
                );
                f.retry_after = Some(BUDGET_RETRY);
                f
            }
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

/// A non-2xx answer: read its body (until `until` at the latest) and classify.
async fn http_failure(
    client: &Client,
    kind: ProviderKind,
    label: &Label<'_>,
    started: Instant,
    until: Instant,
    mut resp: reqwest::Response,
) -> Failure {
    let status = resp.status().as_u16();
    let ra = retry_after(&resp);
    // AWS names the error's type in a header, not the body.
    let error_type = switchyard_wire::codec::error_type_header(kind)
        .and_then(|h| resp.headers().get(h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (body, _held) = read_error_body(&mut resp, &client.shared.budget, until).await;
    let err = switchyard_wire::codec::parse_error_typed(kind, status, error_type.as_deref(), &body);
    let class = FailureClass::of_response(kind, status, &err);
    let mut f = label.fail(started, Some(status), class, err.message.clone()).with_upstream(err);
    f.retry_after = ra;
    f
}

/// Sends a request whose answer is one body (non-streaming chat, embeddings, model lists). The bytes
/// returned hold their share of the gateway's byte budget until they are dropped.
pub async fn send_complete(
    client: &Client,
    kind: ProviderKind,
    timeouts: &Timeouts,
    label: &Label<'_>,
    w: WireRequest,
) -> Result<Bytes, Failure> {
    let started = Instant::now();
    let work = async {
        let mut resp = to_request(&client.http, w).send().await.map_err(|e| transport_failure(label, started, &e))?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            return Err(http_failure(client, kind, label, started, started + timeouts.total, resp).await);
        }
        read_body(&mut resp, client.shared.limits.max_response_bytes, &client.shared.budget)
            .await
            .map_err(|e| label.read_failure(started, status, e))
    };
    match tokio::time::timeout(timeouts.total, work).await {
        Ok(r) => r,
        Err(_) => {
            Err(label.fail(started, None, FailureClass::Timeout, format!("no complete answer within {}", human::duration(timeouts.total))))
        }
    }
}

/// Classifies a body the codec could not accept.
pub fn wire_failure(label: &Label<'_>, started: Instant, e: WireError) -> Failure {
    match e {
        WireError::Upstream(u) => {
            let status = if u.status == 0 { None } else { Some(u.status) };
            label.fail(started, status, FailureClass::Transient, u.message.clone()).with_upstream(u)
        }
        WireError::Malformed { .. } => label.fail(started, None, FailureClass::Malformed, e.to_string()),
        WireError::Unsupported { .. } => label.fail(started, None, FailureClass::Unsupported, e.to_string()),
        WireError::TooLong { what, limit } => {
            tracing::warn!(upstream = %label.target, limit = %"upstream.max_stream_event_size", bytes = limit, "upstream stream sent {what} past the limit; the connection is dropped");
            label.fail(started, Some(200), FailureClass::Malformed, too_long_message(what, limit))
        }
    }
}

fn too_long_message(what: &str, limit: usize) -> String {
    format!("malformed upstream stream: {what} longer than upstream.max_stream_event_size ({limit} bytes); the connection was dropped")
}

/// An error event inside a 200 stream, before anything reached the client: classified like its status.
fn stream_error_failure(kind: ProviderKind, label: &Label<'_>, started: Instant, e: UpstreamError) -> Failure {
    let class = if e.status == 0 { FailureClass::Transient } else { FailureClass::of_response(kind, e.status, &e) };
    let status = if e.status == 0 { None } else { Some(e.status) };
    label.fail(started, status, class, format!("error event in the stream: {}", e.message)).with_upstream(e)
}

/// A stream that broke after it started. `message` may hold upstream text; it is cleaned here.
fn interrupted(message: &str, class: FailureClass) -> GatewayError {
    GatewayError::StreamInterrupted { message: scrub::clean(message), class }
}

/// Opens a stream and reads it until the first chunk, so that a failure before anything reached the
/// client can still move to the next target. The returned stream replays what was read.
pub async fn open_stream(
    client: &Client,
    kind: ProviderKind,
    timeouts: &Timeouts,
    label: &Label<'_>,
    w: WireRequest,
    mut decoder: StreamDecoder,
) -> Result<ChatStream, Failure> {
    let started = Instant::now();
    let deadline = started + timeouts.total;
    let first_byte_deadline = started + timeouts.first_byte.min(timeouts.total);
    let remaining = |until: Instant| until.saturating_duration_since(Instant::now());
    decoder.set_max_event_bytes(client.shared.limits.max_stream_event_bytes);

    let resp = match tokio::time::timeout(remaining(first_byte_deadline), to_request(&client.http, w).send()).await {
        Err(_) => {
            return Err(label.fail(
                started,
                None,
                FailureClass::Timeout,
                format!("no response headers within {}", human::duration(timeouts.first_byte)),
            ))
        }
        Ok(Err(e)) => return Err(transport_failure(label, started, &e)),
        Ok(Ok(r)) => r,
    };
    if !resp.status().is_success() {
        return Err(http_failure(client, kind, label, started, first_byte_deadline, resp).await);
    }
    let mut stream = ChatStream {
        resp: Some(resp),
        slot: None,
        decoder,
        pending: VecDeque::new(),
        idle: timeouts.stream_idle,
        deadline,
        done: false,
        target: label.target.to_string(),
        health: None,
        meter: None,
    };
    let mut events = Vec::new();
    loop {
        let Some(resp) = stream.resp.as_mut() else {
            return Err(label.fail(started, Some(200), FailureClass::Malformed, "the stream ended before its first chunk"));
        };
        let chunk = match tokio::time::timeout(remaining(first_byte_deadline), resp.chunk()).await {
            Err(_) => {
                return Err(label.fail(
                    started,
                    Some(200),
                    FailureClass::Timeout,
                    format!("no first chunk within {}", human::duration(timeouts.first_byte)),
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
                StreamEvent::Error(e) if !committed => return Err(stream_error_failure(kind, label, started, e.clone())),
                StreamEvent::Chunk(c) if carries_content(c) => committed = true,
                _ => {}
            }
            stream.pending.push_back(ev);
        }
        if committed || chunk.is_none() {
            if chunk.is_none() {
                stream.done = stream.pending.is_empty();
                stream.resp = None;
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
/// a client disconnect cancels the upstream request; a stream that fails closes it at once.
pub struct ChatStream {
    /// `None` once the body ended or the stream failed (the connection is closed then, not kept).
    resp: Option<reqwest::Response>,
    /// The provider's in-flight slot, held until the stream ends.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    decoder: StreamDecoder,
    pending: VecDeque<StreamEvent>,
    idle: Duration,
    deadline: Instant,
    done: bool,
    /// `provider/model`, for log lines.
    target: String,
    /// Where a failure after the first chunk is reported (see [`ChatStream::report_to`]).
    health: Option<(Arc<Health>, Clock)>,
    /// Settles the request's account when the stream is over (dropped with it).
    meter: Option<crate::account::StreamMeter>,
}

impl ChatStream {
    /// Lets `meter` see every chunk and settle the request's account when the stream is over.
    pub fn meter(&mut self, meter: crate::account::StreamMeter) {
        self.meter = Some(meter);
    }

    /// The stream's meter, to be told its cost once settled (for the request log).
    pub fn meter_mut(&mut self) -> Option<&mut crate::account::StreamMeter> {
        self.meter.as_mut()
    }

    /// Keeps the provider's in-flight slot until the stream is dropped.
    pub fn hold(&mut self, slot: tokio::sync::OwnedSemaphorePermit) {
        self.slot = Some(slot);
    }

    /// A failure after the first chunk can no longer move to another target, but it still says something
    /// about the provider: it goes to the provider's health like a failed attempt.
    pub fn report_to(&mut self, health: Arc<Health>, clock: Clock) {
        self.health = Some((health, clock));
    }

    /// Ends the stream with `e`: the connection and everything buffered are let go now, not when the
    /// client finishes reading.
    fn fail(&mut self, e: GatewayError) -> StreamItem {
        if let (Some((health, clock)), GatewayError::StreamInterrupted { class, .. }) = (&self.health, &e) {
            if class.is_provider_health() {
                health.failure(clock.now_ms(), false);
            }
        }
        self.done = true;
        self.pending.clear();
        self.resp = None;
        self.slot = None;
        StreamItem::Failed(e)
    }

    pub async fn next(&mut self) -> Option<StreamItem> {
        let mut events = Vec::new();
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(match ev {
                    StreamEvent::Chunk(c) => {
                        if let Some(m) = &mut self.meter {
                            m.observe(&c);
                        }
                        StreamItem::Chunk(c)
                    }
                    StreamEvent::Done => {
                        self.pending.clear();
                        self.done = true;
                        StreamItem::End
                    }
                    StreamEvent::Error(e) => {
                        let message = format!("the upstream reported an error mid-stream: {}", e.message);
                        self.fail(interrupted(&message, FailureClass::Transient))
                    }
                });
            }
            if self.done {
                return None;
            }
            let Some(resp) = self.resp.as_mut() else {
                self.done = true;
                return None;
            };
            let wait = self.idle.min(self.deadline.saturating_duration_since(Instant::now()));
            let fed = match tokio::time::timeout(wait, resp.chunk()).await {
                Err(_) => Err(interrupted(&format!("the upstream sent nothing for {}", human::duration(wait)), FailureClass::Timeout)),
                Ok(Err(e)) => {
                    Err(interrupted(&format!("the upstream connection failed mid-stream: {}", error_chain(&e)), FailureClass::Transient))
                }
                Ok(Ok(Some(bytes))) => self.decoder.feed(&bytes, &mut events).map_err(|e| self.wire_error(e)),
                Ok(Ok(None)) => {
                    self.resp = None;
                    self.decoder.finish(&mut events).map_err(|e| self.wire_error(e))
                }
            };
            if let Err(e) = fed {
                return Some(self.fail(e));
            }
            self.pending.extend(events.drain(..));
        }
    }

    fn wire_error(&self, e: WireError) -> GatewayError {
        if let WireError::TooLong { what, limit } = e {
            tracing::warn!(upstream = %self.target, limit = %"upstream.max_stream_event_size", bytes = limit, "upstream stream sent {what} past the limit; the connection is dropped");
            return interrupted(&too_long_message(what, limit), FailureClass::Malformed);
        }
        interrupted(&e.to_string(), FailureClass::Malformed)
    }
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

    /// A 200 whose body arrives in `chunks`, its length unknown beforehand.
    fn body(chunks: Vec<Vec<u8>>) -> reqwest::Response {
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(stream)))
    }

    #[tokio::test]
    async fn a_body_holds_its_budget_until_its_bytes_are_dropped() {
        let budget = Arc::new(ByteBudget::new(100));
        let bytes = read_body(&mut body(vec![vec![b'a'; 30], vec![b'b'; 20]]), 64, &budget).await.unwrap();
        assert_eq!((bytes.len(), budget.used()), (50, 50));
        let view = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(budget.used(), 50, "a view of the body still holds it");
        drop(view);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_body_over_the_attempt_limit_fails_and_gives_everything_back() {
        let budget = Arc::new(ByteBudget::new(1000));
        let e = read_body(&mut body(vec![vec![0; 40], vec![0; 40]]), 64, &budget).await.unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 64, declared: None }), "{e:?}");
        assert_eq!(budget.used(), 0);
        // A known length over the limit is refused before a byte is read (hyper knows it from
        // `content-length`; here the body itself says so).
        let known = |n: usize| reqwest::Response::from(http::Response::new(reqwest::Body::from(vec![0u8; n])));
        let e = read_body(&mut known(10_000), 64, &budget).await.unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { declared: Some(10_000), .. }), "{e:?}");
        // At the limit exactly is fine.
        assert_eq!(read_body(&mut known(64), 64, &budget).await.unwrap().len(), 64);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn the_gateway_wide_budget_refuses_at_once_and_recovers() {
        let budget = Arc::new(ByteBudget::new(100));
        let first = read_body(&mut body(vec![vec![0; 70]]), 1000, &budget).await.unwrap();
        let e = read_body(&mut body(vec![vec![0; 20], vec![0; 20]]), 1000, &budget).await.unwrap_err();
        assert!(matches!(e, ReadError::Budget(BudgetExhausted { cap: 100 })), "{e:?}");
        assert_eq!(budget.used(), 70, "the refused body gave back what it had taken");
        drop(first);
        assert_eq!(read_body(&mut body(vec![vec![0; 20], vec![0; 20]]), 1000, &budget).await.unwrap().len(), 40);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn upstream_errors_are_cleaned_field_by_field() {
        let key = "sk-upstream-test-Qw9Er8Ty7Ui6Op5";
        scrub::remember([key]);
        let label = Label { target: "p/m", key: Some("main") };
        let e = UpstreamError {
            status: 401,
            message: format!("Incorrect API key provided: {key}"),
            kind: Some("invalid_request_error".into()),
            code: Some(key.into()),
            param: Some(format!("Bearer {key}")),
        };
        let f = label.fail(Instant::now(), Some(401), FailureClass::KeyInvalid, e.message.clone()).with_upstream(e);
        let all = format!("{:?} {:?}", f.attempt, f.upstream);
        assert!(!all.contains(&key[4..16]), "{all}");
        assert_eq!(f.attempt.message, "Incorrect API key provided: [redacted]");
        let GatewayError::StreamInterrupted { message, .. } =
            interrupted(&format!("error event: x-api-key: {key}"), FailureClass::Transient)
        else {
            panic!()
        };
        assert_eq!(message, "error event: x-api-key: [redacted]");
    }

    #[tokio::test]
    async fn a_stalled_error_body_is_classified_from_what_arrived() {
        use futures_util::StreamExt as _;
        let budget = Arc::new(ByteBudget::new(1 << 20));
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>(b"{\"error\":{\"message\":\"slow".to_vec())]);
        let stalled = first.chain(futures_util::stream::pending());
        let mut resp = reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(stalled)));
        let (body, held) = read_error_body(&mut resp, &budget, Instant::now() + Duration::from_millis(50)).await;
        assert_eq!(body, b"{\"error\":{\"message\":\"slow");
        assert_eq!(budget.used(), body.len());
        drop(held);
        assert_eq!(budget.used(), 0);
    }
}
