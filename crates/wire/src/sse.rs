//! Incremental framing for the two streaming encodings upstreams use: Server-Sent Events and NDJSON.
//!
//! Both parsers take bytes exactly as they come off the socket (frames split anywhere, even inside a UTF-8
//! sequence) and hand back complete events, so the provider decoders above them never see partial input.
//! They keep only the unfinished tail between calls.

/// One SSE event: the last `event:` field (if any) and the `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Accepts `\n`, `\r\n` and `\r` line ends, comment lines (keep-alives such as `: OPENROUTER PROCESSING`),
/// multi-line `data:` and fields without a space after the colon.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`; a `\n` starting the next chunk belongs to the same line end.
    skip_lf: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        // An empty piece (HTTP/2 upstreams send empty DATA frames) must not forget a `\r` waiting for its `\n`.
        if bytes.is_empty() {
            return;
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
                if self.buf.is_empty() {
                    self.line(&bytes[start..line_end], out);
                } else {
                    self.buf.extend_from_slice(&bytes[start..line_end]);
                    let line = std::mem::take(&mut self.buf);
                    self.line(&line, out);
                }
                start = i + 1;
            }
            i += 1;
        }
        if start < bytes.len() {
            self.buf.extend_from_slice(&bytes[start..]);
        }
    }

    /// End of input: an event that was not closed by a blank line is still delivered.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            _ => {}
        }
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
#[derive(Debug, Default)]
pub struct NdjsonParser {
    buf: Vec<u8>,
}

impl NdjsonParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(p) = self.buf[start..].iter().position(|&c| c == b'\n') {
            let line = trim_line(&self.buf[start..start + p]);
            if !line.is_empty() {
                out.push(line.to_vec());
            }
            start += p + 1;
        }
        self.buf.drain(..start);
    }

    pub fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        let line = trim_line(&self.buf);
        if !line.is_empty() {
            out.push(line.to_vec());
        }
        self.buf.clear();
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
            p.feed(c, &mut out);
        }
        p.finish(&mut out);
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
        p.feed(b"{\"a\":1}\n\n{\"b\"", &mut out);
        p.feed(b":2}\r\n{\"c\":3}", &mut out);
        p.finish(&mut out);
        assert_eq!(out, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec(), b"{\"c\":3}".to_vec()]);
    }
}
