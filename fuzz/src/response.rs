//! Non-streaming response and error parser checks: a parsed answer is complete enough to send to a client
//! and survives the server's encoding; a refused one is an upstream error with a message; error bodies of
//! any shape become an error the gateway can render.

use base64::Engine as _;
use switchyard_wire::codec;
use switchyard_wire::outbound::ErrorBody;
use switchyard_wire::types::{ChatResponse, EmbeddingsResponse};
use switchyard_wire::{ProviderKind, UpstreamError, WireError};

use crate::json::assert_clean_json;
use crate::must;
use crate::stream::CTX;

/// The statuses error bodies are parsed under (Anthropic's 529 included); the parser must keep them.
const STATUSES: [u16; 6] = [400, 401, 404, 429, 500, 529];

fn assert_refusal(kind: ProviderKind, e: &WireError, what: &str) {
    match e {
        WireError::Malformed { detail, .. } => assert!(!detail.is_empty(), "{what} from {}: malformed without detail", kind.as_str()),
        WireError::Upstream(u) => assert!(!u.message.is_empty(), "{what} from {}: an upstream error without a message", kind.as_str()),
        WireError::Unsupported { .. } => panic!("{what} from {}: a response cannot be 'unsupported': {e:?}", kind.as_str()),
        // The line limit belongs to stream decoders; a complete body is bounded where it is read.
        WireError::TooLong { .. } => panic!("{what} from {}: a complete answer cannot be 'too long': {e:?}", kind.as_str()),
    }
}

/// What the server does with a parsed chat answer: encode it for the client.
fn assert_chat_answer(kind: ProviderKind, r: &ChatResponse) {
    let name = kind.as_str();
    assert!(!r.id.is_empty() && !r.model.is_empty(), "chat response from {name}: no id or model: {r:?}");
    assert!(r.created != 0, "chat response from {name}: no creation time");
    let json = must(serde_json::to_vec(r), "encoding a chat response");
    assert_clean_json(&json, &format!("chat response from {name} as sent to the client"));
    let back: ChatResponse = must(serde_json::from_slice(&json), "a client reads the chat response");
    assert_eq!(back.choices.len(), r.choices.len(), "chat response from {name}: choices changed on the way to the client");
    // Tool-call ids are the upstream's, copied as sent (even empty: a caller's next turn then gets a clear
    // 400); only Ollama's are the gateway's to make, and those must exist.
    if kind == ProviderKind::Ollama {
        for call in r.choices.iter().flat_map(|c| c.message.tool_calls.iter().flatten()) {
            assert!(!call.id.is_empty(), "chat response from {name}: a tool call without an id");
        }
    }
}

fn assert_embeddings_answer(kind: ProviderKind, r: &EmbeddingsResponse) {
    let json = must(serde_json::to_vec(r), "encoding an embeddings response");
    assert_clean_json(&json, &format!("embeddings response from {} as sent to the client", kind.as_str()));
}

fn chat(kind: ProviderKind, body: &[u8]) -> Option<ChatResponse> {
    match codec::parse_chat(kind, body, CTX) {
        Ok(r) => {
            assert_chat_answer(kind, &r);
            Some(r)
        }
        Err(e) => {
            assert_refusal(kind, &e, "chat response");
            None
        }
    }
}

fn embeddings(kind: ProviderKind, body: &[u8], format: Option<&str>) -> Option<EmbeddingsResponse> {
    match codec::parse_embeddings(kind, body, CTX, format) {
        Ok(r) => {
            assert_embeddings_answer(kind, &r);
            Some(r)
        }
        Err(e) => {
            assert_refusal(kind, &e, "embeddings response");
            None
        }
    }
}

fn models(kind: ProviderKind, body: &[u8]) {
    if let Err(e) = codec::parse_models(kind, body) {
        assert_refusal(kind, &e, "model list");
    }
}

/// OpenAI and every OpenAI-compatible service (Azure included: the same parser).
pub fn openai(body: &[u8]) {
    chat(ProviderKind::OpenAi, body);
    embeddings(ProviderKind::OpenAi, body, None);
    models(ProviderKind::OpenAi, body);
}

pub fn anthropic(body: &[u8]) {
    if let Some(r) = chat(ProviderKind::Anthropic, body) {
        assert_eq!(r.choices.len(), 1, "anthropic answers one choice");
        for call in r.choices[0].message.tool_calls.iter().flatten() {
            must(serde_json::from_str::<serde_json::Value>(&call.function.arguments), "anthropic tool arguments are JSON");
        }
    }
    // Anthropic's model list has OpenAI's shape and goes through the same parser.
    models(ProviderKind::Anthropic, body);
}

/// Ollama's native API; embeddings are parsed both as floats and as base64, which must agree.
pub fn ollama(body: &[u8]) {
    if let Some(r) = chat(ProviderKind::Ollama, body) {
        assert_eq!(r.choices.len(), 1, "ollama answers one choice");
    }
    let floats = embeddings(ProviderKind::Ollama, body, None);
    let encoded = embeddings(ProviderKind::Ollama, body, Some("base64"));
    assert_eq!(floats.is_some(), encoded.is_some(), "ollama embeddings: the encoding changed whether the body parses");
    if let (Some(f), Some(b)) = (floats, encoded) {
        assert_eq!(f.data.len(), b.data.len());
        for (i, (f, b)) in f.data.iter().zip(&b.data).enumerate() {
            assert_eq!((f.index, b.index), (i as u32, i as u32), "ollama embeddings: indices are not 0..n");
            let values = f.embedding.as_array().map(|v| v.iter().filter_map(|x| x.as_f64()).collect::<Vec<_>>());
            let values = must(values.ok_or("not an array"), "ollama float embedding");
            let text = must(b.embedding.as_str().ok_or("not a string"), "ollama base64 embedding");
            let bytes = must(base64::engine::general_purpose::STANDARD.decode(text), "ollama base64 embedding decodes");
            let want: Vec<u8> = values.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect();
            assert_eq!(bytes, want, "ollama embeddings: base64 and float disagree");
        }
    }
    models(ProviderKind::Ollama, body);
}

/// Gemini and Vertex (one codec): `generateContent` answers, embeddings as `batchEmbedContents` and
/// Vertex's `:predict` answer them (floats and base64 must agree on whether the body parses), the model list.
pub fn gemini(body: &[u8]) {
    for kind in [ProviderKind::Gemini, ProviderKind::Vertex] {
        chat(kind, body);
        let floats = embeddings(kind, body, None);
        let encoded = embeddings(kind, body, Some("base64"));
        assert_eq!(floats.is_some(), encoded.is_some(), "{} embeddings: the encoding changed whether the body parses", kind.as_str());
        if let (Some(f), Some(b)) = (floats, encoded) {
            assert_eq!(f.data.len(), b.data.len(), "{} embeddings: base64 and float disagree on the count", kind.as_str());
        }
    }
    models(ProviderKind::Gemini, body);
}

/// The error the gateway renders must carry the status, a message, and encode as clean JSON.
fn assert_error(kind: ProviderKind, status: u16, e: &UpstreamError, body: &[u8]) {
    let name = kind.as_str();
    assert_eq!(e.status, status, "{name} error parser changed the status");
    assert!(!e.message.is_empty(), "{name} error parser: no message");
    if serde_json::from_slice::<serde_json::Value>(body).is_err() {
        // Plain text (a proxy's HTML page) is cut to an excerpt, never returned whole.
        assert!(e.message.chars().count() <= 513, "{name} error parser: a plain-text excerpt of {} bytes", e.message.len());
    }
    let rendered = ErrorBody {
        message: &e.message,
        kind: e.kind.as_deref().unwrap_or("upstream_error"),
        param: e.param.as_deref(),
        code: e.code.as_deref(),
    }
    .to_json();
    assert_clean_json(&rendered, &format!("{name} error as rendered for the client"));
}

/// The generic reader: OpenAI, Azure, Ollama, vLLM, Mistral, FastAPI and proxies.
pub fn error_generic(body: &[u8]) {
    for kind in [ProviderKind::OpenAi, ProviderKind::Azure, ProviderKind::Ollama] {
        for status in STATUSES {
            let e = codec::parse_error(kind, status, body);
            assert_error(kind, status, &e, body);
        }
    }
}

pub fn error_anthropic(body: &[u8]) {
    for status in STATUSES {
        let e = codec::parse_error(ProviderKind::Anthropic, status, body);
        assert_error(ProviderKind::Anthropic, status, &e, body);
    }
}

/// A non-2xx body from Google: the RPC shape (also as the one-element array the non-SSE stream endpoint
/// answers with), or anything a proxy sends. Vertex falls back to Anthropic's reader for Claude's errors.
pub fn error_gemini(body: &[u8]) {
    for kind in [ProviderKind::Gemini, ProviderKind::Vertex] {
        for status in STATUSES {
            let e = codec::parse_error(kind, status, body);
            assert_error(kind, status, &e, body);
        }
    }
}
