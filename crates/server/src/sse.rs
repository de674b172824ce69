//! Streaming chat answers as server-sent events, without letting a client that stops reading hold an
//! upstream.
//!
//! hyper polls a response body only when the socket can take more, so a body that read the upstream
//! itself would simply stop while its client does not read: the upstream stream (and the provider's
//! in-flight slot with it) would be held for as long as the client cares to sit there, and the
//! provider's `stream_idle_timeout` and `timeout`, which only run while the stream is polled, would never
//! fire. Instead a task drives the upstream and hands encoded frames to the body through a small bounded
//! channel. When the channel stays full (the client has taken nothing) for the stream's idle timeout, or
//! past the attempt's deadline, the task drops the upstream, which closes that connection and frees the
//! slot, and the client's body ends in an error, so the client sees a broken stream, never a complete one.
//!
//! The hot path stays one `try_send` per chunk; a timer exists only while the channel is full.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use switchyard_engine::{ChatOutcome, ChatStream, GatewayError, StreamItem};
use switchyard_wire::inbound::anthropic::AnthropicStreamEncoder;
use switchyard_wire::inbound::bedrock::BedrockStreamEncoder;
use switchyard_wire::inbound::completions::CompletionStreamEncoder;
use switchyard_wire::inbound::responses::ResponsesStreamEncoder;
use switchyard_wire::outbound::{ErrorBody, OpenAiStreamEncoder};
use switchyard_wire::types::ChatChunk;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use crate::errors::error_response;
use crate::handlers::Pending;
use crate::reqlog::Record;
use crate::throttle::{more, Throttled};

/// Frames (one upstream chunk each) buffered between the upstream and the client's socket. Small: the
/// socket and hyper buffer more than this already; this only keeps the upstream reader from blocking on
/// every chunk.
const BUFFERED_FRAMES: usize = 32;

/// How long a frame may wait for a client that reads nothing while no upstream is held yet (keep-alive
/// comments, an error before the first chunk): only this task is at stake then, not a provider's slot.
const UNCOMMITTED_SEND_WAIT: Duration = Duration::from_secs(60);

static STALLED: Throttled = Throttled::new("stream_client_stalled");

/// The client-facing stream format of a route: canonical chunks in, the API's frames out. One per
/// stream, driven by the task below.
pub(crate) trait ClientEncoder: Send + 'static {
    fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>);
    /// The stream ended well.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// The stream failed after its headers went out: the API's in-stream error.
    fn fail(&mut self, e: &GatewayError, out: &mut Vec<u8>);
    /// The response's media type.
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }
    /// Bytes that keep an idle stream open without meaning anything to the client: an SSE comment, which
    /// every SSE reader skips. A route whose SDK parses every line (Google's) sends other bytes; a format
    /// with no room for them (AWS's binary event-stream, whose every frame is a message a client parses)
    /// `None`, and then nothing goes out until its first event.
    fn keepalive(&self) -> Option<&'static [u8]> {
        Some(b": keep-alive\n\n")
    }
    /// Names the chosen target to the client once it is known, as an SSE comment where the API's reader
    /// skips comments; a route whose reader would choke on one writes nothing.
    fn served(&self, served: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(format!(": served by {served}\n\n").as_bytes());
    }
}

/// The OpenAI-family encoders (chat, legacy completions, Responses) fail with OpenAI's error body.
macro_rules! openai_client_encoder {
    ($t:ty) => {
        impl ClientEncoder for $t {
            fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
                <$t>::encode(self, chunk, out)
            }

            fn finish(&mut self, out: &mut Vec<u8>) {
                <$t>::finish(self, out)
            }

            fn fail(&mut self, e: &GatewayError, out: &mut Vec<u8>) {
                let code = e.code();
                let msg = e.to_string();
                <$t>::fail(self, &ErrorBody { message: &msg, kind: e.kind(), param: e.param(), code: Some(&code) }, out);
            }
        }
    };
}

openai_client_encoder!(OpenAiStreamEncoder);
openai_client_encoder!(CompletionStreamEncoder);
openai_client_encoder!(ResponsesStreamEncoder);

impl ClientEncoder for AnthropicStreamEncoder {
    fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
        AnthropicStreamEncoder::encode(self, chunk, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        AnthropicStreamEncoder::finish(self, out)
    }

    fn fail(&mut self, e: &GatewayError, out: &mut Vec<u8>) {
        AnthropicStreamEncoder::fail(self, e.status(), &e.to_string(), out);
    }
}

impl ClientEncoder for BedrockStreamEncoder {
    fn encode(&mut self, chunk: ChatChunk, out: &mut Vec<u8>) {
        BedrockStreamEncoder::encode(self, chunk, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        BedrockStreamEncoder::finish(self, out)
    }

    fn fail(&mut self, e: &GatewayError, out: &mut Vec<u8>) {
        BedrockStreamEncoder::fail(self, e.status(), &e.to_string(), out);
    }

    fn content_type(&self) -> &'static str {
        "application/vnd.amazon.eventstream"
    }

    fn keepalive(&self) -> Option<&'static [u8]> {
        None
    }

    fn served(&self, _served: &str, _out: &mut Vec<u8>) {}
}

/// Where a streaming response is.
// One per stream, moved once into the driving task.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Phase {
    /// The gateway has not committed to an upstream yet (still trying targets); keep-alives go out.
    Waiting(Pending),
    Streaming(ChatStream),
}

/// A streaming response. Each upstream chunk is translated and written as it arrives; a failure after the
/// first byte becomes an error event followed by `[DONE]`, so the client never sees a silent truncation.
/// `served` names the target (`provider/model`) once one is known, for the log; `rec` is the request's
/// log record, written when the stream ends.
pub(crate) fn sse_response<E: ClientEncoder>(phase: Phase, enc: E, keepalive: Duration, served: String, mut rec: Record) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(BUFFERED_FRAMES);
    let abandoned = Arc::new(AtomicBool::new(false));
    rec.status(200);
    rec.streaming();
    let content_type = enc.content_type();
    tokio::spawn(drive(phase, enc, keepalive, served, tx, abandoned.clone(), rec));
    let frames = futures_util::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
        Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(b))),
        // An error instead of a clean end: hyper then drops the connection without the final chunk, so the
        // client cannot take a stream we gave up on for a complete one.
        Poll::Ready(None) if abandoned.load(Ordering::Acquire) => {
            Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client stopped reading the stream"))))
        }
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| error_response(&GatewayError::Internal("cannot build the stream response".into())))
}

/// Has the stream's cost put on the record when its account is settled.
fn settled_into(stream: &mut ChatStream, rec: &Record) {
    let cell = rec.cost_cell();
    if let Some(m) = stream.meter_mut() {
        m.on_settled(move |cost| {
            *cell.lock().unwrap_or_else(|e| e.into_inner()) = cost.map(switchyard_engine::account::nano_usd);
        });
    }
}

enum Sent {
    Yes,
    /// The client went away (the body was dropped).
    Closed,
    /// The client took nothing until the limit.
    Stalled,
}

/// Hands one frame to the body, waiting at most until `until` for room.
async fn send(tx: &mpsc::Sender<Bytes>, frame: Bytes, until: Instant) -> Sent {
    match tx.try_send(frame) {
        Ok(()) => Sent::Yes,
        Err(TrySendError::Closed(_)) => Sent::Closed,
        Err(TrySendError::Full(frame)) => match tokio::time::timeout_at(until, tx.send(frame)).await {
            Ok(Ok(())) => Sent::Yes,
            Ok(Err(_)) => Sent::Closed,
            Err(_) => Sent::Stalled,
        },
    }
}

/// How long the next frame may wait for room: a held upstream only as long as the provider lets the stream
/// stand still, and never past the attempt's deadline.
fn send_limit(phase: &Phase) -> (Instant, Option<Duration>) {
    let now = Instant::now();
    match phase {
        Phase::Streaming(s) => {
            let deadline = Instant::from_std(s.deadline());
            let idle = now + s.idle_timeout();
            (idle.min(deadline), Some(s.idle_timeout()))
        }
        Phase::Waiting(_) => (now + UNCOMMITTED_SEND_WAIT, None),
    }
}

async fn drive<E: ClientEncoder>(
    phase: Phase,
    mut enc: E,
    keepalive: Duration,
    mut served: String,
    tx: mpsc::Sender<Bytes>,
    abandoned: Arc<AtomicBool>,
    // Logged when this task ends, whichever way (a client that left ends it too).
    rec: Record,
) {
    // Declared in this order so that the stream (in `phase`) is dropped, and its account settled, before
    // the record logs its line with the cost.
    let mut rec = rec;
    let mut phase = phase;
    if let Phase::Streaming(s) = &mut phase {
        settled_into(s, &rec);
    }
    loop {
        let mut out = Vec::new();
        let finished = match &mut phase {
            Phase::Waiting(answer) => {
                tokio::select! {
                    // A client that left cancels the attempts still running for it.
                    _ = tx.closed() => return,
                    r = answer => match r {
                        Ok(ChatOutcome::Stream(mut stream, s)) => {
                            served = format!("{}/{}", s.provider, s.model);
                            rec.served(&s);
                            settled_into(&mut stream, &rec);
                            enc.served(&served, &mut out);
                            phase = Phase::Streaming(stream);
                            false
                        }
                        Ok(ChatOutcome::Complete(..)) => {
                            let e = GatewayError::Internal("a stream request got a complete answer".into());
                            rec.failed(&e);
                            rec.ended("failed");
                            enc.fail(&e, &mut out);
                            true
                        }
                        Err(e) => {
                            // The caller's own fault (a 4xx had the headers not gone yet) is only INFO.
                            if e.status() < 500 {
                                tracing::info!("stream failed before its first chunk, after keep-alives: {e}");
                            } else {
                                tracing::warn!("stream failed before its first chunk, after keep-alives: {e}");
                            }
                            rec.failed(&e);
                            rec.ended("failed");
                            enc.fail(&e, &mut out);
                            true
                        }
                    },
                    _ = tokio::time::sleep(keepalive) => {
                        // A client with keep-alives still unread does not need another.
                        match enc.keepalive() {
                            Some(note) => {
                                if let Err(TrySendError::Closed(_)) = tx.try_send(Bytes::from_static(note)) {
                                    return;
                                }
                            }
                            // No keep-alive in this format: only see whether the client is still there.
                            None if tx.is_closed() => return,
                            None => {}
                        }
                        false
                    }
                }
            }
            Phase::Streaming(stream) => {
                // The stream first: a chunk already at hand never pays for watching the client, and a
                // client that left is also seen by the send below.
                let item = tokio::select! {
                    biased;
                    item = stream.next() => item,
                    _ = tx.closed() => return,
                };
                match item {
                    Some(StreamItem::Chunk(c)) => {
                        rec.chunk();
                        rec.usage(c.usage.as_ref());
                        rec.stream_text(&c);
                        enc.encode(c, &mut out);
                        false
                    }
                    Some(StreamItem::End) | None => {
                        rec.ended("completed");
                        enc.finish(&mut out);
                        true
                    }
                    Some(StreamItem::Failed(e)) => {
                        tracing::warn!("stream failed after it started: {e}");
                        rec.failed(&e);
                        rec.ended("failed");
                        enc.fail(&e, &mut out);
                        true
                    }
                }
            }
        };
        if !out.is_empty() {
            let (until, idle) = send_limit(&phase);
            match send(&tx, Bytes::from(out), until).await {
                Sent::Yes => {}
                Sent::Closed => {
                    rec.ended("client_closed");
                    return;
                }
                Sent::Stalled => {
                    abandoned.store(true, Ordering::Release);
                    rec.ended("client_stalled");
                    if let Some(n) = STALLED.hit() {
                        let human = switchyard_engine::human::duration;
                        let why = match idle {
                            Some(d) => format!("for {} (the provider's stream_idle_timeout) or past the attempt's timeout", human(d)),
                            None => format!("for {}", human(UNCOMMITTED_SEND_WAIT)),
                        };
                        let target = if served.is_empty() { String::new() } else { format!(" from {served}") };
                        // The client's doing; the gateway protected itself. INFO.
                        tracing::info!("a stream client took no data {why}; ended its stream{target} and freed the upstream{}", more(n));
                    }
                    // Dropping the phase drops the upstream stream: its connection closes and its slot is freed.
                    return;
                }
            }
        }
        if finished {
            return;
        }
    }
}
