//! Azure flavour over real HTTP: deployment routing, api-version, Azure error bodies, filter annotations.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use common::*;
use serde_json::json;
use switchyard_mock::Flavor;

const KEY: (&str, &str) = ("api-key", "azure-key-0001");
const CHAT: &str = "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21";

fn body(text: &str) -> serde_json::Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn deployment_chat_with_annotations() {
    let m = start(Flavor::Azure).await;
    let r = post(m.addr(), CHAT, &[KEY], &body("hi there")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("apim-request-id").is_some());
    let v = r.json();
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hi there");
    assert_eq!(v["prompt_filter_results"][0]["prompt_index"], 0);
    assert_eq!(v["choices"][0]["content_filter_results"]["hate"]["severity"], "safe");
    assert_eq!(m.stats().by_key["azure-key-0001"], 1);

    let v = post(m.addr(), CHAT, &[KEY], &body("[[filter]]")).await.json();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["choices"][0]["content_filter_results"]["violence"]["filtered"], true);
}

#[tokio::test]
async fn azure_errors() {
    let m = start(Flavor::Azure).await;
    let a = m.addr();
    let r = post(a, "/openai/deployments/gpt-4o-mini/chat/completions", &[KEY], &body("x")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": {"code": "404", "message": "Resource not found"}}));

    let r = post(a, "/openai/deployments/nope/chat/completions?api-version=2024-10-21", &[KEY], &body("x")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "DeploymentNotFound");

    let r = post(a, CHAT, &[], &body("x")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "401");
    assert!(r.json()["error"]["message"].as_str().unwrap().starts_with("Access denied"));

    // Bearer is accepted too
    let r = post(a, CHAT, &[("authorization", "Bearer entra-token")], &body("x")).await;
    assert_eq!(r.status, 200);

    let r = post(a, CHAT, &[KEY, ("x-mock-fault-codes", "429"), ("x-mock-retry-after", "6")], &body("x")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("6"));
    assert_eq!(r.json()["error"]["code"], "429");
    assert!(r.json()["error"]["message"].as_str().unwrap().ends_with("Please retry after 6 seconds."));
}

#[tokio::test]
async fn rate_limit_headers_are_remaining_counts_only() {
    let m = start(Flavor::Azure).await;
    let a = m.addr();
    // An answer used one of the 100 requests of its 10-second window and the tokens it asked for.
    let mut b = body("hello");
    b["max_tokens"] = json!(500);
    let r = post(a, CHAT, &[KEY], &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("99"));
    let used = 100_000 - r.header_u64("x-ratelimit-remaining-tokens");
    assert!((500..600).contains(&used), "{used}");
    let mut names = r.header_names("x-ratelimit-");
    names.sort_unstable();
    assert_eq!(names, ["x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"], "Azure sends no limit or reset headers");

    // A 429: the token limit is used up; the wait is retry-after (both only with the knob).
    let r = post(a, CHAT, &[KEY, ("x-mock-fault-codes", "429"), ("x-mock-retry-after", "6")], &body("x")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("100"));
    assert_eq!(r.header("retry-after-ms"), Some("6000"));
    let r = post(a, CHAT, &[KEY, ("x-mock-fault-codes", "429")], &body("x")).await;
    assert_eq!((r.status, r.header("retry-after"), r.header("x-ratelimit-remaining-tokens")), (429, None, Some("0")));

    // Other errors carry none.
    for r in [post(a, CHAT, &[KEY, ("x-mock-fault-codes", "503")], &body("x")).await, post(a, CHAT, &[], &body("x")).await] {
        assert!(r.header_names("x-ratelimit-").is_empty(), "{} {:?}", r.status, r.headers);
    }
}

#[tokio::test]
async fn suffix_in_deployment_path() {
    let m = start(Flavor::Azure).await;
    let r = post(m.addr(), "/openai/deployments/gpt-4o-mini+fault=1+code=503/chat/completions?api-version=2024-10-21", &[KEY], &body("x"))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(m.stats().by_model["gpt-4o-mini"], 1);
}

#[tokio::test]
async fn stream_starts_with_prompt_annotation() {
    let m = start(Flavor::Azure).await;
    let mut b = body("a b");
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    let r = post(m.addr(), CHAT, &[KEY], &b).await;
    assert_eq!(r.status, 200);
    let chunks = r.sse_json();
    assert_eq!(chunks[0]["id"], "");
    assert_eq!(chunks[0]["choices"], json!([]));
    assert!(chunks[0]["prompt_filter_results"].is_array());
    let content: Vec<&serde_json::Value> =
        chunks.iter().filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty())).collect();
    assert_eq!(content.len(), 3);
    assert!(content.iter().all(|c| c["choices"][0]["content_filter_results"]["hate"].is_object()));
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);
    assert_eq!(r.sse().last().unwrap().1, "[DONE]");
}

#[tokio::test]
async fn v1_routes_and_embeddings() {
    let m = start(Flavor::Azure).await;
    let a = m.addr();
    let mut b = body("hi");
    b["model"] = json!("gpt-4o-mini");
    let r = post(a, "/openai/v1/chat/completions", &[KEY], &b).await;
    assert_eq!(r.status, 200);
    b["model"] = json!("nope");
    let r = post(a, "/openai/v1/chat/completions", &[KEY], &b).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "DeploymentNotFound");
    let r =
        post(a, "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21", &[KEY], &json!({"input": "hello"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let r = get(a, "/openai/v1/models", &[KEY]).await;
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn context_window_and_exhausted_quota() {
    use switchyard_mock::Behavior;
    let m = start(Flavor::Azure).await;
    let a = m.addr();
    m.set_behavior(Behavior {
        context_window: Some(3),
        retry_after_secs: Some(5),
        quota_exhausted_keys: ["azure-broke-01".to_string()].into(),
        ..Behavior::default()
    });
    let r = post(a, CHAT, &[KEY], &body("one two three four")).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"]["code"], "context_length_exceeded");
    assert_eq!(
        e["error"]["message"],
        "This model's maximum context length is 3 tokens. However, your messages resulted in 4 tokens. Please reduce the length of the messages."
    );
    assert_eq!(post(a, CHAT, &[KEY], &body("one two three")).await.status, 200);
    // The suffix goes in the deployment segment.
    let big = "/openai/deployments/gpt-4o-mini+context=10/chat/completions?api-version=2024-10-21";
    assert_eq!(post(a, big, &[KEY], &body("one two three four")).await.status, 200);

    let quota = json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}});
    for r in [post(a, CHAT, &[("api-key", "azure-broke-01")], &body("hi")).await, post(a, CHAT, &[KEY], &body("[[quota]]")).await] {
        assert_eq!(r.status, 429);
        assert_eq!(r.json(), quota);
        assert!(r.header("apim-request-id").is_some());
        assert_eq!(r.header("retry-after"), None);
        assert!(r.header_names("x-ratelimit-").is_empty(), "{:?}", r.headers);
    }
}
