//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), which Bedrock's
//! ConverseStream and InvokeModelWithResponseStream answer with instead of SSE: a stateful incremental
//! decoder that checks both CRCs, and an encoder for the Bedrock mock and the `/bedrock` drop-in route.
//!
//! A message is, all integers big-endian:
//! ```text
//! total_length u32 | headers_length u32 | prelude_crc u32 (CRC-32 of the first 8 bytes)
//! headers (headers_length bytes) | payload | message_crc u32 (CRC-32 of everything before it)
//! ```
//! and each header is `name_len u8, name, type u8, value` with the value types below.
//!
//! Bytes arrive from the socket in arbitrary pieces, so the decoder buffers only the message in progress
//! and checks the 12-byte prelude (its CRC and its lengths against the bound) as soon as it is complete:
//! a corrupt or hostile length is refused before a single byte of the body it announces is buffered.
//!
//! CRC-32 (the IEEE/zlib polynomial) is a 256-entry table built at compile time. That is a dozen lines, so
//! no crate is taken for it: `crc32fast` would be faster on large inputs with SIMD, but event-stream
//! messages are small (a delta is well under a kilobyte) and the table is not where the time goes.

use std::fmt;

/// Largest message accepted by default: AWS's payload limit (24 MiB) plus its header limit (128 KiB) and
/// the framing. Callers bound it lower with [`Decoder::set_max_message_bytes`].
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 24 * 1024 * 1024 + 128 * 1024 + 16;

const PRELUDE: usize = 12;
/// Prelude plus the trailing message CRC: the smallest message (no headers, no payload).
const OVERHEAD: usize = PRELUDE + 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventStreamError {
    #[error("event-stream prelude CRC mismatch (computed {computed:#010x}, sent {sent:#010x})")]
    PreludeCrc { computed: u32, sent: u32 },
    #[error("event-stream message CRC mismatch (computed {computed:#010x}, sent {sent:#010x})")]
    MessageCrc { computed: u32, sent: u32 },
    #[error("event-stream message of {len} bytes is over the {limit} byte limit")]
    TooLong { len: usize, limit: usize },
    #[error("event-stream prelude announces {total} bytes with {headers} bytes of headers, which cannot be")]
    BadLengths { total: u32, headers: u32 },
    #[error("event-stream header is malformed: {0}")]
    BadHeader(String),
    #[error("event-stream ended {0} bytes into a message")]
    Truncated(usize),
    #[error("event-stream message cannot be encoded: {0}")]
    Encode(String),
}

/// A header value, by its wire type (the type byte in parentheses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// (0) true, (1) false
    Bool(bool),
    /// (2)
    Byte(i8),
    /// (3)
    Short(i16),
    /// (4)
    Int(i32),
    /// (5)
    Long(i64),
    /// (6) u16 length + bytes
    Bytes(Vec<u8>),
    /// (7) u16 length + UTF-8
    String(String),
    /// (8) milliseconds since the epoch
    Timestamp(i64),
    /// (9)
    Uuid([u8; 16]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: HeaderValue,
}

impl Header {
    pub fn string(name: &str, value: &str) -> Self {
        Header { name: name.to_string(), value: HeaderValue::String(value.to_string()) }
    }
}

/// One event-stream message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub headers: Vec<Header>,
    pub payload: Vec<u8>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message").field("headers", &self.headers).field("payload", &String::from_utf8_lossy(&self.payload)).finish()
    }
}

impl Message {
    /// The value of a string header.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name == name).and_then(|h| match &h.value {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// An AWS event: `:event-type`, `:content-type: application/json`, `:message-type: event`, in the
    /// order AWS sends them.
    pub fn event(event_type: &str, json: Vec<u8>) -> Self {
        Message {
            headers: vec![
                Header::string(":event-type", event_type),
                Header::string(":content-type", "application/json"),
                Header::string(":message-type", "event"),
            ],
            payload: json,
        }
    }

    /// A modeled error inside the stream (`:message-type: exception`), `exception_type` in the stream's
    /// lower-camel member name (`throttlingException`), the payload `{"message":…}`.
    pub fn exception(exception_type: &str, json: Vec<u8>) -> Self {
        Message {
            headers: vec![
                Header::string(":exception-type", exception_type),
                Header::string(":content-type", "application/json"),
                Header::string(":message-type", "exception"),
            ],
            payload: json,
        }
    }

    /// Appends the message's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EventStreamError> {
        let start = out.len();
        out.extend_from_slice(&[0; PRELUDE]);
        for h in &self.headers {
            if let Err(e) = encode_header(h, out) {
                out.truncate(start);
                return Err(e);
            }
        }
        let headers_len = out.len() - start - PRELUDE;
        out.extend_from_slice(&self.payload);
        let total = out.len() - start + 4;
        let (Ok(total32), Ok(headers32)) = (u32::try_from(total), u32::try_from(headers_len)) else {
            out.truncate(start);
            return Err(EventStreamError::Encode(format!("a message of {total} bytes is over the format's 4 GiB")));
        };
        out[start..start + 4].copy_from_slice(&total32.to_be_bytes());
        out[start + 4..start + 8].copy_from_slice(&headers32.to_be_bytes());
        let prelude_crc = crc32(&out[start..start + 8]);
        out[start + 8..start + 12].copy_from_slice(&prelude_crc.to_be_bytes());
        let message_crc = crc32(&out[start..]);
        out.extend_from_slice(&message_crc.to_be_bytes());
        Ok(())
    }

    /// The message's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EventStreamError> {
        let mut out = Vec::with_capacity(OVERHEAD + 96 + self.payload.len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

fn encode_header(h: &Header, out: &mut Vec<u8>) -> Result<(), EventStreamError> {
    let name = h.name.as_bytes();
    let name_len = u8::try_from(name.len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| EventStreamError::Encode(format!("header name of {} bytes (1 to 255 allowed)", name.len())))?;
    out.push(name_len);
    out.extend_from_slice(name);
    let var = |bytes: &[u8], out: &mut Vec<u8>| -> Result<(), EventStreamError> {
        let len = u16::try_from(bytes.len())
            .map_err(|_| EventStreamError::Encode(format!("header \"{}\" value of {} bytes (65535 allowed)", h.name, bytes.len())))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
        Ok(())
    };
    match &h.value {
        HeaderValue::Bool(true) => out.push(0),
        HeaderValue::Bool(false) => out.push(1),
        HeaderValue::Byte(v) => {
            out.push(2);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Short(v) => {
            out.push(3);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Int(v) => {
            out.push(4);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Long(v) => {
            out.push(5);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Bytes(b) => {
            out.push(6);
            var(b, out)?;
        }
        HeaderValue::String(s) => {
            out.push(7);
            var(s.as_bytes(), out)?;
        }
        HeaderValue::Timestamp(v) => {
            out.push(8);
            out.extend_from_slice(&v.to_be_bytes());
        }
        HeaderValue::Uuid(u) => {
            out.push(9);
            out.extend_from_slice(u);
        }
    }
    Ok(())
}

/// Decodes messages from bytes that arrive in pieces of any size.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// The current message's total length, once its prelude has been read and checked.
    expected: Option<usize>,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder { buf: Vec::new(), expected: None, max: DEFAULT_MAX_MESSAGE_BYTES }
    }

    /// Bounds one message; a prelude announcing more fails with [`EventStreamError::TooLong`].
    pub fn set_max_message_bytes(&mut self, max: usize) {
        self.max = max.max(OVERHEAD);
    }

    /// Feeds bytes and appends the messages they complete. After an error the stream cannot be read on.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Message>) -> Result<(), EventStreamError> {
        while !bytes.is_empty() {
            let want = self.expected.unwrap_or(PRELUDE);
            let take = (want - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() < want {
                break;
            }
            match self.expected {
                None => self.expected = Some(self.check_prelude()?),
                Some(_) => {
                    out.push(parse_message(&self.buf)?);
                    self.buf.clear();
                    self.expected = None;
                }
            }
        }
        Ok(())
    }

    /// The body ended: an error if it ended inside a message.
    pub fn finish(&self) -> Result<(), EventStreamError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(EventStreamError::Truncated(self.buf.len()))
        }
    }

    /// Whether bytes of an unfinished message are buffered.
    pub fn is_mid_message(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Checks the buffered 12-byte prelude and returns the message's total length.
    fn check_prelude(&self) -> Result<usize, EventStreamError> {
        let p = &self.buf[..PRELUDE];
        let total = be32(&p[0..4]);
        let headers = be32(&p[4..8]);
        let sent = be32(&p[8..12]);
        let computed = crc32(&p[..8]);
        if computed != sent {
            return Err(EventStreamError::PreludeCrc { computed, sent });
        }
        let total_len = usize::try_from(total).unwrap_or(usize::MAX);
        let headers_len = usize::try_from(headers).unwrap_or(usize::MAX);
        if total_len < OVERHEAD || headers_len > total_len - OVERHEAD {
            return Err(EventStreamError::BadLengths { total, headers });
        }
        if total_len > self.max {
            return Err(EventStreamError::TooLong { len: total_len, limit: self.max });
        }
        Ok(total_len)
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses one whole message whose prelude was checked.
fn parse_message(m: &[u8]) -> Result<Message, EventStreamError> {
    let end = m.len() - 4;
    let sent = be32(&m[end..]);
    let computed = crc32(&m[..end]);
    if computed != sent {
        return Err(EventStreamError::MessageCrc { computed, sent });
    }
    let headers_len = usize::try_from(be32(&m[4..8])).unwrap_or(usize::MAX);
    let headers_end = PRELUDE + headers_len;
    let headers = parse_headers(&m[PRELUDE..headers_end])?;
    Ok(Message { headers, payload: m[headers_end..end].to_vec() })
}

fn parse_headers(mut b: &[u8]) -> Result<Vec<Header>, EventStreamError> {
    fn take<'a>(b: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], EventStreamError> {
        if b.len() < n {
            return Err(EventStreamError::BadHeader(format!("{what} runs past the end of the headers")));
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn array<const N: usize>(b: &mut &[u8], what: &str) -> Result<[u8; N], EventStreamError> {
        let s = take(b, N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let name_len = usize::from(take(&mut b, 1, "a header name length")?[0]);
        if name_len == 0 {
            return Err(EventStreamError::BadHeader("a header has an empty name".into()));
        }
        let name = std::str::from_utf8(take(&mut b, name_len, "a header name")?)
            .map_err(|_| EventStreamError::BadHeader("a header name is not UTF-8".into()))?
            .to_string();
        let kind = take(&mut b, 1, "a header type")?[0];
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(array::<1>(&mut b, &name)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(array::<2>(&mut b, &name)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(array::<4>(&mut b, &name)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(array::<8>(&mut b, &name)?)),
            6 | 7 => {
                let len = usize::from(u16::from_be_bytes(array::<2>(&mut b, &name)?));
                let bytes = take(&mut b, len, &name)?;
                if kind == 6 {
                    HeaderValue::Bytes(bytes.to_vec())
                } else {
                    HeaderValue::String(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| EventStreamError::BadHeader(format!("header \"{name}\" is not UTF-8")))?,
                    )
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(array::<8>(&mut b, &name)?)),
            9 => HeaderValue::Uuid(array::<16>(&mut b, &name)?),
            other => return Err(EventStreamError::BadHeader(format!("header \"{name}\" has unknown type {other}"))),
        };
        out.push(Header { name, value });
    }
    Ok(out)
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// CRC-32 (IEEE 802.3, as zlib and the event-stream format compute it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[usize::from((c as u8) ^ b)] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the provider reference: a `messageStop` event, CRCs checked with botocore.
    const MESSAGE_STOP: &[u8] = b"\x00\x00\x00\x7a\x00\x00\x00\x51\xca\x2c\x46\x65\x0b:event-type\x07\x00\x0bmessageStop\x0d:content-type\x07\x00\x10application/json\x0d:message-type\x07\x00\x05event{\"stopReason\":\"end_turn\"}\x5f\xbf\x09\xfc";

    fn decode_in(bytes: &[u8], piece: usize) -> Result<Vec<Message>, EventStreamError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for c in bytes.chunks(piece.max(1)) {
            d.feed(c, &mut out)?;
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn crc32_check_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    #[test]
    fn encodes_the_reference_example_byte_for_byte() {
        let m = Message::event("messageStop", br#"{"stopReason":"end_turn"}"#.to_vec());
        assert_eq!(m.to_bytes().unwrap(), MESSAGE_STOP);
    }

    #[test]
    fn decodes_in_any_piece_size() {
        let mut stream = MESSAGE_STOP.to_vec();
        stream.extend(Message::exception("throttlingException", br#"{"message":"slow down"}"#.to_vec()).to_bytes().unwrap());
        for piece in [1, 3, 12, 13, 121, 122, 123, stream.len()] {
            let ms = decode_in(&stream, piece).unwrap();
            assert_eq!(ms.len(), 2, "piece {piece}");
            assert_eq!(ms[0].header_str(":event-type"), Some("messageStop"));
            assert_eq!(ms[0].header_str(":message-type"), Some("event"));
            assert_eq!(ms[0].payload, br#"{"stopReason":"end_turn"}"#);
            assert_eq!(ms[1].header_str(":exception-type"), Some("throttlingException"));
            assert_eq!(ms[1].header_str(":message-type"), Some("exception"));
        }
    }

    #[test]
    fn every_header_type_round_trips() {
        let m = Message {
            headers: vec![
                Header { name: "t".into(), value: HeaderValue::Bool(true) },
                Header { name: "f".into(), value: HeaderValue::Bool(false) },
                Header { name: "i8".into(), value: HeaderValue::Byte(-3) },
                Header { name: "i16".into(), value: HeaderValue::Short(-300) },
                Header { name: "i32".into(), value: HeaderValue::Int(70_000) },
                Header { name: "i64".into(), value: HeaderValue::Long(-5_000_000_000) },
                Header { name: "bytes".into(), value: HeaderValue::Bytes(vec![0, 1, 255]) },
                Header { name: "str".into(), value: HeaderValue::String("wörld".into()) },
                Header { name: "ts".into(), value: HeaderValue::Timestamp(1_735_732_800_000) },
                Header { name: "uuid".into(), value: HeaderValue::Uuid([7; 16]) },
            ],
            payload: vec![],
        };
        let bytes = m.to_bytes().unwrap();
        assert_eq!(decode_in(&bytes, 5).unwrap(), vec![m]);
        // An empty message is the 16 bytes of framing.
        assert_eq!(Message::default().to_bytes().unwrap().len(), 16);
        assert_eq!(decode_in(&Message::default().to_bytes().unwrap(), 1).unwrap(), vec![Message::default()]);
    }

    #[test]
    fn corrupt_crcs_are_refused() {
        let mut b = MESSAGE_STOP.to_vec();
        b[9] ^= 1;
        assert!(matches!(decode_in(&b, 7), Err(EventStreamError::PreludeCrc { .. })));
        let mut b = MESSAGE_STOP.to_vec();
        b[100] ^= 1;
        assert!(matches!(decode_in(&b, 7), Err(EventStreamError::MessageCrc { .. })));
        let mut b = MESSAGE_STOP.to_vec();
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(decode_in(&b, 200), Err(EventStreamError::MessageCrc { .. })));
    }

    /// A prelude with a valid CRC for the given lengths.
    fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut p = total.to_be_bytes().to_vec();
        p.extend(headers.to_be_bytes());
        let c = crc32(&p);
        p.extend(c.to_be_bytes());
        p
    }

    #[test]
    fn lengths_are_checked_before_anything_is_buffered() {
        let mut d = Decoder::new();
        d.set_max_message_bytes(1024);
        let mut out = Vec::new();
        let err = d.feed(&prelude(1_000_000, 0), &mut out).unwrap_err();
        assert_eq!(err, EventStreamError::TooLong { len: 1_000_000, limit: 1024 });
        for (total, headers) in [(15, 0), (20, 5), (16, 1)] {
            let err = Decoder::new().feed(&prelude(total, headers), &mut out).unwrap_err();
            assert_eq!(err, EventStreamError::BadLengths { total, headers });
        }
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        for headers in [&b"\x00"[..], b"\x03abc", b"\x01a\x07\x00\x09xy", b"\x01a\x0a", b"\x01a\x04\x00\x00", b"\x02\xff\xfe\x00"] {
            let mut m = prelude(16 + headers.len() as u32, headers.len() as u32);
            m.extend_from_slice(headers);
            let c = crc32(&m);
            m.extend(c.to_be_bytes());
            assert!(matches!(decode_in(&m, 1), Err(EventStreamError::BadHeader(_))), "{headers:?}");
        }
    }

    #[test]
    fn a_stream_cut_mid_message_is_truncated() {
        for cut in [1, 11, 12, 50, MESSAGE_STOP.len() - 1] {
            assert_eq!(decode_in(&MESSAGE_STOP[..cut], 4), Err(EventStreamError::Truncated(cut)), "cut at {cut}");
        }
        assert_eq!(decode_in(b"", 1), Ok(vec![]));
    }

    #[test]
    fn encoding_refuses_what_the_format_cannot_hold() {
        let long_name = Message { headers: vec![Header::string(&"n".repeat(256), "v")], payload: vec![] };
        assert!(matches!(long_name.to_bytes(), Err(EventStreamError::Encode(_))));
        let long_value = Message { headers: vec![Header::string("n", &"v".repeat(70_000))], payload: vec![] };
        assert!(matches!(long_value.to_bytes(), Err(EventStreamError::Encode(_))));
        let empty_name = Message { headers: vec![Header::string("", "v")], payload: vec![] };
        assert!(matches!(empty_name.to_bytes(), Err(EventStreamError::Encode(_))));
    }
}
