//! Ollama native flavour over real HTTP: NDJSON streams by default, strict content/images/tool arguments,
//! embeddings, tags and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::Flavor;

fn chat(content: &str) -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn stream_is_the_default() {
    let m = start(Flavor::Ollama).await;
    let r = post(m.addr(), "/api/chat", &[], &chat("hello world")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines = r.ndjson();
    assert_eq!(lines.len(), 4);
    let text: String = lines[..3]
        .iter()
        .map(|l| {
            assert_eq!(l["done"], false);
            assert_eq!(l["model"], "llama3.2");
            assert!(l["created_at"].as_str().unwrap().ends_with('Z'));
            l["message"]["content"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "echo: hello world");
    let last = &lines[3];
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["prompt_eval_count"], 2);
    assert_eq!(last["eval_count"], 3);
    assert!(last["total_duration"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn non_stream_images_and_options() {
    let m = start(Flavor::Ollama).await;
    let a = m.addr();
    let b = json!({"model": "llava:latest", "stream": false, "messages": [
        {"role": "system", "content": "sys prompt"},
        {"role": "user", "content": "what is this", "images": [PNG_B64]}]});
    let r = post(a, "/api/chat", &[], &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["message"]["content"], format!("echo: what is this{}", png_note()).as_str());
    assert_eq!(v["done"], true);
    assert_eq!(v["prompt_eval_count"], 5);

    let b = json!({"model": "llava", "stream": false, "messages": [
        {"role": "user", "content": "x", "images": [format!("data:image/png;base64,{PNG_B64}")]}]});
    let r = post(a, "/api/chat", &[], &b).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "illegal base64 data at input byte 4");

    let b = json!({"model": "llama3.2", "stream": false, "options": {"num_predict": 2, "stop": ["zzz"]},
        "messages": [{"role": "user", "content": "one two three"}]});
    let v = post(a, "/api/chat", &[], &b).await.json();
    assert_eq!(v["message"]["content"], "echo: one");
    assert_eq!(v["done_reason"], "length");

    let b = json!({"model": "llama3.2", "stream": false, "format": "json",
        "messages": [{"role": "user", "content": "hi"}]});
    let v = post(a, "/api/chat", &[], &b).await.json();
    assert_eq!(v["message"]["content"], r#"{"echo":"hi"}"#);
}

#[tokio::test]
async fn strict_shapes_and_errors() {
    let m = start(Flavor::Ollama).await;
    let a = m.addr();
    let b = json!({"model": "llama3.2", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]});
    let r = post(a, "/api/chat", &[], &b).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("of type string"));

    let b = json!({"model": "llama3.2", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\":1}"}}]},
        {"role": "tool", "content": "r", "tool_name": "f"}]});
    assert_eq!(post(a, "/api/chat", &[], &b).await.status, 400);

    // Real Ollama's words for a model it has not pulled differ by route (server/routes.go).
    let r = post(a, "/api/chat", &[], &json!({"model": "mistral", "messages": []})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "model 'mistral' not found"}));
    let r = post(a, "/api/embed", &[], &json!({"model": "mistral", "input": "x"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "model \"mistral\" not found, try pulling it first"}));

    let r = post(a, "/api/chat", &[], &chat("[[error:500]]")).await;
    assert_eq!(r.status, 500);
    assert!(r.json()["error"].is_string());
    let r = post(a, "/api/chat", &[], &chat("[[context]]")).await;
    assert_eq!(r.status, 400);
    assert_eq!(post(a, "/api/nothing", &[], &chat("x")).await.status, 404);
}

#[tokio::test]
async fn tool_calls_and_results() {
    let m = start(Flavor::Ollama).await;
    let a = m.addr();
    let r = post(a, "/api/chat", &[], &chat(r#"[[tool:get_weather {"city":"Toronto"}]] [[tool:now]]"#)).await;
    let lines = r.ndjson();
    assert_eq!(lines.len(), 2);
    let calls = lines[0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(lines[0]["done"], false);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["arguments"], json!({"city": "Toronto"}));
    assert_eq!(lines[1]["done_reason"], "stop");
    assert_eq!(lines[1]["eval_count"], 10);

    let b = json!({"model": "llama3.2", "stream": false, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Toronto"}}}]},
        {"role": "tool", "content": "11 degrees", "tool_name": "get_weather"}]});
    let v = post(a, "/api/chat", &[], &b).await.json();
    assert_eq!(v["message"]["content"], "tool results: 11 degrees");
}

#[tokio::test]
async fn faults_and_counters() {
    let m = start(Flavor::Ollama).await;
    let a = m.addr();
    let mut b = chat("a b c");
    b["model"] = json!("llama3.2+kind=stream_error");
    let r = post(a, "/api/chat", &[], &b).await;
    assert_eq!(r.status, 200);
    let lines = r.ndjson();
    assert_eq!(lines.len(), 1);
    assert!(lines[0]["error"].is_string());
    b["model"] = json!("llama3.2+fault=1+code=503");
    assert_eq!(post(a, "/api/chat", &[], &b).await.status, 503);
    b["model"] = json!("llama3.2+kind=malformed");
    let r = post(a, "/api/chat", &[], &b).await;
    let text = r.text();
    let mut lines = text.lines();
    assert!(serde_json::from_str::<Value>(lines.next().unwrap()).is_ok());
    assert!(serde_json::from_str::<Value>(lines.next().unwrap()).is_err());
    let s = m.stats();
    assert_eq!(s.requests, 3);
    assert_eq!(s.faults, 3);
    assert_eq!(s.by_model["llama3.2"], 3);
    assert!(s.by_key.is_empty());
}

#[tokio::test]
async fn no_rate_limit_headers() {
    let m = start(Flavor::Ollama).await;
    let a = m.addr();
    let mut b = chat("hi");
    b["stream"] = json!(false);
    let ok = post(a, "/api/chat", &[], &b).await;
    assert_eq!(ok.status, 200);
    b["model"] = json!("llama3.2+code=429+retry_after=2");
    let limited = post(a, "/api/chat", &[], &b).await;
    assert_eq!((limited.status, limited.header("retry-after")), (429, Some("2")));
    for r in [ok, limited] {
        assert!(r.header_names("x-ratelimit-").is_empty() && r.header_names("anthropic-ratelimit-").is_empty(), "{:?}", r.headers);
    }
}

#[tokio::test]
async fn embed_tags_version() {
    let m = start(Flavor::Ollama).await;
    let a = m.addr();
    let v = post(a, "/api/embed", &[], &json!({"model": "all-minilm", "input": ["a b", "c"]})).await.json();
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"][0].as_array().unwrap().len(), 8);
    assert_eq!(v["prompt_eval_count"], 3);
    let v = get(a, "/api/tags", &[]).await.json();
    let names: Vec<&str> = v["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["llava:latest", "llama3.2:latest", "all-minilm:latest"]);
    assert!(get(a, "/api/version", &[]).await.json()["version"].is_string());
    assert_eq!(get(a, "/", &[]).await.text(), "Ollama is running");
}

#[tokio::test]
async fn context_window_and_exhausted_usage() {
    use switchyard_mock::Behavior;
    let m = start(Flavor::Ollama).await;
    let a = m.addr();
    m.set_behavior(Behavior {
        context_window: Some(3),
        retry_after_secs: Some(5),
        quota_exhausted_keys: ["ollama-broke-01".to_string()].into(),
        ..Behavior::default()
    });
    let r = post(a, "/api/chat", &[], &chat("one two three four")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "the input length (4 tokens) exceeds the context length (3 tokens)"}));
    let mut b = chat("one two three four");
    b["model"] = json!("llama3.2+context=8192");
    assert_eq!(post(a, "/api/chat", &[], &b).await.status, 200);

    let usage = json!({"error": "you (switchyard-mock) have reached your weekly usage limit, upgrade for higher limits: https://ollama.com/upgrade"});
    for r in [
        post(a, "/api/chat", &[("authorization", "Bearer ollama-broke-01")], &chat("hi")).await,
        post(a, "/api/chat", &[], &chat("[[quota]]")).await,
    ] {
        assert_eq!(r.status, 429);
        assert_eq!(r.json(), usage);
        assert_eq!(r.header("retry-after"), None);
    }
}
