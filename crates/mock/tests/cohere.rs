//! Cohere v2 flavour over real HTTP: chat answers and named-event streams, tool plans and ids, the strict
//! request checks, embeddings, the model list, and `{"message":…}` errors.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::Flavor;

const AUTH: (&str, &str) = ("authorization", "Bearer co-key");

fn chat(content: &str) -> Value {
    json!({"model": "command-a-03-2025", "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn answers_with_billed_and_template_usage() {
    let m = start(Flavor::Cohere).await;
    let mut b = chat("hello world [[cached:1]]");
    b["messages"].as_array_mut().unwrap().insert(0, json!({"role": "system", "content": "be brief"}));
    let r = post(m.addr(), "/v2/chat", &[AUTH], &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-debug-trace-id").is_some_and(|t| t.len() == 32));
    let v = r.json();
    assert_eq!(v["message"], json!({"role": "assistant", "content": [{"type": "text", "text": "echo: hello world [[cached:1]]"}]}));
    assert_eq!(v["finish_reason"], "COMPLETE");
    assert_eq!(
        v["usage"],
        json!({"billed_units": {"input_tokens": 5, "output_tokens": 4}, "tokens": {"input_tokens": 12, "output_tokens": 4}, "cached_tokens": 1})
    );
    assert_eq!(v["id"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn streams_named_events_in_cohere_order() {
    let m = start(Flavor::Cohere).await;
    let mut b = chat("hello stream");
    b["stream"] = json!(true);
    let r = post(m.addr(), "/v2/chat", &[AUTH], &b).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let events = r.sse();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(names, ["message-start", "content-start", "content-delta", "content-delta", "content-delta", "content-end", "message-end"]);
    for (name, data) in &events {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"].as_str(), name.as_deref(), "the event name repeats the type");
    }
    let json = r.sse_json();
    let text: String = json.iter().filter_map(|v| v["delta"]["message"]["content"]["text"].as_str()).collect();
    assert_eq!(text, "echo: hello stream");
    assert_eq!(json.last().unwrap()["delta"]["finish_reason"], "COMPLETE");
    assert_eq!(json.last().unwrap()["delta"]["usage"]["billed_units"]["output_tokens"], 3);
}

#[tokio::test]
async fn tool_calls_carry_a_plan_and_round_trip() {
    let m = start(Flavor::Cohere).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let mut b = chat("[[tool:get_weather {\"city\":\"Paris\"}]]");
    b["tools"] = tools.clone();
    let r = post(m.addr(), "/v2/chat", &[AUTH], &b).await;
    let v = r.json();
    assert_eq!(v["finish_reason"], "TOOL_CALL", "{v}");
    assert_eq!(v["message"]["tool_plan"], "I will call get_weather.");
    let call = &v["message"]["tool_calls"][0];
    let id = call["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("get_weather_") && id.len() == "get_weather_".len() + 12, "{id}");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    b["stream"] = json!(true);
    let s = post(m.addr(), "/v2/chat", &[AUTH], &b).await.sse_json();
    assert_eq!(s[1]["type"], "tool-plan-delta");
    let start = s.iter().find(|e| e["type"] == "tool-call-start").unwrap();
    assert_eq!(start["delta"]["message"]["tool_calls"]["id"], id.as_str(), "a stream gets the same ids");
    let args: String = s
        .iter()
        .filter(|e| e["type"] == "tool-call-delta")
        .filter_map(|e| e["delta"]["message"]["tool_calls"]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");

    let round = json!({"model": "command-a-03-2025", "tools": tools, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_plan": "I will call get_weather.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": [{"type": "text", "text": "18C"}]}]});
    let r = post(m.addr(), "/v2/chat", &[AUTH], &round).await;
    assert_eq!(r.json()["message"]["content"][0]["text"], "tool results: 18C", "{}", r.text());
}

#[tokio::test]
async fn strict_like_the_real_api() {
    let m = start(Flavor::Cohere).await;
    let a = m.addr();
    let r = post(a, "/v2/chat", &[], &chat("x")).await;
    assert_eq!((r.status, r.json()["message"].as_str()), (401, Some("no api key supplied")));
    let mut b = chat("x");
    b["top_p"] = json!(0.5);
    let r = post(a, "/v2/chat", &[AUTH], &b).await;
    assert_eq!((r.status, r.json()["message"].as_str()), (400, Some("invalid request: json: unknown field \"top_p\"")));
    let mut b = chat("x");
    b["model"] = json!("command-z");
    let r = post(a, "/v2/chat", &[AUTH], &b).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["message"].as_str().unwrap().starts_with("model 'command-z' not found"));
    let r = post(a, "/v2/chat", &[AUTH], &chat("[[context]]")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("too many tokens: total number of tokens in the prompt cannot exceed 256000"));
    let r = post(a, "/v2/chat", &[AUTH], &chat("[[quota]]")).await;
    assert_eq!(r.status, 402);
    let r = post(a, "/v2/chat", &[AUTH], &chat("[[error:429]]")).await;
    assert_eq!(r.status, 429);
    assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    let r = post(a, "/v1/chat/completions", &[AUTH], &chat("x")).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn in_stream_errors_arrive_in_message_end() {
    let m = start(Flavor::Cohere).await;
    let mut b = chat("one two three");
    b["model"] = json!("command-a-03-2025+kind=late_stream_error");
    b["stream"] = json!(true);
    let s = post(m.addr(), "/v2/chat", &[AUTH], &b).await.sse_json();
    let last = s.last().unwrap();
    assert_eq!((last["type"].as_str(), last["delta"]["finish_reason"].as_str()), (Some("message-end"), Some("ERROR")));
    assert!(last["delta"]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(s.iter().any(|e| e["type"] == "content-delta"), "content came before the error");
}

#[tokio::test]
async fn embeddings_need_input_type_and_types() {
    let m = start(Flavor::Cohere).await;
    let a = m.addr();
    let b = json!({"model": "embed-v4.0", "texts": ["alpha", "beta gamma"], "input_type": "search_document", "embedding_types": ["float"]});
    let r = post(a, "/v2/embed", &[AUTH], &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["embeddings"]["float"].as_array().unwrap().len(), 2);
    assert_eq!(v["embeddings"]["float"][0].as_array().unwrap().len(), 8);
    assert_eq!((v["meta"]["billed_units"]["input_tokens"].as_u64(), v["response_type"].as_str()), (Some(3), Some("embeddings_by_type")));
    let mut b64 = b.clone();
    b64["embedding_types"] = json!(["base64"]);
    b64["output_dimension"] = json!(256);
    let v = post(a, "/v2/embed", &[AUTH], &b64).await.json();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, v["embeddings"]["base64"][0].as_str().unwrap()).unwrap();
    assert_eq!(bytes.len(), 256 * 4);
    for missing in ["input_type", "embedding_types"] {
        let mut x = b.clone();
        x.as_object_mut().unwrap().remove(missing);
        let r = post(a, "/v2/embed", &[AUTH], &x).await;
        assert_eq!(r.status, 400, "{missing}");
        assert!(r.json()["message"].as_str().unwrap().contains(missing));
    }
}

#[tokio::test]
async fn model_list_and_lookup() {
    let m = start(Flavor::Cohere).await;
    let a = m.addr();
    let v = get(a, "/v1/models?page_size=2", &[AUTH]).await.json();
    assert_eq!(v["models"].as_array().unwrap().len(), 2);
    let next = v["next_page_token"].as_str().unwrap().to_string();
    let v = get(a, &format!("/v1/models?page_size=2&page_token={next}"), &[AUTH]).await.json();
    assert_eq!(v["models"][0]["name"], "embed-v4.0");
    assert!(v.get("next_page_token").is_none());
    let v = get(a, "/v1/models?endpoint=chat", &[AUTH]).await.json();
    assert!(v["models"].as_array().unwrap().iter().all(|m| m["name"].as_str().unwrap().starts_with("command")));
    let r = get(a, "/v1/models/embed-v4.0", &[AUTH]).await;
    assert_eq!((r.status, r.json()["endpoints"].clone()), (200, json!(["embed"])));
    assert_eq!(get(a, "/v1/models/nope", &[AUTH]).await.status, 404);
}
