//! Structured stream fuzzing: valid-looking provider streams built from fuzz input, written with every
//! framing variation the wire allows (line ends, comments, multi-line `data:`, unknown fields, a missing
//! final blank line), then decoded cut every way. Because the stream is valid, the check is semantic: the
//! decoder must succeed and hand back exactly the text, reasoning, tool calls, finish reason and usage that
//! were put in.

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use serde_json::{json, Value};
use switchyard_wire::{ProviderKind, StreamEvent};

use crate::stream::{decode_every_way, Decoded};

/// What a stream carries, as a client adds it up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub text: String,
    pub reasoning: String,
    /// OpenAI tool-call index → (id, name, arguments).
    pub tools: BTreeMap<u32, (String, String, String)>,
    pub finish: Option<String>,
    /// (prompt, completion) tokens.
    pub usage: Option<(u64, u64)>,
}

/// Adds up decoded events the way an OpenAI SDK accumulates a stream.
pub fn accumulate(events: &[StreamEvent]) -> Content {
    let mut c = Content::default();
    for e in events {
        let StreamEvent::Chunk(chunk) = e else { continue };
        if let Some(u) = &chunk.usage {
            c.usage = Some((u.prompt_tokens, u.completion_tokens));
        }
        for choice in &chunk.choices {
            let d = &choice.delta;
            if let Some(t) = &d.content {
                c.text.push_str(t);
            }
            if let Some(r) = d.extra.get("reasoning_content").and_then(Value::as_str) {
                c.reasoning.push_str(r);
            }
            for call in d.tool_calls.iter().flatten() {
                let slot = c.tools.entry(call.index).or_default();
                if let Some(id) = &call.id {
                    slot.0.push_str(id);
                }
                if let Some(f) = &call.function {
                    slot.1.push_str(f.name.as_deref().unwrap_or(""));
                    slot.2.push_str(f.arguments.as_deref().unwrap_or(""));
                }
            }
            if let Some(f) = &choice.finish_reason {
                c.finish = Some(f.as_str().to_string());
            }
        }
    }
    c
}

#[derive(Clone, Copy)]
enum Eol {
    Lf,
    CrLf,
    Cr,
}

impl Eol {
    fn pick(u: &mut Unstructured<'_>) -> Result<Self> {
        Ok(*u.choose(&[Eol::Lf, Eol::CrLf, Eol::Cr])?)
    }

    fn bytes(self) -> &'static [u8] {
        match self {
            Eol::Lf => b"\n",
            Eol::CrLf => b"\r\n",
            Eol::Cr => b"\r",
        }
    }
}

/// Writes SSE events the many ways servers do. Every line of one event, and the blank line that closes
/// it, share one line end: a `\r` followed by a `\n` of the next line would rightly read as one `\r\n`.
#[derive(Default)]
struct SseWriter {
    out: Vec<u8>,
}

impl SseWriter {
    fn line(&mut self, eol: Eol, parts: &[&[u8]]) {
        for p in parts {
            self.out.extend_from_slice(p);
        }
        self.out.extend_from_slice(eol.bytes());
    }

    fn event(&mut self, u: &mut Unstructured<'_>, name: Option<&str>, data: &Value, last: bool) -> Result<()> {
        let eol = Eol::pick(u)?;
        if u.ratio(1, 8)? {
            self.line(eol, &[b": keep-alive"]);
        }
        if let Some(name) = name {
            let sep: &[u8] = if u.ratio(1, 4)? { b"event:" } else { b"event: " };
            self.line(eol, &[sep, name.as_bytes()]);
        }
        if u.ratio(1, 8)? {
            self.line(eol, &[b"id: 17"]);
        }
        if u.ratio(1, 8)? {
            self.line(eol, &[b"retry: 3000"]);
        }
        // Pretty JSON has raw newlines only between tokens (strings escape theirs), so each of its lines
        // can travel as one `data:` line and the joined data is the same JSON.
        let text = if u.ratio(1, 4)? { serde_json::to_string_pretty(data) } else { serde_json::to_string(data) };
        let text = text.map_err(|_| arbitrary::Error::IncorrectFormat)?;
        for l in text.split('\n') {
            let sep: &[u8] = if u.ratio(1, 4)? { b"data:" } else { b"data: " };
            self.line(eol, &[sep, l.as_bytes()]);
        }
        if last && u.ratio(1, 4)? {
            // The final event may end with the body, without its blank line.
            return Ok(());
        }
        self.line(eol, &[]);
        for _ in 0..u.int_in_range(0..=1)? {
            self.line(eol, &[]);
        }
        Ok(())
    }

    fn done(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let eol = Eol::pick(u)?;
        self.line(eol, &[b"data: [DONE]"]);
        if u.ratio(3, 4)? {
            self.line(eol, &[]);
        }
        Ok(())
    }
}

fn text(u: &mut Unstructured<'_>) -> Result<String> {
    let s: &str = u.arbitrary()?;
    Ok(s.to_string())
}

/// Decodes a generated stream and compares what a client would see with what was put in.
fn check(kind: ProviderKind, bytes: &[u8], want: &Content, ends_in_error: bool) {
    let d: Decoded = decode_every_way(kind, bytes);
    let name = kind.as_str();
    let input = String::from_utf8_lossy(bytes);
    assert!(d.result.is_ok(), "{name}: a valid stream failed to decode: {:?}\n{input}", d.result);
    let last = d.events.last();
    if ends_in_error {
        assert!(matches!(last, Some(StreamEvent::Error(_))), "{name}: a stream ending in an error event ended with {last:?}\n{input}");
    } else {
        assert_eq!(last, Some(&StreamEvent::Done), "{name}: a complete stream did not end with Done\n{input}");
    }
    let mut got = accumulate(&d.events);
    let mut ids: Vec<&str> = got.tools.values().map(|t| t.0.as_str()).collect();
    assert!(ids.iter().all(|id| !id.is_empty()), "{name}: a tool call without an id\n{input}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.tools.len(), "{name}: two tool calls share an id\n{input}");
    // Ids the upstream did not send (Ollama's) are the decoder's to make up: only their presence counts.
    for (index, t) in got.tools.iter_mut() {
        if want.tools.get(index).is_some_and(|w| w.0.is_empty()) {
            t.0.clear();
        }
    }
    assert_eq!(&got, want, "{name}: the decoded stream does not carry what was sent\n{input}");
}

// ---------------------------------------------------------------------------------------------------------
// OpenAI
// ---------------------------------------------------------------------------------------------------------

/// OpenAI's finish reasons, plus vLLM's `model_length` (which must arrive as `length`).
const OPENAI_FINISH: [(&str, &str); 5] = [
    ("stop", "stop"),
    ("length", "length"),
    ("tool_calls", "tool_calls"),
    ("content_filter", "content_filter"),
    ("model_length", "length"),
];

fn openai_chunk(u: &mut Unstructured<'_>, delta: Value, finish: Option<&str>) -> Result<Value> {
    let mut chunk = json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    // Some servers leave out the identity, or send it only on the first chunk; the decoder fills it in.
    if u.ratio(3, 4)? {
        chunk["id"] = json!("chatcmpl-up");
        chunk["created"] = json!(1_712_000_000);
        chunk["model"] = json!("gpt-up");
    }
    if u.ratio(1, 8)? {
        chunk["system_fingerprint"] = json!("fp_1");
    }
    if u.ratio(1, 8)? {
        chunk["choices"][0]["logprobs"] = Value::Null;
    }
    Ok(chunk)
}

pub fn openai(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok((bytes, want)) = build_openai(&mut u) {
        check(ProviderKind::OpenAi, &bytes, &want, false);
    }
}

fn build_openai(u: &mut Unstructured<'_>) -> Result<(Vec<u8>, Content)> {
    let mut w = SseWriter::default();
    let mut want = Content::default();
    if u.ratio(3, 4)? {
        let c = openai_chunk(u, json!({"role": "assistant", "content": ""}), None)?;
        w.event(u, None, &c, false)?;
    }
    for _ in 0..u.int_in_range(0..=16)? {
        match u.int_in_range(0..=4)? {
            0 | 1 => {
                let t = text(u)?;
                want.text.push_str(&t);
                let c = openai_chunk(u, json!({"content": t}), None)?;
                w.event(u, None, &c, false)?;
            }
            2 => {
                // A new call: id, type and name first, arguments in the following deltas.
                let index = want.tools.len() as u32;
                let (id, name, args) = (format!("call_{index}"), text(u)?, text(u)?);
                let call = json!({"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": args}});
                want.tools.insert(index, (id, name, args));
                let c = openai_chunk(u, json!({"tool_calls": [call]}), None)?;
                w.event(u, None, &c, false)?;
            }
            3 if !want.tools.is_empty() => {
                let index = u.int_in_range(0..=want.tools.len() as u32 - 1)?;
                let frag = text(u)?;
                if let Some(slot) = want.tools.get_mut(&index) {
                    slot.2.push_str(&frag);
                }
                let c = openai_chunk(u, json!({"tool_calls": [{"index": index, "function": {"arguments": frag}}]}), None)?;
                w.event(u, None, &c, false)?;
            }
            3 => {}
            _ => {
                // Whole calls in one delta, every index left at the first one's (the decoder renumbers).
                let base = want.tools.len() as u32;
                let mut calls = Vec::new();
                for k in 0..u.int_in_range(2..=3)? {
                    let (id, name, args) = (format!("call_w{base}_{k}"), text(u)?, text(u)?);
                    calls.push(json!({"index": base, "id": id, "type": "function", "function": {"name": name, "arguments": args}}));
                    want.tools.insert(base + k, (id, name, args));
                }
                let c = openai_chunk(u, json!({"tool_calls": calls}), None)?;
                w.event(u, None, &c, false)?;
            }
        }
    }
    let (sent, mapped) = *u.choose(&OPENAI_FINISH)?;
    want.finish = Some(mapped.to_string());
    let with_usage = u.ratio(1, 2)?;
    let with_done = u.ratio(3, 4)?;
    let c = openai_chunk(u, json!({}), Some(sent))?;
    w.event(u, None, &c, !with_usage && !with_done)?;
    if with_usage {
        let (p, c) = (u.int_in_range(0..=100_000u64)?, u.int_in_range(0..=100_000u64)?);
        want.usage = Some((p, c));
        let chunk = json!({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "gpt-up", "choices": [],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}});
        w.event(u, None, &chunk, !with_done)?;
    }
    if with_done {
        w.done(u)?;
    }
    Ok((w.out, want))
}

// ---------------------------------------------------------------------------------------------------------
// Anthropic
// ---------------------------------------------------------------------------------------------------------

/// Anthropic's stop reasons and the OpenAI finish reason each must become.
const ANTHROPIC_STOP: [(&str, &str); 7] = [
    ("end_turn", "stop"),
    ("stop_sequence", "stop"),
    ("pause_turn", "stop"),
    ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"),
    ("refusal", "content_filter"),
];

fn named(w: &mut SseWriter, u: &mut Unstructured<'_>, data: Value, last: bool) -> Result<()> {
    let name = data.get("type").and_then(Value::as_str).unwrap_or("unknown").to_string();
    w.event(u, Some(&name), &data, last)?;
    if !last && u.ratio(1, 10)? {
        w.event(u, Some("ping"), &json!({"type": "ping"}), false)?;
    }
    Ok(())
}

pub fn anthropic(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok((bytes, want, ends_in_error)) = build_anthropic(&mut u) {
        check(ProviderKind::Anthropic, &bytes, &want, ends_in_error);
    }
}

fn build_anthropic(u: &mut Unstructured<'_>) -> Result<(Vec<u8>, Content, bool)> {
    let mut w = SseWriter::default();
    let mut want = Content::default();
    let input_tokens = u.int_in_range(0..=100_000u64)?;
    let start = json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
        "model": "claude-up", "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1}}});
    named(&mut w, u, start, false)?;
    let mut tools = 0u32;
    for index in 0..u.int_in_range(0..=6u64)? {
        match u.int_in_range(0..=2)? {
            0 => {
                let first = if u.ratio(1, 4)? { text(u)? } else { String::new() };
                want.text.push_str(&first);
                named(
                    &mut w,
                    u,
                    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": first}}),
                    false,
                )?;
                for _ in 0..u.int_in_range(0..=4)? {
                    let t = text(u)?;
                    want.text.push_str(&t);
                    let d = json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}});
                    named(&mut w, u, d, false)?;
                }
            }
            1 => {
                let b = json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}});
                named(&mut w, u, b, false)?;
                for _ in 0..u.int_in_range(0..=4)? {
                    let t = text(u)?;
                    want.reasoning.push_str(&t);
                    let d = json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": t}});
                    named(&mut w, u, d, false)?;
                }
                let sig = json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": "EqQB"}});
                named(&mut w, u, sig, false)?;
            }
            _ => {
                let (id, name) = (format!("toolu_{index}"), text(u)?);
                let b = json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}});
                named(&mut w, u, b, false)?;
                let mut args = String::new();
                for _ in 0..u.int_in_range(0..=4)? {
                    let frag = text(u)?;
                    args.push_str(&frag);
                    let d =
                        json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": frag}});
                    named(&mut w, u, d, false)?;
                }
                // A call whose arguments never came is closed with `{}`: "" is not JSON.
                if args.is_empty() {
                    args = "{}".to_string();
                }
                want.tools.insert(tools, (id, name, args));
                tools += 1;
            }
        }
        named(&mut w, u, json!({"type": "content_block_stop", "index": index}), false)?;
    }
    if u.ratio(1, 8)? {
        // An overload mid-stream: the error event is the stream's last word.
        let e = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        named(&mut w, u, e, true)?;
        return Ok((w.out, want, true));
    }
    let (stop, mapped) = *u.choose(&ANTHROPIC_STOP)?;
    want.finish = Some(mapped.to_string());
    let output_tokens = u.int_in_range(1..=100_000u64)?;
    want.usage = Some((input_tokens, output_tokens));
    let delta =
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}});
    named(&mut w, u, delta, false)?;
    named(&mut w, u, json!({"type": "message_stop"}), true)?;
    Ok((w.out, want, false))
}

// ---------------------------------------------------------------------------------------------------------
// Ollama
// ---------------------------------------------------------------------------------------------------------

pub fn ollama(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok((bytes, want)) = build_ollama(&mut u) {
        check(ProviderKind::Ollama, &bytes, &want, false);
    }
}

/// One NDJSON line, with the slack real servers and proxies leave: `\r\n`, blank lines, stray blanks.
fn ndjson_line(out: &mut Vec<u8>, u: &mut Unstructured<'_>, v: &Value, last: bool) -> Result<()> {
    if u.ratio(1, 8)? {
        out.extend_from_slice(b" \t");
    }
    let text = serde_json::to_vec(v).map_err(|_| arbitrary::Error::IncorrectFormat)?;
    out.extend_from_slice(&text);
    if u.ratio(1, 8)? {
        out.extend_from_slice(b" ");
    }
    if last && u.ratio(1, 4)? {
        return Ok(());
    }
    out.extend_from_slice(if u.ratio(1, 4)? { b"\r\n" } else { b"\n" });
    if u.ratio(1, 8)? {
        out.extend_from_slice(b"\n");
    }
    Ok(())
}

fn build_ollama(u: &mut Unstructured<'_>) -> Result<(Vec<u8>, Content)> {
    let mut out = Vec::new();
    let mut want = Content::default();
    let line = |message: Value| json!({"model": "llama3.2", "created_at": "2025-01-01T00:00:00Z", "message": message, "done": false});
    for _ in 0..u.int_in_range(0..=12)? {
        let v = match u.int_in_range(0..=3)? {
            0 | 1 => {
                let t = text(u)?;
                want.text.push_str(&t);
                line(json!({"role": "assistant", "content": t}))
            }
            2 => {
                let t = text(u)?;
                want.reasoning.push_str(&t);
                line(json!({"role": "assistant", "content": "", "thinking": t}))
            }
            _ => {
                let index = want.tools.len() as u32;
                let name = text(u)?;
                let args = json!({ text(u)?: text(u)? });
                // Ollama sends no ids; the decoder makes them up (an empty id here tells `check` so).
                want.tools.insert(index, (String::new(), name.clone(), args.to_string()));
                line(json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": args}}]}))
            }
        };
        ndjson_line(&mut out, u, &v, false)?;
    }
    let length = u.ratio(1, 4)?;
    want.finish = Some(
        if length {
            "length"
        } else if want.tools.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }
        .to_string(),
    );
    let (p, e) = (u.int_in_range(0..=100_000u64)?, u.int_in_range(0..=100_000u64)?);
    want.usage = Some((p, e));
    let done = json!({"model": "llama3.2", "created_at": "2025-01-01T00:00:01Z", "message": {"role": "assistant", "content": ""},
        "done": true, "done_reason": if length { "length" } else { "stop" }, "total_duration": 1, "prompt_eval_count": p, "eval_count": e});
    ndjson_line(&mut out, u, &done, true)?;
    Ok((out, want))
}
