//! The client-facing side of the OpenAI API shape: the stream encoder and the error body.
//!
//! Upstream decoders produce canonical chunks; this turns them into exactly what an OpenAI SDK expects:
//! `data:` frames, usage only when the caller asked for it (as one last chunk with `choices: []`), errors
//! after the first byte as an `{"error":…}` frame, and a final `data: [DONE]`.

use serde::Serialize;

use crate::sse::{write_data_frame, DONE_FRAME};
use crate::types::{ChatChunk, Usage};

/// OpenAI's error body: `{"error":{"message","type","param","code"}}` with all four keys present.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub param: Option<&'a str>,
    pub code: Option<&'a str>,
}

impl ErrorBody<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Wrapper<'a, 'b> {
            error: &'b ErrorBody<'a>,
        }
        // Serializing plain strings and options cannot fail.
        serde_json::to_vec(&Wrapper { error: self }).unwrap_or_default()
    }
}

/// Encodes canonical chunks as an OpenAI SSE stream for one client.
#[derive(Debug)]
pub struct OpenAiStreamEncoder {
    include_usage: bool,
    usage: Option<Usage>,
    last: Option<(String, i64, String, Option<String>)>,
    finished: bool,
}

impl OpenAiStreamEncoder {
    pub fn new(include_usage: bool) -> Self {
        OpenAiStreamEncoder { include_usage, usage: None, last: None, finished: false }
    }

    /// The usage the upstream reported so far (for accounting, whether or not the client sees it).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Appends the frame for one chunk. A usage-only chunk is held back and sent by [`Self::finish`].
    pub fn encode(&mut self, mut chunk: ChatChunk, out: &mut Vec<u8>) {
        if let Some(u) = chunk.usage.take() {
            self.usage = Some(u);
        }
        if chunk.choices.is_empty() {
            return;
        }
        if self.last.is_none() {
            self.last = Some((chunk.id.clone(), chunk.created, chunk.model.clone(), chunk.system_fingerprint.clone()));
        }
        if let Ok(json) = serde_json::to_vec(&chunk) {
            write_data_frame(out, &json);
        }
    }

    /// The stream ended well: the usage chunk (if asked for and known) and `[DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.include_usage {
            if let (Some(u), Some((id, created, model, fp))) = (self.usage.clone(), self.last.clone()) {
                let mut c = ChatChunk::new(&id, created, &model);
                c.system_fingerprint = fp;
                c.usage = Some(u);
                if let Ok(json) = serde_json::to_vec(&c) {
                    write_data_frame(out, &json);
                }
            }
        }
        out.extend_from_slice(DONE_FRAME);
    }

    /// The stream failed after it started: an error frame the SDKs raise on, then `[DONE]`.
    pub fn fail(&mut self, err: &ErrorBody<'_>, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        write_data_frame(out, &err.to_json());
        out.extend_from_slice(DONE_FRAME);
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChunkChoice, Delta};

    fn content_chunk(text: &str) -> ChatChunk {
        let mut c = ChatChunk::new("c1", 1, "m");
        c.choices.push(ChunkChoice { delta: Delta { content: Some(text.into()), ..Delta::default() }, ..ChunkChoice::default() });
        c
    }

    fn usage_chunk() -> ChatChunk {
        let mut c = ChatChunk::new("c1", 1, "m");
        c.usage = Some(Usage::new(3, 2));
        c
    }

    #[test]
    fn usage_only_when_asked() {
        for include in [false, true] {
            let mut e = OpenAiStreamEncoder::new(include);
            let mut out = Vec::new();
            e.encode(content_chunk("hi"), &mut out);
            e.encode(usage_chunk(), &mut out);
            e.finish(&mut out);
            let s = String::from_utf8(out).unwrap();
            let frames: Vec<&str> = s.split("\n\n").filter(|f| !f.is_empty()).collect();
            assert_eq!(frames.last(), Some(&"data: [DONE]"));
            assert_eq!(frames.len(), if include { 3 } else { 2 }, "{s}");
            assert_eq!(s.contains("\"total_tokens\":5"), include);
            assert_eq!(e.usage().map(|u| u.total_tokens), Some(5));
        }
    }

    #[test]
    fn failure_frame() {
        let mut e = OpenAiStreamEncoder::new(false);
        let mut out = Vec::new();
        e.encode(content_chunk("a"), &mut out);
        e.fail(&ErrorBody { message: "upstream reset", kind: "upstream_error", param: None, code: Some("stream_interrupted") }, &mut out);
        e.finish(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("data: {\"error\":{\"message\":\"upstream reset\",\"type\":\"upstream_error\",\"param\":null,\"code\":\"stream_interrupted\"}}\n\ndata: [DONE]\n\n"));
    }
}
