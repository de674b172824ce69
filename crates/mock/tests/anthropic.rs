//! Anthropic flavour over real HTTP: validation, replies, named-event streams, usage, errors and models.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor};

const KEY: (&str, &str) = ("x-api-key", "sk-ant-test-0001");
const VER: (&str, &str) = ("anthropic-version", "2023-06-01");

fn msg(content: Value) -> Value {
    json!({"model": "claude-sonnet-4-6", "max_tokens": 100,
        "messages": [{"role": "user", "content": content}]})
}

fn err_of(r: &Resp) -> (String, String) {
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
    (v["error"]["type"].as_str().unwrap().to_string(), v["error"]["message"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn headers_are_required() {
    let m = start(Flavor::Anthropic).await;
    let a = m.addr();
    let r = post(a, "/v1/messages", &[VER], &msg(json!("hi"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(err_of(&r).0, "authentication_error");
    let r = post(a, "/v1/messages", &[KEY], &msg(json!("hi"))).await;
    assert_eq!(r.status, 400);
    assert_eq!(err_of(&r).0, "invalid_request_error");
    let r = post(a, "/v1/messages", &[("authorization", "Bearer oauth-tok"), VER], &msg(json!("hi"))).await;
    assert_eq!(r.status, 200);
    assert!(r.header("request-id").unwrap().starts_with("req_"));
}

#[tokio::test]
async fn validation_errors() {
    let m = start(Flavor::Anthropic).await;
    let a = m.addr();
    let send = |b: Value| async move { post(a, "/v1/messages", &[KEY, VER], &b).await };

    let mut b = msg(json!("hi"));
    b.as_object_mut().unwrap().remove("max_tokens");
    let r = send(b).await;
    assert_eq!(r.status, 400);
    assert_eq!(err_of(&r).1, "max_tokens: Field required");

    let mut b = msg(json!("hi"));
    b["messages"] = json!([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]);
    assert_eq!(send(b).await.status, 400);

    let mut b = msg(json!("hi"));
    b["messages"] = json!([{"role": "assistant", "content": "x"}, {"role": "user", "content": "hi"}]);
    assert_eq!(send(b).await.status, 400);

    let mut b = msg(json!("hi"));
    b["messages"] = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_zzz", "content": "x"}]}]);
    let r = send(b).await;
    assert_eq!(r.status, 400);
    assert!(err_of(&r).1.contains("tool_use_id"));

    let b = msg(json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png",
        "data": format!("data:image/png;base64,{PNG_B64}")}}]));
    assert_eq!(send(b).await.status, 400);
    let b = msg(json!([{"type": "image", "source": {"type": "base64", "media_type": "image/tiff",
        "data": PNG_B64}}]));
    assert_eq!(send(b).await.status, 400);
    let b = msg(json!([{"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
        "data": PNG_B64}}]));
    assert_eq!(send(b).await.status, 400, "media type must match the bytes");

    let mut b = msg(json!("hi"));
    b["temperature"] = json!(1.2);
    assert_eq!(send(b).await.status, 400);

    let mut b = msg(json!("hi"));
    b["model"] = json!("claude-nope");
    let r = send(b).await;
    assert_eq!(r.status, 404);
    assert_eq!(err_of(&r).0, "not_found_error");
}

#[tokio::test]
async fn echo_image_tools_and_usage() {
    let m = start(Flavor::Anthropic).await;
    let a = m.addr();
    let mut b = msg(json!([
        {"type": "text", "text": "look at"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "this [[cached:2]]"}]));
    b["system"] = json!([{"type": "text", "text": "be kind"}]);
    let r = post(a, "/v1/messages", &[KEY, VER], &b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["model"], "claude-sonnet-4-6");
    let expected = format!("echo: look at this [[cached:2]]{} [image-url https://example.com/a.png]", png_note());
    assert_eq!(v["content"][0]["text"], expected.as_str());
    assert_eq!(v["stop_reason"], "end_turn");
    // prompt words: be kind (2) + look at (2) + this [[cached:2]] (2) = 6, 2 of them cached
    assert_eq!(v["usage"]["input_tokens"], 4);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 2);
    assert_eq!(v["usage"]["output_tokens"], expected.split_whitespace().count());

    let b = msg(json!(r#"[[tool:get_weather {"city":"Paris"}]][[tool:get_time]]"#));
    let v = post(a, "/v1/messages", &[KEY, VER], &b).await.json();
    assert_eq!(v["stop_reason"], "tool_use");
    let blocks = v["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["type"], "tool_use");
    assert_eq!(blocks[0]["input"], json!({"city": "Paris"}));
    let id0 = blocks[0]["id"].as_str().unwrap().to_string();
    assert!(id0.starts_with("toolu_") && id0.len() == 30);
    let id1 = blocks[1]["id"].as_str().unwrap().to_string();

    let follow = json!({"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": [
        b["messages"][0].clone(),
        {"role": "assistant", "content": blocks},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id0, "content": "18C"},
            {"type": "tool_result", "tool_use_id": id1, "content": [{"type": "text", "text": "noon"}]}]}]});
    let v = post(a, "/v1/messages", &[KEY, VER], &follow).await.json();
    assert_eq!(v["content"][0]["text"], "tool results: 18C | noon");

    let mut b = msg(json!("one two three four"));
    b["max_tokens"] = json!(2);
    let v = post(a, "/v1/messages", &[KEY, VER], &b).await.json();
    assert_eq!(v["content"][0]["text"], "echo: one");
    assert_eq!(v["stop_reason"], "max_tokens");
    let mut b = msg(json!("one two three"));
    b["stop_sequences"] = json!(["three"]);
    let v = post(a, "/v1/messages", &[KEY, VER], &b).await.json();
    assert_eq!(v["stop_reason"], "stop_sequence");
    assert_eq!(v["stop_sequence"], "three");
    let v = post(a, "/v1/messages", &[KEY, VER], &msg(json!("[[filter]]"))).await.json();
    assert_eq!(v["stop_reason"], "refusal");
    let r = post(a, "/v1/messages", &[KEY, VER], &msg(json!("[[context]]"))).await;
    assert_eq!(r.status, 400);
    assert!(err_of(&r).1.starts_with("prompt is too long"));
    let mut b = msg(json!("hi"));
    b["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    b["tool_choice"] = json!({"type": "any"});
    let v = post(a, "/v1/messages", &[KEY, VER], &b).await.json();
    assert_eq!(v["content"][0]["name"], "lookup");
}

#[tokio::test]
async fn stream_event_order() {
    let m = start(Flavor::Anthropic).await;
    let a = m.addr();
    let mut b = msg(json!("hello world"));
    b["stream"] = json!(true);
    let r = post(a, "/v1/messages", &[KEY, VER], &b).await;
    assert_eq!(r.status, 200);
    let events: Vec<String> = r.sse().into_iter().map(|(e, _)| e.unwrap()).collect();
    assert_eq!(
        events,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data = r.sse_json();
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 2);
    assert_eq!(data[3]["delta"], json!({"type": "text_delta", "text": "echo: "}));
    assert_eq!(data[7]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[7]["usage"]["output_tokens"], 3);
    for (e, d) in r.sse() {
        let v: Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["type"], e.unwrap().as_str());
    }

    let mut b = msg(json!(r#"[[tool:get_weather {"city":"Paris"}]]"#));
    b["stream"] = json!(true);
    let r = post(a, "/v1/messages", &[KEY, VER], &b).await;
    let data = r.sse_json();
    assert_eq!(data[1]["content_block"]["type"], "tool_use");
    assert_eq!(data[1]["content_block"]["input"], json!({}));
    assert_eq!(data[2]["type"], "ping");
    assert_eq!(data[3]["delta"], json!({"type": "input_json_delta", "partial_json": ""}));
    let args: String = data.iter().filter_map(|d| d["delta"]["partial_json"].as_str()).collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    let md = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(md["delta"]["stop_reason"], "tool_use");
    assert_eq!(md["usage"]["output_tokens"], 5);
}

#[tokio::test]
async fn faults() {
    let m = start(Flavor::Anthropic).await;
    let a = m.addr();
    m.set_behavior(Behavior { retry_after_secs: Some(3), ..Behavior::default() });
    let mut b = msg(json!("hi"));
    b["model"] = json!("claude-sonnet-4-6+fault=1+code=529");
    let r = post(a, "/v1/messages", &[KEY, VER], &b).await;
    assert_eq!(r.status, 529);
    assert_eq!(err_of(&r).0, "overloaded_error");
    assert_eq!(r.header("retry-after"), Some("3"));
    b["model"] = json!("claude-sonnet-4-6+code=429");
    let r = post(a, "/v1/messages", &[KEY, VER], &b).await;
    assert_eq!(r.status, 429);
    assert_eq!(err_of(&r).0, "rate_limit_error");

    b["model"] = json!("claude-sonnet-4-6+kind=stream_error");
    b["stream"] = json!(true);
    let r = post(a, "/v1/messages", &[KEY, VER], &b).await;
    assert_eq!(r.status, 200);
    let frames = r.sse();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&frames[0].1).unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");

    b["model"] = json!("claude-sonnet-4-6+kind=reset");
    b["messages"][0]["content"] = json!("a b c d e f");
    let r = post(a, "/v1/messages", &[KEY, VER], &b).await;
    assert!(!r.complete);
    let deltas = r.sse().iter().filter(|(e, _)| e.as_deref() == Some("content_block_delta")).count();
    assert_eq!(deltas, 2);

    let mut cfg = switchyard_mock::MockConfig::new(Flavor::Anthropic);
    cfg.behavior.key_status.insert("sk-ant-test-0001".into(), 401);
    let m2 = start_with(cfg).await;
    let r = post(m2.addr(), "/v1/messages", &[KEY, VER], &msg(json!("hi"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(err_of(&r).0, "authentication_error");
    assert_eq!(m2.stats().by_key["sk-ant-test-0001"], 1);
}

#[tokio::test]
async fn models_and_count_tokens() {
    let m = start(Flavor::Anthropic).await;
    let a = m.addr();
    let v = get(a, "/v1/models", &[KEY, VER]).await.json();
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], "claude-sonnet-4-6");
    assert_eq!(v["last_id"], "claude-haiku-4-5");
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["display_name"], "Claude Sonnet 4.6");
    let v = get(a, "/v1/models?limit=1", &[KEY, VER]).await.json();
    assert_eq!(v["has_more"], true);
    let v = get(a, "/v1/models?limit=1&after_id=claude-sonnet-4-6", &[KEY, VER]).await.json();
    assert_eq!(v["data"][0]["id"], "claude-haiku-4-5");
    assert_eq!(v["has_more"], false);
    let r = post(
        a,
        "/v1/messages/count_tokens",
        &[KEY, VER],
        &json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "a b c"}]}),
    )
    .await;
    assert_eq!(r.json()["input_tokens"], 3);
}

/// Seconds from now until an `anthropic-ratelimit-*-reset` time (negative: in the past).
fn reset_in(r: &Resp, family: &str) -> i64 {
    let name = format!("anthropic-ratelimit-{family}-reset");
    let at = unix_of_rfc3339(r.header(&name).unwrap_or_else(|| panic!("no {name}")));
    at as i64 - now_secs() as i64
}

#[tokio::test]
async fn rate_limit_headers_on_messages_and_429s_only() {
    assert_eq!(unix_of_rfc3339("2025-08-21T12:40:59Z"), 1_755_780_059);
    let m = start(Flavor::Anthropic).await;
    let a = m.addr();
    // An answer used one request, its input and its max_tokens (100) of the output limit; each limit is
    // full again within a second, and `tokens-*` is the tighter of input and output.
    let r = post(a, "/v1/messages", &[KEY, VER], &msg(json!("hi"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("anthropic-ratelimit-requests-limit"), Some("4000"));
    assert_eq!(r.header("anthropic-ratelimit-requests-remaining"), Some("3999"));
    assert_eq!(r.header("anthropic-ratelimit-output-tokens-limit"), Some("400000"));
    assert_eq!(r.header("anthropic-ratelimit-output-tokens-remaining"), Some("399900"));
    assert_eq!(r.header("anthropic-ratelimit-input-tokens-limit"), Some("2000000"));
    assert!(r.header_u64("anthropic-ratelimit-input-tokens-remaining") > 1_999_900);
    assert_eq!(r.header("anthropic-ratelimit-tokens-limit"), Some("400000"), "output is the tighter limit");
    assert_eq!(r.header("anthropic-ratelimit-tokens-remaining"), Some("399900"));
    for family in ["requests", "tokens", "input-tokens", "output-tokens"] {
        assert!((0..=2).contains(&reset_in(&r, family)), "{family}: {:?}", r.headers);
    }
    let mut b = msg(json!("hi"));
    b["stream"] = json!(true);
    assert_eq!(post(a, "/v1/messages", &[KEY, VER], &b).await.header("anthropic-ratelimit-requests-remaining"), Some("3999"));

    // A 429: the request limit is used up and resets when retry-after says.
    m.set_behavior(Behavior { retry_after_secs: Some(30), ..Behavior::default() });
    let r = post(a, "/v1/messages", &[KEY, VER], &msg(json!("[[error:429]]"))).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("30"));
    assert_eq!(r.header("anthropic-ratelimit-requests-remaining"), Some("0"));
    assert!((29..=30).contains(&reset_in(&r, "requests")), "{:?}", r.headers);
    assert_eq!(r.header("anthropic-ratelimit-tokens-remaining"), r.header("anthropic-ratelimit-tokens-limit"));
    // Without the knob: no retry-after, and the reset is the mock's default wait away.
    m.set_behavior(Behavior::default());
    let r = post(a, "/v1/messages", &[KEY, VER, ("x-mock-fault-codes", "429")], &msg(json!("x"))).await;
    assert_eq!((r.status, r.header("retry-after")), (429, None));
    assert_eq!(r.header("anthropic-ratelimit-requests-remaining"), Some("0"));
    assert!((0..=1).contains(&reset_in(&r, "requests")));

    // Other errors, token counting and model lists carry none.
    let count = json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]});
    for r in [
        post(a, "/v1/messages", &[KEY, VER], &msg(json!("[[error:529]]"))).await,
        post(a, "/v1/messages", &[KEY, VER], &json!({"model": "claude-sonnet-4-6"})).await,
        post(a, "/v1/messages", &[VER], &msg(json!("hi"))).await,
        post(a, "/v1/messages/count_tokens", &[KEY, VER], &count).await,
        get(a, "/v1/models", &[KEY, VER]).await,
    ] {
        assert!(r.header_names("anthropic-ratelimit-").is_empty(), "{} {:?}", r.status, r.headers);
    }
}

#[tokio::test]
async fn context_window_and_exhausted_credit() {
    let m = start(Flavor::Anthropic).await;
    let a = m.addr();
    m.set_behavior(Behavior {
        context_window: Some(3),
        retry_after_secs: Some(5),
        quota_exhausted_keys: ["sk-ant-broke-01".to_string(), "sk-ant-both-01".to_string()].into(),
        key_status: [("sk-ant-both-01".to_string(), 403)].into(),
        ..Behavior::default()
    });
    let r = post(a, "/v1/messages", &[KEY, VER], &msg(json!("one two three four"))).await;
    assert_eq!(r.status, 400);
    assert_eq!(err_of(&r), ("invalid_request_error".to_string(), "prompt is too long: 4 tokens > 3 maximum".to_string()));
    assert_eq!(post(a, "/v1/messages", &[KEY, VER, ("x-mock-context-window", "4")], &msg(json!("one two three four"))).await.status, 200);

    let broke = ("x-api-key", "sk-ant-broke-01");
    for r in [
        post(a, "/v1/messages", &[broke, VER], &msg(json!("hi"))).await,
        post(a, "/v1/messages/count_tokens", &[broke, VER], &msg(json!("hi"))).await,
        post(a, "/v1/messages", &[KEY, VER], &msg(json!("[[quota]]"))).await,
    ] {
        assert_eq!(r.status, 400);
        let v = r.json();
        assert_eq!(
            v["error"],
            json!({"type": "invalid_request_error",
                "message": "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."})
        );
        assert_eq!(v["type"], "error");
        assert_eq!(v["request_id"].as_str(), r.header("request-id"));
        assert_eq!(r.header("retry-after"), None);
        assert!(r.header_names("anthropic-ratelimit-").is_empty(), "{:?}", r.headers);
    }
    // key_status wins.
    let r = post(a, "/v1/messages", &[("x-api-key", "sk-ant-both-01"), VER], &msg(json!("hi"))).await;
    assert_eq!((r.status, err_of(&r).0.as_str()), (403, "permission_error"));
}
