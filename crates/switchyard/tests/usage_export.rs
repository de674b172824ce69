//! Usage per entity and `switchyard export`, through the real binary: the live readings on every key, team
//! and customer move by what each request cost; `/api/usage` totals the ledger per key, team, provider,
//! model or day; an export of a gateway built through the management API passes `check` and, served, takes
//! the same keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{admin as call, client, mock, run_to_exit, Gateway};
use reqwest::Method;
use serde_json::{json, Value};
use switchyard_engine::governance::usage::parse_time;
use switchyard_mock::{Flavor, MockConfig, MockServer};

const ADMIN: &str = "sy-admin-usage-token";

/// What one answered chat request cost (its `x-switchyard-cost`) and its input and output tokens.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    cost: f64,
    input: u64,
    output: u64,
    requests: u64,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, o: Spent) {
        self.cost += o.cost;
        self.input += o.input;
        self.output += o.output;
        self.requests += o.requests;
    }
}

async fn chat(c: &reqwest::Client, gw: &Gateway, key: &str, model: &str) -> Spent {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "count the pallets"}], "max_tokens": 20});
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cost = r.headers().get("x-switchyard-cost").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let b: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{key}: {b}");
    Spent {
        cost: cost.expect("a priced answer carries x-switchyard-cost"),
        input: b["usage"]["prompt_tokens"].as_u64().unwrap(),
        output: b["usage"]["completion_tokens"].as_u64().unwrap(),
        requests: 1,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// A keyless on-prem Ollama mock, priced at a dollar a token so that costs are whole numbers.
async fn priced_ollama() -> (MockServer, String) {
    let local = mock(Flavor::Ollama).await;
    let yaml = format!(
        "providers:\n  ollama:\n    base_url: \"{}\"\n    tags: [on-prem]\npricing:\n  ollama: {{input: 1000000, output: 1000000}}\n",
        local.base_url()
    );
    (local, yaml)
}

/// A customer, a team of it, and a key of the team with a budget and a rate limit on every level.
async fn acme_vision_key(c: &reqwest::Client, gw: &Gateway) -> String {
    let put = |path: &str, body: Value| call(c, Method::PUT, gw.url(path), Some(ADMIN), Some(body));
    let (s, b) =
        put("/api/governance/customers/acme", json!({"name": "ACME", "budget": {"max_limit": 5000, "reset_duration": "1M"}})).await;
    assert_eq!(s, 200, "{b}");
    let team = json!({"name": "Vision", "customer_id": "acme", "budget": {"max_limit": 2000, "reset_duration": "1d"},
        "rate_limit": {"request_max_limit": 100, "request_reset_duration": "1m"}});
    let (s, b) = put("/api/governance/teams/vision", team).await;
    assert_eq!(s, 200, "{b}");
    let key = json!({"name": "line-7", "team_id": "vision", "max_concurrent": 4,
        "budget": {"max_limit": 1000, "reset_duration": "1d", "calendar_aligned": true},
        "rate_limit": {"request_max_limit": 1000, "request_reset_duration": "1h", "token_max_limit": 1000000, "token_reset_duration": "1h"},
        "provider_configs": [{"provider": "ollama", "budget": {"max_limit": 900, "reset_duration": "1w"}}]});
    let (s, b) = call(c, Method::POST, gw.url("/api/governance/virtual-keys"), Some(ADMIN), Some(key)).await;
    assert_eq!(s, 200, "{b}");
    b["virtual_key"]["value"].as_str().unwrap().to_string()
}

/// A budget's or rate limit's window as shown: `last_reset` ≤ now < `next_reset`.
fn window_holds_now(o: &Value, prefix: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let at = |f: &str| parse_time(o[format!("{prefix}{f}")].as_str().unwrap_or_else(|| panic!("{prefix}{f} in {o}"))).unwrap();
    let (last, next) = (at("last_reset"), at("next_reset"));
    assert!(last <= now && now < next, "{o}");
}

#[tokio::test]
async fn every_budget_and_limit_shows_its_use_rising_by_what_each_request_cost() {
    let (_local, yaml) = priced_ollama().await;
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let value = acme_vision_key(&c, &gw).await;
    let read_key = || async {
        let (s, list) = call(&c, Method::GET, gw.url("/api/governance/virtual-keys"), Some(ADMIN), None).await;
        assert_eq!(s, 200, "{list}");
        list["virtual_keys"].as_array().unwrap().iter().find(|k| k["name"] == "line-7").unwrap().clone()
    };
    let before = read_key().await;
    assert_eq!(before["budget"]["current_usage"], 0.0, "{before}");
    assert_eq!(before["rate_limit"]["request_current_usage"], 0.0, "{before}");

    let mut spent = Spent::default();
    for _ in 0..3 {
        spent += chat(&c, &gw, &value, "ollama/llava").await;
        // Each request moves the key's budget by exactly its own cost.
        let k = read_key().await;
        assert!(close(k["budget"]["current_usage"].as_f64().unwrap(), spent.cost), "{} vs {spent:?}", k["budget"]);
    }
    assert!(spent.cost > 0.0);
    let k = read_key().await;
    let b = &k["budget"];
    assert_eq!(
        (b["max_limit"].as_f64(), b["reset_duration"].as_str(), b["reserved"].as_f64()),
        (Some(1000.0), Some("1d"), Some(0.0)),
        "{b}"
    );
    window_holds_now(b, "");
    // Calendar-aligned to the day: the window opens at midnight UTC.
    assert!(b["last_reset"].as_str().unwrap().ends_with("T00:00:00.000Z"), "{b}");
    let r = &k["rate_limit"];
    assert_eq!(r["request_current_usage"].as_f64(), Some(3.0), "{r}");
    assert_eq!(r["token_current_usage"].as_f64(), Some((spent.input + spent.output) as f64), "{r}");
    window_holds_now(r, "request_");
    window_holds_now(r, "token_");
    let pc = &k["provider_configs"][0]["budget"];
    assert!(close(pc["current_usage"].as_f64().unwrap(), spent.cost), "{pc}");
    window_holds_now(pc, "");
    assert_eq!(k["in_flight"].as_f64(), Some(0.0), "{k}");
    assert!(k.to_string().find(&value).is_none(), "the value is never shown again: {k}");

    // The team and the customer carry the key's requests too.
    let (_, t) = call(&c, Method::GET, gw.url("/api/governance/teams/vision"), Some(ADMIN), None).await;
    let t = &t["team"];
    assert!(close(t["budget"]["current_usage"].as_f64().unwrap(), spent.cost), "{t}");
    assert_eq!(t["rate_limit"]["request_current_usage"].as_f64(), Some(3.0), "{t}");
    window_holds_now(&t["rate_limit"], "request_");
    let (_, list) = call(&c, Method::GET, gw.url("/api/governance/customers"), Some(ADMIN), None).await;
    let acme = &list["customers"][0];
    assert!(close(acme["budget"]["current_usage"].as_f64().unwrap(), spent.cost), "{acme}");
    window_holds_now(&acme["budget"], "");

    // What a GET answered can be sent back with a PUT as it is; the use in the window is kept.
    let (s, b) = call(&c, Method::PUT, gw.url("/api/governance/teams/vision"), Some(ADMIN), Some(t.clone())).await;
    assert_eq!(s, 200, "{b}");
    assert!(close(b["team"]["budget"]["current_usage"].as_f64().unwrap(), spent.cost), "{b}");
}

/// `GET /api/usage?...` with the admin token.
async fn usage(c: &reqwest::Client, gw: &Gateway, query: &str) -> (u16, Value) {
    call(c, Method::GET, gw.url(&format!("/api/usage{query}")), Some(ADMIN), None).await
}

/// The ledger is written in batches (at least every 200 ms): waits until it holds `n` requests.
async fn ledger_holds(c: &reqwest::Client, gw: &Gateway, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, b) = usage(c, gw, "").await;
        assert_eq!(s, 200, "{b}");
        let seen = b["totals"]["requests"].as_u64().unwrap();
        if seen >= n {
            assert_eq!(seen, n, "{b}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the ledger never held {n} requests: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn group<'a>(b: &'a Value, field: &str, key: &str) -> &'a Value {
    b["groups"].as_array().unwrap().iter().find(|g| g[field] == key).unwrap_or_else(|| panic!("no {field} {key} in {b}"))
}

fn same(g: &Value, s: Spent) {
    assert_eq!(g["requests"].as_u64(), Some(s.requests), "{g} vs {s:?}");
    assert_eq!((g["input_tokens"].as_u64(), g["output_tokens"].as_u64()), (Some(s.input), Some(s.output)), "{g} vs {s:?}");
    assert_eq!(g["total_tokens"].as_u64(), Some(s.input + s.output), "{g}");
    assert!(close(g["cost_usd"].as_f64().unwrap(), s.cost), "{g} vs {s:?}");
}

#[tokio::test]
async fn the_usage_endpoint_totals_what_the_requests_cost_per_key_team_and_day() {
    let (_local, yaml) = priced_ollama().await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &["--data-dir", dir], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let line7 = acme_vision_key(&c, &gw).await;
    let (s, b) = call(&c, Method::PUT, gw.url("/api/governance/teams/research"), Some(ADMIN), Some(json!({"name": "Research"}))).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(
        &c,
        Method::PUT,
        gw.url("/api/governance/virtual-keys/vk-bench"),
        Some(ADMIN),
        Some(json!({"name": "bench", "team_id": "research", "value": "sk-sy-bench-0123456789"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // Bifrost's way: no value, the id is the value (and so a secret, masked in every answer).
    let (s, b) =
        call(&c, Method::PUT, gw.url("/api/governance/virtual-keys/vk-seeded-station"), Some(ADMIN), Some(json!({"name": "station"})))
            .await;
    assert_eq!(s, 200, "{b}");

    let (mut a, mut bench, mut seeded) = (Spent::default(), Spent::default(), Spent::default());
    for model in ["ollama/llava", "ollama/qwen2.5-vl:7b", "ollama/llava"] {
        a += chat(&c, &gw, &line7, model).await;
    }
    bench += chat(&c, &gw, "sk-sy-bench-0123456789", "ollama/llava").await;
    seeded += chat(&c, &gw, "vk-seeded-station", "ollama/llava").await;
    let mut all = a;
    all += bench;
    all += seeded;
    ledger_holds(&c, &gw, 5).await;

    let (s, b) = usage(&c, &gw, "").await;
    assert_eq!((s, b["group_by"].clone(), b.get("groups")), (200, Value::Null, None), "{b}");
    same(&b["totals"], all);

    let (_, b) = usage(&c, &gw, "?group_by=virtual_key").await;
    assert_eq!(b["groups"].as_array().unwrap().len(), 3, "{b}");
    same(group(&b, "name", "line-7"), a);
    same(group(&b, "virtual_key", "vk-bench"), bench);
    let st = group(&b, "name", "station");
    same(st, seeded);
    assert!(!b.to_string().contains("vk-seeded-station"), "a key whose id is its value is shown masked: {b}");
    assert!(st["virtual_key"].as_str().unwrap().starts_with('…'), "{st}");
    assert_eq!(b["truncated"], false);

    let (_, b) = usage(&c, &gw, "?group_by=team").await;
    same(group(&b, "team", "vision"), a);
    same(group(&b, "team", "research"), bench);
    // The key without a team is the group without one.
    same(b["groups"].as_array().unwrap().iter().find(|g| g["team"].is_null()).unwrap(), seeded);

    let (_, b) = usage(&c, &gw, "?group_by=customer&team=vision").await;
    assert_eq!(b["groups"].as_array().unwrap().len(), 1, "{b}");
    same(group(&b, "customer", "acme"), a);
    same(&b["totals"], a);

    let (_, b) = usage(&c, &gw, "?group_by=model&provider=ollama").await;
    assert_eq!(group(&b, "model", "qwen2.5-vl:7b")["requests"], 1, "{b}");
    assert_eq!(group(&b, "model", "llava")["requests"], 4, "{b}");

    let today = switchyard_engine::governance::usage::day(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64,
    );
    let (_, b) = usage(&c, &gw, "?group_by=day").await;
    // (A run across midnight UTC splits into two days; the totals hold either way.)
    let days = b["groups"].as_array().unwrap();
    assert!(days.iter().any(|d| d["day"] == today.as_str()) && days.len() <= 2, "{b}");
    assert_eq!(days.iter().map(|d| d["requests"].as_u64().unwrap()).sum::<u64>(), 5, "{b}");

    // A range: everything is before a time in the future, nothing after it.
    let (_, b) = usage(&c, &gw, "?to=2999-01-01T00:00:00Z").await;
    same(&b["totals"], all);
    let (_, b) = usage(&c, &gw, "?from=2999-01-01&group_by=virtual_key").await;
    assert_eq!((b["totals"]["requests"].as_u64(), b["groups"].as_array().map(Vec::len)), (Some(0), Some(0)), "{b}");
    assert_eq!(b["from"], "2999-01-01T00:00:00.000Z");
    let (_, b) = usage(&c, &gw, "?virtual_key=vk-bench&model=llava").await;
    same(&b["totals"], bench);

    // Bad questions: 400 with the parameter named.
    for (query, param, says) in [
        ("?group_by=week", "group_by", "virtual_key, team, customer, provider, model, day"),
        ("?from=yesterday", "from", "RFC 3339"),
        ("?from=2026-02-01&to=2026-01-01", "to", "later than from"),
        ("?teem=vision", "teem", "unknown parameter"),
        ("?team=a&team=b", "team", "twice"),
        ("?model=", "model", "empty"),
    ] {
        let (s, b) = usage(&c, &gw, query).await;
        assert_eq!(
            (s, b["error"]["code"].as_str(), b["error"]["param"].as_str()),
            (400, Some("invalid_usage_query"), Some(param)),
            "{query}: {b}"
        );
        assert!(b["error"]["message"].as_str().unwrap().contains(says), "{query}: {b}");
    }
    // The admin token is required.
    for token in [None, Some("wrong")] {
        let (s, b) = call(&c, Method::GET, gw.url("/api/usage?group_by=team"), token, None).await;
        assert_eq!((s, b["error"]["code"].as_str()), (401, Some("admin_unauthorized")), "{b}");
    }
}

#[tokio::test]
async fn without_a_store_there_is_no_ledger_to_read_and_the_answer_says_how_to_get_one() {
    let (_local, yaml) = priced_ollama().await;
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &[], &[("SWITCHYARD_ADMIN_TOKEN", ADMIN)]);
    let c = client();
    let (s, b) = usage(&c, &gw, "?group_by=team").await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("usage_ledger_off")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("--data-dir"), "{b}");
    // A bad question is still a bad question.
    let (s, _) = usage(&c, &gw, "?group_by=week").await;
    assert_eq!(s, 400);
}

/// A cloud mock that takes only `key` (so a served export shows its provider key was read from the
/// environment it names).
async fn cloud_requiring(key: &str) -> MockServer {
    let mut cfg = MockConfig::new(Flavor::OpenAi);
    cfg.require_key = Some(key.into());
    MockServer::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap()
}

#[tokio::test]
async fn an_export_of_api_made_keys_passes_check_and_serves_the_same_keys_after_a_restart() {
    let local = mock(Flavor::Ollama).await;
    let cloud = cloud_requiring("sk-cloud-literal").await;
    // The cloud provider's key and a file key's value written literally, as a hand-made file may have them.
    let yaml = format!(
        "providers:\n  ollama:\n    base_url: \"{}\"\n    tags: [on-prem]\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: sk-cloud-literal}}]\n    tags: [cloud]\ngovernance:\n  virtual_keys:\n    - {{id: vk-file, name: from-file, value: sk-file-literal}}\npricing:\n  ollama: {{input: 1000000, output: 1000000}}\n  openai: {{input: 1000000, output: 1000000}}\n",
        local.base_url(),
        cloud.base_url()
    );
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("state");
    let dir_s = dir.to_str().unwrap().to_string();
    let env = [("SWITCHYARD_ADMIN_TOKEN", ADMIN)];
    let (gw, _logs) = Gateway::start_logged(Some(&yaml), &["--data-dir", &dir_s], &env);
    let c = client();
    let posted = acme_vision_key(&c, &gw).await;
    let put = |path: &str, body: Value| call(&c, Method::PUT, gw.url(path), Some(ADMIN), Some(body));
    let (s, b) = put(
        "/api/governance/virtual-keys/vk-cloud",
        json!({"name": "cloud-user", "value": "sk-sy-chosen-cloud-value", "provider_configs": [{"provider": "openai"}]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = put("/api/governance/virtual-keys/vk-seeded-station", json!({"name": "station"})).await;
    assert_eq!(s, 200, "{b}");
    // A hash is for the file; the API takes the key itself.
    let (s, b) = put("/api/governance/virtual-keys/vk-hash", json!({"name": "h", "value": format!("sha256:{}", "ab".repeat(32))})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_request")), "{b}");
    let used = chat(&c, &gw, &posted, "ollama/llava").await;
    chat(&c, &gw, "sk-sy-chosen-cloud-value", "openai/gpt-4o").await;
    // A provider made through the API, with a literal key, is exported too.
    let vllm = cloud_requiring("sk-vllm-literal").await;
    let body = json!({"provider": "vllm-local", "keys": [{"name": "vllm-key-1", "value": "sk-vllm-literal", "weight": 1.0}],
        "network_config": {"base_url": vllm.base_url().trim_end_matches("/v1")},
        "custom_provider_config": {"base_provider_type": "openai"}});
    let (s, b) = call(&c, Method::POST, gw.url("/api/providers"), Some(ADMIN), Some(body)).await;
    assert_eq!(s, 200, "{b}");
    chat(&c, &gw, "sk-file-literal", "vllm-local/gpt-4o").await;

    // Exported from the running gateway's store.
    let out_dir = tempfile::tempdir().unwrap();
    let config_path = out_dir.path().join("source.yaml");
    std::fs::write(&config_path, &yaml).unwrap();
    let exported = out_dir.path().join("exported.yaml");
    let (code, stdout, stderr) = run_to_exit(
        &["export", "--config", config_path.to_str().unwrap(), "--data-dir", &dir_s, "--output", exported.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains("SWITCHYARD_OPENAI_KEY_0"), "the variable to set is named: {stderr}");
    let text = std::fs::read_to_string(&exported).unwrap();
    assert!(text.contains("vllm-local"), "the API's provider is exported:\n{text}");
    for secret in
        [posted.as_str(), "sk-sy-chosen-cloud-value", "vk-seeded-station", "sk-cloud-literal", "sk-file-literal", "sk-vllm-literal"]
    {
        assert!(!text.contains(secret), "{secret} is in the export:\n{text}");
        assert!(!stderr.contains(secret) && !stdout.contains(secret), "{secret} was printed: {stderr}");
    }
    // Without its store the export says what it needs.
    let (code, _, stderr) = run_to_exit(&["export", "--config", config_path.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--data-dir"), "{stderr}");

    // `check` takes it once the provider key's variable is set, and names the variable until then.
    let (ok, _, err) = common::check(&text, &[]);
    assert!(!ok && err.contains("SWITCHYARD_OPENAI_KEY_0"), "{err}");
    let vars = [("SWITCHYARD_OPENAI_KEY_0", "sk-cloud-literal"), ("SWITCHYARD_VLLM_LOCAL_KEY_0", "sk-vllm-literal")];
    let (ok, out, err) = common::check(&text, &vars);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("openai"), "{out}");
    assert!(gw.terminate().success());

    // Served from the exported file with the same data directory: the file now defines every key, and
    // each is presented as before.
    let mut env2 = env.to_vec();
    env2.extend(vars);
    let (gw, _logs) = Gateway::start_logged(Some(&text), &["--data-dir", &dir_s], &env2);
    for (key, model) in [
        (posted.as_str(), "ollama/llava"),
        ("sk-sy-chosen-cloud-value", "openai/gpt-4o"),
        ("vk-seeded-station", "ollama/llava"),
        ("sk-file-literal", "ollama/llava"),
        ("sk-file-literal", "vllm-local/gpt-4o"),
    ] {
        chat(&c, &gw, key, model).await;
    }
    let (s, list) = call(&c, Method::GET, gw.url("/api/governance/virtual-keys"), Some(ADMIN), None).await;
    assert_eq!(s, 200, "{list}");
    let keys = list["virtual_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "{list}");
    assert!(keys.iter().all(|k| k["source"] == "config_file"), "{list}");
    // The key kept its id, so its meters: the first run's use is still in its window.
    let line7 = keys.iter().find(|k| k["name"] == "line-7").unwrap();
    assert!(close(line7["budget"]["current_usage"].as_f64().unwrap(), 2.0 * used.cost), "{line7}");
    assert_eq!(line7["team_id"], "vision", "{line7}");
    let (s, t) = call(&c, Method::GET, gw.url("/api/governance/teams/vision"), Some(ADMIN), None).await;
    assert_eq!((s, t["team"]["source"].as_str(), t["team"]["customer_id"].as_str()), (200, Some("config_file"), Some("acme")), "{t}");
    // The file is their source of truth now: the API may not change them.
    let (s, b) = call(&c, Method::PUT, gw.url("/api/governance/teams/vision"), Some(ADMIN), Some(json!({"name": "V"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("defined_in_config_file")), "{b}");
    assert_eq!(cloud.stats().by_path.iter().filter(|(p, _)| p.ends_with("/chat/completions")).map(|(_, n)| n).sum::<u64>(), 2);
}
