//! Latency and fault injection, shared by every flavour: applying the fault the request's knobs (see
//! `knobs`) draw, and turning a list of stream frames into a timed body that can stall, break or abort the
//! connection on command. It exists so that the flavours only describe *what* they send; *how* it arrives
//! (late, broken, cut) lives here, and so does noticing that the client went away before it all arrived
//! ([`CancelGuard`]).

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use switchyard_wire::eventstream::Message;

use crate::common::{bytes_response, ApiError, Ctx};
use crate::knobs::Fault;
use crate::{FaultKind, MockHandle};

/// How long a `hang` fault waits before giving up on its own (the client or shutdown usually ends it first).
const HANG: Duration = Duration::from_secs(3_600);
/// The delay of a `slow_first_byte` fault.
const SLOW_FIRST_BYTE: Duration = Duration::from_secs(30);
/// A pause before a `reset` abort so the bytes before it reach the client.
const ABORT_FLUSH: Duration = Duration::from_millis(30);
/// Huge bodies and endless lines go out in pieces of this size (one shared buffer, sent many times).
const FILL_PIECE: usize = 64 << 10;

/// Counts its request in [`crate::Stats::cancelled`] if it is dropped while armed: the future or body
/// holding it was dropped (the client went away) before the answer was delivered to its end. Whoever
/// finishes the answer disarms it, and so does a `reset` fault, which ends the answer on purpose.
pub(crate) struct CancelGuard {
    armed: Option<MockHandle>,
}

impl CancelGuard {
    pub(crate) fn new(handle: MockHandle) -> Self {
        CancelGuard { armed: Some(handle) }
    }

    /// The answer got where it was going: dropping the guard now counts nothing.
    pub(crate) fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(handle) = self.armed.take() {
            handle.count_cancelled();
        }
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
    /// `data: json\r\n\r\n`, as Google's servers write SSE.
    SseCrlf,
    /// One JSON object per line.
    Ndjson,
    /// AWS's binary event-stream messages (Bedrock): `event` is the `:event-type` (or, for an exception
    /// frame, the `:exception-type`), `data` the JSON payload.
    EventStream,
}

/// One stream event as the flavour describes it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Frame {
    pub event: Option<&'static str>,
    pub data: String,
    /// Carries answer content (text or tool arguments); `reset` counts these.
    pub content: bool,
    /// Written as it is, without SSE fields (Google writes a mid-stream error as plain JSON lines).
    pub verbatim: bool,
    /// An event-stream exception (`:message-type: exception`) rather than an event.
    pub exception: bool,
}

impl Frame {
    pub fn data(v: &Value) -> Frame {
        Frame { event: None, data: v.to_string(), content: false, verbatim: false, exception: false }
    }

    pub fn raw(data: &str) -> Frame {
        Frame { event: None, data: data.to_string(), content: false, verbatim: false, exception: false }
    }

    pub fn named(event: &'static str, v: &Value) -> Frame {
        Frame { event: Some(event), data: v.to_string(), content: false, verbatim: false, exception: false }
    }

    /// Text sent as it is, outside any SSE field.
    pub fn verbatim(text: String) -> Frame {
        Frame { event: None, data: text, content: false, verbatim: true, exception: false }
    }

    /// An event-stream exception frame (`throttlingException`, ...).
    pub fn exception(kind: &'static str, v: &Value) -> Frame {
        Frame { event: Some(kind), data: v.to_string(), content: false, verbatim: false, exception: true }
    }

    pub fn content(mut self) -> Frame {
        self.content = true;
        self
    }

    fn encode(&self, framing: Framing) -> Bytes {
        if self.verbatim {
            return Bytes::from(self.data.clone());
        }
        match framing {
            Framing::SseCrlf => Bytes::from(format!("data: {}\r\n\r\n", self.data)),
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
            Framing::EventStream => {
                let kind = self.event.unwrap_or("");
                let payload = self.data.clone().into_bytes();
                let m = if self.exception { Message::exception(kind, payload) } else { Message::event(kind, payload) };
                // Only a header over 64 KiB cannot be encoded, and the mock's headers are short names.
                Bytes::from(m.to_bytes().unwrap_or_default())
            }
        }
    }

    /// The same frame with its JSON cut in half.
    fn broken(&self) -> Frame {
        let mut cut = self.data.len() / 2;
        while cut > 0 && !self.data.is_char_boundary(cut) {
            cut -= 1;
        }
        Frame {
            event: self.event,
            data: self.data[..cut].to_string(),
            content: self.content,
            verbatim: self.verbatim,
            exception: self.exception,
        }
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
        Some(FaultKind::LateStreamError) => {
            let first = frames.iter().position(|f| f.content).unwrap_or(0);
            let mut steps: Vec<Step> = frames.iter().take(first + 1).map(send).collect();
            steps.push(send(&error_frame));
            steps
        }
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

/// The frames up to the first content frame, then a line of `bytes` bytes that never ends (the body ends
/// instead): a stream whose unfinished line grows without bound.
fn endless_line(frames: &[Frame], framing: Framing, bytes: u64) -> Vec<Step> {
    let first = frames.iter().position(|f| f.content).unwrap_or(0);
    let mut steps: Vec<Step> = frames.iter().take(first + 1).map(|f| Step::Send(f.encode(framing))).collect();
    let opening: Bytes = match framing {
        Framing::Sse | Framing::SseCrlf => Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\""),
        Framing::Ndjson => Bytes::from_static(b"{\"message\":{\"role\":\"assistant\",\"content\":\""),
        // A message whose prelude (its CRC right) announces the whole line, which then never completes.
        Framing::EventStream => {
            let total = u32::try_from(bytes.saturating_add(16)).unwrap_or(u32::MAX);
            let mut p = total.to_be_bytes().to_vec();
            p.extend_from_slice(&0u32.to_be_bytes());
            let crc = switchyard_wire::eventstream::crc32(&p);
            p.extend_from_slice(&crc.to_be_bytes());
            Bytes::from(p)
        }
    };
    steps.push(Step::Send(opening));
    fill(&mut steps, bytes, b'a');
    steps
}

/// Appends `bytes` bytes of `byte` in [`FILL_PIECE`]s that share one buffer.
fn fill(steps: &mut Vec<Step>, bytes: u64, byte: u8) {
    let piece = Bytes::from(vec![byte; FILL_PIECE]);
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(FILL_PIECE);
        steps.push(Step::Send(piece.slice(..n)));
        left -= n as u64;
    }
}

/// `json` padded with whitespace before its closing brace to `bytes` bytes (still the same JSON).
fn padded(json: String, bytes: u64) -> Vec<Step> {
    let Some(head) = json.strip_suffix('}') else {
        return vec![Step::Send(Bytes::from(json))];
    };
    let pad = bytes.saturating_sub(json.len() as u64);
    let mut steps = vec![Step::Send(Bytes::from(head.to_string()))];
    fill(&mut steps, pad, b' ');
    steps.push(Step::Send(Bytes::from_static(b"}")));
    steps
}

/// How a body is dribbled out: stopped after some bytes, or one byte at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Shape {
    stall_after: Option<u64>,
    trickle: Option<Duration>,
}

impl Shape {
    fn of(ctx: &Ctx) -> Shape {
        Shape { stall_after: ctx.knobs.stall_after, trickle: ctx.knobs.trickle }
    }

    fn is_plain(&self) -> bool {
        *self == Shape::default()
    }
}

/// `inner` sent as `shape` says: after `stall_after` bytes nothing more comes until the client leaves
/// (or the mock shuts down, which ends the body there); with `trickle`, one byte per pause.
fn shaped<S>(inner: S, shape: Shape, handle: MockHandle) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    let state = (inner, Bytes::new(), 0u64, false);
    futures_util::stream::unfold(state, move |(mut inner, mut rest, sent, over)| {
        let handle = handle.clone();
        async move {
            if over {
                return None;
            }
            while rest.is_empty() {
                match inner.next().await? {
                    Ok(b) => rest = b,
                    Err(e) => return Some((Err(e), (inner, rest, sent, true))),
                }
            }
            let mut n = rest.len();
            if let Some(limit) = shape.stall_after {
                if sent >= limit {
                    pause(&handle, HANG).await;
                    return None;
                }
                n = n.min(usize::try_from(limit - sent).unwrap_or(usize::MAX));
            }
            if let Some(gap) = shape.trickle {
                n = 1;
                pause(&handle, gap).await;
            }
            let piece = rest.split_to(n);
            Some((Ok(piece), (inner, rest, sent + n as u64, false)))
        }
    })
}

/// A body that sends `steps` with the given delays, shaped as the request's knobs say. `guard` (if any)
/// lives in the stream and is disarmed once the last step is taken (the end of the body, or a `reset`
/// abort), so a body dropped before that (the client left mid-stream) counts as cancelled.
fn timed_body(ctx: &Ctx, steps: Vec<Step>, ttft: Duration, gap: Duration, guard: Option<CancelGuard>) -> Body {
    let shape = Shape::of(ctx);
    let stream = steps_stream(steps, ttft, gap, guard);
    if shape.is_plain() {
        Body::from_stream(stream)
    } else {
        Body::from_stream(shaped(Box::pin(stream), shape, ctx.handle.clone()))
    }
}

fn steps_stream(
    steps: Vec<Step>,
    ttft: Duration,
    gap: Duration,
    guard: Option<CancelGuard>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = (steps.into_iter(), 0usize, guard);
    futures_util::stream::unfold(state, move |(mut it, i, mut guard)| async move {
        let Some(step) = it.next() else {
            if let Some(g) = guard.take() {
                g.disarm();
            }
            return None;
        };
        let item = match step {
            Step::Send(b) => {
                let d = if i == 0 { ttft } else { gap };
                if !d.is_zero() {
                    tokio::time::sleep(d).await;
                }
                Ok(b)
            }
            Step::Abort => {
                // The mock ends this answer on purpose: not a cancellation.
                if let Some(g) = guard.take() {
                    g.disarm();
                }
                // Let hyper flush what was sent so far (it flushes while the body is pending),
                // so the client really sees a body cut short rather than no response at all.
                tokio::time::sleep(ABORT_FLUSH).await;
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock fault: connection reset"))
            }
        };
        Some((item, (it, i + 1, guard)))
    })
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
        Framing::Sse | Framing::SseCrlf => "text/event-stream; charset=utf-8",
        Framing::Ndjson => "application/x-ndjson",
        Framing::EventStream => "application/vnd.amazon.eventstream",
    };
    headers.push(("cache-control", "no-cache".to_string()));
    let steps = match (kind, ctx.knobs.endless_line) {
        (None, Some(bytes)) => endless_line(&frames, framing, bytes),
        _ => plan(frames, framing, error_frame, kind),
    };
    let body = timed_body(ctx, steps, ctx.knobs.ttft, ctx.knobs.chunk_delay, Some(CancelGuard::new(ctx.handle.clone())));
    bytes_response(200, content_type, &headers, body)
}

/// A 200 JSON response, broken as the body fault says (reset: abort halfway; malformed: half a document),
/// padded to `huge_body` bytes, and stalled or trickled as the knobs say.
pub(crate) fn json_ok(ctx: &Ctx, kind: Option<FaultKind>, headers: &[(&'static str, String)], body: &Value) -> Response {
    let full = body.to_string();
    let half = {
        let mut cut = full.len() / 2;
        while cut > 0 && !full.is_char_boundary(cut) {
            cut -= 1;
        }
        full[..cut].to_string()
    };
    let shape = Shape::of(ctx);
    let body = match kind {
        // No guard: the answer is half a document sent at once, then the abort the fault asked for.
        Some(FaultKind::Reset) => timed_body(ctx, vec![Step::Send(Bytes::from(half)), Step::Abort], Duration::ZERO, Duration::ZERO, None),
        Some(FaultKind::Malformed) if shape.is_plain() => Body::from(half),
        Some(FaultKind::Malformed) => timed_body(ctx, vec![Step::Send(Bytes::from(half))], Duration::ZERO, Duration::ZERO, None),
        _ if ctx.knobs.huge_body.is_none() && shape.is_plain() => Body::from(full),
        // A long body is "delivered" only at its end: a client that leaves before counts as cancelled.
        _ => {
            let steps = match ctx.knobs.huge_body {
                Some(bytes) => padded(full, bytes),
                None => vec![Step::Send(Bytes::from(full))],
            };
            timed_body(ctx, steps, Duration::ZERO, Duration::ZERO, Some(CancelGuard::new(ctx.handle.clone())))
        }
    };
    bytes_response(200, "application/json", headers, body)
}
