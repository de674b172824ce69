//! Stream decoder checks: the same events however the input is split, and a well-formed event sequence
//! that the client-facing encoder turns into a valid OpenAI stream.

use switchyard_wire::outbound::{ErrorBody, OpenAiStreamEncoder};
use switchyard_wire::sse::{SseEvent, SseParser};
use switchyard_wire::{ProviderKind, ResponseCtx, StreamDecoder, StreamEvent, WireError};

use crate::json::assert_clean_json;
use crate::split::patterns;

/// The identity the engine hands a decoder; the checks expect it wherever the upstream gave none.
pub const CTX: ResponseCtx<'static> = ResponseCtx { id: "chatcmpl-fuzz", created: 1_700_000_000, model: "fuzz-model" };

/// What one decoding produced: the events, and how it ended. A decode stops at its first error, as the
/// engine drops a stream whose decoder failed.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub events: Vec<StreamEvent>,
    pub result: Result<(), WireError>,
}

/// Feeds `pieces` in order, then ends the body.
pub fn decode(kind: ProviderKind, pieces: &[&[u8]]) -> Decoded {
    let mut d = StreamDecoder::new(kind, CTX);
    let mut events = Vec::new();
    for p in pieces {
        if let Err(e) = d.feed(p, &mut events) {
            return Decoded { events, result: Err(e) };
        }
    }
    let result = d.finish(&mut events);
    Decoded { events, result }
}

/// Decodes `bytes` cut every way [`patterns`] knows, asserts the results are identical and well formed,
/// and returns the one result.
pub fn decode_every_way(kind: ProviderKind, bytes: &[u8]) -> Decoded {
    let mut ways = patterns(bytes).into_iter();
    let whole = decode(kind, &ways.next().unwrap_or_default());
    for (i, pieces) in ways.enumerate() {
        let other = decode(kind, &pieces);
        if other != whole {
            panic!(
                "{} decoder: cut pattern {} ({} pieces) disagrees with one piece\nwhole: {whole:?}\nsplit: {other:?}",
                kind.as_str(),
                i + 1,
                pieces.len()
            );
        }
    }
    assert_well_formed(kind, &whole);
    whole
}

/// Properties of any event sequence a decoder produces, whatever it was fed.
pub fn assert_well_formed(kind: ProviderKind, d: &Decoded) {
    let name = kind.as_str();
    if let Some(p) = d.events.iter().position(|e| *e == StreamEvent::Done) {
        assert_eq!(p + 1, d.events.len(), "{name} decoder: events after Done: {:?}", d.events);
    }
    if d.result.is_ok() {
        let last = d.events.last();
        assert!(
            matches!(last, Some(StreamEvent::Done | StreamEvent::Error(_))),
            "{name} decoder: finished without an error but its last event is {last:?}"
        );
    }
    if let Err(e) = &d.result {
        assert!(!e.to_string().is_empty(), "{name} decoder: an error without a message");
        // An event-stream prelude announces its message's length, so Bedrock's decoder can refuse one over
        // its limit before the bytes arrive; the text streams can only be malformed.
        let too_long_ok = kind == ProviderKind::Bedrock && matches!(e, WireError::TooLong { .. });
        assert!(too_long_ok || matches!(e, WireError::Malformed { .. }), "{name} decoder: a stream can only be malformed, got {e:?}");
    }
    for e in &d.events {
        match e {
            StreamEvent::Chunk(c) => {
                assert!(!c.id.is_empty() && !c.model.is_empty(), "{name} decoder: a chunk without id or model: {c:?}");
                assert!(c.created != 0, "{name} decoder: a chunk without a creation time: {c:?}");
            }
            StreamEvent::Error(u) => assert!(!u.message.is_empty(), "{name} decoder: an error event without a message: {u:?}"),
            StreamEvent::Done => {}
        }
    }
    assert_encodes(name, d);
}

/// What a client receives for these events: `data:` frames of clean JSON, ending with `[DONE]`.
fn assert_encodes(name: &str, d: &Decoded) {
    let mut enc = OpenAiStreamEncoder::new(true);
    let mut out = Vec::new();
    for e in &d.events {
        match e {
            StreamEvent::Chunk(c) => enc.encode(c.clone(), &mut out),
            // The engine ends a client's stream at the first error or end marker (upstream.rs).
            StreamEvent::Error(u) => {
                let code = u.code.as_deref();
                enc.fail(&ErrorBody { message: &u.message, kind: "upstream_error", param: None, code }, &mut out);
                break;
            }
            StreamEvent::Done => break,
        }
    }
    if d.result.is_err() {
        enc.fail(&ErrorBody { message: "stream interrupted", kind: "upstream_error", param: None, code: None }, &mut out);
    }
    enc.finish(&mut out);
    let mut frames: Vec<SseEvent> = Vec::new();
    let mut p = SseParser::new();
    crate::must(p.feed(&out, &mut frames), &format!("{name}: the client stream parses as SSE"));
    crate::must(p.finish(&mut frames), &format!("{name}: the client stream ends cleanly"));
    let last = frames.pop();
    assert_eq!(last.map(|f| f.data), Some("[DONE]".to_string()), "{name}: the client stream does not end with [DONE]");
    for f in &frames {
        assert_clean_json(f.data.as_bytes(), &format!("{name}: a client stream frame"));
    }
}
