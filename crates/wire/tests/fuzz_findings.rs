//! Regression tests for what the fuzz targets in `fuzz/` found, one test per finding, each named after
//! the finding and fed the smallest input that showed it. They run with the ordinary tests, so a finding
//! stays fixed without a fuzzer.

use switchyard_wire::sse::{SseEvent, SseParser};
use switchyard_wire::{ProviderKind, ResponseCtx, StreamDecoder, StreamEvent};

const CTX: ResponseCtx<'static> = ResponseCtx { id: "chatcmpl-gw", created: 1_700_000_000, model: "m" };

fn decode(kind: ProviderKind, pieces: &[&[u8]]) -> (Vec<StreamEvent>, Result<(), switchyard_wire::WireError>) {
    let mut d = StreamDecoder::new(kind, CTX);
    let mut out = Vec::new();
    for p in pieces {
        if let Err(e) = d.feed(p, &mut out) {
            return (out, Err(e));
        }
    }
    let r = d.finish(&mut out);
    (out, r)
}

/// stream_openai_structured / stream_anthropic_structured: an empty piece between the `\r` and the `\n`
/// of one line end (HTTP/2 upstreams send empty DATA frames) made the `\n` a second, blank line, which
/// ended the event in the middle of a multi-line `data:` field.
#[test]
fn an_empty_piece_inside_a_crlf_does_not_end_the_event() {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for piece in [&b"data: a\r"[..], b"", b"\ndata: b\r\n\r\n"] {
        p.feed(piece, &mut out).unwrap();
    }
    p.finish(&mut out).unwrap();
    assert_eq!(out, vec![SseEvent { event: None, data: "a\nb".into() }]);

    let stream = "data: {\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\r\n\r\n";
    let cut = stream.find("\r\n").map(|i| i + 1).unwrap_or_default();
    let (head, tail) = stream.as_bytes().split_at(cut);
    let (events, result) = decode(ProviderKind::OpenAi, &[head, b"", tail]);
    assert_eq!(result, Ok(()));
    assert_eq!(events, decode(ProviderKind::OpenAi, &[stream.as_bytes()]).0);
    assert_eq!(events.last(), Some(&StreamEvent::Done));
}

/// request_chat: a request with both `seed` and Mistral's own `random_seed` produced a Mistral body with
/// `random_seed` twice (the mapped `seed`, and the caller's field passed through), which parsers read
/// differently. The caller's `random_seed` is the more specific and wins.
#[test]
fn a_mistral_body_never_carries_random_seed_twice() {
    use switchyard_wire::codec::build_chat;
    use switchyard_wire::types::ChatRequest;
    use switchyard_wire::{Endpoint, ProviderOptions};

    let opts = ProviderOptions::default();
    let ep =
        Endpoint { kind: ProviderKind::Mistral, base_url: "https://api.mistral.ai/v1", auth: switchyard_wire::Auth::None, options: &opts };
    let body_of = |json: &str| {
        let req: ChatRequest = serde_json::from_str(json).unwrap();
        String::from_utf8(build_chat(&ep, &req, "mistral-small").unwrap().body).unwrap()
    };
    let both = body_of(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":42,"random_seed":64}"#);
    assert_eq!(both.matches("\"random_seed\"").count(), 1, "{both}");
    assert!(both.contains("\"random_seed\":64") && !both.contains("\"seed\""), "{both}");
    let seed_only = body_of(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":42}"#);
    assert!(seed_only.contains("\"random_seed\":42") && !seed_only.contains("\"seed\""), "{seed_only}");
}

/// stream_bedrock: fed in one piece, events decoded ahead of a frame with a bad CRC were dropped with the
/// error, while fed in smaller pieces they went out first; now they go out first either way.
#[test]
fn bedrock_events_before_a_broken_frame_are_not_lost() {
    use switchyard_wire::eventstream::Message;
    let mut bytes = Message::event("messageStart", br#"{"role":"assistant"}"#.to_vec()).to_bytes().unwrap();
    let mut broken = Message::event("contentBlockDelta", br#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#.to_vec()).to_bytes().unwrap();
    let last = broken.len() - 1;
    broken[last] ^= 0xff;
    bytes.extend_from_slice(&broken);
    let whole = decode(ProviderKind::Bedrock, &[&bytes]);
    let split = decode(ProviderKind::Bedrock, &bytes.chunks(7).collect::<Vec<_>>());
    assert_eq!(whole, split);
    assert!(matches!(whole.0.as_slice(), [StreamEvent::Chunk(_)]), "{:?}", whole.0);
    assert!(whole.1.is_err());
}
