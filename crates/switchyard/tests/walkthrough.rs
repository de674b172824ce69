//! The unified-gateway walkthrough of a published Bifrost guide (../shared/reference/compat.md), run
//! against the real binary: its management calls as written (only host, port and the admin token header
//! differ), then what the OpenAI SDK sends with `api_key="vk-…"`. Each virtual key of the guide is checked
//! for what the guide promises of it: its weighted split, its budget, its rate limit, its failover, and that
//! the sensitive key never reaches a cloud.
//!
//! The gateway starts from a configuration file that defines nothing: every provider and key here comes
//! from the walkthrough's own calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{calls, client, Gateway, Logs};
use reqwest::Method;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockConfig, MockServer};

const ADMIN: &str = "sy-admin-walkthrough";
const OPENAI_KEY: &str = "sk-openai-from-env";
const ANTHROPIC_KEY: &str = "sk-ant-from-env";

/// Every provider and key of the walkthrough, created as it creates them, and the mocks behind them.
struct World {
    gw: Gateway,
    _logs: Logs,
    c: reqwest::Client,
    vllm: Option<MockServer>,
    ollama: MockServer,
    openai: MockServer,
    anthropic: MockServer,
}

/// A mock of this flavour that accepts any model and, with `key`, only that key (so that a request
/// reaching it proves the gateway sent the key the walkthrough named).
async fn upstream(flavor: Flavor, key: Option<&str>) -> MockServer {
    let mut cfg = MockConfig::new(flavor);
    cfg.models.clear();
    cfg.require_key = key.map(str::to_string);
    MockServer::start(cfg, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap()
}

async fn admin(c: &reqwest::Client, method: Method, url: String, body: Option<Value>) -> (u16, Value) {
    common::admin(c, method, url, Some(ADMIN), body).await
}

/// What the SDK answers with: status, the provider that served (`x-switchyard-provider`), headers, body.
struct Answer {
    status: u16,
    provider: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `client.chat.completions.create(model=MODEL, messages=[...])` with `api_key=VK` and
/// `base_url=<gateway>/v1`, as the OpenAI SDK sends it.
async fn sdk_chat(c: &reqwest::Client, gw: &Gateway, vk: &str, body: Value) -> Answer {
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {vk}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let provider = headers.get("x-switchyard-provider").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
    Answer { status, provider, headers, body }
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello from the unified gateway"}], "max_tokens": 16})
}

/// Step 1's body for a self-hosted OpenAI-compatible server, as the guide writes it.
fn self_hosted(name: &str, key_name: &str, base_url: &str) -> Value {
    json!({
        "provider": name,
        "keys": [{"name": key_name, "value": "dummy", "weight": 1.0}],
        "network_config": {"base_url": base_url, "default_request_timeout_in_seconds": 60},
        "custom_provider_config": {
            "base_provider_type": "openai",
            "allowed_requests": {"chat_completion": true, "chat_completion_stream": true}
        }
    })
}

/// Step 2's keys, in the guide's table order.
fn walkthrough_keys() -> Vec<(&'static str, Value)> {
    vec![
        (
            "vk-unified",
            json!({"provider_configs": [
                {"provider": "vllm-local", "weight": 0.5, "allowed_models": ["meta-llama/Llama-3-8B-Instruct"]},
                {"provider": "ollama-local", "weight": 0.3, "allowed_models": ["mistral"]},
                {"provider": "openai", "weight": 0.15, "allowed_models": ["gpt-4o-mini"]},
                {"provider": "anthropic", "weight": 0.05, "allowed_models": ["claude-3-5-haiku-20241022"]}
            ]}),
        ),
        (
            "vk-free",
            json!({"provider_configs": [{"provider": "vllm-local", "weight": 1.0}],
                   "budget": {"max_limit": 0, "reset_duration": "1d"}}),
        ),
        (
            "vk-premium",
            json!({"provider_configs": [{"provider": "openai", "weight": 1.0, "allowed_models": ["gpt-4o"]}],
                   "budget": {"max_limit": 100, "reset_duration": "1M"}}),
        ),
        (
            "vk-sensitive",
            json!({"provider_configs": [{"provider": "vllm-local", "weight": 1.0}, {"provider": "ollama-local", "weight": 0.0}]}),
        ),
        ("vk-general", json!({"provider_configs": [{"provider": "openai", "weight": 0.8}, {"provider": "anthropic", "weight": 0.2}]})),
        ("vk-hybrid", json!({"provider_configs": [{"provider": "vllm-local", "weight": 0.9}, {"provider": "openai", "weight": 0.1}]})),
        (
            "vk-dev",
            json!({"provider_configs": [{"provider": "ollama-local", "weight": 1.0}],
                   "rate_limit": {"request_max_limit": 1000, "request_reset_duration": "1h"}}),
        ),
        ("vk-prod", json!({"provider_configs": [{"provider": "openai", "weight": 0.7}, {"provider": "vllm-local", "weight": 0.3}]})),
    ]
}

/// Steps 1 and 2 of the walkthrough, each call checked to succeed.
async fn walkthrough() -> World {
    let vllm = upstream(Flavor::OpenAi, None).await;
    // The guide points `ollama-local` at Ollama's OpenAI-compatible `/v1` (`base_provider_type: openai`);
    // our Ollama mock speaks only Ollama's native `/api/*`, so Ollama's `/v1` surface is an OpenAI mock.
    let ollama = upstream(Flavor::OpenAi, None).await;
    let openai = upstream(Flavor::OpenAi, Some(OPENAI_KEY)).await;
    let anthropic = upstream(Flavor::Anthropic, Some(ANTHROPIC_KEY)).await;
    // A file that defines nothing: without one the gateway would make `openai` and `anthropic` from
    // OPENAI_API_KEY / ANTHROPIC_API_KEY itself, and the walkthrough's POSTs would collide with them.
    let yaml = "# The walkthrough creates every provider and key through the management API.\n";
    let env = [("SWITCHYARD_ADMIN_TOKEN", ADMIN), ("OPENAI_API_KEY", OPENAI_KEY), ("ANTHROPIC_API_KEY", ANTHROPIC_KEY)];
    let (gw, logs) = Gateway::start_logged(Some(yaml), &[], &env);
    let c = client();

    // Step 1, verbatim but for the servers' addresses (the mocks' roots: no /v1, as the guide writes it).
    let providers = gw.url("/api/providers");
    for body in [self_hosted("vllm-local", "vllm-key-1", &vllm.base_url()), self_hosted("ollama-local", "ollama-key-1", &ollama.base_url())]
    {
        let (s, b) = admin(&c, Method::POST, providers.clone(), Some(body)).await;
        assert_eq!((s, b["type"].as_str()), (200, Some("openai-compatible")), "{b}");
    }
    // The one addition to the guide's bodies: `base_url`, pointing the cloud providers at their mocks.
    for (name, env_ref, mock) in [("openai", "env.OPENAI_API_KEY", &openai), ("anthropic", "env.ANTHROPIC_API_KEY", &anthropic)] {
        let body = json!({"provider": name, "keys": [{"name": format!("{name}-key-1"), "value": env_ref, "weight": 1.0}],
                          "network_config": {"base_url": mock.base_url()}});
        let (s, b) = admin(&c, Method::POST, providers.clone(), Some(body)).await;
        assert_eq!((s, b["type"].as_str(), b["keys"][0]["value"].as_str()), (200, Some(name), Some(env_ref)), "{b}");
    }

    // Step 2: each key by id, no value, so the id is what the SDK presents.
    for (id, body) in walkthrough_keys() {
        let (s, b) = admin(&c, Method::PUT, gw.url(&format!("/api/governance/virtual-keys/{id}")), Some(body)).await;
        assert_eq!(s, 200, "PUT {id}: {b}");
    }
    let (s, list) = admin(&c, Method::GET, gw.url("/api/governance/virtual-keys"), None).await;
    assert_eq!((s, list["total_count"].as_u64()), (200, Some(8)), "{list}");
    World { gw, _logs: logs, c, vllm: Some(vllm), ollama, openai, anthropic }
}

/// The guide's later step: vk-unified again, with vllm-local 0.5, ollama-local 0.3, openai 0.2 and no
/// model lists.
async fn recreate_unified(w: &World) {
    let body = json!({"provider_configs": [
        {"provider": "vllm-local", "weight": 0.5},
        {"provider": "ollama-local", "weight": 0.3},
        {"provider": "openai", "weight": 0.2}
    ]});
    let (s, b) = admin(&w.c, Method::PUT, w.gw.url("/api/governance/virtual-keys/vk-unified"), Some(body)).await;
    assert_eq!(s, 200, "{b}");
}

/// `n` requests for `model` as `vk` (a few at a time), every one answered 200: how many each provider
/// served, by the gateway's `x-switchyard-provider`.
async fn split(w: &World, vk: &str, model: &str, n: usize) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for _ in 0..n / 25 {
        let batch = (0..25).map(|_| sdk_chat(&w.c, &w.gw, vk, ask(model)));
        for a in futures_util::future::join_all(batch).await {
            assert_eq!(a.status, 200, "{vk} {model}: {}", a.body);
            *by.entry(a.provider.unwrap()).or_default() += 1;
        }
    }
    by
}

/// Asserts that `count` of `n` draws is what a weight of `p` gives. Each request picks its provider at
/// random by weight, so a count is binomial(n, p): the bound is six standard deviations (plus one for
/// rounding), which a correct split leaves about once in 10⁹ runs, while a wrong weight (0.5 for 0.9, or
/// the order of the configs ignored) is far outside it at these sample sizes.
fn assert_share(by: &BTreeMap<String, usize>, provider: &str, p: f64, n: usize) {
    let count = by.get(provider).copied().unwrap_or(0) as f64;
    let expected = n as f64 * p;
    let bound = 6.0 * (n as f64 * p * (1.0 - p)).sqrt() + 1.0;
    assert!((count - expected).abs() <= bound, "{provider} served {count} of {n}, expected {expected} ± {bound}: {by:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_name_determines_routing_and_each_keys_weights_split_its_traffic() {
    let w = walkthrough().await;

    // vk-unified as first created: each model is allowed on one provider only, so the bare name routes.
    for (model, provider) in [
        ("meta-llama/Llama-3-8B-Instruct", "vllm-local"),
        ("mistral", "ollama-local"),
        ("gpt-4o-mini", "openai"),
        ("claude-3-5-haiku-20241022", "anthropic"),
    ] {
        let a = sdk_chat(&w.c, &w.gw, "vk-unified", ask(model)).await;
        assert_eq!((a.status, a.provider.as_deref(), a.header("x-switchyard-model")), (200, Some(provider), Some(model)), "{}", a.body);
    }
    // The guide's provider/model names.
    for (model, provider) in [("vllm-local/meta-llama/Llama-3-8B-Instruct", "vllm-local"), ("ollama-local/mistral", "ollama-local")] {
        let a = sdk_chat(&w.c, &w.gw, "vk-unified", ask(model)).await;
        assert_eq!((a.status, a.provider.as_deref()), (200, Some(provider)), "{model}: {}", a.body);
    }
    // A stream through a self-hosted provider (the guide allows chat_completion_stream).
    let mut body = ask("vllm-local/meta-llama/Llama-3-8B-Instruct");
    body["stream"] = json!(true);
    let s = common::stream(&w.c, &w.gw.url("/v1/chat/completions"), &body).await;
    assert_eq!(s.status, 401, "no key, no stream: {}", s.raw);
    let r =
        w.c.post(w.gw.url("/v1/chat/completions"))
            .header("authorization", "Bearer vk-unified")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let raw = r.text().await.unwrap();
    let text: String = raw
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok()?["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert!(text.starts_with("echo: Hello") && raw.trim_end().ends_with("data: [DONE]"), "{raw}");
    // Outside the key's model lists: refused before anything is sent, naming what the key may use.
    let upstream_before = calls(&w.ollama) + calls(&w.openai) + calls(&w.anthropic) + calls(w.vllm.as_ref().unwrap());
    for model in ["gpt-4o", "ollama-local/llama3", "openai/gpt-4o", "anthropic/claude-sonnet-4-6"] {
        let a = sdk_chat(&w.c, &w.gw, "vk-unified", ask(model)).await;
        assert_eq!((a.status, a.code()), (403, Some("model_not_allowed")), "{model}: {}", a.body);
    }
    let a = sdk_chat(&w.c, &w.gw, "vk-premium", ask("gpt-4o-mini")).await;
    assert_eq!((a.status, a.code()), (403, Some("model_not_allowed")), "{}", a.body);
    let upstream_after = calls(&w.ollama) + calls(&w.openai) + calls(&w.anthropic) + calls(w.vllm.as_ref().unwrap());
    assert_eq!(upstream_before, upstream_after, "a refused request reached an upstream");

    // Keys without model lists: a bare model goes to every config, chosen by weight.
    let n = 400;
    let by = split(&w, "vk-hybrid", "meta-llama/Llama-3-8B-Instruct", n).await;
    assert_share(&by, "vllm-local", 0.9, n);
    assert_share(&by, "openai", 0.1, n);
    let by = split(&w, "vk-general", "gpt-4o-mini", n).await;
    assert_share(&by, "openai", 0.8, n);
    assert_share(&by, "anthropic", 0.2, n);
    let by = split(&w, "vk-prod", "gpt-4o-mini", n).await;
    assert_share(&by, "openai", 0.7, n);
    assert_share(&by, "vllm-local", 0.3, n);
    // Weight 0 is a fallback only, never chosen while the first serves.
    let by = split(&w, "vk-sensitive", "meta-llama/Llama-3-8B-Instruct", 100).await;
    assert_eq!(by, BTreeMap::from([("vllm-local".to_string(), 100)]));
    let by = split(&w, "vk-dev", "mistral", 50).await;
    assert_eq!(by, BTreeMap::from([("ollama-local".to_string(), 50)]));

    // The later step: vk-unified re-created with three providers and no model lists.
    recreate_unified(&w).await;
    let by = split(&w, "vk-unified", "gpt-4o-mini", n).await;
    assert_share(&by, "vllm-local", 0.5, n);
    assert_share(&by, "ollama-local", 0.3, n);
    assert_share(&by, "openai", 0.2, n);
    assert!(!by.contains_key("anthropic"), "the re-created key has no anthropic config: {by:?}");
    let a = sdk_chat(&w.c, &w.gw, "vk-unified", ask("anthropic/claude-3-5-haiku-20241022")).await;
    assert_eq!((a.status, a.code()), (403, Some("model_not_allowed")), "{}", a.body);
    // What the mocks received agrees with what the gateway said served each request.
    assert!(w.anthropic.stats().by_key.keys().all(|k| k == ANTHROPIC_KEY), "{:?}", w.anthropic.stats().by_key);
    assert!(w.openai.stats().by_key.keys().all(|k| k == OPENAI_KEY), "{:?}", w.openai.stats().by_key);
}

#[tokio::test]
async fn a_zero_budget_serves_only_what_costs_nothing_and_a_budget_records_what_was_spent() {
    let w = walkthrough().await;
    // vk-free (max_limit 0): the self-hosted provider, priced at 0, still serves, and again.
    for _ in 0..3 {
        let a = sdk_chat(&w.c, &w.gw, "vk-free", ask("meta-llama/Llama-3-8B-Instruct")).await;
        assert_eq!((a.status, a.provider.as_deref()), (200, Some("vllm-local")), "{}", a.body);
        let cost: f64 = a.header("x-switchyard-cost").expect("priced").parse().unwrap();
        assert_eq!(cost, 0.0, "a self-hosted answer is free");
    }
    // Its only config is self-hosted, so a paid model is outside the key, not over its budget.
    let a = sdk_chat(&w.c, &w.gw, "vk-free", ask("openai/gpt-4o-mini")).await;
    assert_eq!((a.status, a.code()), (403, Some("model_not_allowed")), "{}", a.body);
    // Not in the guide: the same zero budget on a key that may also use a paid provider, to show the
    // documented meaning of max_limit 0 (nothing spent on paid providers): the paid one is refused.
    let body = json!({"provider_configs": [{"provider": "vllm-local", "weight": 1.0}, {"provider": "openai", "weight": 0.0}],
                      "budget": {"max_limit": 0, "reset_duration": "1d"}});
    let (s, b) = admin(&w.c, Method::PUT, w.gw.url("/api/governance/virtual-keys/vk-free-with-cloud"), Some(body)).await;
    assert_eq!(s, 200, "{b}");
    let before = calls(&w.openai);
    let a = sdk_chat(&w.c, &w.gw, "vk-free-with-cloud", ask("openai/gpt-4o-mini")).await;
    assert_eq!((a.status, a.code()), (402, Some("budget_exceeded")), "{}", a.body);
    assert_eq!(calls(&w.openai), before, "a refused paid request reached the provider");
    let a = sdk_chat(&w.c, &w.gw, "vk-free-with-cloud", ask("vllm-local/meta-llama/Llama-3-8B-Instruct")).await;
    assert_eq!((a.status, a.provider.as_deref()), (200, Some("vllm-local")), "{}", a.body);
    let (s, b) = admin(&w.c, Method::GET, w.gw.url("/api/governance/virtual-keys/vk-free"), None).await;
    let budget = &b["virtual_key"]["budget"];
    assert_eq!((s, budget["max_limit"].as_f64(), budget["current_usage"].as_f64()), (200, Some(0.0), Some(0.0)), "{b}");

    // vk-premium (100 a month): a gpt-4o answer is priced, and its cost is what the budget shows used.
    let a = sdk_chat(&w.c, &w.gw, "vk-premium", ask("gpt-4o")).await;
    assert_eq!((a.status, a.provider.as_deref()), (200, Some("openai")), "{}", a.body);
    let cost: f64 = a.header("x-switchyard-cost").expect("a paid answer carries its cost").parse().unwrap();
    assert!(cost > 0.0, "gpt-4o is priced: {cost}");
    let (s, b) = admin(&w.c, Method::GET, w.gw.url("/api/governance/virtual-keys/vk-premium"), None).await;
    let budget = &b["virtual_key"]["budget"];
    assert_eq!((s, budget["max_limit"].as_f64(), budget["reset_duration"].as_str()), (200, Some(100.0), Some("1M")), "{b}");
    assert!((budget["current_usage"].as_f64().unwrap() - cost).abs() < 1e-9, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vk_dev_serves_exactly_its_thousand_requests_an_hour() {
    let w = walkthrough().await;
    let (mut ok, mut limited) = (0, 0);
    // 1,020 requests, 30 at a time: exactly the limit's 1,000 are served, whatever the interleaving.
    for _ in 0..34 {
        let batch = (0..30).map(|_| sdk_chat(&w.c, &w.gw, "vk-dev", ask("mistral")));
        for a in futures_util::future::join_all(batch).await {
            match a.status {
                200 => ok += 1,
                429 => {
                    assert_eq!(a.code(), Some("rate_limit_exceeded"), "{}", a.body);
                    let after: u64 = a.header("retry-after").expect("a 429 says when to come back").parse().unwrap();
                    assert!((1..=3600).contains(&after), "retry-after {after} is not within the hour window");
                    limited += 1;
                }
                other => panic!("unexpected {other}: {}", a.body),
            }
        }
    }
    assert_eq!((ok, limited), (1000, 20));
    assert_eq!(calls(&w.ollama), 1000, "a refused request reached Ollama");
    let (_, b) = admin(&w.c, Method::GET, w.gw.url("/api/governance/virtual-keys/vk-dev"), None).await;
    let rl = &b["virtual_key"]["rate_limit"];
    assert_eq!((rl["request_max_limit"].as_u64(), rl["request_current_usage"].as_f64()), (Some(1000), Some(1000.0)), "{b}");
    // Another key is not held by vk-dev's limit.
    let a = sdk_chat(&w.c, &w.gw, "vk-unified", ask("ollama-local/mistral")).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn vk_hybrid_fails_over_to_openai_and_vk_sensitive_never_reaches_a_cloud() {
    let mut w = walkthrough().await;
    let cloud_calls = |w: &World| calls(&w.openai) + calls(&w.anthropic);

    // vk-sensitive: a cloud model is not the key's to use (a request-body fallback naming one: below).
    let cloud_before = cloud_calls(&w);
    for model in ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022"] {
        let a = sdk_chat(&w.c, &w.gw, "vk-sensitive", ask(model)).await;
        assert_eq!((a.status, a.code()), (403, Some("model_not_allowed")), "{model}: {}", a.body);
    }
    assert_eq!(cloud_calls(&w), cloud_before, "vk-sensitive reached a cloud");

    // vLLM failing: vk-hybrid's answers come from OpenAI, and say so.
    w.vllm.as_ref().unwrap().set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![503], ..Behavior::default() });
    for _ in 0..10 {
        let a = sdk_chat(&w.c, &w.gw, "vk-hybrid", ask("meta-llama/Llama-3-8B-Instruct")).await;
        assert_eq!((a.status, a.provider.as_deref()), (200, Some("openai")), "{}", a.body);
        assert_eq!(a.header("x-switchyard-model"), Some("meta-llama/Llama-3-8B-Instruct"));
    }
    // vk-sensitive with vLLM failing (cloud calls counted from here: vk-hybrid's went there on purpose):
    // its on-prem fallback (ollama-local, weight 0) serves, no cloud.
    let mut body = ask("meta-llama/Llama-3-8B-Instruct");
    body["fallbacks"] = json!(["openai/gpt-4o-mini"]);
    let cloud_before = cloud_calls(&w);
    let a = sdk_chat(&w.c, &w.gw, "vk-sensitive", body.clone()).await;
    assert_eq!((a.status, a.provider.as_deref()), (200, Some("ollama-local")), "{}", a.body);
    assert_eq!(a.header("x-switchyard-fallback-index"), Some("1"), "the weight-0 config is the first fallback");
    // Both on-prem providers failing: the caller gets the failure, never the cloud the body names.
    w.ollama.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![503], ..Behavior::default() });
    let a = sdk_chat(&w.c, &w.gw, "vk-sensitive", body).await;
    assert!(a.status >= 500, "{} {}", a.status, a.body);
    assert_eq!(cloud_calls(&w), cloud_before, "vk-sensitive reached a cloud");
    w.ollama.set_behavior(Behavior::default());

    // vLLM down altogether (its server gone): still OpenAI.
    w.vllm.take().unwrap().shutdown().await;
    for _ in 0..5 {
        let a = sdk_chat(&w.c, &w.gw, "vk-hybrid", ask("meta-llama/Llama-3-8B-Instruct")).await;
        assert_eq!((a.status, a.provider.as_deref()), (200, Some("openai")), "{}", a.body);
    }
    let before = cloud_calls(&w);
    let a = sdk_chat(&w.c, &w.gw, "vk-sensitive", ask("meta-llama/Llama-3-8B-Instruct")).await;
    assert_eq!((a.status, a.provider.as_deref()), (200, Some("ollama-local")), "{}", a.body);
    assert_eq!(cloud_calls(&w), before);
}

/// Step 4's queries need requests, latency and cost by provider, with a provider label that tells the
/// self-hosted providers apart. This checks the series the gateway exposes for them.
#[tokio::test]
async fn metrics_carry_the_provider_label_the_guides_queries_group_by() {
    let w = walkthrough().await;
    for (model, vk) in [
        ("vllm-local/meta-llama/Llama-3-8B-Instruct", "vk-unified"),
        ("ollama-local/mistral", "vk-unified"),
        ("gpt-4o-mini", "vk-unified"),
        ("claude-3-5-haiku-20241022", "vk-unified"),
    ] {
        assert_eq!(sdk_chat(&w.c, &w.gw, vk, ask(model)).await.status, 200);
    }
    let metrics = w.c.get(w.gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series = |name: &str, provider: &str| {
        metrics.lines().any(|l| l.starts_with(name) && l.contains(&format!("provider=\"{provider}\"")) && !l.ends_with(" 0"))
    };
    // Requests by provider, and so the self-hosted share: `provider=~"vllm.*|ollama.*"` over all.
    for provider in ["vllm-local", "ollama-local", "openai", "anthropic"] {
        assert!(series("switchyard_virtual_key_requests_total", provider), "no requests for {provider}:\n{metrics}");
        assert!(series("switchyard_upstream_attempts_total", provider), "no attempts for {provider}:\n{metrics}");
    }
    // Latency by provider, for the guide's p95 panel.
    for provider in ["vllm-local", "ollama-local", "openai", "anthropic"] {
        assert!(series("switchyard_request_duration_seconds_count", provider), "no latency for {provider}:\n{metrics}");
    }
    // Cost by provider: the cloud models are priced by the built-in table (self-hosted ones cost nothing).
    for provider in ["openai", "anthropic"] {
        assert!(series("switchyard_cost_usd_total", provider), "no cost for {provider}:\n{metrics}");
    }
}
