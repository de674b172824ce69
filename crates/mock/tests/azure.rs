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
