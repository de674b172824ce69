//! A model the self-hosted server does not have (Ollama has not pulled it, vLLM was started with another),
//! through the real binary: the operator's fault, not the caller's. The request moves on to the next
//! target at once; with nowhere left to go it gets a 502 that says how to fix it; the provider's health and
//! keys are untouched. A cloud's unknown model stays the caller's 404, and a caller fault still returns at
//! once.
//!
//! Every case proves from the mocks' own counters that the missing model was met (a test that passes
//! without meeting its fault proves nothing).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockServer};

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

fn provider_view<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["providers"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no {name} in {health}"))
}

/// An Ollama that has pulled only `llava` and `all-minilm`, a cloud that serves anything, and a route from
/// a model the Ollama lacks to the cloud.
async fn local_then_cloud() -> (MockServer, MockServer, Gateway) {
    let local = mock_serving(Flavor::Ollama, &["llava", "all-minilm"]).await;
    let cloud = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "providers:\n  local:\n    type: ollama\n    base_url: \"{}\"\n  cloud:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{name: main, value: sk-cloud}}]\nroutes:\n  - models: [\"local/not-pulled\"]\n    fallbacks: [\"cloud/gpt-4o-mini\"]\n",
        local.base_url(),
        cloud.base_url()
    );
    (local, cloud, Gateway::start(&yaml))
}

#[tokio::test]
async fn a_model_ollama_has_not_pulled_falls_back_to_the_next_target() {
    let (local, cloud, gw) = local_then_cloud().await;
    let c = client();
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "local/not-pulled", "messages": user("hello")})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-switchyard-provider"), Some("cloud"));
    assert_eq!(r.header("x-switchyard-model"), Some("gpt-4o-mini"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(r.header("x-switchyard-fallback-index"), Some("1"));
    assert_eq!((calls(&local), calls(&cloud)), (1, 1), "the Ollama was asked once and not again");

    // A stream moves on the same way: the 404 comes before anything reached the client.
    let s =
        stream(&c, &gw.url("/v1/chat/completions"), &json!({"model": "local/not-pulled", "messages": user("hi"), "stream": true})).await;
    assert_eq!((s.status, s.header("x-switchyard-provider"), s.header("x-switchyard-attempts")), (200, Some("cloud"), Some("2")));
    assert!(s.done && !s.text().is_empty(), "{}", s.raw);

    // And embeddings, whose Ollama route words the 404 differently (`model "x" not found, try pulling it
    // first`), with the fallback in the request body.
    let r = post(
        &c,
        &gw.url("/v1/embeddings"),
        &json!({"model": "local/nomic-embed-text", "input": "x", "fallbacks": ["cloud/text-embedding-3-small"]}),
    )
    .await;
    assert_eq!(
        (r.status, r.header("x-switchyard-provider"), r.header("x-switchyard-attempts")),
        (200, Some("cloud"), Some("2")),
        "{}",
        r.body
    );
    assert_eq!(calls(&local), 3);
}

#[tokio::test]
async fn with_no_target_left_the_502_says_how_to_fix_it() {
    let local = mock_serving(Flavor::Ollama, &["llava"]).await;
    let vllm = mock_serving(Flavor::OpenAi, &["Qwen/Qwen2.5-7B-Instruct"]).await;
    let cloud = mock_serving(Flavor::OpenAi, &["gpt-4o-mini"]).await;
    let yaml = format!(
        "providers:\n  local:\n    type: ollama\n    base_url: \"{}\"\n  gpu:\n    type: vllm\n    base_url: \"{}\"\n    keys: [{{name: gpu-key, value: sk-gpu}}]\n  cloud:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{name: main, value: sk-cloud}}]\n",
        local.base_url(),
        vllm.base_url(),
        cloud.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");

    let r = post(&c, &url, &json!({"model": "local/not-pulled", "messages": user("x")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (502, Some("upstream_model_not_found")), "{}", r.body);
    assert_eq!(r.body["error"]["type"], "upstream_error");
    let msg = r.body["error"]["message"].as_str().unwrap();
    let port = local.base_url().rsplit(':').next().unwrap().to_string();
    assert!(msg.contains("run \"ollama pull not-pulled\" on the Ollama host (http://127.0.0.1:"), "{msg}");
    assert!(msg.contains(&port) && msg.contains("operator"), "{msg}");
    assert_eq!(r.body["error"]["attempts"][0]["class"], "model_not_found");
    assert_eq!(r.header("x-switchyard-attempts"), Some("1"));
    assert_eq!(calls(&local), 1, "not retried: asking again does not pull the model");

    // Another self-hosted kind: the fix names the server, and its key is not cooled down.
    let r = post(&c, &url, &json!({"model": "gpu/meta-llama/Llama-3.1-8B", "messages": user("x")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (502, Some("upstream_model_not_found")), "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("does not serve meta-llama/Llama-3.1-8B; start it with that model or fix the route"), "{msg}");
    assert_eq!(calls(&vllm), 1);
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    let gpu = provider_view(&health, "gpu");
    assert!(gpu["keys"][0].get("cooling_down_ms").is_none(), "the key did nothing wrong: {gpu}");
    let r = post(&c, &url, &json!({"model": "gpu/Qwen/Qwen2.5-7B-Instruct", "messages": user("x")})).await;
    assert_eq!((r.status, r.header("x-switchyard-key")), (200, Some("gpu-key")), "the same key serves the model it has");

    // A cloud's unknown model is the caller's: 404 model_not_found, as calling the cloud directly would say.
    let r = post(&c, &url, &json!({"model": "cloud/gpt-nope", "messages": user("x")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("model_not_found")), "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "caller_fault");
    assert_eq!(calls(&cloud), 1);
}

#[tokio::test]
async fn missing_models_do_not_degrade_the_provider() {
    let (local, _cloud, gw) = local_then_cloud().await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for _ in 0..20 {
        let r = post(&c, &url, &json!({"model": "local/not-pulled", "messages": user("x")})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(calls(&local), 20);
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    let view = provider_view(&health, "local");
    assert_eq!(view["health"]["state"], "healthy", "{view}");
    assert_eq!((view["health"]["failures"].as_u64(), view["health"]["times_degraded"].as_u64()), (Some(0), Some(0)), "{view}");
    // The model it has is still served by it, first.
    let r = post(&c, &url, &json!({"model": "local/llava", "messages": user("x")})).await;
    assert_eq!((r.status, r.header("x-switchyard-provider"), r.header("x-switchyard-attempts")), (200, Some("local"), Some("1")));

    // The health view does count this provider's real failures: one 500 (served by the fallback, so not
    // the request's own fault) shows up at once.
    local.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    let r = post(&c, &url, &json!({"model": "local/llava", "messages": user("x"), "fallbacks": ["cloud/gpt-4o-mini"]})).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("cloud")), "{}", r.body);
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert!(provider_view(&health, "local")["health"]["failures"].as_u64().unwrap() >= 1, "{health}");
}

#[tokio::test]
async fn a_caller_fault_still_returns_at_once() {
    let local = mock_serving(Flavor::Ollama, &["llava"]).await;
    let cloud = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "providers:\n  local:\n    type: ollama\n    base_url: \"{}\"\n  cloud:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{name: main, value: sk-cloud}}]\nroutes:\n  - models: [\"local/llava\"]\n    fallbacks: [\"cloud/gpt-4o-mini\"]\n",
        local.base_url(),
        cloud.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "local/llava", "messages": user("[[error:400]]")})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "caller_fault");
    assert_eq!((calls(&local), calls(&cloud)), (1, 0), "a 400 is the request's: no fallback");
}
