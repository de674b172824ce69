//! OpenAI Chat Completions codec, shared by every OpenAI-compatible service.
//!
//! OpenAI itself, vLLM, Groq, Mistral, xAI, OpenRouter, Together, Fireworks, Cerebras, DeepSeek, Perplexity and
//! any custom server speak this shape; Azure reuses the bodies with its own paths and auth. The differences
//! are small and listed in one place ([`Quirks`]) rather than copied into a codec each.
//!
//! Requests are serialized from a borrowed view of the canonical request, so unknown caller fields pass
//! through untouched and nothing is cloned unless a quirk must rewrite it.

use std::borrow::Cow;

use serde::Serialize;

use crate::error::{UpstreamError, WireError};
use crate::spec::{Endpoint, ProviderKind, ResponseCtx, StreamEvent, WireRequest};
use crate::sse::{SseEvent, SseParser};
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, EmbeddingInput, EmbeddingsRequest, EmbeddingsResponse, Extra, FinishReason, Message,
    ResponseFormat, Stop, StreamOptions, Tool, ToolChoice, THINKING_BLOCKS_FIELD,
};

/// What differs between OpenAI-compatible services, decided once per provider kind.
#[derive(Debug, Clone, Copy)]
pub struct Quirks {
    /// Accepts `stream_options` (Mistral rejects unknown fields such as this one).
    pub stream_options: bool,
    /// Takes `random_seed` instead of `seed` and only `max_tokens` (Mistral).
    pub mistral_params: bool,
    /// Tool-call ids must be exactly nine ASCII alphanumerics (Mistral).
    pub nine_char_tool_ids: bool,
}

impl Quirks {
    pub fn of(kind: ProviderKind) -> Self {
        let mistral = kind == ProviderKind::Mistral;
        Quirks { stream_options: !mistral, mistral_params: mistral, nine_char_tool_ids: mistral }
    }
}

/// The body we send: the caller's request with the upstream model name and the provider's quirks applied.
#[derive(Serialize)]
pub(crate) struct ChatBody<'a> {
    model: &'a str,
    messages: Cow<'a, [Message]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Cow<'a, StreamOptions>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    random_seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<&'a [Tool]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'a ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a ResponseFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: Cow<'a, Extra>,
}

impl<'a> ChatBody<'a> {
    pub(crate) fn new(kind: ProviderKind, req: &'a ChatRequest, model: &'a str) -> Self {
        let q = Quirks::of(kind);
        let stream = req.is_stream();
        // We always ask for usage on streams (the gateway accounts for it); the client-facing encoder
        // drops it again when the caller did not ask.
        let stream_options = if stream && q.stream_options {
            let mut o = req.stream_options.clone().unwrap_or_default();
            o.include_usage = Some(true);
            Some(Cow::Owned(o))
        } else {
            None
        };
        let rewrite_ids = q.nine_char_tool_ids && needs_id_rewrite(&req.messages);
        let messages = if rewrite_ids || req.messages.iter().any(has_signed_thinking) {
            Cow::Owned(outgoing_messages(&req.messages, rewrite_ids))
        } else {
            Cow::Borrowed(req.messages.as_slice())
        };
        let (max_tokens, max_completion_tokens) =
            if q.mistral_params { (req.max_output_tokens(), None) } else { (req.max_tokens, req.max_completion_tokens) };
        // A caller speaking Mistral's dialect may send `random_seed` itself; it passes through with the other
        // unknown fields and wins, or the body would carry the key twice.
        let (seed, random_seed) = match (q.mistral_params, req.extra.contains_key("random_seed")) {
            (false, _) => (req.seed, None),
            (true, false) => (None, req.seed),
            (true, true) => (None, None),
        };
        ChatBody {
            model,
            messages,
            stream: req.stream,
            stream_options,
            max_tokens,
            max_completion_tokens,
            temperature: req.temperature,
            top_p: req.top_p,
            n: req.n,
            stop: req.stop.as_ref(),
            seed,
            random_seed,
            presence_penalty: req.presence_penalty,
            frequency_penalty: req.frequency_penalty,
            tools: req.tools.as_deref(),
            tool_choice: req.tool_choice.as_ref(),
            parallel_tool_calls: req.parallel_tool_calls,
            response_format: req.response_format.as_ref(),
            user: if q.mistral_params { None } else { req.user.as_deref() },
            extra: extra_for(kind, &req.extra),
        }
    }

    pub(crate) fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        serde_json::to_vec(self).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))
    }
}

/// Anthropic's `thinking` (sent by clients of the `/anthropic` route) is not OpenAI's: OpenAI and Azure
/// refuse unknown fields, so it is left out for them; other OpenAI-compatible servers get it as sent (some,
/// such as GLM and Kimi servers, take the same field).
fn extra_for(kind: ProviderKind, extra: &Extra) -> Cow<'_, Extra> {
    if matches!(kind, ProviderKind::OpenAi | ProviderKind::Azure) && extra.contains_key("thinking") {
        let mut e = extra.clone();
        e.remove("thinking");
        Cow::Owned(e)
    } else {
        Cow::Borrowed(extra)
    }
}

pub fn build_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    let body = ChatBody::new(ep.kind, req, model).to_vec()?;
    Ok(with_bearer(WireRequest::post_json(format!("{}/chat/completions", ep.base_url), body), ep))
}

fn with_bearer(mut r: WireRequest, ep: &Endpoint<'_>) -> WireRequest {
    if let Some(k) = ep.api_key() {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    r.with_extra_headers(ep)
}

fn needs_id_rewrite(messages: &[Message]) -> bool {
    messages.iter().any(|m| {
        m.tool_call_id.as_deref().is_some_and(|id| !is_nine_alnum(id))
            || m.tool_calls.as_ref().is_some_and(|c| c.iter().any(|c| !is_nine_alnum(&c.id)))
    })
}

/// Anthropic's signed thinking means nothing to any other provider, and strict OpenAI-shaped servers refuse
/// a message field they do not know.
fn has_signed_thinking(m: &Message) -> bool {
    m.extra.contains_key(THINKING_BLOCKS_FIELD)
}

/// The messages with what this upstream cannot take changed: tool ids rewritten (`rewrite_ids`), signed
/// thinking left out.
fn outgoing_messages(messages: &[Message], rewrite_ids: bool) -> Vec<Message> {
    messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.extra.remove(THINKING_BLOCKS_FIELD);
            if !rewrite_ids {
                return m;
            }
            if let Some(id) = &mut m.tool_call_id {
                *id = nine_alnum(id);
            }
            if let Some(calls) = &mut m.tool_calls {
                for c in calls {
                    c.id = nine_alnum(&c.id);
                }
            }
            m
        })
        .collect()
}

fn is_nine_alnum(id: &str) -> bool {
    id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Maps any id to nine alphanumerics, deterministically, so a call and its result still match.
fn nine_alnum(id: &str) -> String {
    if is_nine_alnum(id) {
        return id.to_string();
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // FNV-1a, 64 bits: stable across runs and platforms, which is all this needs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..9)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x632B_E59B_D9B4_E019);
            c
        })
        .collect()
}

/// Finish reasons outside OpenAI's set that mean one of OpenAI's.
fn normalize_finish(f: &mut Option<FinishReason>) {
    if let Some(FinishReason::Other(s)) = f {
        if s == "model_length" {
            *f = Some(FinishReason::Length);
        }
    }
}

pub fn parse_chat(_kind: ProviderKind, body: &[u8], ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    let mut resp: ChatResponse = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Err(error_in_body(body).unwrap_or_else(|| WireError::malformed("chat response", e))),
    };
    if resp.id.is_empty() {
        resp.id = ctx.id.to_string();
    }
    if resp.model.is_empty() {
        resp.model = ctx.model.to_string();
    }
    if resp.created == 0 {
        resp.created = ctx.created;
    }
    // Azure's content-filter annotations are Azure's business; callers get OpenAI's shape.
    resp.extra.remove("prompt_filter_results");
    for c in &mut resp.choices {
        normalize_finish(&mut c.finish_reason);
        c.extra.remove("content_filter_results");
    }
    Ok(resp)
}

/// A 2xx whose body is `{"error":…}` (some compatible servers do this) is an upstream error, not garbage.
fn error_in_body(body: &[u8]) -> Option<WireError> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?;
    Some(WireError::Upstream(UpstreamError::from_body(0, body)))
}

#[derive(Serialize)]
struct EmbeddingsBody<'a> {
    model: &'a str,
    input: &'a EmbeddingInput,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding_format: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(flatten)]
    extra: &'a Extra,
}

pub(crate) fn embeddings_body(req: &EmbeddingsRequest, model: &str) -> Result<Vec<u8>, WireError> {
    let body = EmbeddingsBody {
        model,
        input: &req.input,
        encoding_format: req.encoding_format.as_deref(),
        dimensions: req.dimensions,
        user: req.user.as_deref(),
        extra: &req.extra,
    };
    serde_json::to_vec(&body).map_err(|e| WireError::unsupported(format!("request cannot be encoded: {e}"), None))
}

pub fn build_embeddings(ep: &Endpoint<'_>, req: &EmbeddingsRequest, model: &str) -> Result<WireRequest, WireError> {
    let body = embeddings_body(req, model)?;
    Ok(with_bearer(WireRequest::post_json(format!("{}/embeddings", ep.base_url), body), ep))
}

pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsResponse, WireError> {
    serde_json::from_slice(body).map_err(|e| error_in_body(body).unwrap_or_else(|| WireError::malformed("embeddings response", e)))
}

pub fn build_list_models(ep: &Endpoint<'_>) -> WireRequest {
    with_bearer(WireRequest::get(format!("{}/models", ep.base_url)), ep)
}

/// `{"data":[{"id":…},…]}`: the shape OpenAI, every compatible server and Anthropic use.
pub fn parse_models(body: &[u8]) -> Result<Vec<String>, WireError> {
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        id: String,
    }
    let l: List = serde_json::from_slice(body).map_err(|e| WireError::malformed("model list", e))?;
    Ok(l.data.into_iter().map(|i| i.id).collect())
}

/// Turns an OpenAI-style SSE stream into canonical chunks, smoothing the compatible servers' quirks:
/// Azure's filter-only chunks are dropped, usage riding on a content chunk (Mistral, Groq's `x_groq`) is
/// split into its own chunk, missing ids are filled in, and `model_length` becomes `length`.
#[derive(Debug)]
pub struct StreamDecoder {
    sse: SseParser,
    events: Vec<SseEvent>,
    id: String,
    model: String,
    created: i64,
    saw_finish: bool,
    done: bool,
}

impl StreamDecoder {
    pub fn new(_kind: ProviderKind, ctx: ResponseCtx<'_>) -> Self {
        StreamDecoder {
            sse: SseParser::new(),
            events: Vec::new(),
            id: ctx.id.to_string(),
            model: ctx.model.to_string(),
            created: ctx.created,
            saw_finish: false,
            done: false,
        }
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.sse.feed(bytes, &mut self.events)?;
        self.drain(out)
    }

    /// Bounds one SSE line or event (see [`crate::sse::DEFAULT_MAX_EVENT_BYTES`]).
    pub fn set_max_event_bytes(&mut self, max: usize) {
        self.sse.set_limit(max);
    }

    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        self.sse.finish(&mut self.events)?;
        self.drain(out)?;
        if !self.done {
            if self.saw_finish {
                // Some servers close without `[DONE]`; a stream that reached its finish reason is complete.
                self.done = true;
                out.push(StreamEvent::Done);
            } else {
                return Err(WireError::malformed("stream", "the stream ended before a finish reason or [DONE]"));
            }
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        for ev in std::mem::take(&mut self.events) {
            if self.done {
                continue;
            }
            let data = ev.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                self.done = true;
                out.push(StreamEvent::Done);
                continue;
            }
            let chunk: ChatChunk = match serde_json::from_str(data) {
                Ok(c) => c,
                Err(e) => {
                    return Err(WireError::malformed("stream chunk", e));
                }
            };
            if chunk.extra.contains_key("error") || ev.event.as_deref() == Some("error") {
                out.push(StreamEvent::Error(UpstreamError::from_body(0, data.as_bytes())));
                continue;
            }
            self.normalize(chunk, out);
        }
        Ok(())
    }

    fn normalize(&mut self, mut chunk: ChatChunk, out: &mut Vec<StreamEvent>) {
        if chunk.id.is_empty() {
            chunk.id.clone_from(&self.id);
        } else if self.id != chunk.id {
            self.id.clone_from(&chunk.id);
        }
        if chunk.model.is_empty() {
            chunk.model.clone_from(&self.model);
        }
        if chunk.created == 0 {
            chunk.created = self.created;
        }
        // Groq reports usage under x_groq on the last chunk.
        if chunk.usage.is_none() {
            if let Some(u) = chunk.extra.get("x_groq").and_then(|x| x.get("usage")) {
                chunk.usage = serde_json::from_value(u.clone()).ok();
            }
        }
        chunk.extra.remove("x_groq");
        chunk.extra.remove("prompt_filter_results");
        chunk.extra.remove("obfuscation");
        chunk.choices.retain_mut(|c| {
            c.extra.remove("content_filter_results");
            c.extra.remove("content_filter_offsets");
            normalize_finish(&mut c.finish_reason);
            let d = &c.delta;
            let empty = d.role.is_none()
                && d.content.is_none()
                && d.tool_calls.is_none()
                && d.refusal.is_none()
                && d.extra.is_empty()
                && c.finish_reason.is_none();
            !empty
        });
        renumber_whole_tool_calls(&mut chunk);
        if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
            self.saw_finish = true;
        }
        let usage = chunk.usage.take().map(|u| {
            let mut uc = ChatChunk::new(&chunk.id, chunk.created, &chunk.model);
            uc.system_fingerprint.clone_from(&chunk.system_fingerprint);
            uc.usage = Some(u);
            uc
        });
        if !chunk.choices.is_empty() {
            out.push(StreamEvent::Chunk(chunk));
        }
        if let Some(uc) = usage {
            out.push(StreamEvent::Chunk(uc));
        }
    }
}

/// Servers that send whole tool calls in one delta sometimes leave every `index` at 0; clients key on the
/// index, so calls that arrive together with distinct ids get distinct indices.
fn renumber_whole_tool_calls(chunk: &mut ChatChunk) {
    for c in &mut chunk.choices {
        if let Some(calls) = &mut c.delta.tool_calls {
            if calls.len() > 1 && calls.iter().all(|t| t.index == calls[0].index && t.id.is_some()) {
                let base = calls[0].index;
                for (i, t) in calls.iter_mut().enumerate() {
                    t.index = base + i as u32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ProviderOptions;
    use crate::types::{Content, Role, ToolCall};

    fn ep<'a>(kind: ProviderKind, opts: &'a ProviderOptions) -> Endpoint<'a> {
        Endpoint { kind, base_url: "http://up/v1", auth: crate::spec::Auth::Key("sk-test"), options: opts }
    }

    fn ctx() -> ResponseCtx<'static> {
        ResponseCtx { id: "chatcmpl-gw", created: 7, model: "m" }
    }

    fn body_of(r: &WireRequest) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn passes_unknown_fields_and_swaps_model() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"vllm/llama","messages":[{"role":"user","content":"hi"}],"top_k":3,"seed":1,"fallbacks":["x/y"],"stream":true}"#,
        )
        .unwrap();
        let opts = ProviderOptions::default();
        let r = build_chat(&ep(ProviderKind::Vllm, &opts), &req, "llama").unwrap();
        assert_eq!(r.url, "http://up/v1/chat/completions");
        assert!(r.headers.contains(&("authorization".into(), "Bearer sk-test".into())));
        let b = body_of(&r);
        assert_eq!(b["model"], "llama");
        assert_eq!(b["top_k"], 3);
        assert_eq!(b["seed"], 1);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(b.get("fallbacks").is_none());
    }

    #[test]
    fn thinking_is_left_out_for_openai_only_and_file_parts_pass() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"sum"},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0=","filename":"a.pdf"}},
                {"type":"file","file":{"file_id":"file-1"}}]}],"thinking":{"type":"enabled","budget_tokens":1024},"top_k":2}"#,
        )
        .unwrap();
        let opts = ProviderOptions::default();
        for (kind, kept) in [(ProviderKind::OpenAi, false), (ProviderKind::Azure, false), (ProviderKind::Vllm, true)] {
            let b = body_of(&build_chat(&ep(kind, &opts), &req, "m").unwrap());
            assert_eq!(b.get("thinking").is_some(), kept, "{kind:?}");
            assert_eq!(b["top_k"], 2);
            assert_eq!(
                b["messages"][0]["content"][1],
                serde_json::json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}})
            );
            assert_eq!(b["messages"][0]["content"][2], serde_json::json!({"type": "file", "file": {"file_id": "file-1"}}));
        }
    }

    #[test]
    fn signed_thinking_is_left_out_and_the_rest_of_the_message_kept() {
        let req: ChatRequest = serde_json::from_value(serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "reasoning_content": "r",
             "thinking_blocks": [{"type": "thinking", "thinking": "r", "signature": "sig"}]}]}))
        .unwrap();
        let opts = ProviderOptions::default();
        for kind in [ProviderKind::OpenAi, ProviderKind::Mistral, ProviderKind::Vllm] {
            let b = body_of(&build_chat(&ep(kind, &opts), &req, "m").unwrap());
            assert_eq!(b["messages"][1], serde_json::json!({"role": "assistant", "content": "a", "reasoning_content": "r"}), "{kind:?}");
        }
    }

    #[test]
    fn mistral_quirks() {
        let mut req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":9,"max_completion_tokens":20,"stream":true,"user":"u"}"#,
        )
        .unwrap();
        let mut a = Message::text(Role::Assistant, "");
        a.content = None;
        a.tool_calls = Some(vec![ToolCall {
            id: "call_0fypS1hVXabc".into(),
            kind: "function".into(),
            function: crate::types::FunctionCall { name: "f".into(), arguments: "{}".into() },
        }]);
        let mut t = Message::text(Role::Tool, "ok");
        t.tool_call_id = Some("call_0fypS1hVXabc".into());
        req.messages.push(a);
        req.messages.push(t);
        let opts = ProviderOptions::default();
        let b = body_of(&build_chat(&ep(ProviderKind::Mistral, &opts), &req, "mistral-small").unwrap());
        assert_eq!(b["random_seed"], 9);
        assert!(b.get("seed").is_none());
        assert_eq!(b["max_tokens"], 20);
        assert!(b.get("max_completion_tokens").is_none() && b.get("stream_options").is_none() && b.get("user").is_none());
        let call_id = b["messages"][1]["tool_calls"][0]["id"].as_str().unwrap();
        assert!(is_nine_alnum(call_id));
        assert_eq!(b["messages"][2]["tool_call_id"], call_id);
        // The caller's request is untouched.
        assert_eq!(req.messages[1].tool_calls.as_ref().unwrap()[0].id, "call_0fypS1hVXabc");
    }

    #[test]
    fn non_stream_request_has_no_stream_options() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        let opts = ProviderOptions::default();
        let b = body_of(&build_chat(&ep(ProviderKind::OpenAi, &opts), &req, "gpt").unwrap());
        assert!(b.get("stream_options").is_none());
        assert!(matches!(req.messages[0].content, Some(Content::Parts(_))));
    }

    #[test]
    fn parses_response_and_fills_gaps() {
        let body = br#"{"id":"","object":"chat.completion","created":0,"model":"","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"model_length"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        let r = parse_chat(ProviderKind::Mistral, body, ctx()).unwrap();
        assert_eq!((r.id.as_str(), r.model.as_str(), r.created), ("chatcmpl-gw", "m", 7));
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::Length));
        assert_eq!(r.usage.unwrap().cached_tokens(), Some(2));
        let err = parse_chat(ProviderKind::OpenAi, br#"{"error":{"message":"boom","type":"server_error"}}"#, ctx()).unwrap_err();
        assert!(matches!(err, WireError::Upstream(ref u) if u.message == "boom"));
        assert!(matches!(parse_chat(ProviderKind::OpenAi, b"{nope", ctx()), Err(WireError::Malformed { .. })));
    }

    fn decode(input: &str, piece: usize) -> Result<Vec<StreamEvent>, WireError> {
        let mut d = StreamDecoder::new(ProviderKind::OpenAi, ctx());
        let mut out = Vec::new();
        for c in input.as_bytes().chunks(piece) {
            d.feed(c, &mut out)?;
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn stream_with_azure_filter_chunks_and_usage() {
        let input = concat!(
            "data: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"choices\":[],\"prompt_filter_results\":[{\"prompt_index\":0}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null,\"content_filter_results\":{}}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"content_filter_offsets\":{\"check_offset\":1}}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1,\"total_tokens\":3}}\n\n",
            "data: [DONE]\n\n"
        );
        for piece in [1, 7, 64, 4096] {
            let ev = decode(input, piece).unwrap();
            assert_eq!(ev.len(), 5, "piece {piece}: {ev:?}");
            let StreamEvent::Chunk(c) = &ev[1] else { panic!() };
            assert_eq!(c.choices[0].delta.content.as_deref(), Some("Hi"));
            assert!(c.choices[0].extra.is_empty());
            let StreamEvent::Chunk(u) = &ev[3] else { panic!() };
            assert!(u.choices.is_empty());
            assert_eq!(u.usage.as_ref().unwrap().total_tokens, 3);
            assert_eq!(ev[4], StreamEvent::Done);
        }
    }

    #[test]
    fn stream_splits_usage_from_last_content_chunk_and_tolerates_missing_done() {
        let input = "data: {\"id\":\"c\",\"model\":\"mistral\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n";
        let ev = decode(input, 5).unwrap();
        assert_eq!(ev.len(), 3);
        let StreamEvent::Chunk(c) = &ev[0] else { panic!() };
        assert!(c.usage.is_none() && c.choices.len() == 1);
        let StreamEvent::Chunk(u) = &ev[1] else { panic!() };
        assert!(u.choices.is_empty() && u.usage.is_some());
        assert_eq!(ev[2], StreamEvent::Done);
    }

    #[test]
    fn stream_errors() {
        let ev = decode("data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\ndata: [DONE]\n\n", 3).unwrap();
        assert!(matches!(&ev[0], StreamEvent::Error(e) if e.message == "overloaded"));
        assert!(decode("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n", 8).is_err());
        assert!(matches!(decode("data: {broken\n\n", 8), Err(WireError::Malformed { .. })));
    }

    #[test]
    fn whole_tool_calls_get_distinct_indices() {
        let input = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},{\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
        let ev = decode(input, 4096).unwrap();
        let StreamEvent::Chunk(c) = &ev[0] else { panic!() };
        let idx: Vec<u32> = c.choices[0].delta.tool_calls.as_ref().unwrap().iter().map(|t| t.index).collect();
        assert_eq!(idx, vec![0, 1]);
    }

    #[test]
    fn recorded_tool_stream_reassembles_parallel_calls() {
        let input = include_str!("../../tests/fixtures/openai/stream_tools.sse");
        for piece in [1, 13, 4096] {
            let ev = decode(input, piece).unwrap();
            let mut args = vec![String::new(), String::new()];
            let mut names = Vec::new();
            for e in &ev {
                if let StreamEvent::Chunk(c) = e {
                    assert!(c.extra.get("obfuscation").is_none());
                    for t in c.choices.iter().flat_map(|ch| ch.delta.tool_calls.iter().flatten()) {
                        if let Some(n) = t.function.as_ref().and_then(|f| f.name.clone()) {
                            names.push((t.index, n, t.id.clone()));
                        }
                        args[t.index as usize].push_str(t.function.as_ref().and_then(|f| f.arguments.as_deref()).unwrap_or(""));
                    }
                }
            }
            assert_eq!(args, vec![r#"{"city":"Paris"}"#.to_string(), r#"{"city":"Oslo"}"#.to_string()], "piece {piece}");
            assert_eq!(names.len(), 2);
            assert_eq!(names[1].2.as_deref(), Some("call_9QpLm2"));
            assert_eq!(ev.last(), Some(&StreamEvent::Done));
        }
    }

    #[test]
    fn recorded_response_with_tool_calls() {
        let r = parse_chat(ProviderKind::OpenAi, include_bytes!("../../tests/fixtures/openai/response_tools.json"), ctx()).unwrap();
        assert_eq!(r.id, "chatcmpl-123");
        assert_eq!(r.choices[0].finish_reason, Some(FinishReason::ToolCalls));
        let calls = r.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.arguments, r#"{"city":"Paris"}"#);
        // Fields we do not model survive the round trip.
        let out = serde_json::to_value(&r).unwrap();
        assert_eq!(out["service_tier"], "default");
        assert_eq!(out["choices"][0]["message"]["annotations"], serde_json::json!([]));
        assert_eq!(out["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
    }

    #[test]
    fn groq_usage_under_x_groq_becomes_the_usage_chunk() {
        let ev = decode(include_str!("../../tests/fixtures/openai/groq_stream_x_groq_usage.sse"), 9).unwrap();
        let usage: Vec<&ChatChunk> =
            ev.iter().filter_map(|e| if let StreamEvent::Chunk(c) = e { c.usage.as_ref().map(|_| c) } else { None }).collect();
        assert_eq!(usage.len(), 1);
        assert!(usage[0].choices.is_empty());
        assert_eq!(usage[0].usage.as_ref().unwrap().total_tokens, 11);
        assert!(ev.iter().all(|e| !matches!(e, StreamEvent::Chunk(c) if c.extra.contains_key("x_groq"))));
    }

    #[test]
    fn nine_alnum_is_stable() {
        assert_eq!(nine_alnum("call_abc"), nine_alnum("call_abc"));
        assert_ne!(nine_alnum("call_abc"), nine_alnum("call_abd"));
        assert_eq!(nine_alnum("abcDEF123"), "abcDEF123");
    }
}
