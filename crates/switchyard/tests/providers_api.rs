//! `/api/providers` through the real binary: providers created, moved and deleted while the gateway serves,
//! every write checked as the file is (residency included), the file's providers read-only, secrets never
//! shown, the health of the others untouched by a write, and what the API wrote kept across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{admin, calls, client, mock, Gateway};
use reqwest::Method;
use serde_json::{json, Value};
use switchyard_mock::{Flavor, MockConfig, MockServer};

const ADMIN: &str = "sy-admin-providers-test";

/// A chat request, as `key` if given: (status, provider header, body).
async fn chat(c: &reqwest::Client, gw: &Gateway, model: &str, key: Option<&str>) -> (u16, Option<String>, Value) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20});
    let mut r = c.post(gw.url("/v1/chat/completions")).header("content-type", "application/json").body(serde_json::to_vec(&body).unwrap());
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let provider = resp.headers().get("x-switchyard-provider").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, provider, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null))
}

/// The walkthrough's body for a self-hosted OpenAI-compatible server (base URL without `/v1`).
fn vllm_body(base_url: &str, key_value: &str) -> Value {
    json!({"provider": "vllm-local",
           "keys": [{"name": "vllm-key-1", "value": key_value, "weight": 1.0, "models": []}],
           "network_config": {"base_url": base_url, "default_request_timeout_in_seconds": 60},
           "custom_provider_config": {"base_provider_type": "openai",
                                      "allowed_requests": {"chat_completion": true, "chat_completion_stream": true}}})
}

/// An OpenAI mock serving any model that accepts only `key`: any other is a 401 (which cools a key down).
async fn requiring(key: &str) -> MockServer {
    let mut cfg = MockConfig::new(Flavor::OpenAi);
    cfg.models.clear();
    cfg.require_key = Some(key.into());
    MockServer::start(cfg, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap()
}

async fn provider_health(c: &reqwest::Client, gw: &Gateway) -> Value {
    serde_json::from_slice(&c.get(gw.url("/api/health/providers")).send().await.unwrap().bytes().await.unwrap()).unwrap()
}

fn cooling(health: &Value, provider: &str, key: &str) -> Option<u64> {
    let p = health["providers"].as_array().unwrap().iter().find(|p| p["name"] == provider)?;
    p["keys"].as_array().unwrap().iter().find(|k| k["name"] == key)?["cooling_down_ms"].as_u64()
}

#[tokio::test]
async fn providers_are_created_moved_and_deleted_live_without_touching_the_others_health() {
    let cloud = requiring("sk-good").await;
    let local = mock(Flavor::Ollama).await;
    let (v1, v2) = (requiring("sk-vllm-from-env").await, requiring("sk-vllm-from-env").await);
    // The bad key weighs a hundred times the good one: were its cooldown forgotten, the next request
    // would almost surely try it again.
    let yaml = format!(
        "providers:\n  cloud:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{name: bad, value: sk-bad, weight: 100}}, {{name: good, value: sk-good, weight: 1}}]\n    tags: [cloud]\n  local:\n    type: ollama\n    base_url: \"{}\"\n    tags: [on-prem]\n",
        cloud.base_url(),
        local.base_url()
    );
    let env = [("SWITCHYARD_ADMIN_TOKEN", ADMIN), ("SY_TEST_VLLM_KEY", "sk-vllm-from-env")];
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &[], &env);
    let c = client();
    let providers = gw.url("/api/providers");

    // The file's bad key is refused once (a request may draw the good key first) and cools down.
    for _ in 0..20 {
        let (s, p, b) = chat(&c, &gw, "cloud/gpt-4o", None).await;
        assert_eq!((s, p.as_deref()), (200, Some("cloud")), "{b}");
        if cooling(&provider_health(&c, &gw).await, "cloud", "bad").is_some() {
            break;
        }
    }
    let health = provider_health(&c, &gw).await;
    assert!(cooling(&health, "cloud", "bad").is_some(), "{health}");
    // While it cools down, a request is one call upstream (a request that tried the bad key makes two).
    let before = calls(&cloud);
    let (s, _, b) = chat(&c, &gw, "cloud/gpt-4o", None).await;
    assert_eq!((s, calls(&cloud)), (200, before + 1), "{b}");

    // The admin token is required for every route.
    for (method, url) in
        [(Method::GET, providers.clone()), (Method::POST, providers.clone()), (Method::DELETE, format!("{providers}/cloud"))]
    {
        let (s, b) = admin(&c, method, url, None, Some(vllm_body(&v1.base_url(), "dummy"))).await;
        assert_eq!((s, b["error"]["code"].as_str()), (401, Some("admin_unauthorized")), "{b}");
    }

    // Created with the walkthrough's body, its key read from the gateway's environment: served at once.
    let v1_root = v1.base_url().trim_end_matches("/v1").to_string();
    let (s, b) = admin(&c, Method::POST, providers.clone(), Some(ADMIN), Some(vllm_body(&v1_root, "env.SY_TEST_VLLM_KEY"))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["name"].as_str(), b["type"].as_str(), b["source"].as_str()),
        (Some("vllm-local"), Some("openai-compatible"), Some("api"))
    );
    assert_eq!(b["network_config"]["base_url"].as_str(), Some(format!("{v1_root}/v1").as_str()), "no /v1/v1: {b}");
    let (s, p, b) = chat(&c, &gw, "vllm-local/meta-llama/Llama-3-8B-Instruct", None).await;
    assert_eq!((s, p.as_deref()), (200, Some("vllm-local")), "the env.NAME key was sent (the mock takes no other): {b}");
    let (s, b) = admin(&c, Method::POST, providers.clone(), Some(ADMIN), Some(vllm_body(&v1_root, "dummy"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("provider_exists")), "{b}");

    // Listed in Bifrost's shape with every secret masked; an env.NAME reference is shown as written.
    let (s, list) = admin(&c, Method::GET, providers.clone(), Some(ADMIN), None).await;
    assert_eq!((s, list["total"].as_u64()), (200, Some(3)), "{list}");
    let text = list.to_string();
    for secret in ["sk-bad", "sk-good", "sk-vllm-from-env"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let vllm = list["providers"].as_array().unwrap().iter().find(|p| p["name"] == "vllm-local").unwrap();
    assert_eq!((vllm["keys"][0]["value"].as_str(), vllm["keys"][0]["from_env"].as_bool()), (Some("env.SY_TEST_VLLM_KEY"), Some(true)));
    let file_cloud = list["providers"].as_array().unwrap().iter().find(|p| p["name"] == "cloud").unwrap();
    assert_eq!((file_cloud["source"].as_str(), file_cloud["keys"][0]["value"].as_str()), (Some("config_file"), Some("…ad")));

    // A new base URL (with /v1 this time): traffic moves, and the untouched provider's cooled-down key
    // stays cooled down.
    let (s, b) =
        admin(&c, Method::PUT, format!("{providers}/vllm-local"), Some(ADMIN), Some(vllm_body(&v2.base_url(), "env.SY_TEST_VLLM_KEY")))
            .await;
    assert_eq!(s, 200, "{b}");
    let (s, p, b) = chat(&c, &gw, "vllm-local/meta-llama/Llama-3-8B-Instruct", None).await;
    assert_eq!((s, p.as_deref()), (200, Some("vllm-local")), "{b}");
    assert_eq!((calls(&v1), calls(&v2)), (1, 1), "the request went to the new base URL");
    let health = provider_health(&c, &gw).await;
    assert!(cooling(&health, "cloud", "bad").is_some(), "the write reset the cloud's key cooldown: {health}");
    let before = calls(&cloud);
    for _ in 0..3 {
        let (s, _, b) = chat(&c, &gw, "cloud/gpt-4o", None).await;
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(calls(&cloud), before + 3, "the cooled-down key was tried again after a write");

    // The file's providers belong to the file.
    let mut over_file = vllm_body(&v1_root, "dummy");
    over_file.as_object_mut().unwrap().remove("provider");
    let (s, b) = admin(&c, Method::PUT, format!("{providers}/cloud"), Some(ADMIN), Some(over_file)).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("defined_in_config_file")), "{b}");
    let (s, b) = admin(&c, Method::DELETE, format!("{providers}/local"), Some(ADMIN), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("defined_in_config_file")), "{b}");

    // Deleted: its models are gone at once.
    let (s, b) = admin(&c, Method::DELETE, format!("{providers}/vllm-local"), Some(ADMIN), None).await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = chat(&c, &gw, "vllm-local/meta-llama/Llama-3-8B-Instruct", None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("model_not_found")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("\"vllm-local\" is not a configured provider"), "{b}");
    assert_eq!(calls(&v2), 1);
    for method in [Method::GET, Method::DELETE] {
        let (s, b) = admin(&c, method, format!("{providers}/vllm-local"), Some(ADMIN), None).await;
        assert_eq!((s, b["error"]["code"].as_str()), (404, Some("not_found")), "{b}");
    }
}

#[tokio::test]
async fn invalid_bodies_are_refused_with_the_path_at_fault_and_change_nothing() {
    let local = mock(Flavor::Ollama).await;
    let yaml = format!("providers:\n  local:\n    type: ollama\n    base_url: \"{}\"\n", local.base_url());
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let providers = gw.url("/api/providers");
    let cases = [
        (
            json!({"provider": "x", "type": "vllm", "network_config": {"base_url": "ftp://x"}}),
            "invalid_provider",
            "network_config.base_url",
        ),
        (json!({"provider": "x", "type": "vllm", "bogus": 1}), "invalid_request", "bogus"),
        (
            json!({"provider": "x", "custom_provider_config": {"base_provider_type": "replicate"}}),
            "invalid_provider",
            "custom_provider_config.base_provider_type",
        ),
        (json!({"provider": "x", "type": "openai", "keys": [{"value": "env.SY_TEST_NOT_SET"}]}), "invalid_provider", "keys[0].value"),
        (json!({"provider": "x", "type": "openai"}), "invalid_provider", "keys"),
        (json!({"provider": "not a name", "type": "vllm"}), "invalid_provider", "provider"),
        (
            json!({"provider": "x", "type": "vllm", "custom_provider_config": {"base_provider_type": "openai", "allowed_requests": {"chat_completion": false}}}),
            "invalid_provider",
            "custom_provider_config.allowed_requests.chat_completion",
        ),
        (
            json!({"provider": "x", "type": "vllm", "network_config": {"default_request_timeout_in_seconds": "soon"}}),
            "invalid_request",
            "network_config.default_request_timeout_in_seconds",
        ),
    ];
    for (body, code, path) in cases {
        let (s, b) = admin(&c, Method::POST, providers.clone(), Some(ADMIN), Some(body.clone())).await;
        assert_eq!((s, b["error"]["code"].as_str()), (400, Some(code)), "{body}: {b}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(path), "{body}: the message names {path}: {message}");
        if code == "invalid_provider" {
            assert!(b["error"]["issues"].as_array().unwrap().iter().any(|i| i["path"] == path), "{b}");
        }
    }
    let (_, list) = admin(&c, Method::GET, providers, Some(ADMIN), None).await;
    assert_eq!(list["total"], 1, "{list}");
    assert!(gw.terminate().success());
}

#[tokio::test]
async fn a_provider_write_that_would_let_a_restricted_key_reach_the_cloud_is_refused() {
    let (local, v) = (mock(Flavor::Ollama).await, mock(Flavor::OpenAi).await);
    let yaml = format!("providers:\n  local:\n    type: ollama\n    base_url: \"{}\"\n    tags: [on-prem]\n", local.base_url());
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let vllm = gw.url("/api/providers/vllm-local");
    let mut body = vllm_body(&v.base_url(), "dummy");
    body["tags"] = json!(["on-prem"]);
    let (s, b) = admin(&c, Method::PUT, vllm.clone(), Some(ADMIN), Some(body.clone())).await;
    assert_eq!(s, 200, "{b}");
    let key = json!({"name": "sensitive", "residency": {"allowed_tags": ["on-prem"]}, "provider_configs": [{"provider": "vllm-local", "weight": 1.0}]});
    let (s, b) = admin(&c, Method::PUT, gw.url("/api/governance/virtual-keys/vk-sensitive"), Some(ADMIN), Some(key)).await;
    assert_eq!(s, 200, "{b}");
    let (s, p, b) = chat(&c, &gw, "llama", Some("vk-sensitive")).await;
    assert_eq!((s, p.as_deref()), (200, Some("vllm-local")), "{b}");

    // Re-tagged as a cloud: the key could then reach a provider its residency forbids.
    body["tags"] = json!(["cloud"]);
    let (s, b) = admin(&c, Method::PUT, vllm.clone(), Some(ADMIN), Some(body)).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_provider")), "{b}");
    let issue = &b["error"]["issues"][0];
    assert_eq!(issue["path"], "governance.virtual_keys[0].provider_configs[0]", "{b}");
    assert!(issue["message"].as_str().unwrap().contains("tagged [cloud], which the residency of virtual key \"sensitive\" forbids"), "{b}");
    // Nor may the provider the key names disappear under it.
    let (s, b) = admin(&c, Method::DELETE, vllm, Some(ADMIN), None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_provider")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("vllm-local"), "{b}");
    // Nothing changed: still on-prem, still served.
    let (s, p, b) = chat(&c, &gw, "llama", Some("vk-sensitive")).await;
    assert_eq!((s, p.as_deref()), (200, Some("vllm-local")), "{b}");
    let (_, shown) = admin(&c, Method::GET, gw.url("/api/providers/vllm-local"), Some(ADMIN), None).await;
    assert_eq!(shown["tags"], json!(["on-prem"]), "{shown}");
}

#[tokio::test]
async fn with_a_data_directory_api_providers_and_the_keys_naming_them_survive_a_restart() {
    let (local, v) = (mock(Flavor::Ollama).await, requiring("sk-literal-vllm-key").await);
    let yaml = format!("providers:\n  local:\n    type: ollama\n    base_url: \"{}\"\n", local.base_url());
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("state");
    let args = ["--data-dir", dir.to_str().unwrap()];
    let env = [("SWITCHYARD_ADMIN_TOKEN", ADMIN)];
    let c = client();
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &args, &env);
    let (s, b) =
        admin(&c, Method::POST, gw.url("/api/providers"), Some(ADMIN), Some(vllm_body(&v.base_url(), "sk-literal-vllm-key"))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["keys"][0]["value"].as_str(), Some("…-key"), "{b}");
    let key = json!({"name": "hybrid", "provider_configs": [{"provider": "vllm-local", "weight": 1.0}]});
    let (s, b) = admin(&c, Method::PUT, gw.url("/api/governance/virtual-keys/vk-hybrid"), Some(ADMIN), Some(key)).await;
    assert_eq!(s, 200, "{b}");
    assert!(gw.terminate().success());

    // The same directory: the provider is there before the key that names it is checked.
    let (gw, logs) = Gateway::start_logged(Some(&yaml), &args, &env);
    let (s, p, b) = chat(&c, &gw, "llama", Some("vk-hybrid")).await;
    assert_eq!((s, p.as_deref()), (200, Some("vllm-local")), "the stored key was sent: {b}; log: {}", logs.text());
    let (s, b) = admin(&c, Method::GET, gw.url("/api/providers/vllm-local"), Some(ADMIN), None).await;
    assert_eq!((s, b["source"].as_str(), b["keys"][0]["value"].as_str()), (200, Some("api"), Some("…-key")), "{b}");
    // An update that leaves the key's value out keeps it.
    let mut body = vllm_body(&v.base_url(), "unused");
    body["keys"][0].as_object_mut().unwrap().remove("value");
    body["tags"] = json!(["on-prem"]);
    let (s, b) = admin(&c, Method::PUT, gw.url("/api/providers/vllm-local"), Some(ADMIN), Some(body)).await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = chat(&c, &gw, "llama", Some("vk-hybrid")).await;
    assert_eq!(s, 200, "the kept key was sent: {b}");
}
