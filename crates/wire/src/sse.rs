//! Incremental framing for the two streaming encodings upstreams use: Server-Sent Events and NDJSON.
//!
//! Both parsers take bytes exactly as they come off the socket (frames split anywhere, even inside a UTF-8
//! sequence) and hand back complete events, so the provider decoders above them never see partial input.
//! They keep only the unfinished tail between calls, and that tail is bounded: an upstream that never ends
//! a line (or an event) would otherwise make the gateway buffer without limit. Past the bound the parser
//! fails with [`WireError::TooLong`], frees what it held and stays failed; the engine then drops the
//! connection.

use crate::error::WireError;

/// The default bound on one SSE line, one SSE event's joined `data:`, or one NDJSON line. Real events are
/// a few hundred bytes; the largest legitimate ones carry a whole image as a base64 data URL in one delta
/// (a few MB), which this still admits.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 << 20;

/// One SSE event: the last `event:` field (if any) and the `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Accepts `\n`, `\r\n` and `\r` line ends, comment lines (keep-alives such as `: OPENROUTER PROCESSING`),
/// multi-line `data:` and fields without a space after the colon.
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`; a `\n` starting the next chunk belongs to the same line end.
    skip_lf: bool,
    /// Longest line, and longest joined `data:` of one event, in bytes.
    max: usize,
    /// A bound was crossed: the stream is unusable from here on.
    failed: Option<WireError>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that fails once a line, or an event's joined data, grows past `max` bytes.
    pub fn with_limit(max: usize) -> Self {
        SseParser { buf: Vec::new(), event: None, data: String::new(), has_data: false, skip_lf: false, max, failed: None }
    }

    /// Changes the bound (before the first [`SseParser::feed`], typically).
    pub fn set_limit(&mut self, max: usize) {
        self.max = max;
    }

    /// Bytes held between calls: the unfinished line and the unfinished event's data.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.data.len()
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(bytes, out);
        if let Err(e) = &r {
            self.fail(e.clone());
        }
        r
    }

    fn feed_inner(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), WireError> {
        // An empty piece (HTTP/2 upstreams send empty DATA frames) must not forget a `\r` waiting for its `\n`.
        if bytes.is_empty() {
            return Ok(());
        }
        let mut bytes = bytes;
        if self.skip_lf {
            if let Some(b'\n') = bytes.first() {
                bytes = &bytes[1..];
            }
            self.skip_lf = false;
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\n' || b == b'\r' {
                let line_end = i;
                if b == b'\r' {
                    if i + 1 < bytes.len() {
                        if bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.skip_lf = true;
                    }
                }
                if self.buf.len() + (line_end - start) > self.max {
                    return Err(self.too_long("an SSE line"));
                }
                if self.buf.is_empty() {
                    self.line(&bytes[start..line_end], out)?;
                } else {
                    self.buf.extend_from_slice(&bytes[start..line_end]);
                    // Taken, not cleared: a long line's capacity is not kept for the rest of the stream.
                    let line = std::mem::take(&mut self.buf);
                    self.line(&line, out)?;
                }
                start = i + 1;
            }
            i += 1;
        }
        if start < bytes.len() {
            if self.buf.len() + (bytes.len() - start) > self.max {
                return Err(self.too_long("an SSE line"));
            }
            self.buf.extend_from_slice(&bytes[start..]);
        }
        Ok(())
    }

    /// End of input: an event that was not closed by a blank line is still delivered.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            if let Err(e) = self.line(&line, out) {
                self.fail(e.clone());
                return Err(e);
            }
        }
        self.dispatch(out);
        Ok(())
    }

    fn too_long(&self, what: &'static str) -> WireError {
        WireError::TooLong { what, limit: self.max }
    }

    /// Frees everything held and remembers why.
    fn fail(&mut self, e: WireError) {
        self.buf = Vec::new();
        self.data = String::new();
        self.event = None;
        self.has_data = false;
        self.failed = Some(e);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), WireError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                // Many short `data:` lines without the blank line that ends an event grow it just the same.
                if self.data.len() + value.len() + 1 > self.max {
                    return Err(self.too_long("an SSE event"));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent { event: self.event.take(), data: std::mem::take(&mut self.data) });
        }
        self.event = None;
        self.has_data = false;
    }
}

/// Newline-delimited JSON (Ollama's native streams): yields each non-empty line.
#[derive(Debug)]
pub struct NdjsonParser {
    buf: Vec<u8>,
    /// Longest line in bytes.
    max: usize,
    failed: Option<WireError>,
}

impl Default for NdjsonParser {
    fn default() -> Self {
        Self::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

/// Above this, a buffer that has been drained to a short tail gives its capacity back.
const KEEP_CAPACITY: usize = 64 << 10;

impl NdjsonParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that fails once a line grows past `max` bytes.
    pub fn with_limit(max: usize) -> Self {
        NdjsonParser { buf: Vec::new(), max, failed: None }
    }

    pub fn set_limit(&mut self, max: usize) {
        self.max = max;
    }

    /// Bytes held between calls (the unfinished line).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut rest = bytes;
        // Only the unfinished line is copied; complete lines are cut straight out of the input.
        while let Some(p) = rest.iter().position(|&c| c == b'\n') {
            if self.buf.len() + p > self.max {
                return Err(self.fail());
            }
            if self.buf.is_empty() {
                push_line(&rest[..p], out);
            } else {
                self.buf.extend_from_slice(&rest[..p]);
                let line = std::mem::take(&mut self.buf);
                push_line(&line, out);
            }
            rest = &rest[p + 1..];
        }
        if self.buf.len() + rest.len() > self.max {
            return Err(self.fail());
        }
        self.buf.extend_from_slice(rest);
        if self.buf.capacity() > KEEP_CAPACITY && self.buf.len() < self.buf.capacity() / 4 {
            self.buf.shrink_to_fit();
        }
        Ok(())
    }

    pub fn finish(&mut self, out: &mut Vec<Vec<u8>>) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        push_line(&std::mem::take(&mut self.buf), out);
        Ok(())
    }

    fn fail(&mut self) -> WireError {
        let e = WireError::TooLong { what: "an NDJSON line", limit: self.max };
        self.buf = Vec::new();
        self.failed = Some(e.clone());
        e
    }
}

fn push_line(line: &[u8], out: &mut Vec<Vec<u8>>) {
    let line = trim_line(line);
    if !line.is_empty() {
        out.push(line.to_vec());
    }
}

fn trim_line(l: &[u8]) -> &[u8] {
    let mut l = l;
    while let [rest @ .., b'\r' | b' ' | b'\t'] = l {
        l = rest;
    }
    while let [b' ' | b'\t', rest @ ..] = l {
        l = rest;
    }
    l
}

/// Appends one `data:` frame. JSON never contains a raw newline, so one line is enough.
pub fn write_data_frame(out: &mut Vec<u8>, json: &[u8]) {
    out.reserve(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

/// Appends a named frame (`event:` + `data:`), the shape Anthropic-style streams use.
pub fn write_named_frame(out: &mut Vec<u8>, event: &str, json: &[u8]) {
    out.reserve(json.len() + event.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            p.feed(c, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn splits_anywhere_and_handles_every_line_end() {
        let input = b"event: a\r\ndata: {\"x\":1}\r\n\r\n: keep-alive\n\ndata: l1\ndata: l2\n\ndata:nospace\r\rdata: \xc3\xa9t\xc3\xa9\n\n";
        let expect = vec![
            SseEvent { event: Some("a".into()), data: "{\"x\":1}".into() },
            SseEvent { event: None, data: "l1\nl2".into() },
            SseEvent { event: None, data: "nospace".into() },
            SseEvent { event: None, data: "été".into() },
        ];
        for piece in 1..input.len() {
            assert_eq!(parse_in_pieces(input, piece), expect, "piece size {piece}");
        }
    }

    #[test]
    fn unterminated_last_event_is_delivered_at_finish() {
        assert_eq!(parse_in_pieces(b"data: [DONE]", 4), vec![SseEvent { event: None, data: "[DONE]".into() }]);
    }

    #[test]
    fn ndjson_lines() {
        let mut p = NdjsonParser::new();
        let mut out = Vec::new();
        p.feed(b"{\"a\":1}\n\n{\"b\"", &mut out).unwrap();
        p.feed(b":2}\r\n{\"c\":3}", &mut out).unwrap();
        p.finish(&mut out).unwrap();
        assert_eq!(out, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec(), b"{\"c\":3}".to_vec()]);
    }

    #[test]
    fn an_endless_sse_line_fails_at_the_bound_and_frees_its_buffer() {
        let mut p = SseParser::with_limit(64);
        let mut out = Vec::new();
        p.feed(b"data: {\"ok\":1}\n\ndata: ", &mut out).unwrap();
        assert_eq!(out.len(), 1, "events before the long line are delivered");
        let chunk = [b'a'; 16];
        let mut fed = 6;
        let err = loop {
            match p.feed(&chunk, &mut out) {
                Ok(()) => fed += chunk.len(),
                Err(e) => break e,
            }
            assert!(fed <= 64, "the parser held {fed} bytes past its bound of 64");
        };
        assert_eq!(err, WireError::TooLong { what: "an SSE line", limit: 64 });
        assert_eq!(p.buffered(), 0);
        assert_eq!(p.feed(b"\n\n", &mut out), Err(err.clone()), "a failed parser stays failed");
        assert_eq!(p.finish(&mut out), Err(err));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_long_line_inside_one_chunk_fails_too() {
        let mut input = b"data: ".to_vec();
        input.extend_from_slice(&[b'x'; 100]);
        input.extend_from_slice(b"\n\n");
        let mut out = Vec::new();
        let e = SseParser::with_limit(64).feed(&input, &mut out).unwrap_err();
        assert_eq!(e, WireError::TooLong { what: "an SSE line", limit: 64 });
        assert!(out.is_empty());
        // At the bound exactly is fine.
        let mut at = b"data: ".to_vec();
        at.extend_from_slice(&[b'x'; 58]);
        at.extend_from_slice(b"\n\n");
        SseParser::with_limit(64).feed(&at, &mut out).unwrap();
        assert_eq!(out[0].data.len(), 58);
    }

    #[test]
    fn an_event_of_many_short_data_lines_is_bounded() {
        let mut p = SseParser::with_limit(64);
        let mut out = Vec::new();
        let err = (0..100).find_map(|_| p.feed(b"data: 0123456789\n", &mut out).err()).unwrap();
        assert_eq!(err, WireError::TooLong { what: "an SSE event", limit: 64 });
        assert!(out.is_empty());
        assert_eq!(p.buffered(), 0);
    }

    #[test]
    fn an_endless_ndjson_line_fails_at_the_bound() {
        let mut p = NdjsonParser::with_limit(32);
        let mut out = Vec::new();
        p.feed(b"{\"a\":1}\n{\"b\":", &mut out).unwrap();
        let err = (0..10).find_map(|_| p.feed(b"0123456789", &mut out).err()).unwrap();
        assert_eq!(err, WireError::TooLong { what: "an NDJSON line", limit: 32 });
        assert_eq!((out.len(), p.buffered()), (1, 0));
        assert_eq!(p.finish(&mut out), Err(err));
        let mut long = vec![b'1'; 40];
        long.push(b'\n');
        assert!(NdjsonParser::with_limit(32).feed(&long, &mut out).is_err(), "a complete line over the bound fails as well");
    }
}
