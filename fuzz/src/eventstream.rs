//! AWS event-stream framing checks (Bedrock's ConverseStream body): the decoder in
//! `switchyard_wire::eventstream` reads length-prefixed binary messages with two CRCs, and its input is
//! whatever an upstream (or anything between it and us) sends.
//!
//! What must hold for arbitrary bytes: no panic, the same messages and the same outcome however the bytes
//! are cut (the decoder buffers a message until its announced length is in), a clean end only on a message
//! boundary, and every message it accepts re-encodes to exactly the bytes it was read from (nothing read
//! is lost or invented, since both CRCs matched).

use switchyard_wire::eventstream::{Decoder, EventStreamError, Message};

use crate::split::patterns;

/// What one decoding produced. A decode stops at its first error: the stream cannot be read on.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub messages: Vec<Message>,
    pub result: Result<(), EventStreamError>,
}

/// Feeds `pieces` in order, then ends the body.
pub fn decode(pieces: &[&[u8]]) -> Decoded {
    let mut d = Decoder::new();
    let mut messages = Vec::new();
    for p in pieces {
        if let Err(e) = d.feed(p, &mut messages) {
            return Decoded { messages, result: Err(e) };
        }
    }
    let result = d.finish();
    Decoded { messages, result }
}

/// Arbitrary bytes as an event-stream body, cut every way [`patterns`] knows.
pub fn check(bytes: &[u8]) {
    let mut ways = patterns(bytes).into_iter();
    let whole = decode(&ways.next().unwrap_or_default());
    for (i, pieces) in ways.enumerate() {
        let other = decode(&pieces);
        assert_eq!(other, whole, "event-stream decoder: cut pattern {} ({} pieces) disagrees with one piece", i + 1, pieces.len());
    }
    let mut at = 0usize;
    for m in &whole.messages {
        let encoded = crate::must(m.to_bytes(), "a decoded message encodes again");
        let end = at + encoded.len();
        assert!(end <= bytes.len(), "event-stream decoder: a message of {} bytes from {} bytes left", encoded.len(), bytes.len() - at);
        assert_eq!(&bytes[at..end], encoded.as_slice(), "event-stream decoder: message at byte {at} does not re-encode to its bytes");
        at = end;
    }
    match &whole.result {
        Ok(()) => assert_eq!(at, bytes.len(), "event-stream decoder: ended cleanly with {} bytes unread", bytes.len() - at),
        Err(e) => assert!(!e.to_string().is_empty(), "event-stream decoder: an error without a message"),
    }
}

/// Messages built from the fuzzer's choices round trip through the encoder and the decoder, cut any way.
pub fn round_trip(messages: &[Message]) {
    let mut bytes = Vec::new();
    let mut encoded = Vec::new();
    for m in messages {
        // Only a header name or value over the format's limits is refused, which is the encoder's to say.
        if m.encode(&mut bytes).is_ok() {
            encoded.push(m.clone());
        }
    }
    for pieces in patterns(&bytes) {
        let d = decode(&pieces);
        assert_eq!(d.result, Ok(()), "event-stream: what we encoded does not decode");
        assert_eq!(d.messages, encoded, "event-stream: decoded messages differ from the encoded ones");
    }
}

/// Messages from the fuzzer's choices: any header names and types (names of 1 to 255 bytes are valid,
/// others the encoder must refuse), payloads of any bytes. Valid CRCs are what random bytes almost never
/// have, so this is the way to reach the header parser with well-framed messages.
pub fn messages(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Vec<Message>> {
    use switchyard_wire::eventstream::{Header, HeaderValue};
    let n = u.int_in_range(0..=6)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut headers = Vec::new();
        for _ in 0..u.int_in_range(0..=5)? {
            let name: String = match u.int_in_range(0..=3)? {
                0 => ":event-type".into(),
                1 => ":message-type".into(),
                2 => ":content-type".into(),
                _ => u.arbitrary()?,
            };
            let value = match u.int_in_range(0..=9)? {
                0 => HeaderValue::Bool(u.arbitrary()?),
                1 => HeaderValue::Byte(u.arbitrary()?),
                2 => HeaderValue::Short(u.arbitrary()?),
                3 => HeaderValue::Int(u.arbitrary()?),
                4 => HeaderValue::Long(u.arbitrary()?),
                5 => HeaderValue::Bytes(u.arbitrary()?),
                6 => HeaderValue::String(u.arbitrary()?),
                7 => HeaderValue::Timestamp(u.arbitrary()?),
                8 => HeaderValue::Uuid(u.arbitrary()?),
                _ => HeaderValue::String("contentBlockDelta".into()),
            };
            headers.push(Header { name, value });
        }
        let payload: Vec<u8> = u.arbitrary()?;
        out.push(Message { headers, payload });
    }
    Ok(out)
}
