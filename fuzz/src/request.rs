//! Inbound request checks: what the server does with a `/v1/chat/completions` or `/v1/embeddings` body.
//!
//! The server (`crates/server/src/handlers.rs`, `decode_json`) decodes with a fast `serde_json::from_slice`
//! and, only when that fails, decodes again through `serde_path_to_error` to name the bad field; the engine
//! then checks a few values and each provider codec builds the upstream body. Both decoders and the codecs
//! are fuzzed here; the server's error wording (HTTP-side) is not.

use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_wire::codec;
use switchyard_wire::providers::bedrock;
use switchyard_wire::spec::normalize_base_url;
use switchyard_wire::types::{ChatRequest, Content, EmbeddingsRequest, Message, Role};
use switchyard_wire::{Auth, Endpoint, Family, Method, ProviderKind, ProviderOptions, WireError, WireRequest};

use crate::json::{assert_clean_json, has_duplicate_keys};
use crate::must;

const MODEL: &str = "fuzz-model";
const KEY: &str = "sk-fuzz-0123456789abcdef";

/// Decodes `bytes` both ways the server does and asserts they agree; `None` when the body is refused.
fn decode_both_ways<T: DeserializeOwned + PartialEq + std::fmt::Debug>(bytes: &[u8], what: &str) -> Option<T> {
    let fast = serde_json::from_slice::<T>(bytes);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let slow = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| e.to_string()).and_then(|v| match de.end() {
        Ok(()) => Ok(v),
        Err(e) => Err(e.to_string()),
    });
    match (fast, slow) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{what}: the two decoders read the body differently");
            Some(a)
        }
        (Err(_), Err(_)) => None,
        (Ok(_), Err(e)) => panic!("{what}: accepted by the fast decoder, refused by the path-tracking one: {e}"),
        (Err(e), Ok(_)) => panic!("{what}: refused by the fast decoder ({e}) but accepted by the path-tracking one"),
    }
}

/// A decoded value encodes and decodes back to itself (what reaches OpenAI-shaped upstreams is what the
/// caller sent). Through `serde_json::Value`, so float text round trips cannot blur the comparison.
fn assert_round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T, expected: &T, what: &str) {
    let v = must(serde_json::to_value(value), &format!("{what}: encoding"));
    let back: T = must(serde_json::from_value(v.clone()), &format!("{what}: decoding its own encoding {v}"));
    assert_eq!(&back, expected, "{what}: does not survive an encode/decode round trip");
}

fn endpoints(options: &ProviderOptions) -> Vec<(ProviderKind, String, &ProviderOptions)> {
    ProviderKind::ALL
        .into_iter()
        .map(|k| (k, normalize_base_url(k, k.default_base_url().unwrap_or("http://127.0.0.1:8000")), options))
        .collect()
}

/// The options every fuzzed endpoint gets: a region and project, so that Vertex builds its project path.
fn fuzz_options() -> ProviderOptions {
    ProviderOptions { region: Some("us-central1".into()), project: Some("fuzz-proj".into()), ..ProviderOptions::default() }
}

/// How each kind is reached: Vertex with a Bearer token (its service-account path, project in the URL),
/// every other kind with its key. The secret is the same string either way, so the leak checks hold both.
fn auth_for(kind: ProviderKind) -> Auth<'static> {
    match kind {
        ProviderKind::Vertex => Auth::Bearer(KEY),
        _ => Auth::Key(KEY),
    }
}

/// Gemini and Vertex name the model in the URL path (`…/models/{model}:{method}`), not in the body.
fn model_in_path(kind: ProviderKind) -> bool {
    matches!(kind.family(), Family::Gemini | Family::Vertex)
}

/// Anthropic and Ollama embed a tool call's `arguments` text verbatim (key order kept, no re-encoding), so
/// a caller whose own arguments repeat a key gets exactly that in the body; that is theirs, not ours.
fn caller_repeats_keys(req: &ChatRequest) -> bool {
    req.messages.iter().flat_map(|m| m.tool_calls.iter().flatten()).any(|c| has_duplicate_keys(&c.function.arguments))
}

/// An assistant message with neither text nor tool calls (reasoning alone is not a turn Cohere keeps).
fn is_empty_assistant_turn(m: &Message) -> bool {
    m.role == Role::Assistant && m.tool_calls.as_ref().is_none_or(Vec::is_empty) && m.joined_text().is_empty()
}

fn contains_key(bytes: &[u8]) -> bool {
    bytes.windows(KEY.len()).any(|win| win == KEY.as_bytes())
}

/// Whether the caller's own request holds the key's text (the fuzzer finds it): then a body that carries it
/// carries the caller's words, not a leak. Checked on the bytes sent and on the request as the codecs
/// serialize its strings.
fn caller_sent_key<T: Serialize>(bytes: &[u8], req: &T) -> bool {
    contains_key(bytes) || serde_json::to_vec(req).map_or(true, |v| contains_key(&v))
}

/// What every built upstream request must be, whatever the caller sent.
fn assert_upstream_request(
    kind: ProviderKind,
    r: Result<WireRequest, WireError>,
    what: &str,
    verbatim_dups: bool,
    caller_sent_key: bool,
) -> Option<serde_json::Value> {
    let w = match r {
        Ok(w) => w,
        Err(WireError::Unsupported { message, .. }) => {
            assert!(!message.is_empty(), "{what} for {}: a refusal without a message", kind.as_str());
            return None;
        }
        Err(e) => panic!("{what} for {}: building a request can only refuse it as unsupported, got {e:?}", kind.as_str()),
    };
    assert_eq!(w.method, Method::Post, "{what} for {}", kind.as_str());
    if !verbatim_dups {
        assert_clean_json(&w.body, &format!("{what} body for {}", kind.as_str()));
    }
    let body: serde_json::Value = must(serde_json::from_slice(&w.body), "a clean body parses");
    assert!(body.is_object(), "{what} for {}: the body is not an object", kind.as_str());
    if kind.family() == Family::Bedrock {
        // Converse and InvokeModel name the model in the path (`/model/{id}/...`, one percent-encoded
        // segment) and take no `model` field.
        let segment = format!("/model/{}/", bedrock::model_segment(MODEL));
        assert!(w.url.contains(&segment), "{what} for {}: the path {} does not name the model", kind.as_str(), w.url);
        assert!(body.get("model").is_none(), "{what} for {}: Converse takes no model field", kind.as_str());
    } else if model_in_path(kind) {
        let named = format!("/models/{MODEL}:");
        assert!(w.url.contains(&named), "{what} for {}: the URL {} does not name the model", kind.as_str(), w.url);
    } else {
        assert_eq!(body.get("model").and_then(|m| m.as_str()), Some(MODEL), "{what} for {}: the body names another model", kind.as_str());
    }
    if !caller_sent_key {
        assert!(!contains_key(&w.body), "{what} for {}: the provider key is in the body", kind.as_str());
    }
    assert!(!w.url.contains(KEY), "{what} for {}: the provider key is in the URL", kind.as_str());
    Some(body)
}

/// Gemini's `contents`: the conversation without its system and developer messages (hoisted into
/// `systemInstruction`), consecutive turns of one role merged and tool results sent as `user` turns, so
/// there are at most as many turns as such messages, at least one, strictly alternating `user`/`model`,
/// none empty.
fn assert_gemini_contents(kind: ProviderKind, req: &ChatRequest, body: &serde_json::Value, w_url: &str) {
    let name = kind.as_str();
    let conversational = req.messages.iter().filter(|m| !matches!(m.role, Role::System | Role::Developer)).count();
    let Some(turns) = body.get("contents").and_then(|c| c.as_array()) else {
        panic!("chat request for {name}: no contents array in {body}")
    };
    assert!(
        !turns.is_empty() && turns.len() <= conversational,
        "chat request for {name}: {} turns from {conversational} messages",
        turns.len()
    );
    let roles: Vec<&str> = turns.iter().map(|t| t.get("role").and_then(|r| r.as_str()).unwrap_or("")).collect();
    assert!(roles.iter().all(|r| *r == "user" || *r == "model"), "chat request for {name}: roles {roles:?}");
    assert!(roles.windows(2).all(|p| p[0] != p[1]), "chat request for {name}: two turns of one role in a row: {roles:?}");
    for t in turns {
        assert!(t.get("parts").and_then(|p| p.as_array()).is_some_and(|p| !p.is_empty()), "chat request for {name}: an empty turn {t}");
    }
    let has_system = req.messages.iter().any(|m| matches!(m.role, Role::System | Role::Developer));
    if !has_system {
        assert!(body.get("systemInstruction").is_none(), "chat request for {name}: a system instruction from no system message");
    }
    assert!(body.get("messages").is_none(), "chat request for {name}: OpenAI's messages sent to Gemini");
    let streams = w_url.contains(":streamGenerateContent?alt=sse");
    assert_eq!(streams, req.is_stream(), "chat request for {name}: the stream flag changed ({w_url})");
}

/// `POST /v1/chat/completions`.
/// Anthropic's and Converse's `messages`: the conversation without its system messages (hoisted), turns of
/// one role merged, so at most as many turns as such messages, each `user` or `assistant`. Converse's
/// alternate strictly and its `system` blocks hold every system text.
fn assert_merged_turns(kind: ProviderKind, req: &ChatRequest, body: &serde_json::Value) {
    let name = kind.as_str();
    let turns = body.get("messages").and_then(|m| m.as_array()).map(Vec::as_slice).unwrap_or_default();
    let system_like = |r: &Role| matches!(r, Role::System | Role::Developer);
    let conversational = req.messages.iter().filter(|m| !system_like(&m.role)).count();
    assert!(turns.len() <= conversational, "chat request for {name}: {} turns from {conversational} messages", turns.len());
    let role = |t: &serde_json::Value| t.get("role").and_then(|r| r.as_str()).map(str::to_string);
    for t in turns {
        let r = role(t);
        assert!(matches!(r.as_deref(), Some("user" | "assistant")), "chat request for {name}: a turn with role {r:?}");
    }
    if kind.family() == Family::Bedrock {
        for pair in turns.windows(2) {
            assert_ne!(role(&pair[0]), role(&pair[1]), "chat request for {name}: two turns of one role in a row");
        }
        let system_text: String =
            body.get("system").and_then(|s| s.as_array()).into_iter().flatten().filter_map(|b| b["text"].as_str()).collect();
        for m in req.messages.iter().filter(|m| system_like(&m.role)) {
            if let Some(Content::Text(t)) = &m.content {
                assert!(system_text.contains(t.as_str()), "chat request for {name}: the system text {t:?} is not in `system`");
            }
        }
    }
}

pub fn chat(bytes: &[u8]) {
    let Some(req) = decode_both_ways::<ChatRequest>(bytes, "chat request") else { return };
    let mut expected = req.clone();
    expected.fallbacks = None; // a gateway extension, never sent on
    assert_round_trips(&req, &expected, "chat request");
    let verbatim_dups = caller_repeats_keys(&req);
    let sent_key = caller_sent_key(bytes, &req);
    let options = fuzz_options();
    for (kind, base, options) in endpoints(&options) {
        let ep = Endpoint { kind, base_url: &base, auth: auth_for(kind), options };
        let built = codec::build_chat(&ep, &req, MODEL);
        let url = built.as_ref().map(|w| w.url.clone()).unwrap_or_default();
        let Some(body) = assert_upstream_request(kind, built, "chat request", verbatim_dups, sent_key) else {
            continue;
        };
        let sent = body.get("messages").and_then(|m| m.as_array()).map(Vec::len);
        match kind.family() {
            // Anthropic and Converse merge turns and hoist the system prompt.
            Family::Anthropic | Family::Bedrock => assert_merged_turns(kind, &req, &body),
            // Cohere refuses empty turns, so an assistant turn with no text and no tool calls carries nothing
            // and is left out.
            Family::Cohere => {
                let kept = req.messages.iter().filter(|m| !is_empty_assistant_turn(m)).count();
                assert_eq!(sent, Some(kept), "chat request for cohere: messages were lost or added");
            }
            Family::Gemini | Family::Vertex => assert_gemini_contents(kind, &req, &body, &url),
            // Every other codec keeps each message.
            _ => assert_eq!(sent, Some(req.messages.len()), "chat request for {}: messages were lost or added", kind.as_str()),
        }
        match kind.family() {
            Family::Ollama | Family::Anthropic => {
                let stream = body.get("stream").and_then(|s| s.as_bool());
                assert_eq!(stream, Some(req.is_stream()), "chat request for {}: the stream flag changed", kind.as_str());
            }
            Family::Bedrock => {
                let op = if req.is_stream() { "/converse-stream" } else { "/converse" };
                assert!(url.ends_with(op), "chat request for {}: a stream flag of {} went to {url}", kind.as_str(), req.is_stream());
            }
            _ => {}
        }
    }
}

/// `POST /v1/embeddings`.
pub fn embeddings(bytes: &[u8]) {
    let Some(req) = decode_both_ways::<EmbeddingsRequest>(bytes, "embeddings request") else { return };
    let mut expected = req.clone();
    expected.fallbacks = None;
    assert_round_trips(&req, &expected, "embeddings request");
    let sent_key = caller_sent_key(bytes, &req);
    let options = fuzz_options();
    for (kind, base, options) in endpoints(&options) {
        let ep = Endpoint { kind, base_url: &base, auth: auth_for(kind), options };
        match codec::build_embeddings(&ep, &req, MODEL) {
            Err(WireError::Unsupported { .. }) if !kind.has_embeddings() => {}
            r => {
                assert!(kind.has_embeddings(), "embeddings for {}: built for a provider without embeddings", kind.as_str());
                assert_upstream_request(kind, r, "embeddings request", false, sent_key);
            }
        }
    }
}
