//! Virtual keys, residency, budgets and rate limits through the real binary: who may call, where their
//! requests may go, and how much they may use, held exactly under concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{admin, calls, check, client, mock, Gateway};
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockServer};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "caption this frame"}], "max_tokens": 50})
}

async fn post_as(c: &reqwest::Client, url: &str, key: Option<(&str, &str)>, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = c.post(url).header("content-type", "application/json").body(serde_json::to_vec(body).unwrap());
    if let Some((h, v)) = key {
        r = r.header(h, v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn bearer(v: &str) -> Option<(&'static str, &str)> {
    Some(("authorization", v))
}

/// An on-prem Ollama mock and a cloud OpenAI mock, and the providers naming them with their tags.
async fn onprem_and_cloud() -> (MockServer, MockServer, String) {
    let local = mock(Flavor::Ollama).await;
    let cloud = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "providers:\n  ollama:\n    base_url: \"{}\"\n    tags: [on-prem]\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: sk-cloud}}]\n    tags: [cloud]\n",
        local.base_url(),
        cloud.base_url()
    );
    (local, cloud, yaml)
}

#[tokio::test]
async fn once_keys_exist_inference_needs_one_presented_as_any_sdk_does() {
    let (_local, _cloud, providers) = onprem_and_cloud().await;
    let yaml = format!(
        "{providers}governance:\n  virtual_keys:\n    - {{id: vk-free, name: free}}\n    - {{id: vk-off, name: off, is_active: false}}\n    - {{id: ops, name: ops, value: sk-sy-secret}}\n"
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let (s, _, b) = post_as(&c, &url, None, &chat("ollama/llava")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("missing_virtual_key")), "{b}");
    let (s, _, b) = post_as(&c, &url, bearer("Bearer nope"), &chat("ollama/llava")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("invalid_virtual_key")), "{b}");
    let (s, _, b) = post_as(&c, &url, bearer("Bearer vk-off"), &chat("ollama/llava")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("virtual_key_inactive")), "{b}");
    // The id is the value when none is given (scripts written for Bifrost); every header an SDK uses works.
    for key in [("authorization", "Bearer vk-free"), ("x-api-key", "vk-free"), ("x-bf-vk", "vk-free"), ("x-switchyard-vk", "sk-sy-secret")]
    {
        let (s, _, b) = post_as(&c, &url, Some(key), &chat("ollama/llava")).await;
        assert_eq!(s, 200, "{key:?}: {b}");
    }
    // An id with its own value is not a value.
    let (s, _, _) = post_as(&c, &url, bearer("Bearer ops"), &chat("ollama/llava")).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn a_residency_restricted_key_never_reaches_the_cloud() {
    let (local, cloud, providers) = onprem_and_cloud().await;
    let yaml = format!(
        "{providers}governance:\n  virtual_keys:\n    - id: vk-sensitive\n      name: sensitive\n      residency: {{allowed_tags: [on-prem]}}\n    - {{id: vk-synthetic, name: synthetic}}\n"
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let key = bearer("Bearer vk-sensitive");
    let (s, h, b) = post_as(&c, &url, key, &chat("ollama/llava")).await;
    assert_eq!((s, h.get("x-switchyard-provider").and_then(|v| v.to_str().ok())), (200, Some("ollama")), "{b}");
    // Asking for the cloud directly: refused before anything is sent.
    let (s, _, b) = post_as(&c, &url, key, &chat("openai/gpt-4o")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("residency_violation")), "{b}");
    // The local model failing, with the request body naming a cloud fallback: the failure, never the cloud.
    local.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    let mut body = chat("ollama/llava");
    body["fallbacks"] = json!(["openai/gpt-4o"]);
    let (s, _, b) = post_as(&c, &url, key, &body).await;
    assert!(s >= 500, "{s} {b}");
    assert_eq!(calls(&cloud), 0, "a restricted key's request reached the cloud");
    // Another key may fall back.
    let (s, h, _) = post_as(&c, &url, bearer("Bearer vk-synthetic"), &body).await;
    assert_eq!((s, h.get("x-switchyard-provider").and_then(|v| v.to_str().ok())), (200, Some("openai")));
    // The split an auditor is shown: requests and tokens per key by provider and its tags.
    let metrics = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = |key: &str, provider: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("switchyard_virtual_key_requests_total")
                    && l.contains(&format!("virtual_key=\"{key}\""))
                    && l.contains(&format!("provider=\"{provider}\""))
            })
            .map(str::to_string)
    };
    assert!(line("sensitive", "ollama").is_some_and(|l| l.contains("provider_tags=\"on-prem\"")), "{metrics}");
    assert!(line("sensitive", "openai").is_none(), "{metrics}");
    assert!(line("synthetic", "openai").is_some_and(|l| l.contains("provider_tags=\"cloud\"")), "{metrics}");
    // /v1/models shows a key only what it may reach.
    let r = c.get(gw.url("/v1/models")).header("authorization", "Bearer vk-sensitive").send().await.unwrap();
    let models: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(models["data"].as_array().unwrap().iter().all(|m| m["id"].as_str().unwrap().starts_with("ollama/")), "{models}");
}

#[test]
fn a_route_that_would_take_a_restricted_key_to_the_cloud_is_refused_at_load() {
    let yaml = "providers:\n  ollama: {base_url: \"http://127.0.0.1:1\", tags: [on-prem]}\n  openai: {keys: [{value: k}], tags: [cloud]}\nroutes:\n  - models: [ollama/qwen2.5-vl:7b]\n    fallbacks: [openai/gpt-4o]\ngovernance:\n  virtual_keys:\n    - {id: vk-sensitive, name: sensitive, residency: {allowed_tags: [on-prem]}}\n";
    let (ok, _, err) = check(yaml, &[]);
    assert!(!ok);
    assert!(
        err.contains("governance.virtual_keys[0]: virtual key \"sensitive\" (only providers tagged on-prem) could reach provider openai (tagged [cloud]) through the route for ollama/qwen2.5-vl:7b: fallbacks[0] openai/gpt-4o"),
        "{err}"
    );
    // The key's own provider configs leave the cloud out explicitly: accepted, and `--explain` says so.
    let ok_yaml = yaml
        .replace("residency: {allowed_tags: [on-prem]}}", "residency: {allowed_tags: [on-prem]}, provider_configs: [{provider: ollama}]}");
    let (ok, out, err) = check(&ok_yaml, &[]);
    assert!(ok, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, &ok_yaml).unwrap();
    let explained =
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard")).args(["check", "--explain", "--config"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&explained.stdout);
    assert!(explained.status.success(), "{text}");
    assert!(text.contains("virtual key \"sensitive\": only providers tagged on-prem"), "{text}");
    assert!(text.contains("reaches ollama [on-prem] via provider_configs[0]"), "{text}");
    assert!(text.contains("never   openai [cloud]: residency forbids it"), "{text}");
    assert!(!out.contains("vk-sensitive"), "a key's id (which may be its value) is never printed: {out}");
}

/// One request's cost on a fresh gateway, for a budget that allows an exact number of them.
async fn cost_of_one(providers: &str, c: &reqwest::Client) -> f64 {
    let gw = Gateway::start(providers);
    let (s, h, b) = post_as(c, &gw.url("/v1/chat/completions"), None, &chat("openai/gpt-4o")).await;
    assert_eq!(s, 200, "{b}");
    h.get("x-switchyard-cost").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("a priced answer carries its cost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_against_a_budget_for_ten_get_exactly_ten() {
    let cloud = mock(Flavor::OpenAi).await;
    cloud.set_behavior(Behavior { latency_ms: 20, ..Behavior::default() });
    // A price high enough that the cost is far from rounding; the request's bound (50 output tokens) is
    // much more than what the mock produces, so the budget's last request only fits its real cost.
    let providers = format!(
        "providers:\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: sk-cloud}}]\npricing:\n  \"openai/gpt-4o\": {{input: 1000, output: 5000}}\n",
        cloud.base_url()
    );
    let c = client();
    let one = cost_of_one(&providers, &c).await;
    let yaml = format!(
        "{providers}governance:\n  virtual_keys:\n    - {{id: vk-station-7, name: station-7, budget: {{max_limit: {}}}}}\n",
        one * 10.0
    );
    let gw = Gateway::start(&yaml);
    let url = gw.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { post_as(&c, &url, bearer("Bearer vk-station-7"), &chat("openai/gpt-4o")).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (s, _, b) = t.await.unwrap();
        match s {
            200 => ok += 1,
            402 => assert_eq!(b["error"]["code"], "budget_exceeded", "{b}"),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(ok, 10, "the budget allows exactly ten requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_limit_of_ten_per_minute_under_a_hundred_concurrent_requests_serves_ten() {
    let (_local, _cloud, providers) = onprem_and_cloud().await;
    let yaml = format!(
        "{providers}governance:\n  virtual_keys:\n    - id: vk-dev\n      name: dev\n      rate_limit: {{request_max_limit: 10, request_reset_duration: 1m}}\n"
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { post_as(&c, &url, bearer("Bearer vk-dev"), &chat("ollama/llava")).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (s, h, b) = t.await.unwrap();
        match s {
            200 => ok += 1,
            429 => {
                assert_eq!(b["error"]["code"], "rate_limit_exceeded", "{b}");
                let after: u64 = h.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
                assert!((1..=60).contains(&after), "retry-after {after}");
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(ok, 10);
}

#[tokio::test]
async fn a_keys_provider_configs_choose_by_weight_and_fail_over() {
    let (local, cloud, providers) = onprem_and_cloud().await;
    let yaml = format!(
        "{providers}governance:\n  virtual_keys:\n    - id: vk-hybrid\n      name: hybrid\n      provider_configs:\n        - {{provider: ollama, weight: 0.9}}\n        - {{provider: openai, weight: 0.1, allowed_models: [llava, gpt-4o]}}\n"
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let key = bearer("Bearer vk-hybrid");
    let n = 200;
    for _ in 0..n {
        let (s, _, b) = post_as(&c, &url, key, &chat("llava")).await;
        assert_eq!(s, 200, "{b}");
    }
    let local_share = calls(&local) as f64 / n as f64;
    assert!((0.8..=0.97).contains(&local_share), "ollama served {local_share} of a 0.9 weight");
    // Not allowed: a model outside the configs, a provider the key has no config for.
    let (s, _, b) = post_as(&c, &url, key, &chat("openai/o3")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("model_not_allowed")), "{b}");
    // vLLM down (here: Ollama), the other config serves.
    local.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![503], ..Behavior::default() });
    let before = calls(&cloud);
    for _ in 0..5 {
        let (s, h, b) = post_as(&c, &url, key, &chat("llava")).await;
        assert_eq!((s, h.get("x-switchyard-provider").and_then(|v| v.to_str().ok())), (200, Some("openai")), "{b}");
    }
    assert_eq!(calls(&cloud) - before, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_at_its_concurrency_limit_is_told_to_come_back() {
    let (local, _cloud, providers) = onprem_and_cloud().await;
    local.set_behavior(Behavior { latency_ms: 1500, ..Behavior::default() });
    let yaml = format!("{providers}governance:\n  virtual_keys:\n    - {{id: vk-one, name: one, max_concurrent: 1}}\n");
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let slow = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post_as(&c, &url, bearer("Bearer vk-one"), &chat("ollama/llava")).await.0 }
    });
    // The chat request itself, not the gateway's start-up model-list request.
    assert!(local.wait_for(|s| s.by_path.get("/api/chat").copied().unwrap_or(0) >= 1, Duration::from_secs(10)).await);
    let (s, h, b) = post_as(&c, &url, bearer("Bearer vk-one"), &chat("ollama/llava")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")), "{b}");
    assert!(h.get("retry-after").is_some());
    assert_eq!(slow.await.unwrap(), 200);
    // Its place is given back when it ends.
    local.set_behavior(Behavior::default());
    let (s, _, b) = post_as(&c, &url, bearer("Bearer vk-one"), &chat("ollama/llava")).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn a_stream_the_client_cuts_is_billed_for_what_it_generated() {
    let cloud = mock(Flavor::OpenAi).await;
    cloud.set_behavior(Behavior { chunk_delay_ms: 300, ..Behavior::default() });
    let yaml = format!(
        "providers:\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: sk-cloud}}]\npricing:\n  \"openai/gpt-4o\": {{input: 1000, output: 5000}}\ngovernance:\n  virtual_keys:\n    - {{id: vk-s, name: streamer, budget: {{max_limit: 1000}}}}\n",
        cloud.base_url()
    );
    let (gw, logs) = Gateway::start_logged(Some(&yaml), &[], &[]);
    let c = client();
    let body = json!({"model": "openai/gpt-4o", "stream": true, "messages": [{"role": "user", "content": "one two three four five six seven eight"}]});
    let mut resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", "Bearer vk-s")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The first content, then the client goes away.
    let mut seen = String::new();
    while !seen.contains("\"content\"") {
        seen.push_str(&String::from_utf8_lossy(&resp.chunk().await.unwrap().unwrap()));
    }
    drop(resp);
    let text = logs.wait_until("the stream's request line", |t| t.contains("ended=client_closed")).await;
    let line = text.lines().find(|l| l.contains("ended=client_closed")).unwrap();
    let cost: f64 = line.split("cost_usd=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    assert!(cost > 0.0, "the cut stream was not billed: {line}");
    assert!(line.contains("virtual_key=streamer"), "{line}");
}

const ADMIN: &str = "sy-admin-test-token";

#[tokio::test]
async fn the_management_api_creates_keys_live_checks_every_write_and_never_shows_a_value_twice() {
    use reqwest::Method;
    let (_local, cloud, providers) = onprem_and_cloud().await;
    let yaml = format!("{providers}governance:\n  virtual_keys:\n    - {{id: vk-file, name: from-file}}\n");
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let keys = gw.url("/api/governance/virtual-keys");
    // The admin token is required.
    for token in [None, Some("wrong")] {
        let (s, b) = admin(&c, Method::GET, keys.clone(), token, None).await;
        assert_eq!((s, b["error"]["code"].as_str()), (401, Some("admin_unauthorized")), "{b}");
    }
    // Bifrost's seed script: PUT with a chosen id and no value, then the id is the SDK's api_key.
    let body = json!({"name": "free", "provider_configs": [{"provider": "ollama", "weight": 1.0}], "budget": {"max_limit": 5, "reset_duration": "1d"}});
    let (s, b) = admin(&c, Method::PUT, format!("{keys}/vk-free"), Some(ADMIN), Some(body)).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["virtual_key"].get("value").is_none(), "{b}");
    let url = gw.url("/v1/chat/completions");
    let (s, h, b) = post_as(&c, &url, bearer("Bearer vk-free"), &chat("llava")).await;
    assert_eq!((s, h.get("x-switchyard-provider").and_then(|v| v.to_str().ok())), (200, Some("ollama")), "{b}");
    // POST: the gateway makes the value and shows it this once.
    let (s, b) = admin(
        &c,
        Method::POST,
        keys.clone(),
        Some(ADMIN),
        Some(json!({"name": "premium", "provider_configs": [{"provider": "openai", "allowed_models": ["gpt-4o"]}]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let value = b["virtual_key"]["value"].as_str().unwrap().to_string();
    assert!(value.starts_with("sk-sy-"), "{b}");
    let (s, _, b) = post_as(&c, &url, bearer(&format!("Bearer {value}")), &chat("gpt-4o")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(calls(&cloud), 1);
    // The list: no value anywhere, the id of a key whose id is its value masked, the source of each.
    let (s, list) = admin(&c, Method::GET, keys.clone(), Some(ADMIN), None).await;
    assert_eq!(s, 200);
    let text = list.to_string();
    assert!(!text.contains(&value) && !text.contains("vk-free\"") && !text.contains("\"vk-file\""), "{text}");
    assert_eq!(list["total_count"], 3, "{list}");
    let free = list["virtual_keys"].as_array().unwrap().iter().find(|k| k["name"] == "free").unwrap();
    assert_eq!((free["source"].as_str(), free["id"].as_str()), (Some("api"), Some("…ee")), "{free}");
    assert!(free["usage"][0]["used"].as_f64().is_some(), "{free}");
    // A write that breaks the configuration is refused with its path, and nothing changes.
    let (s, b) = admin(
        &c,
        Method::PUT,
        format!("{keys}/vk-free"),
        Some(ADMIN),
        Some(json!({"name": "free", "provider_configs": [{"provider": "nowhere"}]})),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_governance")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("provider \"nowhere\" is not configured"), "{b}");
    let bad = json!({"name": "leaky", "residency": {"allowed_tags": ["on-prem"]}, "provider_configs": [{"provider": "openai"}]});
    let (s, b) = admin(&c, Method::PUT, format!("{keys}/vk-leaky"), Some(ADMIN), Some(bad)).await;
    assert_eq!(s, 400, "a residency violation must be refused: {b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("tagged [cloud], which the residency of virtual key \"leaky\" forbids"),
        "{b}"
    );
    let (s, _, _) = post_as(&c, &url, bearer("Bearer vk-free"), &chat("llava")).await;
    assert_eq!(s, 200, "the refused write changed the live key");
    // The file's keys belong to the file.
    let (s, b) = admin(&c, Method::PUT, format!("{keys}/vk-file"), Some(ADMIN), Some(json!({"name": "x"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("defined_in_config_file")), "{b}");
    // Teams and customers: created, read back by id, a key joins the team, a missing customer is refused.
    let (s, b) = admin(&c, Method::PUT, gw.url("/api/governance/customers/acme"), Some(ADMIN), Some(json!({"name": "ACME"}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) =
        admin(&c, Method::PUT, gw.url("/api/governance/teams/vision"), Some(ADMIN), Some(json!({"name": "Vision", "customer_id": "acme"})))
            .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = admin(&c, Method::GET, gw.url("/api/governance/teams/vision"), Some(ADMIN), None).await;
    assert_eq!((s, b["team"]["customer_id"].as_str(), b["team"]["source"].as_str()), (200, Some("acme"), Some("api")), "{b}");
    let (s, b) = admin(&c, Method::GET, gw.url("/api/governance/customers/nobody"), Some(ADMIN), None).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) =
        admin(&c, Method::PUT, gw.url("/api/governance/teams/orphans"), Some(ADMIN), Some(json!({"name": "O", "customer_id": "nobody"})))
            .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_governance")), "{b}");
    // Deleting a key revokes it at once.
    let (s, _) = admin(&c, Method::DELETE, format!("{keys}/vk-free"), Some(ADMIN), None).await;
    assert_eq!(s, 200);
    let (s, _, b) = post_as(&c, &url, bearer("Bearer vk-free"), &chat("llava")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("invalid_virtual_key")), "{b}");
}

#[tokio::test]
async fn changing_a_keys_budget_through_the_api_keeps_what_it_used() {
    use reqwest::Method;
    let (_local, _cloud, providers) = onprem_and_cloud().await;
    let yaml = format!("{providers}pricing:\n  ollama: {{input: 1000000, output: 1000000}}\n");
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let key = gw.url("/api/governance/virtual-keys/vk-k");
    let (s, b) = admin(&c, Method::PUT, key.clone(), Some(ADMIN), Some(json!({"name": "k", "budget": {"max_limit": 1000}}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, h, b) = post_as(&c, &gw.url("/v1/chat/completions"), bearer("Bearer vk-k"), &chat("ollama/llava")).await;
    assert_eq!(s, 200, "{b}");
    let cost: f64 = h.get("x-switchyard-cost").unwrap().to_str().unwrap().parse().unwrap();
    let (_, b) = admin(&c, Method::GET, key.clone(), Some(ADMIN), None).await;
    assert!((b["virtual_key"]["usage"][0]["used"].as_f64().unwrap() - cost).abs() < 1e-9, "{b}");
    // Lowered below what was used: the next request is refused, the use is still there.
    let (s, _) = admin(&c, Method::PUT, key.clone(), Some(ADMIN), Some(json!({"name": "k", "budget": {"max_limit": cost / 2.0}}))).await;
    assert_eq!(s, 200);
    let (_, b) = admin(&c, Method::GET, key, Some(ADMIN), None).await;
    assert!((b["virtual_key"]["usage"][0]["used"].as_f64().unwrap() - cost).abs() < 1e-9, "{b}");
    let (s, _, b) = post_as(&c, &gw.url("/v1/chat/completions"), bearer("Bearer vk-k"), &chat("ollama/llava")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (402, Some("budget_exceeded")), "{b}");
}

#[tokio::test]
async fn with_a_data_directory_keys_usage_and_the_admin_token_survive_a_restart() {
    use reqwest::Method;
    let (_local, _cloud, providers) = onprem_and_cloud().await;
    let yaml = format!("{providers}pricing:\n  ollama: {{input: 1000000, output: 1000000}}\n");
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("state");
    let args = ["--data-dir", dir.to_str().unwrap()];
    let (gw, logs) = Gateway::start_logged(Some(&yaml), &args, &[]);
    // No token was set: one was made, kept in the data directory (owner-only), and logged once.
    let token = std::fs::read_to_string(dir.join("admin-token")).unwrap();
    // (Standard error is read by a thread: waited for, not just looked at.)
    logs.wait_until("the token's line", |t| t.contains(&format!("admin_token={token}"))).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(dir.join("admin-token")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let c = client();
    let key = gw.url("/api/governance/virtual-keys/vk-line-3");
    let (s, b) =
        admin(&c, Method::PUT, key, Some(&token), Some(json!({"name": "line-3", "budget": {"max_limit": 1000, "reset_duration": "1d"}})))
            .await;
    assert_eq!(s, 200, "{b}");
    let (s, h, b) = post_as(&c, &gw.url("/v1/chat/completions"), bearer("Bearer vk-line-3"), &chat("ollama/llava")).await;
    assert_eq!(s, 200, "{b}");
    let cost: f64 = h.get("x-switchyard-cost").unwrap().to_str().unwrap().parse().unwrap();
    assert!(gw.terminate().success());
    // The request is in the usage ledger, written in a batch by shutdown at the latest.
    let store = switchyard_store::SqliteStore::open(dir.join("switchyard.db")).await.unwrap();
    let ledger = store.usage(Some("vk-line-3"), 0, i64::MAX).await.unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert!((ledger[0].cost_usd - cost).abs() < 1e-9 && ledger[0].completion_tokens > 0 && ledger[0].provider == "ollama", "{ledger:?}");
    drop(store);

    // The same directory: the key, its use in the window, and the token are all still there.
    let (gw, logs) = Gateway::start_logged(Some(&yaml), &args, &[]);
    let (s, _, b) = post_as(&c, &gw.url("/v1/chat/completions"), bearer("Bearer vk-line-3"), &chat("ollama/llava")).await;
    assert_eq!(s, 200, "{b}");
    // The request's line comes after any start line, so by then a token line would be there.
    let text = logs.wait_until("the request line", |t| t.contains("switchyard::request")).await;
    assert!(!text.contains("admin_token="), "a kept token is not shown again: {text}");
    let (s, b) = admin(&c, Method::GET, gw.url("/api/governance/virtual-keys/vk-line-3"), Some(&token), None).await;
    assert_eq!(s, 200, "{b}");
    let used = b["virtual_key"]["usage"][0]["used"].as_f64().unwrap();
    assert!((used - 2.0 * cost).abs() < 1e-9, "the first run's use was not resumed: {used} vs 2 × {cost}: {b}");
}

#[tokio::test]
async fn a_key_put_without_name_or_value_is_never_shown_by_its_id() {
    use reqwest::Method;
    let (_local, _cloud, providers) = onprem_and_cloud().await;
    let (gw, logs) = Gateway::start_logged(Some(&providers), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    // As a Bifrost script writes it: the id is the value the SDK will send, and there is no name.
    let secret = "vk-unnamed-7f3a9c";
    let (s, b) = admin(
        &c,
        Method::PUT,
        gw.url(&format!("/api/governance/virtual-keys/{secret}")),
        Some(ADMIN),
        Some(json!({"provider_configs": [{"provider": "ollama", "weight": 1.0}]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let name = b["virtual_key"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("key-") && !name.contains(secret), "named by a handle: {b}");
    let (s, _, b) = post_as(&c, &gw.url("/v1/chat/completions"), bearer(&format!("Bearer {secret}")), &chat("ollama/llava")).await;
    assert_eq!(s, 200, "the id still works as the key: {b}");
    let (_, list) = admin(&c, Method::GET, gw.url("/api/governance/virtual-keys"), Some(ADMIN), None).await;
    let metrics = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    logs.wait_until("the request's log line", |t| t.contains("switchyard::request")).await;
    for (what, text) in [("the key list", list.to_string()), ("the metrics", metrics), ("the log", logs.text())] {
        assert!(!text.contains(secret), "{what} shows the key's id, which is its value: {text}");
    }
}

#[tokio::test]
async fn a_key_changed_through_the_api_without_its_value_keeps_it() {
    use reqwest::Method;
    let (_local, _cloud, providers) = onprem_and_cloud().await;
    let (gw, _logs) = Gateway::start_logged(Some(&providers), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let keys = gw.url("/api/governance/virtual-keys");
    let (s, b) = admin(&c, Method::POST, keys.clone(), Some(ADMIN), Some(json!({"name": "edited", "budget": {"max_limit": 5}}))).await;
    assert_eq!(s, 200, "{b}");
    let (id, value) = (b["virtual_key"]["id"].as_str().unwrap().to_string(), b["virtual_key"]["value"].as_str().unwrap().to_string());
    // What the web UI's edit sends: the key as GET showed it (no value), with a setting changed.
    let (_, mut shown) = admin(&c, Method::GET, format!("{keys}/{id}"), Some(ADMIN), None).await;
    shown["virtual_key"]["budget"]["max_limit"] = json!(7);
    let (s, b) = admin(&c, Method::PUT, format!("{keys}/{id}"), Some(ADMIN), Some(shown["virtual_key"].clone())).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["virtual_key"]["budget"]["max_limit"], json!(7.0));
    assert!(b["virtual_key"].get("value").is_none(), "never shown again: {b}");
    let url = gw.url("/v1/chat/completions");
    let (s, _, b) = post_as(&c, &url, bearer(&format!("Bearer {value}")), &chat("ollama/llava")).await;
    assert_eq!(s, 200, "the callers' value still works: {b}");
    let (s, _, b) = post_as(&c, &url, bearer(&format!("Bearer {id}")), &chat("ollama/llava")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("invalid_virtual_key")), "the id did not become the value: {b}");
    // A new id without a value is still Bifrost's: the id is the value.
    let (s, _) = admin(&c, Method::PUT, format!("{keys}/vk-seeded"), Some(ADMIN), Some(json!({"name": "seeded"}))).await;
    assert_eq!(s, 200);
    let (s, _, b) = post_as(&c, &url, bearer("Bearer vk-seeded"), &chat("ollama/llava")).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn the_residency_report_of_the_api_is_the_one_check_explain_prints() {
    use reqwest::Method;
    let (_local, _cloud, providers) = onprem_and_cloud().await;
    let yaml = format!(
        "{providers}routes:\n  - models: [ollama/llava]\n    fallbacks: [openai/gpt-4o]\ngovernance:\n  virtual_keys:\n    - {{id: vk-onprem, name: onprem, value: sk-onprem, residency: {{allowed_tags: [on-prem]}}, provider_configs: [{{provider: ollama}}]}}\n    - {{id: vk-any, name: any}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let explained =
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard")).args(["check", "--explain", "--config"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&explained.stdout).into_owned();
    assert!(explained.status.success(), "{text}");

    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let (s, b) = admin(&c, Method::GET, gw.url("/api/residency"), None, None).await;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("admin_unauthorized")), "{b}");
    let (s, report) = admin(&c, Method::GET, gw.url("/api/residency"), Some(ADMIN), None).await;
    assert_eq!(s, 200, "{report}");
    let keys = report["virtual_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{report}");
    // Every line `check --explain` prints for a key, rebuilt from the JSON: the same facts.
    for k in keys {
        let mut lines = vec![format!("virtual key \"{}\": {}", k["name"].as_str().unwrap(), k["rules"].as_str().unwrap())];
        for p in k["providers"].as_array().unwrap() {
            let tags: Vec<&str> = p["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
            let (name, tags) = (p["provider"].as_str().unwrap(), tags.join(", "));
            lines.push(if p["reached"].as_bool().unwrap() {
                let via: Vec<&str> = p["via"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
                format!("  reaches {name} [{tags}] via {}", via.join("; "))
            } else {
                format!("  never   {name} [{tags}]: {}", p["why_not"].as_str().unwrap())
            });
        }
        for l in lines {
            assert!(text.lines().any(|t| t.trim_start() == l.trim_start() && t.ends_with(&l)), "{l:?} is not in:\n{text}");
        }
    }
    let onprem = keys.iter().find(|k| k["name"] == "onprem").unwrap();
    assert_eq!((onprem["restricted"].as_bool(), onprem["id"].as_str()), (Some(true), Some("vk-onprem")));
    // A key whose id is its value is never shown by it.
    let any = keys.iter().find(|k| k["name"] == "any").unwrap();
    assert!(any["id"].as_str().unwrap().starts_with('…'), "{any}");
    assert!(!report.to_string().contains("vk-any"), "{report}");

    // A key the API writes is in the report at once, against the providers in force.
    let (s, b) = admin(
        &c,
        Method::POST,
        gw.url("/api/governance/virtual-keys"),
        Some(ADMIN),
        Some(json!({"name": "cloudless", "residency": {"denied_tags": ["cloud"]}, "provider_configs": [{"provider": "ollama"}]})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, report) = admin(&c, Method::GET, gw.url("/api/residency"), Some(ADMIN), None).await;
    let k = report["virtual_keys"].as_array().unwrap().iter().find(|k| k["name"] == "cloudless").unwrap().clone();
    let reached: Vec<(&str, bool)> =
        k["providers"].as_array().unwrap().iter().map(|p| (p["provider"].as_str().unwrap(), p["reached"].as_bool().unwrap())).collect();
    assert_eq!(reached, [("ollama", true), ("openai", false)], "{k}");
    assert_eq!(k["rules"], "never providers tagged cloud");
}
