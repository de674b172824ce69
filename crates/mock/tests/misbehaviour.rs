//! The misbehaving-upstream knobs, seen on the wire: keys quoted in error bodies and stream error events
//! (in each flavour's own error shape), an endless stream line, a huge body, a body that stalls, and a
//! body trickled byte by byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, KeyEcho};

const KEY: &str = "sk-proj-Mock9Echo8Key7Value6Here5abcd";

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
}

#[tokio::test]
async fn errors_quote_the_key_as_asked_in_each_flavours_shape() {
    let bearer = format!("Bearer {KEY}");
    let auth = ("authorization", bearer.as_str());
    let masked = format!("{}{}abcd", &KEY[..8], "*".repeat(KEY.len() - 12));

    // OpenAI's own 401 always quotes the masked key, as OpenAI does.
    let m = start(Flavor::OpenAi).await;
    m.set_behavior(Behavior { key_status: [(KEY.to_string(), 401)].into(), ..Behavior::default() });
    let r = post(m.addr(), "/v1/chat/completions", &[auth], &chat("gpt-4o-mini", false)).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["error"]["message"],
        format!("Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys.")
    );
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    // Verbatim with `Bearer`, on request.
    let r = post(m.addr(), "/v1/chat/completions", &[auth, ("x-mock-echo-key", "bearer")], &chat("gpt-4o-mini", false)).await;
    assert_eq!(
        r.json()["error"]["message"].as_str().unwrap(),
        format!("Incorrect API key provided: Bearer {KEY}. You can find your API key at https://platform.openai.com/account/api-keys.")
    );
    // Other statuses quote it at the end of their usual message.
    m.set_behavior(Behavior::default());
    let r = post(m.addr(), "/v1/chat/completions", &[auth], &chat("gpt-4o-mini+code=500+echo_key=masked", false)).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["error"]["message"],
        format!("The server had an error while processing your request. Sorry about that! (request key: {masked})")
    );

    let a = start(Flavor::Anthropic).await;
    a.set_behavior(Behavior { echo_key: Some(KeyEcho::Bearer), ..Behavior::default() });
    let h = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let body = json!({"model": "claude-sonnet-4-6+code=529", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(a.addr(), "/v1/messages", &h, &body).await;
    assert_eq!((r.status, r.json()["type"].as_str()), (529, Some("error")));
    assert_eq!(r.json()["error"]["message"], format!("Overloaded (request key: Bearer {KEY})"));

    let o = start(Flavor::Ollama).await;
    let body = json!({"model": "llama3.2+code=503+echo_key=bearer", "messages": [{"role": "user", "content": "hi"}]});
    let r = post(o.addr(), "/api/chat", &[auth], &body).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().ends_with(&format!("(request key: Bearer {KEY})")), "{}", r.text());
}

#[tokio::test]
async fn a_late_stream_error_event_comes_after_content_and_quotes_the_key() {
    let m = start(Flavor::OpenAi).await;
    let bearer = format!("Bearer {KEY}");
    let r = post(
        m.addr(),
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        &chat("gpt-4o-mini+kind=late_stream_error+echo_key=bearer", true),
    )
    .await;
    let frames = r.sse_json();
    assert_eq!(frames[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(frames[1]["choices"][0]["delta"]["content"], "echo: ");
    let last = frames.last().unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains(&bearer), "{last}");
    assert!(!r.text().contains("[DONE]"));
}

#[tokio::test]
async fn an_endless_line_streams_the_bytes_asked_for_without_a_line_end() {
    let m = start(Flavor::OpenAi).await;
    let r = post(m.addr(), "/v1/chat/completions", &[("authorization", "Bearer k")], &chat("gpt-4o-mini+endless_line=200000", true)).await;
    assert!(r.complete);
    let text = r.text();
    let (head, tail) = text.split_once("\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"").unwrap();
    // The role frame and the first content frame came whole before it.
    assert!(head.contains("\"role\":\"assistant\"") && head.contains("echo: "), "{head}");
    let tail = tail.rsplit_once("\n\n").map_or(tail, |(_, t)| t);
    assert_eq!(tail.len(), 200_000);
    assert!(tail.bytes().all(|b| b == b'a'));

    let o = start(Flavor::Ollama).await;
    let r =
        post(o.addr(), "/api/chat", &[], &json!({"model": "llama3.2+endless_line=70000", "messages": [{"role": "user", "content": "hi"}]}))
            .await;
    let text = r.text();
    let last_line = text.rsplit('\n').next().unwrap();
    assert_eq!(last_line.len(), "{\"message\":{\"role\":\"assistant\",\"content\":\"".len() + 70_000);
}

#[tokio::test]
async fn a_huge_body_is_the_same_json_padded_to_size() {
    let m = start(Flavor::OpenAi).await;
    let r = post(m.addr(), "/v1/chat/completions", &[("authorization", "Bearer k")], &chat("gpt-4o-mini+huge_body=300000", false)).await;
    assert_eq!((r.status, r.body.len(), r.header("content-length")), (200, 300_000, None));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: hello there");
}

#[tokio::test]
async fn a_stalled_body_stops_at_its_byte_count_until_the_client_leaves() {
    let m = start(Flavor::OpenAi).await;
    let body = chat("gpt-4o-mini+huge_body=100000+stall_after=5000", false).to_string();
    let mut s = open(m.addr(), "POST", "/v1/chat/completions", &[("authorization", "Bearer k")], Some(&body)).await;
    let got = read_until(&mut s, "\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // Nothing past the stall point ever arrives: the read below waits on a body that has stopped.
    let mut buf = vec![0u8; 200_000];
    let mut n = got.len() - got.find("\r\n\r\n").unwrap() - 4;
    use tokio::io::AsyncReadExt;
    while let Ok(Ok(k)) = tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut buf)).await {
        if k == 0 {
            break;
        }
        n += k;
    }
    assert!(n < 6000, "{n} bytes arrived (chunk framing included) past a 5000-byte stall");
    drop(s);
    assert!(m.wait_for(|st| st.cancelled == 1, std::time::Duration::from_secs(5)).await, "{:?}", m.stats());
}

#[tokio::test]
async fn a_trickled_body_arrives_whole_one_byte_at_a_time() {
    let m = start(Flavor::OpenAi).await;
    m.set_behavior(Behavior { trickle_ms: 1, ..Behavior::default() });
    let r = post(m.addr(), "/v1/chat/completions", &[("authorization", "Bearer k")], &chat("gpt-4o-mini", false)).await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: hello there");
    let raw_chunks = r.header("transfer-encoding");
    assert_eq!(raw_chunks, Some("chunked"), "a trickled body has no content-length");
}
