//! OpenAI's legacy Completions API (`POST /v1/completions`, the SDK's `completions.create`) on top of the
//! canonical chat request.
//!
//! Older tools and libraries still send a bare `prompt` and read `choices[].text`. The gateway's upstreams
//! are chat models, so a prompt becomes one user message, and the chat answer (or stream) is written back
//! in the `text_completion` shape. What cannot be done faithfully this way is refused with a 400 naming the
//! field, never approximated:
//! - `prompt` must be one string (a list of exactly one string is that string). Lists of several prompts
//!   would need one upstream request each and OpenAI's interleaved choice numbering; token-id prompts have
//!   no meaning across providers' tokenizers.
//! - `suffix` (insertion), `logprobs` (any value, 0 included: OpenAI answers it with token log
//!   probabilities) and `best_of` above `n` (it ranks candidates by log probability) are refused.
//!   `best_of` equal to `n` (or 1) asks for nothing more and is accepted.
//! - `echo: true` is honoured exactly: the prompt is put before the generated text of every choice (in
//!   a stream, in each choice's first chunk).
//! - `max_tokens` defaults to 16, the legacy API's own default, so a caller gets what OpenAI would give.
//! - Everything else (`n`, `stop`, `temperature`, `top_p`, `seed`, the penalties, `logit_bias`, `user`,
//!   `stream_options`, the gateway's `fallbacks`, and unknown fields) goes onto the chat request unchanged,
//!   so a provider that cannot take one refuses it as it would on chat.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::outbound::ErrorBody;
use crate::sse::{write_data_frame, DONE_FRAME};
use crate::types::{ChatChunk, ChatRequest, ChatResponse, Extra, FinishReason, Message, Role, Stop, StreamOptions, Usage};

/// The legacy API's default `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 16;

/// `POST /v1/completions` body. `prompt` is kept as JSON so that each wrong form gets its own message.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: Value,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub echo: Option<bool>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub best_of: Option<u32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    /// Gateway extension, as on chat.
    #[serde(default)]
    pub fallbacks: Option<Vec<String>>,
    /// `logit_bias` and anything else: passed to the chat request as unknown fields are there.
    #[serde(flatten)]
    pub extra: Extra,
}

impl CompletionRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }
}

/// A request the Completions API allows but the gateway cannot serve faithfully, or one that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidCompletion {
    pub message: String,
    pub param: &'static str,
}

fn invalid(param: &'static str, message: impl Into<String>) -> InvalidCompletion {
    InvalidCompletion { message: message.into(), param }
}

/// What the answer needs from the request: the prompt again when `echo` asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo(Option<String>);

impl Echo {
    fn prefix(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

/// The canonical chat request for a completion request, and what its answer must echo.
pub fn to_chat(req: CompletionRequest) -> Result<(ChatRequest, Echo), InvalidCompletion> {
    let prompt = prompt_text(&req.prompt)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(invalid("suffix", "suffix (inserting text before a suffix) is not supported: the gateway's upstreams are chat models"));
    }
    if req.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(invalid("logprobs", "logprobs are not supported on /v1/completions by this gateway; leave logprobs unset"));
    }
    let n = req.n.unwrap_or(1);
    if n == 0 {
        return Err(invalid("n", "n must be at least 1"));
    }
    if let Some(best) = req.best_of.filter(|&b| b != n && b != 1) {
        return Err(invalid(
            "best_of",
            format!("best_of = {best} is not supported (ranking candidates needs log probabilities); leave it unset or equal to n"),
        ));
    }
    let echo = Echo(req.echo.unwrap_or(false).then(|| prompt.clone()));
    let chat = ChatRequest {
        model: req.model,
        messages: vec![Message::text(Role::User, prompt)],
        stream: req.stream,
        stream_options: req.stream_options,
        max_tokens: Some(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        stop: req.stop,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        user: req.user,
        fallbacks: req.fallbacks,
        extra: req.extra,
        ..ChatRequest::default()
    };
    Ok((chat, echo))
}

fn prompt_text(v: &Value) -> Result<String, InvalidCompletion> {
    const TOKENS: &str = "token-id prompts are not supported: the gateway's upstreams have different tokenizers; send the prompt as text";
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(items) => match items.as_slice() {
            [] => Err(invalid("prompt", "prompt must not be an empty list")),
            [Value::String(s)] => Ok(s.clone()),
            [Value::Number(_), ..] | [Value::Array(_), ..] => Err(invalid("prompt", TOKENS)),
            items if items.iter().all(Value::is_string) => {
                Err(invalid("prompt", format!("a list of {} prompts is not supported; send one request per prompt", items.len())))
            }
            _ => Err(invalid("prompt", "prompt must be a string or a list of strings")),
        },
        Value::Null => Err(invalid("prompt", "prompt is required")),
        _ => Err(invalid("prompt", "prompt must be a string or a list of strings")),
    }
}

/// The legacy API's ids are `cmpl-…`; an upstream's `chatcmpl-…` id keeps its unique part.
fn completion_id(chat_id: &str) -> String {
    match chat_id.strip_prefix("chatcmpl-") {
        Some(rest) => format!("cmpl-{rest}"),
        None if chat_id.starts_with("cmpl-") => chat_id.to_string(),
        None => format!("cmpl-{chat_id}"),
    }
}

/// The `text_completion` object, for answers and stream chunks alike (the API uses one shape for both).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    /// Always `null`: log probabilities are refused up front.
    pub logprobs: Option<Value>,
    pub finish_reason: Option<FinishReason>,
}

/// The chat answer as a completion.
pub fn from_chat(resp: &ChatResponse, echo: &Echo) -> Completion {
    let choices = resp
        .choices
        .iter()
        .map(|c| CompletionChoice {
            text: format!("{}{}", echo.prefix(), c.message.content.as_deref().unwrap_or_default()),
            index: c.index,
            logprobs: None,
            finish_reason: c.finish_reason.clone(),
        })
        .collect();
    Completion {
        id: completion_id(&resp.id),
        object: "text_completion",
        created: resp.created,
        model: resp.model.clone(),
        choices,
        usage: resp.usage.clone(),
        system_fingerprint: resp.system_fingerprint.clone(),
    }
}

/// Encodes canonical chat chunks as a legacy Completions SSE stream: `text_completion` chunks carrying
/// text only (role and reasoning deltas have no place there), usage as a last chunk with `choices: []` when
/// the caller asked for it, errors after the first byte as an `{"error":…}` frame, then `data: [DONE]`.
#[derive(Debug)]
pub struct CompletionStreamEncoder {
    include_usage: bool,
    echo: Echo,
    /// Choice indexes whose echo went out.
    echoed: Vec<u32>,
    usage: Option<Usage>,
    last: Option<(String, i64, String, Option<String>)>,
    finished: bool,
}

impl CompletionStreamEncoder {
    pub fn new(include_usage: bool, echo: Echo) -> Self {
        CompletionStreamEncoder { include_usage, echo, echoed: Vec::new(), usage: None, last: None, finished: false }
    }

    /// The usage the upstream reported so far (for accounting, whether or not the client sees it).
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Appends the frame for one chunk, if it carries text or a finish reason.
    pub fn encode(&mut self, mut chunk: ChatChunk, out: &mut Vec<u8>) {
        if let Some(u) = chunk.usage.take() {
            self.usage = Some(u);
        }
        let mut choices = Vec::with_capacity(chunk.choices.len());
        for c in chunk.choices {
            let mut text = c.delta.content.unwrap_or_default();
            if self.echo.0.is_some() && !self.echoed.contains(&c.index) {
                self.echoed.push(c.index);
                text.insert_str(0, self.echo.prefix());
            }
            if text.is_empty() && c.finish_reason.is_none() {
                continue;
            }
            choices.push(CompletionChoice { text, index: c.index, logprobs: None, finish_reason: c.finish_reason });
        }
        if self.last.is_none() {
            self.last = Some((completion_id(&chunk.id), chunk.created, chunk.model.clone(), chunk.system_fingerprint.clone()));
        }
        if choices.is_empty() {
            return;
        }
        let Some((id, created, model, fp)) = self.last.clone() else { return };
        self.write(Completion { id, object: "text_completion", created, model, choices, usage: None, system_fingerprint: fp }, out);
    }

    /// The stream ended well: the usage chunk (if asked for and known) and `[DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.include_usage {
            if let (Some(usage), Some((id, created, model, fp))) = (self.usage.clone(), self.last.clone()) {
                let c = Completion {
                    id,
                    object: "text_completion",
                    created,
                    model,
                    choices: Vec::new(),
                    usage: Some(usage),
                    system_fingerprint: fp,
                };
                self.write(c, out);
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

    fn write(&self, c: Completion, out: &mut Vec<u8>) {
        if let Ok(json) = serde_json::to_vec(&c) {
            write_data_frame(out, &json);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChunkChoice, Delta};
    use serde_json::json;

    fn req(v: Value) -> CompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    fn refused(v: Value) -> InvalidCompletion {
        to_chat(req(v)).unwrap_err()
    }

    #[test]
    fn a_prompt_becomes_one_user_message_with_the_legacy_defaults() {
        let (chat, echo) = to_chat(req(json!({"model": "openai/gpt-4o-mini", "prompt": "Say hi", "temperature": 0.2, "top_p": 0.5,
            "n": 2, "stop": ["\n"], "seed": 3, "presence_penalty": 0.1, "frequency_penalty": 0.2, "user": "u",
            "logit_bias": {"50256": -100}, "stream": true, "stream_options": {"include_usage": true}, "fallbacks": ["a/b"]})))
        .unwrap();
        assert_eq!(echo, Echo(None));
        let v = serde_json::to_value(&chat).unwrap();
        assert_eq!(
            v,
            json!({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}], "stream": true,
                "stream_options": {"include_usage": true}, "max_tokens": 16, "temperature": 0.2, "top_p": 0.5, "n": 2,
                "stop": ["\n"], "seed": 3, "presence_penalty": 0.1, "frequency_penalty": 0.2, "user": "u",
                "logit_bias": {"50256": -100}})
        );
        assert_eq!(chat.fallbacks.as_deref(), Some(&["a/b".to_string()][..]));
        let (chat, _) = to_chat(req(json!({"model": "m", "prompt": ["only one"], "max_tokens": 200, "best_of": 1}))).unwrap();
        assert_eq!((chat.messages[0].joined_text().as_str(), chat.max_tokens), ("only one", Some(200)));
        assert!(to_chat(req(json!({"model": "m", "prompt": "x", "n": 3, "best_of": 3, "suffix": "", "logprobs": null}))).is_ok());
    }

    #[test]
    fn what_cannot_be_done_faithfully_is_refused_by_field() {
        for (body, param) in [
            (json!({"model": "m"}), "prompt"),
            (json!({"model": "m", "prompt": null}), "prompt"),
            (json!({"model": "m", "prompt": []}), "prompt"),
            (json!({"model": "m", "prompt": ["a", "b"]}), "prompt"),
            (json!({"model": "m", "prompt": [1, 2, 3]}), "prompt"),
            (json!({"model": "m", "prompt": [[1, 2], [3]]}), "prompt"),
            (json!({"model": "m", "prompt": ["a", 1]}), "prompt"),
            (json!({"model": "m", "prompt": 5}), "prompt"),
            (json!({"model": "m", "prompt": "x", "suffix": "end"}), "suffix"),
            (json!({"model": "m", "prompt": "x", "logprobs": 0}), "logprobs"),
            (json!({"model": "m", "prompt": "x", "best_of": 3}), "best_of"),
            (json!({"model": "m", "prompt": "x", "n": 0}), "n"),
        ] {
            assert_eq!(refused(body.clone()).param, param, "{body}");
        }
        assert!(refused(json!({"model": "m", "prompt": ["a", "b"]})).message.contains("2 prompts"));
        assert!(refused(json!({"model": "m", "prompt": [1]})).message.contains("token-id"));
    }

    fn chat_response() -> ChatResponse {
        serde_json::from_value(json!({"id": "chatcmpl-abc", "object": "chat.completion", "created": 7, "model": "gpt-4o-mini",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " world"}, "finish_reason": "length"},
                        {"index": 1, "message": {"role": "assistant", "content": null}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}}))
        .unwrap()
    }

    #[test]
    fn answers_in_the_text_completion_shape() {
        let c = from_chat(&chat_response(), &Echo(None));
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"id": "cmpl-abc", "object": "text_completion", "created": 7, "model": "gpt-4o-mini", "system_fingerprint": "fp_1",
                "choices": [{"text": " world", "index": 0, "logprobs": null, "finish_reason": "length"},
                            {"text": "", "index": 1, "logprobs": null, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})
        );
        let echoed = from_chat(&chat_response(), &Echo(Some("hello".into())));
        assert_eq!((echoed.choices[0].text.as_str(), echoed.choices[1].text.as_str()), ("hello world", "hello"));
        let mut other = chat_response();
        other.id = "msg_01X".into();
        assert_eq!(from_chat(&other, &Echo(None)).id, "cmpl-msg_01X");
    }

    fn chunk(index: u32, delta: Delta, finish: Option<FinishReason>) -> ChatChunk {
        let mut c = ChatChunk::new("chatcmpl-s", 9, "m");
        c.choices.push(ChunkChoice { index, delta, finish_reason: finish, ..ChunkChoice::default() });
        c
    }

    fn text(t: &str) -> Delta {
        Delta { content: Some(t.into()), ..Delta::default() }
    }

    fn frames(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec()).unwrap().split("\n\n").filter(|f| !f.is_empty()).map(str::to_string).collect()
    }

    #[test]
    fn streams_text_chunks_then_usage_then_done() {
        for include in [false, true] {
            let mut e = CompletionStreamEncoder::new(include, Echo(None));
            let mut out = Vec::new();
            e.encode(chunk(0, Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() }, None), &mut out);
            e.encode(chunk(0, text("Hel"), None), &mut out);
            e.encode(chunk(0, text("lo"), None), &mut out);
            e.encode(chunk(0, Delta::default(), Some(FinishReason::Stop)), &mut out);
            let mut u = ChatChunk::new("chatcmpl-s", 9, "m");
            u.usage = Some(Usage::new(3, 2));
            e.encode(u, &mut out);
            e.finish(&mut out);
            let f = frames(&out);
            assert_eq!(f.len(), if include { 5 } else { 4 }, "{f:?}");
            let first: Value = serde_json::from_str(f[0].strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(
                first,
                json!({"id": "cmpl-s", "object": "text_completion", "created": 9, "model": "m",
                    "choices": [{"text": "Hel", "index": 0, "logprobs": null, "finish_reason": null}]})
            );
            let fin: Value = serde_json::from_str(f[2].strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(fin["choices"][0], json!({"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}));
            if include {
                let usage: Value = serde_json::from_str(f[3].strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!((usage["choices"].clone(), usage["usage"]["total_tokens"].clone()), (json!([]), json!(5)));
            }
            assert_eq!(f.last().map(String::as_str), Some("data: [DONE]"));
            assert_eq!(e.usage().map(|u| u.total_tokens), Some(5));
        }
    }

    #[test]
    fn echo_goes_first_in_each_choice_and_errors_end_the_stream() {
        let mut e = CompletionStreamEncoder::new(false, Echo(Some("Q: ".into())));
        let mut out = Vec::new();
        e.encode(chunk(0, Delta { role: Some(Role::Assistant), ..Delta::default() }, None), &mut out);
        e.encode(chunk(1, text("b"), None), &mut out);
        e.encode(chunk(0, text("a"), None), &mut out);
        e.fail(&ErrorBody { message: "upstream reset", kind: "upstream_error", param: None, code: Some("stream_interrupted") }, &mut out);
        e.finish(&mut out);
        let f = frames(&out);
        let texts: Vec<String> = f[..3]
            .iter()
            .map(|x| {
                serde_json::from_str::<Value>(x.strip_prefix("data: ").unwrap()).unwrap()["choices"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(texts, vec!["Q: ", "Q: b", "a"]);
        assert!(f[3].contains("\"code\":\"stream_interrupted\""), "{f:?}");
        assert_eq!(f.len(), 5, "one [DONE] only: {f:?}");
    }
}
