//! OpenAI flavour over real HTTP: replies, streams, usage, validation, faults, counters and admin routes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, FaultKind, Flavor, MockConfig};

const AUTH: (&str, &str) = ("authorization", "Bearer sk-test-1234567890");

fn chat(content: Value) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn echo_with_image_and_usage() {
    let m = start(Flavor::OpenAi).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is"},
            {"type": "text", "text": "this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG_B64}")}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}]}]});
    let r = post(m.addr(), "/v1/chat/completions", &[AUTH], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    assert!(r.header("openai-processing-ms").is_some());
    assert!(r.header("x-ratelimit-remaining-requests").is_some());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["system_fingerprint"].is_string());
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let expected = format!("echo: what is this?{} [image-url https://example.com/cat.png]", png_note());
    assert_eq!(v["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // prompt: "be brief" (2) + "what is" (2) + "this?" (1)
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], expected.split_whitespace().count());
    assert_eq!(v["usage"]["total_tokens"], 5 + expected.split_whitespace().count());
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn any_path_prefix_works() {
    let m = start(Flavor::OpenAi).await;
    let r = post(m.addr(), "/openai/v1/chat/completions", &[AUTH], &chat(json!("hi"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "echo: hi");
}

#[tokio::test]
async fn parallel_tool_directives() {
    let m = start(Flavor::OpenAi).await;
    let body = chat(json!(r#"go [[tool:get_weather {"city":"Paris"}]] [[tool:get_time {"tz":"CET"}]] [[tool:ping]]"#));
    let r = post(m.addr(), "/v1/chat/completions", &[AUTH], &body).await;
    let v = r.json();
    let msg = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert!(msg["content"].is_null());
    let calls = msg["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(calls[1]["function"]["arguments"], r#"{"tz":"CET"}"#);
    assert_eq!(calls[2]["function"]["arguments"], "{}");
    for c in calls {
        let id = c["id"].as_str().unwrap();
        assert!(id.starts_with("call_") && id.len() == 29, "{id}");
        assert!(id[5..].chars().all(|c| c.is_ascii_alphanumeric()));
    }
    assert_eq!(v["usage"]["completion_tokens"], 15);

    // Same body, same ids (deterministic); and the tool round trip answers with the results.
    let again = post(m.addr(), "/v1/chat/completions", &[AUTH], &body).await.json();
    assert_eq!(again["choices"][0]["message"]["tool_calls"], msg["tool_calls"]);
    let id0 = calls[0]["id"].as_str().unwrap();
    let id1 = calls[1]["id"].as_str().unwrap();
    let id2 = calls[2]["id"].as_str().unwrap();
    let follow = json!({"model": "gpt-4o-mini", "messages": [
        body["messages"][0].clone(),
        {"role": "assistant", "content": null, "tool_calls": msg["tool_calls"].clone()},
        {"role": "tool", "tool_call_id": id0, "content": "18C"},
        {"role": "tool", "tool_call_id": id1, "content": "noon"},
        {"role": "tool", "tool_call_id": id2, "content": "pong"}]});
    let r = post(m.addr(), "/v1/chat/completions", &[AUTH], &follow).await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "tool results: 18C | noon | pong");
}

#[tokio::test]
async fn validation_is_strict() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let p = "/v1/chat/completions";
    // tool message without a preceding call
    let r = post(
        a,
        p,
        &[AUTH],
        &json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    for k in ["message", "type", "param", "code"] {
        assert!(e["error"].get(k).is_some(), "missing {k}");
    }
    // arguments as an object
    let r = post(
        a,
        p,
        &[AUTH],
        &json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    // empty messages, unknown role, unknown part, n = 0
    for body in [
        json!({"model": "gpt-4o-mini", "messages": []}),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "robot", "content": "x"}]}),
        chat(json!([{"type": "video", "video": {}}])),
        json!({"model": "gpt-4o-mini", "n": 0, "messages": [{"role": "user", "content": "x"}]}),
    ] {
        assert_eq!(post(a, p, &[AUTH], &body).await.status, 400, "{body}");
    }
    // unknown model
    let r = post(a, p, &[AUTH], &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    // no key, or a key in a header OpenAI does not read
    let r = post(a, p, &[], &chat(json!("x"))).await;
    assert_eq!(r.status, 401);
    let r = post(a, p, &[("x-api-key", "sk-other-key-0000")], &chat(json!("x"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(m.stats().by_key["sk-other-key-0000"], 1, "still counted under its key");
    // unknown route
    assert_eq!(post(a, "/v1/nothing", &[AUTH], &chat(json!("x"))).await.status, 404);
}

#[tokio::test]
async fn stream_with_usage_event_order() {
    let m = start(Flavor::OpenAi).await;
    let mut body = chat(json!("hello big world"));
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(m.addr(), "/v1/chat/completions", &[AUTH], &body).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    assert!(r.complete);
    let frames = r.sse();
    assert!(frames.iter().all(|(e, _)| e.is_none()));
    assert_eq!(frames.last().unwrap().1, "[DONE]");
    let chunks = r.sse_json();
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "", "refusal": null}));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "echo: hello big world");
    let pieces: Vec<&str> = chunks[1..5].iter().map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap()).collect();
    assert_eq!(pieces, ["echo: ", "hello ", "big ", "world"]);
    let fin = &chunks[5];
    assert_eq!(fin["choices"][0]["delta"], json!({}));
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[6];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 3);
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    for c in &chunks[..6] {
        assert!(c["usage"].is_null() && c.get("usage").is_some());
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    assert_eq!(chunks.len(), 7);

    // without include_usage: no usage key at all
    body.as_object_mut().unwrap().remove("stream_options");
    let chunks = post(m.addr(), "/v1/chat/completions", &[AUTH], &body).await.sse_json();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(chunks.len(), 6);
}

#[tokio::test]
async fn stream_tool_calls_fragments() {
    let m = start(Flavor::OpenAi).await;
    let mut body = chat(json!(r#"[[tool:get_weather {"city":"Paris"}]] [[tool:b {"long":"abcdefghijklmnop"}]]"#));
    body["stream"] = json!(true);
    let chunks = post(m.addr(), "/v1/chat/completions", &[AUTH], &body).await.sse_json();
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert!(first["content"].is_null());
    assert_eq!(first["tool_calls"][0]["index"], 0);
    assert!(first["tool_calls"][0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(first["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(first["tool_calls"][0]["function"]["arguments"], "");
    let mut args: BTreeMap<u64, String> = BTreeMap::new();
    let mut heads = 0;
    for c in &chunks {
        if let Some(tcs) = c["choices"][0]["delta"]["tool_calls"].as_array() {
            for tc in tcs {
                let i = tc["index"].as_u64().unwrap();
                if tc.get("id").is_some() {
                    heads += 1;
                    assert!(tc["type"] == "function");
                } else {
                    assert!(tc.get("type").is_none());
                    let frag = tc["function"]["arguments"].as_str().unwrap();
                    assert!(frag.chars().count() <= 8);
                }
                args.entry(i).or_default().push_str(tc["function"]["arguments"].as_str().unwrap());
            }
        }
    }
    assert_eq!(heads, 2);
    assert_eq!(args[&0], r#"{"city":"Paris"}"#);
    assert_eq!(args[&1], r#"{"long":"abcdefghijklmnop"}"#);
    let fin = &chunks[chunks.len() - 1];
    assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn json_mode_limits_n_and_cache() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let p = "/v1/chat/completions";
    let mut b = chat(json!("say \"hi\""));
    b["response_format"] = json!({"type": "json_object"});
    let v = post(a, p, &[AUTH], &b).await.json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(content).unwrap(), json!({"echo": "say \"hi\""}));

    let mut b = chat(json!("one two three four five"));
    b["max_completion_tokens"] = json!(3);
    let v = post(a, p, &[AUTH], &b).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: one two");
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let mut b = chat(json!("one two three"));
    b["stop"] = json!(["two"]);
    b["n"] = json!(3);
    let v = post(a, p, &[AUTH], &b).await.json();
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["content"], "echo: one ");
        assert_eq!(c["finish_reason"], "stop");
    }

    let b = chat(json!("[[cached:2]] a b c"));
    let v = post(a, p, &[AUTH], &b).await.json();
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);

    let v = post(a, p, &[AUTH], &chat(json!("[[filter]]"))).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["message"]["content"], "");

    let r = post(a, p, &[AUTH], &chat(json!("[[context]]"))).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    let r = post(a, p, &[AUTH], &chat(json!("[[error:413]]"))).await;
    assert_eq!(r.status, 413);
    let r = post(a, p, &[AUTH], &chat(json!("[[error:404]]"))).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");

    let mut b = chat(json!("hi"));
    b["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {}}}]);
    b["tool_choice"] = json!("required");
    let v = post(a, p, &[AUTH], &b).await.json();
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "lookup");
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{}");
}

#[tokio::test]
async fn faults_via_suffix_headers_and_behavior() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let p = "/v1/chat/completions";
    m.set_behavior(Behavior { retry_after_secs: Some(7), ..Behavior::default() });
    let mut b = chat(json!("x"));
    b["model"] = json!("gpt-4o-mini+fault=1+code=429");
    let r = post(a, p, &[AUTH], &b).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("retry-after-ms"), Some("7000"));
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");

    b["model"] = json!("gpt-4o-mini+code=529");
    let r = post(a, p, &[AUTH], &b).await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["message"], "Overloaded");
    assert_eq!(r.json()["error"]["type"], "server_error");

    let r = post(a, p, &[AUTH, ("x-mock-fault-codes", "503")], &chat(json!("x"))).await;
    assert_eq!(r.status, 503);

    m.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    assert_eq!(post(a, p, &[AUTH], &chat(json!("x"))).await.status, 500);
    // a request-level rate of 0 wins over the behaviour
    assert_eq!(post(a, p, &[AUTH, ("x-mock-fault-rate", "0")], &chat(json!("x"))).await.status, 200);
    m.set_behavior(Behavior::default());
    let s = m.stats();
    assert_eq!(s.faults, 4);
    assert_eq!(s.by_model.get("gpt-4o-mini"), Some(&5));
    assert!(s.by_model.keys().all(|k| !k.contains('+')));
}

#[tokio::test]
async fn rate_limit_headers_on_answers_and_429s_only() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let p = "/v1/chat/completions";
    // An answer used one request of 10,000 a minute (full again in 6 ms) and the tokens it asked for.
    let mut b = chat(json!("hello"));
    b["max_completion_tokens"] = json!(1_000);
    let r = post(a, p, &[AUTH], &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("10000"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("9999"));
    assert_eq!(r.header("x-ratelimit-reset-requests"), Some("6ms"));
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("30000000"));
    let used = 30_000_000 - r.header_u64("x-ratelimit-remaining-tokens");
    assert!((1_000..1_100).contains(&used), "{used}");
    assert_eq!(r.header("x-ratelimit-reset-tokens"), Some("3ms"), "1,0xx tokens of 30M a minute");
    // Streams and embeddings carry them too.
    b["stream"] = json!(true);
    assert_eq!(post(a, p, &[AUTH], &b).await.header("x-ratelimit-remaining-requests"), Some("9999"));
    let e = post(a, "/v1/embeddings", &[AUTH], &json!({"model": "text-embedding-3-small", "input": "x"})).await;
    assert_eq!(e.header("x-ratelimit-reset-requests"), Some("6ms"));

    // A 429: the request limit is used up and resets when retry-after says.
    m.set_behavior(Behavior { retry_after_secs: Some(90), ..Behavior::default() });
    let r = post(a, p, &[AUTH], &chat(json!("[[error:429]]"))).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("90"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(r.header("x-ratelimit-reset-requests"), Some("1m30s"));
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("30000000"), "the refused request used no tokens");
    assert_eq!(r.header("x-ratelimit-reset-tokens"), Some("0s"));
    assert!(r.json()["error"]["message"].as_str().unwrap().ends_with("Please try again in 1m30s."));
    // Without the knob: no retry-after, and the reset names the mock's default wait.
    m.set_behavior(Behavior::default());
    let r = post(a, p, &[AUTH, ("x-mock-fault-codes", "429")], &chat(json!("x"))).await;
    assert_eq!((r.status, r.header("retry-after")), (429, None));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(r.header("x-ratelimit-reset-requests"), Some("1s"));

    // Other errors and non-inference routes carry none.
    for r in [
        post(a, p, &[AUTH, ("x-mock-fault-codes", "503")], &chat(json!("x"))).await,
        post(a, p, &[AUTH], &chat(json!("[[error:500]]"))).await,
        post(a, p, &[AUTH], &json!({"model": "gpt-4o-mini"})).await,
        post(a, p, &[], &chat(json!("x"))).await,
        get(a, "/v1/models", &[AUTH]).await,
    ] {
        assert!(r.header_names("x-ratelimit-").is_empty(), "{} {:?}", r.status, r.headers);
    }
}

#[tokio::test]
async fn reset_malformed_and_stream_error() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let p = "/v1/chat/completions";
    let mut b = chat(json!("one two three four five"));
    b["stream"] = json!(true);
    b["model"] = json!("gpt-4o-mini+kind=reset");
    let r = post(a, p, &[AUTH], &b).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "reset must not end the chunked body");
    let chunks = r.sse_json();
    let content: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).filter(|s| !s.is_empty()).collect();
    assert_eq!(content, ["echo: ", "one "]);
    assert!(!r.text().contains("[DONE]"));

    // non-stream reset: incomplete body
    b["stream"] = json!(false);
    let r = post(a, p, &[AUTH], &b).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    b["model"] = json!("gpt-4o-mini+kind=malformed");
    let r = post(a, p, &[AUTH], &b).await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());

    b["stream"] = json!(true);
    let r = post(a, p, &[AUTH], &b).await;
    let frames = r.sse();
    assert!(serde_json::from_str::<Value>(&frames[0].1).is_ok());
    assert!(serde_json::from_str::<Value>(&frames[1].1).is_ok());
    assert!(frames.iter().any(|(_, d)| serde_json::from_str::<Value>(d).is_err()));

    b["model"] = json!("gpt-4o-mini+kind=stream_error");
    let r = post(a, p, &[AUTH], &b).await;
    assert_eq!(r.status, 200);
    let chunks = r.sse_json();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["error"]["type"], "server_error");
    b["stream"] = json!(false);
    assert_eq!(post(a, p, &[AUTH], &b).await.status, 500);
}

#[tokio::test]
async fn latency_and_stream_timing() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let mut b = chat(json!("a b c"));
    b["model"] = json!("gpt-4o-mini+latency=150");
    let r = post(a, "/v1/chat/completions", &[AUTH], &b).await;
    assert_eq!(r.status, 200);
    assert!(r.elapsed >= Duration::from_millis(150), "{:?}", r.elapsed);
    b["model"] = json!("gpt-4o-mini");
    b["stream"] = json!(true);
    let r = post(a, "/v1/chat/completions", &[AUTH, ("x-mock-ttft-ms", "100"), ("x-mock-chunk-delay-ms", "20")], &b).await;
    assert!(r.elapsed >= Duration::from_millis(100 + 20 * 5), "{:?}", r.elapsed);
}

#[tokio::test]
async fn keys_counters_records_and_admin() {
    let mut cfg = MockConfig::new(Flavor::OpenAi);
    cfg.behavior.key_status = BTreeMap::from([("sk-revoked".to_string(), 401)]);
    let m = start_with(cfg).await;
    let a = m.addr();
    let p = "/v1/chat/completions";
    let r = post(a, p, &[("authorization", "Bearer sk-revoked")], &chat(json!("x"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    assert_eq!(post(a, p, &[AUTH], &chat(json!("x"))).await.status, 200);
    assert_eq!(get(a, "/v1/models", &[AUTH]).await.status, 200);

    let stats = get(a, "/mock/stats", &[]).await.json();
    assert_eq!(stats["requests"], 3);
    assert_eq!(stats["by_key"]["sk-revoked"], 1);
    assert_eq!(stats["by_key"]["sk-test-1234567890"], 2);
    assert_eq!(stats["by_path"]["/v1/chat/completions"], 2);
    assert_eq!(stats["by_path"]["/v1/models"], 1);
    assert_eq!(stats["by_model"]["gpt-4o-mini"], 2);

    let recs = get(a, "/mock/requests", &[]).await.json();
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0]["key"], "sk-revoked");
    assert_eq!(recs[1]["method"], "POST");
    assert_eq!(recs[1]["body"]["messages"][0]["content"], "x");
    assert_eq!(recs[1]["headers"]["authorization"], "Bearer sk-test-1234567890");
    assert_eq!(recs[2]["body"], Value::Null);
    assert_eq!(m.requests().len(), 3);

    let put = send(a, "PUT", "/mock/behavior", &[], Some(r#"{"fault_rate":1,"fault_codes":[502],"fault_kind":null}"#)).await;
    assert_eq!(put.status, 200);
    assert_eq!(get(a, "/mock/behavior", &[]).await.json()["fault_codes"], json!([502]));
    assert_eq!(post(a, p, &[AUTH], &chat(json!("x"))).await.status, 502);
    assert_eq!(send(a, "POST", "/mock/reset", &[], None).await.status, 200);
    assert_eq!(m.stats().requests, 0);
    assert!(m.requests().is_empty());
    m.set_behavior(Behavior { fault_kind: Some(FaultKind::Hang), ..Behavior::default() });
    assert_eq!(m.handle().behavior().fault_kind, Some(FaultKind::Hang));
    m.shutdown().await;
}

#[tokio::test]
async fn require_key() {
    let mut cfg = MockConfig::new(Flavor::OpenAi);
    cfg.require_key = Some("sk-right".into());
    let m = start_with(cfg).await;
    let p = "/v1/chat/completions";
    let r = post(m.addr(), p, &[AUTH], &chat(json!("x"))).await;
    assert_eq!(r.status, 401);
    let r = post(m.addr(), p, &[("authorization", "Bearer sk-right")], &chat(json!("x"))).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn embeddings_and_models() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let r = post(a, "/v1/embeddings", &[AUTH], &json!({"model": "text-embedding-3-small", "input": ["hello world", "x"]})).await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["index"], 1);
    let e0: Vec<f64> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(e0.len(), 8);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    let r = post(
        a,
        "/v1/embeddings",
        &[AUTH],
        &json!({"model": "text-embedding-3-small",
        "input": "hello world", "encoding_format": "base64", "dimensions": 4}),
    )
    .await;
    let v = r.json();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
    assert_eq!(raw.len(), 16);
    let models = get(a, "/v1/models", &[AUTH]).await.json();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]);
    assert_eq!(get(a, "/v1/models/gpt-4o", &[AUTH]).await.json()["id"], "gpt-4o");
    assert_eq!(get(a, "/v1/models/nope", &[AUTH]).await.status, 404);
}

#[tokio::test]
async fn hang_is_cut_by_shutdown() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let mut b = chat(json!("x"));
    b["model"] = json!("gpt-4o-mini+kind=hang");
    let pending = tokio::spawn(async move { post(a, "/v1/chat/completions", &[AUTH], &b).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    let started = std::time::Instant::now();
    m.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    let r = pending.await.unwrap();
    assert_eq!(r.status, 503);
}

/// OpenAI's out-of-quota answer, exactly.
fn quota_body() -> Value {
    json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})
}

#[tokio::test]
async fn context_window_from_behavior_header_and_suffix() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let p = "/v1/chat/completions";
    // Four prompt tokens: fine without a window.
    let b = chat(json!("one two three four"));
    assert_eq!(post(a, p, &[AUTH], &b).await.status, 200);
    m.set_behavior(Behavior { context_window: Some(3), ..Behavior::default() });
    let r = post(a, p, &[AUTH], &b).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "This model's maximum context length is 3 tokens. However, your messages resulted in 4 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
    );
    assert!(r.header_names("x-ratelimit-").is_empty());
    // A stream is refused before it starts.
    let mut s = b.clone();
    s["stream"] = json!(true);
    assert_eq!(post(a, p, &[AUTH], &s).await.status, 400);
    // At the window is fine; the header overrides the behaviour, the suffix the header.
    assert_eq!(post(a, p, &[AUTH, ("x-mock-context-window", "4")], &b).await.status, 200);
    let mut small = b.clone();
    small["model"] = json!("gpt-4o-mini+context=2");
    let r = post(a, p, &[AUTH, ("x-mock-context-window", "4")], &small).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().starts_with("This model's maximum context length is 2 tokens."));
    // The same prompt to a big-context mock passes; embeddings are not chat and are not checked.
    small["model"] = json!("gpt-4o-mini+context=128000");
    assert_eq!(post(a, p, &[AUTH], &small).await.status, 200);
    let e = post(a, "/v1/embeddings", &[AUTH], &json!({"model": "text-embedding-3-small", "input": "a b c d e"})).await;
    assert_eq!(e.status, 200);
    // The directive keeps its old message (the usual window, a prompt over it).
    m.set_behavior(Behavior::default());
    let r = post(a, p, &[AUTH], &chat(json!("[[context]]"))).await;
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("maximum context length is 128000 tokens"));
}

#[tokio::test]
async fn exhausted_quota_by_key_and_directive() {
    let m = start(Flavor::OpenAi).await;
    let a = m.addr();
    let p = "/v1/chat/completions";
    // A retry-after knob must not leak onto a quota answer: it is not a rate limit.
    let put = send(
        a,
        "PUT",
        "/mock/behavior",
        &[],
        Some(r#"{"retry_after_secs":5,"quota_exhausted_keys":["sk-broke-0001","sk-both-0001"],"key_status":{"sk-both-0001":401}}"#),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(m.handle().behavior().quota_exhausted_keys.len(), 2);
    for r in [
        post(a, p, &[("authorization", "Bearer sk-broke-0001")], &chat(json!("hi"))).await,
        post(a, p, &[AUTH], &chat(json!("please [[quota]]"))).await,
        post(a, "/v1/embeddings", &[("authorization", "Bearer sk-broke-0001")], &json!({"model": "text-embedding-3-small", "input": "x"}))
            .await,
    ] {
        assert_eq!(r.status, 429);
        assert_eq!(r.json(), quota_body());
        assert!(r.header("x-request-id").unwrap().starts_with("req_"));
        assert_eq!((r.header("retry-after"), r.header("retry-after-ms")), (None, None));
        assert!(r.header_names("x-ratelimit-").is_empty(), "{:?}", r.headers);
    }
    // key_status wins over the quota list; other keys are served; a rate-limit 429 still has its headers.
    let r = post(a, p, &[("authorization", "Bearer sk-both-0001")], &chat(json!("hi"))).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    assert_eq!(post(a, p, &[AUTH], &chat(json!("hi"))).await.status, 200);
    let r = post(a, p, &[AUTH], &chat(json!("[[error:429]]"))).await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("5")));
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert!(!r.header_names("x-ratelimit-").is_empty());
}
