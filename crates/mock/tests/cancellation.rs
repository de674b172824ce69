//! The `cancelled` counter over real HTTP, every flavour: a client that walks away while the mock is still
//! working (latency, hang, slow first byte) or mid-stream is counted; answers delivered in full, `reset`
//! faults and hangs cut short by shutdown are not. Also `MockServer::wait_for`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, FaultKind, Flavor, MockServer};

const FLAVORS: [Flavor; 7] =
    [Flavor::OpenAi, Flavor::Azure, Flavor::Anthropic, Flavor::Ollama, Flavor::Cohere, Flavor::Gemini, Flavor::Bedrock];
/// Enough words for a stream of a dozen chunks.
const LONG: &str = "one two three four five six seven eight nine ten eleven twelve";

/// A chat request in the flavour's wire format: (path, headers, body).
fn chat(flavor: Flavor, text: &str, stream: bool) -> (&'static str, Vec<(&'static str, &'static str)>, Value) {
    let messages = json!([{"role": "user", "content": text}]);
    match flavor {
        Flavor::OpenAi => (
            "/v1/chat/completions",
            vec![("authorization", "Bearer sk-test-1234567890")],
            json!({"model": "gpt-4o-mini", "messages": messages, "stream": stream}),
        ),
        Flavor::Azure => (
            "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
            vec![("api-key", "azure-key-0001")],
            json!({"messages": messages, "stream": stream}),
        ),
        Flavor::Anthropic => (
            "/v1/messages",
            vec![("x-api-key", "sk-ant-test-0001"), ("anthropic-version", "2023-06-01")],
            json!({"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": messages, "stream": stream}),
        ),
        Flavor::Ollama => ("/api/chat", vec![], json!({"model": "llama3.2", "messages": messages, "stream": stream})),
        Flavor::Cohere => (
            "/v2/chat",
            vec![("authorization", "Bearer co-test-0001")],
            json!({"model": "command-a-03-2025", "messages": messages, "stream": stream}),
        ),
        Flavor::Gemini => (
            if stream {
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            } else {
                "/v1beta/models/gemini-2.5-flash:generateContent"
            },
            vec![("x-goog-api-key", "AIza-test-0001")],
            json!({"contents": [{"role": "user", "parts": [{"text": text}]}]}),
        ),
        Flavor::Bedrock => (
            if stream {
                "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"
            } else {
                "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
            },
            vec![("authorization", "Bearer ABSKbedrock-api-key-0001")],
            json!({"messages": [{"role": "user", "content": [{"text": text}]}]}),
        ),
    }
}

async fn post_chat(m: &MockServer, flavor: Flavor, text: &str, stream: bool, extra: &[(&str, &str)]) -> Resp {
    let (path, mut headers, body) = chat(flavor, text, stream);
    headers.extend_from_slice(extra);
    post(m.addr(), path, &headers, &body).await
}

/// Sends a chat request and returns the open connection without reading the answer.
async fn open_chat(m: &MockServer, flavor: Flavor, text: &str, stream: bool) -> tokio::net::TcpStream {
    let (path, headers, body) = chat(flavor, text, stream);
    open(m.addr(), "POST", path, &headers, Some(&body.to_string())).await
}

#[tokio::test]
async fn client_leaving_during_latency_is_counted() {
    for flavor in FLAVORS {
        let m = start(flavor).await;
        m.set_behavior(Behavior { latency_ms: 2_000, ..Behavior::default() });
        let conn = open_chat(&m, flavor, "hello", false).await;
        assert!(m.wait_for(|s| s.requests == 1, Duration::from_secs(2)).await, "{flavor}: request never arrived");
        assert_eq!(m.stats().cancelled, 0, "{flavor}: still waiting, not cancelled yet");
        let left = Instant::now();
        drop(conn);
        // Seen well before the latency would have ended (an answer produced would not count).
        assert!(m.wait_for(|s| s.cancelled == 1, Duration::from_millis(1_500)).await, "{flavor}: {:?}", m.stats());
        assert!(left.elapsed() < Duration::from_millis(1_500));
        assert_eq!(m.stats().requests, 1);
    }
}

#[tokio::test]
async fn client_leaving_mid_stream_is_counted() {
    for flavor in FLAVORS {
        let m = start(flavor).await;
        m.set_behavior(Behavior { chunk_delay_ms: 300, ..Behavior::default() });
        let mut conn = open_chat(&m, flavor, LONG, true).await;
        let got = read_until(&mut conn, "echo: ").await;
        assert!(got.starts_with("HTTP/1.1 200"), "{flavor}: {got}");
        assert_eq!(m.stats().cancelled, 0, "{flavor}: the stream is still going");
        drop(conn);
        // A dozen chunks 300 ms apart are still to come: the body was dropped, not finished.
        assert!(m.wait_for(|s| s.cancelled == 1, Duration::from_secs(2)).await, "{flavor}: {:?}", m.stats());
        assert_eq!(m.stats().requests, 1);
    }
}

#[tokio::test]
async fn answers_delivered_in_full_and_resets_are_not_counted() {
    for flavor in FLAVORS {
        let m = start(flavor).await;
        m.set_behavior(Behavior { latency_ms: 20, ttft_ms: 10, chunk_delay_ms: 5, ..Behavior::default() });
        let r = post_chat(&m, flavor, LONG, false, &[]).await;
        assert_eq!((r.status, r.complete), (200, true), "{flavor}: {}", r.text());
        let r = post_chat(&m, flavor, LONG, true, &[]).await;
        assert_eq!((r.status, r.complete), (200, true), "{flavor}: {}", r.text());
        // An error answer is an answer too.
        let r = post_chat(&m, flavor, "[[error:500]]", false, &[]).await;
        assert_eq!(r.status, 500, "{flavor}");
        // The mock aborts a reset on purpose, streamed or not.
        for stream in [true, false] {
            let r = post_chat(&m, flavor, LONG, stream, &[("x-mock-fault-kind", "reset")]).await;
            assert_eq!((r.status, r.complete), (200, false), "{flavor} stream={stream}");
        }
        assert!(!m.wait_for(|s| s.cancelled > 0, Duration::from_millis(200)).await, "{flavor}: {:?}", m.stats());
        let s = m.stats();
        assert_eq!((s.requests, s.faults, s.cancelled), (5, 2, 0), "{flavor}");
    }
}

#[tokio::test]
async fn client_leaving_a_hang_or_a_slow_first_byte_is_counted() {
    let m = start(Flavor::OpenAi).await;
    for (n, kind) in [FaultKind::Hang, FaultKind::SlowFirstByte].into_iter().enumerate() {
        m.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(kind), ..Behavior::default() });
        let conn = open_chat(&m, Flavor::OpenAi, "x", false).await;
        let n = n as u64;
        assert!(m.wait_for(|s| s.faults == n + 1, Duration::from_secs(2)).await, "{kind:?}");
        drop(conn);
        assert!(m.wait_for(|s| s.cancelled == n + 1, Duration::from_secs(2)).await, "{kind:?}: {:?}", m.stats());
    }
}

#[tokio::test]
async fn a_hang_cut_short_by_shutdown_is_answered_not_cancelled() {
    let m = start(Flavor::OpenAi).await;
    let handle = m.handle();
    m.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(FaultKind::Hang), ..Behavior::default() });
    let (path, headers, body) = chat(Flavor::OpenAi, "x", false);
    let a = m.addr();
    let pending = tokio::spawn(async move { post(a, path, &headers, &body).await });
    assert!(m.wait_for(|s| s.faults == 1, Duration::from_secs(2)).await);
    m.shutdown().await;
    assert_eq!(pending.await.unwrap().status, 503);
    assert_eq!(handle.stats().cancelled, 0);
}

#[tokio::test]
async fn wait_for_polls_until_true_or_timeout() {
    let m = start(Flavor::OpenAi).await;
    // Already true: returns at once.
    let t = Instant::now();
    assert!(m.wait_for(|s| s.requests == 0, Duration::from_secs(5)).await);
    assert!(t.elapsed() < Duration::from_millis(100));
    // Never true: false after the timeout.
    let t = Instant::now();
    assert!(!m.wait_for(|s| s.requests == 1, Duration::from_millis(120)).await);
    assert!(t.elapsed() >= Duration::from_millis(120));
    // Becomes true while waiting; the admin stats route reports the counter too.
    let a = m.addr();
    let (path, headers, body) = chat(Flavor::OpenAi, "x", false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        post(a, path, &headers, &body).await
    });
    assert!(m.handle().wait_for(|s| s.requests == 1, Duration::from_secs(5)).await);
    assert_eq!(get(a, "/mock/stats", &[]).await.json()["cancelled"], 0);
    m.reset();
    assert_eq!(m.stats().cancelled, 0);
}
