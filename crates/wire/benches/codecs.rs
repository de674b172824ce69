//! Benchmarks for the translation layer: decoding the caller's request, building each provider's upstream
//! request, parsing each provider's response, and translating a whole upstream stream into the OpenAI SSE
//! the client reads.
//!
//! The `inbound_anthropic` group times the `/anthropic` route's side: an Anthropic Messages request to the
//! canonical one, a canonical answer to a Messages body, and canonical stream chunks to Anthropic's SSE.
//!
//! Every input is built here, in the shape the provider really sends (see the provider reference), so the
//! numbers cover the same code paths the engine runs. Each input is translated once before timing and the
//! result checked, so a benchmark can never quietly measure an error path.
//!
//! The `bedrock` group times Bedrock's side: building a Converse request and signing it with SigV4 (each
//! attempt signs again, over the whole body), decoding a ConverseStream event-stream body, and the
//! `/bedrock` route's Converse request to the canonical one and canonical chunks to event-stream frames.
//!
//! Run with `cargo bench -p switchyard-wire --bench codecs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use switchyard_wire::codec::{self, normalize_base_url};
use switchyard_wire::inbound::anthropic::{self as inbound, AnthropicStreamEncoder, MessagesRequest, Purpose};
use switchyard_wire::inbound::responses::{self, ResponseShell, ResponsesRequest, ResponsesStreamEncoder};
use switchyard_wire::outbound::OpenAiStreamEncoder;
use switchyard_wire::types::{ChatRequest, FinishReason};
use switchyard_wire::{Endpoint, ProviderKind, ProviderOptions, ResponseCtx, StreamDecoder, StreamEvent};

/// Raw image size; its base64 form in the request is 200,000 characters.
const IMAGE_RAW_BYTES: usize = 150_000;
/// Content-bearing chunks in each upstream stream (plus each protocol's own start and end frames).
const STREAM_CHUNKS: usize = 200;
/// How the upstream body is cut before it reaches the decoder, as if read off a socket.
const PIECE: usize = 512;

const CTX: ResponseCtx<'static> = ResponseCtx { id: "chatcmpl-gw-7f3a9c2e51d04b6a", created: 1_741_569_952, model: "bench-model" };

const SYSTEM_PROMPT: &str = "You are the travel desk assistant for a mid-sized company. Answer in plain English, keep \
answers under 150 words unless asked for detail, quote prices in euros, and call get_weather only when the user asks \
about current conditions in a specific city. Never invent train or flight times; say when you do not know.";

const ANSWER: &str = "Take the train. The TGV from Paris Gare de Lyon reaches Lyon Part-Dieu in about two hours, \
city centre to city centre, while flying means getting to Orly or CDG, security, a one-hour flight and the Rhônexpress \
into town: door to door it is usually slower and costs more. Morning trains leave roughly every half hour between \
06:00 and 10:00; book a seat in advance because business travellers fill them early. With the weather in Paris \
sunny and 18 °C, a light jacket is enough for the platform, and Lyon is forecast to be similar. If you need to work \
on the way, pick a first-class seat in a \"zen\" coach: they are quieter and have power sockets at every seat.";

// ---------------------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------------------

/// A deterministic PNG-looking payload (signature, then noise) as a base64 `data:` URL.
fn image_data_url(raw_len: usize) -> String {
    let mut bytes = Vec::with_capacity(raw_len);
    bytes.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    while bytes.len() < raw_len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(raw_len);
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&bytes))
}

/// A chat request as a client sends it: a system prompt, six turns (including a tool call and its
/// result), one tool; with `image`, the last user turn also carries a base64 image.
fn chat_request_json(image: Option<&str>) -> Vec<u8> {
    let last_user = match image {
        None => json!({"role": "user", "content": "Thanks. Given that, should I take the train or fly to Lyon tomorrow morning?"}),
        Some(url) => json!({"role": "user", "content": [
            {"type": "text", "text": "Thanks. Here is my booking screen: should I take the train or fly to Lyon tomorrow morning?"},
            {"type": "image_url", "image_url": {"url": url, "detail": "high"}}
        ]}),
    };
    let body = json!({
        "model": "openai/gpt-4o",
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "I'm going from Paris to Lyon for a two-day client visit this week. What should I pack?"},
            {"role": "assistant", "content": "For two days in Lyon in spring: a light jacket, one smart outfit for the client meeting, \
    comfortable shoes for the old town, a phone charger and an umbrella just in case. Do you want me to check the weather?"},
            {"role": "user", "content": "Yes, what's the weather in Paris right now?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_Wb2Xk9fQ3mZr7LpT1sYc4NdA", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call_Wb2Xk9fQ3mZr7LpT1sYc4NdA",
                "content": "{\"city\":\"Paris\",\"temperature\":18,\"unit\":\"celsius\",\"conditions\":\"sunny\",\"wind_kph\":9}"},
            last_user
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather conditions for a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            }, "required": ["city"]}
        }}],
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_completion_tokens": 512,
        "stop": ["\n\nUser:"],
        "user": "employee-4821"
    });
    serde_json::to_vec(&body).unwrap()
}

/// One provider to build requests for and parse responses from.
struct Provider {
    name: &'static str,
    kind: ProviderKind,
    base_url: String,
    auth: switchyard_wire::Auth<'static>,
    /// The upstream model name (the gateway's `provider/` prefix removed).
    model: &'static str,
}

fn providers() -> [Provider; 5] {
    let base = |kind: ProviderKind| normalize_base_url(kind, kind.default_base_url().unwrap());
    [
        Provider {
            name: "openai",
            kind: ProviderKind::OpenAi,
            base_url: base(ProviderKind::OpenAi),
            auth: switchyard_wire::Auth::Key("sk-bench-0000000000000000"),
            model: "gpt-4o",
        },
        Provider {
            name: "anthropic",
            kind: ProviderKind::Anthropic,
            base_url: base(ProviderKind::Anthropic),
            auth: switchyard_wire::Auth::Key("sk-ant-bench-0000000000000000"),
            model: "claude-sonnet-4-20250514",
        },
        Provider {
            name: "ollama",
            kind: ProviderKind::Ollama,
            base_url: base(ProviderKind::Ollama),
            auth: switchyard_wire::Auth::None,
            model: "llama3.2",
        },
        Provider {
            name: "gemini",
            kind: ProviderKind::Gemini,
            base_url: base(ProviderKind::Gemini),
            auth: switchyard_wire::Auth::Key("AIza-bench-0000000000000000"),
            model: "gemini-2.5-flash",
        },
        Provider {
            name: "cohere",
            kind: ProviderKind::Cohere,
            base_url: base(ProviderKind::Cohere),
            auth: switchyard_wire::Auth::Key("co-bench-0000000000000000"),
            model: "command-a-03-2025",
        },
    ]
}

impl Provider {
    fn endpoint<'a>(&'a self, options: &'a ProviderOptions) -> Endpoint<'a> {
        Endpoint { kind: self.kind, base_url: &self.base_url, auth: self.auth, options }
    }

    /// A typical non-streaming text answer, in this provider's own response shape.
    fn response_body(&self) -> Vec<u8> {
        let answer = serde_json::to_string(ANSWER).unwrap();
        let body = match self.kind {
            ProviderKind::OpenAi => format!(
                r#"{{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion","created":1741570283,"model":"gpt-4o-2024-08-06","choices":[{{"index":0,"message":{{"role":"assistant","content":{answer},"refusal":null,"annotations":[]}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":412,"completion_tokens":168,"total_tokens":580,"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf"}}"#
            ),
            ProviderKind::Anthropic => format!(
                r#"{{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-20250514","content":[{{"type":"text","text":{answer}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":412,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":168,"service_tier":"standard"}}}}"#
            ),
            ProviderKind::Ollama => format!(
                r#"{{"model":"llama3.2","created_at":"2025-03-10T09:31:23.482103275Z","message":{{"role":"assistant","content":{answer}}},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":412,"prompt_eval_duration":342546000,"eval_count":168,"eval_duration":4535599000}}"#
            ),
            ProviderKind::Gemini => format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":{answer}}}],"role":"model"}},"finishReason":"STOP","index":0}}],"usageMetadata":{{"promptTokenCount":412,"candidatesTokenCount":168,"totalTokenCount":580,"promptTokensDetails":[{{"modality":"TEXT","tokenCount":412}}]}},"modelVersion":"gemini-2.5-flash","responseId":"R5sqaJaWK9uJ1dkP7Ki-mAE"}}"#
            ),
            ProviderKind::Cohere => format!(
                r#"{{"id":"c14c80c3-18eb-4519-9460-6c92edd8cfb4","message":{{"role":"assistant","content":[{{"type":"text","text":{answer}}}]}},"finish_reason":"COMPLETE","usage":{{"billed_units":{{"input_tokens":412,"output_tokens":168}},"tokens":{{"input_tokens":578,"output_tokens":168}}}}}}"#
            ),
            other => unreachable!("no response shape for {other:?}"),
        };
        body.into_bytes()
    }

    /// A streamed answer of [`STREAM_CHUNKS`] content chunks, framed as this provider frames it.
    fn stream_body(&self, tokens: &[String]) -> Vec<u8> {
        let mut s = String::new();
        match self.kind {
            ProviderKind::OpenAi => {
                let head = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_f9f4fb6dbf""#;
                let mut frame = |rest: &str| s.push_str(&format!("data: {head},{rest}}}\n\n"));
                frame(
                    r#""choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null"#,
                );
                for t in tokens {
                    let t = serde_json::to_string(t).unwrap();
                    frame(&format!(
                        r#""choices":[{{"index":0,"delta":{{"content":{t}}},"logprobs":null,"finish_reason":null}}],"usage":null"#
                    ));
                }
                frame(r#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null"#);
                frame(&format!(
                    r#""choices":[],"usage":{{"prompt_tokens":412,"completion_tokens":{},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}}"#,
                    tokens.len(),
                    412 + tokens.len()
                ));
                s.push_str("data: [DONE]\n\n");
            }
            ProviderKind::Anthropic => {
                let mut event = |name: &str, data: &str| s.push_str(&format!("event: {name}\ndata: {data}\n\n"));
                event(
                    "message_start",
                    r#"{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":412,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}"#,
                );
                event("content_block_start", r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#);
                event("ping", r#"{"type": "ping"}"#);
                for t in tokens {
                    let t = serde_json::to_string(t).unwrap();
                    event(
                        "content_block_delta",
                        &format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{t}}}}}"#),
                    );
                }
                event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#);
                event(
                    "message_delta",
                    &format!(
                        r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#,
                        tokens.len()
                    ),
                );
                event("message_stop", r#"{"type":"message_stop"}"#);
            }
            ProviderKind::Ollama => {
                for (i, t) in tokens.iter().enumerate() {
                    let t = serde_json::to_string(t).unwrap();
                    // About 44 tokens a second, starting at 09:31:19.1.
                    let elapsed = 100_000_000 + i * 22_677_000;
                    let (secs, nanos) = (19 + elapsed / 1_000_000_000, elapsed % 1_000_000_000);
                    s.push_str(&format!(
                        r#"{{"model":"llama3.2","created_at":"2025-03-10T09:31:{secs:02}.{nanos:09}Z","message":{{"role":"assistant","content":{t}}},"done":false}}"#
                    ));
                    s.push('\n');
                }
                s.push_str(&format!(
                    r#"{{"model":"llama3.2","created_at":"2025-03-10T09:31:23.982103275Z","message":{{"role":"assistant","content":""}},"done_reason":"stop","done":true,"total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":412,"prompt_eval_duration":342546000,"eval_count":{},"eval_duration":4535599000}}"#,
                    tokens.len()
                ));
                s.push('\n');
            }
            ProviderKind::Gemini => {
                // Google's framing: every frame a whole response with the new text, CRLF, no end marker.
                let tail = r#""modelVersion":"gemini-2.5-flash","responseId":"6psqaLCbNYqH1dkPz9GA8AQ""#;
                for t in tokens {
                    let t = serde_json::to_string(t).unwrap();
                    s.push_str(&format!(
                        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":{t}}}],\"role\":\"model\"}},\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":412,\"totalTokenCount\":412}},{tail}}}\r\n\r\n"
                    ));
                }
                s.push_str(&format!(
                    "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"\"}}],\"role\":\"model\"}},\"finishReason\":\"STOP\",\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":412,\"candidatesTokenCount\":{},\"totalTokenCount\":{}}},{tail}}}\r\n\r\n",
                    tokens.len(),
                    412 + tokens.len()
                ));
            }
            ProviderKind::Cohere => {
                // Cohere's v2 named events: message-start, content-start, a content-delta per token,
                // content-end, message-end with the finish and usage.
                let mut event = |name: &str, data: &str| s.push_str(&format!("event: {name}\ndata: {data}\n\n"));
                event(
                    "message-start",
                    r#"{"id":"a8fc192e-4bb8-4e15-ae1f-a174e8b02ae8","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}"#,
                );
                event("content-start", r#"{"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}"#);
                for t in tokens {
                    let t = serde_json::to_string(t).unwrap();
                    event(
                        "content-delta",
                        &format!(r#"{{"type":"content-delta","index":0,"delta":{{"message":{{"content":{{"text":{t}}}}}}}}}"#),
                    );
                }
                event("content-end", r#"{"type":"content-end","index":0}"#);
                event(
                    "message-end",
                    &format!(
                        r#"{{"type":"message-end","delta":{{"finish_reason":"COMPLETE","usage":{{"billed_units":{{"input_tokens":412,"output_tokens":{}}},"tokens":{{"input_tokens":578,"output_tokens":{}}}}}}}}}"#,
                        tokens.len(),
                        tokens.len()
                    ),
                );
            }
            other => unreachable!("no stream shape for {other:?}"),
        }
        s.into_bytes()
    }
}

/// The answer cut into word-sized tokens (leading space kept, as tokenizers emit them), repeated to `n`.
fn stream_tokens(n: usize) -> Vec<String> {
    let words: Vec<&str> = ANSWER.split(' ').collect();
    (0..n).map(|i| if i == 0 { words[0].to_string() } else { format!(" {}", words[i % words.len()]) }).collect()
}

/// Decodes an upstream stream fed in [`PIECE`]-byte pieces and hands each piece's client-facing bytes to
/// `sink`, as the engine writes them to the client after every read.
fn translate_stream(kind: ProviderKind, upstream: &[u8], mut sink: impl FnMut(&[u8])) {
    let mut decoder = StreamDecoder::new(kind, CTX);
    let mut encoder = OpenAiStreamEncoder::new(true);
    let mut events = Vec::new();
    let mut out = Vec::with_capacity(8 * 1024);
    let mut flush = |events: &mut Vec<StreamEvent>, encoder: &mut OpenAiStreamEncoder| {
        out.clear();
        for ev in events.drain(..) {
            match ev {
                StreamEvent::Chunk(c) => encoder.encode(c, &mut out),
                StreamEvent::Done => encoder.finish(&mut out),
                StreamEvent::Error(e) => panic!("the bench stream produced an upstream error: {e:?}"),
            }
        }
        if !out.is_empty() {
            sink(&out);
        }
    };
    for piece in upstream.chunks(PIECE) {
        decoder.feed(piece, &mut events).unwrap();
        flush(&mut events, &mut encoder);
    }
    decoder.finish(&mut events).unwrap();
    flush(&mut events, &mut encoder);
}

// ---------------------------------------------------------------------------------------------------------
// Benchmarks
// ---------------------------------------------------------------------------------------------------------

fn decode_request(c: &mut Criterion) {
    let image = image_data_url(IMAGE_RAW_BYTES);
    let inputs = [("small", chat_request_json(None)), ("image_200k", chat_request_json(Some(&image)))];
    let mut g = c.benchmark_group("decode_request");
    for (name, body) in &inputs {
        let req: ChatRequest = serde_json::from_slice(body).unwrap();
        assert_eq!(req.messages.len(), 7);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(*name, |b| b.iter(|| serde_json::from_slice::<ChatRequest>(black_box(body)).unwrap()));
    }
    g.finish();
}

fn build_chat(c: &mut Criterion) {
    let image = image_data_url(IMAGE_RAW_BYTES);
    let requests: [(&str, ChatRequest); 2] = [
        ("small", serde_json::from_slice(&chat_request_json(None)).unwrap()),
        ("image_200k", serde_json::from_slice(&chat_request_json(Some(&image))).unwrap()),
    ];
    let options = ProviderOptions::default();
    let mut g = c.benchmark_group("build_chat");
    for p in &providers() {
        let ep = p.endpoint(&options);
        for (variant, req) in &requests {
            let wire = codec::build_chat(&ep, req, p.model).unwrap();
            if *variant == "image_200k" {
                assert!(wire.body.len() > 200_000, "{} dropped the image", p.name);
            }
            // Throughput counts the upstream body produced.
            g.throughput(Throughput::Bytes(wire.body.len() as u64));
            g.bench_function(BenchmarkId::new(p.name, variant), |b| {
                b.iter(|| codec::build_chat(black_box(&ep), black_box(req), black_box(p.model)).unwrap())
            });
        }
    }
    g.finish();
}

fn parse_chat(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_chat");
    for p in &providers() {
        let body = p.response_body();
        let resp = codec::parse_chat(p.kind, &body, CTX).unwrap();
        assert_eq!(resp.choices[0].message.content.as_deref(), Some(ANSWER), "{}", p.name);
        assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Stop), "{}", p.name);
        assert!(resp.usage.is_some(), "{}", p.name);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(p.name, |b| b.iter(|| codec::parse_chat(p.kind, black_box(&body), CTX).unwrap()));
    }
    g.finish();
}

fn stream_translate(c: &mut Criterion) {
    let tokens = stream_tokens(STREAM_CHUNKS);
    let mut g = c.benchmark_group("stream_translate");
    for p in &providers() {
        let upstream = p.stream_body(&tokens);
        // One pass up front: every content chunk, the role, finish and usage chunks, and [DONE] reach the client.
        let mut client = Vec::new();
        translate_stream(p.kind, &upstream, |b| client.extend_from_slice(b));
        let client = String::from_utf8(client).unwrap();
        let frames = client.matches("data: ").count();
        // Gemini's first text rides on the role chunk (it has no empty opening frame): one frame fewer.
        let opening = if p.kind == ProviderKind::Gemini { 0 } else { 1 };
        assert_eq!(frames, STREAM_CHUNKS + 3 + opening, "{}: {client}", p.name);
        assert!(client.ends_with("data: [DONE]\n\n"), "{}", p.name);
        assert!(client.contains(&format!("\"completion_tokens\":{STREAM_CHUNKS}")), "{}", p.name);

        let id = match p.kind {
            ProviderKind::OpenAi => "openai_sse",
            ProviderKind::Anthropic => "anthropic_sse",
            ProviderKind::Gemini => "gemini_sse",
            ProviderKind::Cohere => "cohere_sse",
            _ => "ollama_ndjson",
        };
        g.throughput(Throughput::Bytes(upstream.len() as u64));
        g.bench_function(id, |b| {
            b.iter(|| {
                let mut sent = 0usize;
                translate_stream(p.kind, black_box(&upstream), |bytes| sent += black_box(bytes).len());
                sent
            })
        });
    }
    g.finish();
}

/// A Responses request as the SDK sends it for an agent's second turn (fixture), and its shell.
fn responses_request() -> (&'static [u8], ResponseShell) {
    let body: &'static [u8] = include_bytes!("../tests/fixtures/responses/request_agent_turn.json");
    let req: ResponsesRequest = serde_json::from_slice(body).unwrap();
    let (_, shell) = responses::to_chat(req, "resp_bench7f3a9c2e51d04b6a".into(), 1_741_569_952).unwrap();
    (body, shell)
}

/// Decodes an upstream stream as [`translate_stream`] does, encoding it as the Responses event stream.
fn translate_stream_responses(kind: ProviderKind, upstream: &[u8], shell: &ResponseShell, mut sink: impl FnMut(&[u8])) {
    let mut decoder = StreamDecoder::new(kind, CTX);
    let mut encoder = ResponsesStreamEncoder::new(shell.clone());
    let mut events = Vec::new();
    let mut out = Vec::with_capacity(8 * 1024);
    let mut flush = |events: &mut Vec<StreamEvent>, encoder: &mut ResponsesStreamEncoder| {
        out.clear();
        for ev in events.drain(..) {
            match ev {
                StreamEvent::Chunk(c) => encoder.encode(c, &mut out),
                StreamEvent::Done => encoder.finish(&mut out),
                StreamEvent::Error(e) => panic!("the bench stream produced an upstream error: {e:?}"),
            }
        }
        if !out.is_empty() {
            sink(&out);
        }
    };
    for piece in upstream.chunks(PIECE) {
        decoder.feed(piece, &mut events).unwrap();
        flush(&mut events, &mut encoder);
    }
    decoder.finish(&mut events).unwrap();
    flush(&mut events, &mut encoder);
}

/// The Responses API on the inbound side: request to canonical chat, a complete answer to a Response
/// object, and an upstream stream to the Responses event stream.
fn responses_api(c: &mut Criterion) {
    let (body, shell) = responses_request();
    let mut g = c.benchmark_group("responses");
    let (chat, _) = responses::to_chat(serde_json::from_slice(body).unwrap(), "resp_x".into(), 0).unwrap();
    assert_eq!(chat.messages.len(), 5, "instructions, two user turns, the assistant's call, its output");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_to_chat", |b| {
        b.iter(|| {
            let req: ResponsesRequest = serde_json::from_slice(black_box(body)).unwrap();
            responses::to_chat(req, "resp_bench".into(), 0).unwrap()
        })
    });

    let openai = &providers()[0];
    let resp = codec::parse_chat(openai.kind, &openai.response_body(), CTX).unwrap();
    let rendered: serde_json::Value = serde_json::from_slice(&shell.render(&resp)).unwrap();
    assert_eq!(rendered["output"][0]["content"][0]["text"], ANSWER);
    g.throughput(Throughput::Elements(1));
    g.bench_function("render_response", |b| b.iter(|| shell.render(black_box(&resp))));

    let tokens = stream_tokens(STREAM_CHUNKS);
    let upstream = openai.stream_body(&tokens);
    let mut client = Vec::new();
    translate_stream_responses(openai.kind, &upstream, &shell, |b| client.extend_from_slice(b));
    let client = String::from_utf8(client).unwrap();
    assert_eq!(client.matches("event: response.output_text.delta\n").count(), STREAM_CHUNKS);
    assert!(client.contains("event: response.completed\n"), "{client}");
    g.throughput(Throughput::Bytes(upstream.len() as u64));
    g.bench_function("stream_openai_sse", |b| {
        b.iter(|| {
            let mut sent = 0usize;
            translate_stream_responses(openai.kind, black_box(&upstream), &shell, |bytes| sent += black_box(bytes).len());
            sent
        })
    });
    g.finish();
}

/// The conversation of [`chat_request_json`] as an Anthropic client sends it.
fn messages_request_json(image: Option<&str>) -> Vec<u8> {
    let mut last_user = vec![json!({"type": "tool_result", "tool_use_id": "toolu_01Wb2Xk9fQ3mZr7LpT1sYc4N",
        "content": "{\"city\":\"Paris\",\"temperature\":18,\"unit\":\"celsius\",\"conditions\":\"sunny\",\"wind_kph\":9}"})];
    last_user.push(json!({"type": "text", "text": "Thanks. Given that, should I take the train or fly to Lyon tomorrow morning?"}));
    if let Some(url) = image {
        let data = url.split_once(',').unwrap().1;
        last_user.push(json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}));
    }
    let body = json!({
        "model": "openai/gpt-4o",
        "max_tokens": 512,
        "system": [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "I'm going from Paris to Lyon for a two-day client visit this week. What should I pack?"},
            {"role": "assistant", "content": [{"type": "text", "text": "For two days in Lyon in spring: a light jacket, one smart outfit \
    for the client meeting, comfortable shoes for the old town, a phone charger and an umbrella just in case. Do you want me to check the weather?"}]},
            {"role": "user", "content": "Yes, what's the weather in Paris right now?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01Wb2Xk9fQ3mZr7LpT1sYc4N", "name": "get_weather",
                "input": {"city": "Paris", "unit": "celsius"}}]},
            {"role": "user", "content": last_user}
        ],
        "tools": [{"name": "get_weather", "description": "Current weather conditions for a city",
            "input_schema": {"type": "object", "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            }, "required": ["city"]}}],
        "tool_choice": {"type": "auto"},
        "temperature": 0.2,
        "stop_sequences": ["\n\nUser:"],
        "metadata": {"user_id": "employee-4821"}
    });
    serde_json::to_vec(&body).unwrap()
}

/// A ConverseStream body as Bedrock sends it: `messageStart`, one text delta per token, the block's stop,
/// `messageStop` and `metadata`.
fn bedrock_stream_body(tokens: &[String]) -> Vec<u8> {
    use switchyard_wire::eventstream::Message;
    let mut out = Vec::new();
    let mut push = |event: &str, v: serde_json::Value| Message::event(event, v.to_string().into_bytes()).encode(&mut out).unwrap();
    push("messageStart", json!({"role": "assistant"}));
    for t in tokens {
        push("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": t}}));
    }
    push("contentBlockStop", json!({"contentBlockIndex": 0}));
    push("messageStop", json!({"stopReason": "end_turn"}));
    push("metadata", json!({"usage": {"inputTokens": 310, "outputTokens": 200, "totalTokens": 510}, "metrics": {"latencyMs": 2100}}));
    out
}

fn bedrock(c: &mut Criterion) {
    use switchyard_wire::inbound::bedrock as inb;
    use switchyard_wire::{Auth, AwsCredentials};
    let image = image_data_url(IMAGE_RAW_BYTES);
    let creds = AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("IQoJb3JpZ2luX2VjEXAMPLEtoken==".into()),
    };
    let options = ProviderOptions { region: Some("eu-central-1".into()), ..ProviderOptions::default() };
    let base = "https://bedrock-runtime.eu-central-1.amazonaws.com";
    let ep = Endpoint { kind: ProviderKind::Bedrock, base_url: base, auth: Auth::Aws(&creds), options: &options };
    let model = "eu.anthropic.claude-3-5-haiku-20241022-v1:0";
    let mut g = c.benchmark_group("bedrock");
    for (name, body) in [("build_and_sign_small", chat_request_json(None)), ("build_and_sign_image_200k", chat_request_json(Some(&image)))]
    {
        let req: ChatRequest = serde_json::from_slice(&body).unwrap();
        let build = |req: &ChatRequest| {
            let mut w = codec::build_chat(&ep, req, model).unwrap();
            codec::authorize(&ep, &mut w, 1_741_569_952).unwrap();
            w
        };
        let w = build(&req);
        assert!(w.headers.iter().any(|(n, v)| n == "authorization" && v.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")));
        g.throughput(Throughput::Bytes(w.body.len() as u64));
        g.bench_function(name, |b| b.iter(|| build(black_box(&req))));
    }

    // ConverseStream: the event-stream body cut as a socket delivers it, decoded and encoded for an OpenAI client.
    let upstream = bedrock_stream_body(&stream_tokens(STREAM_CHUNKS));
    let mut sent = String::new();
    translate_stream(ProviderKind::Bedrock, &upstream, |b| sent.push_str(std::str::from_utf8(b).unwrap()));
    let texts = sent.matches("\"content\":\"").count() - sent.matches("\"content\":\"\"").count();
    assert_eq!(texts, STREAM_CHUNKS, "one content delta per token (the role chunk's empty content aside)");
    assert!(sent.ends_with("data: [DONE]\n\n"));
    g.throughput(Throughput::Bytes(upstream.len() as u64));
    g.bench_function("stream_decode_200", |b| {
        b.iter(|| {
            let mut n = 0;
            translate_stream(ProviderKind::Bedrock, black_box(&upstream), |bytes| n += black_box(bytes).len());
            n
        })
    });

    // The /bedrock route: a Converse request (the same conversation) to the canonical request.
    let converse = json!({
        "system": [{"text": SYSTEM_PROMPT}],
        "messages": [
            {"role": "user", "content": [{"text": "I'm going from Paris to Lyon for a two-day client visit this week. What should I pack?"}]},
            {"role": "assistant", "content": [{"text": "For two days in Lyon in spring: a light jacket and comfortable shoes."}]},
            {"role": "user", "content": [{"text": "Yes, what's the weather in Paris right now?"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_Wb2Xk9fQ3mZr7LpT1sYc4N", "name": "get_weather",
                "input": {"city": "Paris", "unit": "celsius"}}}]},
            {"role": "user", "content": [
                {"toolResult": {"toolUseId": "tooluse_Wb2Xk9fQ3mZr7LpT1sYc4N", "content": [{"json": {"city": "Paris", "temperature": 18}}]}},
                {"text": "Thanks. Given that, should I take the train or fly to Lyon tomorrow morning?"}]}
        ],
        "inferenceConfig": {"maxTokens": 512, "temperature": 0.2, "stopSequences": ["\n\nUser:"]},
        "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "Current weather conditions for a city",
            "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}],
            "toolChoice": {"auto": {}}}
    });
    let body = serde_json::to_vec(&converse).unwrap();
    let decode = |b: &[u8]| inb::to_chat("openai/gpt-4o", &serde_json::from_slice(b).unwrap(), false).unwrap();
    assert_eq!(decode(&body).messages.len(), 7, "system, five turns, and the tool result split from its turn");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("inbound_decode", |b| b.iter(|| decode(black_box(&body))));

    // Canonical chunks (an OpenAI stream's) as ConverseStream frames.
    let openai = &providers()[0];
    let mut decoder = StreamDecoder::new(openai.kind, CTX);
    let mut events = Vec::new();
    decoder.feed(&openai.stream_body(&stream_tokens(STREAM_CHUNKS)), &mut events).unwrap();
    decoder.finish(&mut events).unwrap();
    let chunks: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Chunk(c) => Some(c),
            _ => None,
        })
        .collect();
    let encode = |chunks: Vec<_>| {
        let mut enc = inb::BedrockStreamEncoder::new();
        let mut out = Vec::with_capacity(64 * 1024);
        for c in chunks {
            enc.encode(c, &mut out);
        }
        enc.finish(&mut out);
        out
    };
    let frames = encode(chunks.clone());
    let mut msgs = Vec::new();
    switchyard_wire::eventstream::Decoder::new().feed(&frames, &mut msgs).unwrap();
    assert_eq!(msgs.iter().filter(|m| m.header_str(":event-type") == Some("contentBlockDelta")).count(), STREAM_CHUNKS);
    g.throughput(Throughput::Elements(STREAM_CHUNKS as u64));
    g.bench_function("inbound_stream_encode_200", |b| b.iter_batched(|| chunks.clone(), encode, criterion::BatchSize::SmallInput));
    g.finish();
}

fn inbound_anthropic(c: &mut Criterion) {
    let image = image_data_url(IMAGE_RAW_BYTES);
    let mut g = c.benchmark_group("inbound_anthropic");
    for (name, body) in [("decode_small", messages_request_json(None)), ("decode_image_200k", messages_request_json(Some(&image)))] {
        let decode = |b: &[u8]| {
            let req: MessagesRequest = serde_json::from_slice(b).unwrap();
            inbound::to_chat(req, Purpose::Messages).unwrap()
        };
        let (chat, _) = decode(&body);
        assert_eq!(chat.messages.len(), 7, "system, five turns, and the tool result split from its turn");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| decode(black_box(&body))));
    }

    // The answer as the OpenAI codec parsed it, rendered as a Messages body.
    let openai = &providers()[0];
    let resp = codec::parse_chat(openai.kind, &openai.response_body(), CTX).unwrap();
    let inb = inbound::Inbound { model: "openai/gpt-4o".into(), ..inbound::Inbound::default() };
    let rendered: serde_json::Value = serde_json::from_slice(&inbound::render_message(&resp, &inb)).unwrap();
    assert_eq!((rendered["content"][0]["text"].as_str(), rendered["stop_reason"].as_str()), (Some(ANSWER), Some("end_turn")));
    g.throughput(Throughput::Bytes(inbound::render_message(&resp, &inb).len() as u64));
    g.bench_function("render_message", |b| b.iter(|| inbound::render_message(black_box(&resp), &inb)));

    // A whole OpenAI stream's canonical chunks, encoded as Anthropic's SSE.
    let mut decoder = StreamDecoder::new(openai.kind, CTX);
    let mut events = Vec::new();
    decoder.feed(&openai.stream_body(&stream_tokens(STREAM_CHUNKS)), &mut events).unwrap();
    decoder.finish(&mut events).unwrap();
    let chunks: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Chunk(c) => Some(c),
            _ => None,
        })
        .collect();
    let encode = |chunks: Vec<_>| {
        let mut enc = AnthropicStreamEncoder::new(inb.clone(), "req-bench");
        let mut out = Vec::with_capacity(64 * 1024);
        for c in chunks {
            enc.encode(c, &mut out);
        }
        enc.finish(&mut out);
        out
    };
    let sse = String::from_utf8(encode(chunks.clone())).unwrap();
    assert_eq!(sse.matches("event: content_block_delta").count(), STREAM_CHUNKS);
    assert!(sse.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    g.throughput(Throughput::Elements(STREAM_CHUNKS as u64));
    g.bench_function("stream_encode", |b| b.iter_batched(|| chunks.clone(), encode, criterion::BatchSize::SmallInput));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = decode_request, build_chat, parse_chat, stream_translate, responses_api, inbound_anthropic, bedrock
}
criterion_main!(benches);
