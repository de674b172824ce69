//! Budgets and rate limits held across replicas: several gateway processes sharing a throwaway Redis (and
//! PostgreSQL, as replicas would) serve exactly what a limit allows between them, a process started later
//! (a rolling deploy) sees what the others used, and Redis becoming unreachable follows the documented
//! policy: served on each process's own counters with the use sent on once Redis is back, or refused with
//! 503 `counters_unavailable`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;
#[allow(dead_code)]
#[path = "../../store/tests/common/pg.rs"]
mod pg;
#[path = "../../store/tests/common/redis_server.rs"]
mod redis_server;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor};

fn chat() -> Value {
    json!({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "caption this frame"}], "max_tokens": 50})
}

async fn post_as(c: &reqwest::Client, url: &str, key: &str) -> (u16, Value, Option<String>) {
    let resp = c
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(serde_json::to_vec(&chat()).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null), retry)
}

fn providers(base: &str) -> String {
    format!("providers:\n  openai:\n    base_url: \"{base}\"\n    keys: [{{value: sk-cloud}}]\npricing:\n  \"openai/gpt-4o\": {{input: 1000, output: 5000}}\n")
}

/// One request's cost, from a gateway of its own.
async fn cost_of_one(providers: &str, c: &reqwest::Client) -> f64 {
    let gw = Gateway::start(&format!("{providers}governance:\n  virtual_keys:\n    - {{id: vk-probe, name: probe}}\n"));
    let resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer vk-probe")
        .body(serde_json::to_vec(&chat()).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()
        .get("x-switchyard-cost")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a priced answer carries its cost")
}

async fn metric(c: &reqwest::Client, gw: &Gateway, name: &str) -> Option<f64> {
    let text = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_sharing_redis_and_postgres_serve_exactly_what_the_limits_allow() {
    let Some(redis) = redis_server::server() else { return };
    let Some(pg) = pg::server().await else { return };
    let db = pg.create_database("replicas").await;
    let cloud = mock(Flavor::OpenAi).await;
    cloud.set_behavior(Behavior { latency_ms: 20, ..Behavior::default() });
    let c = client();
    let providers = providers(&cloud.base_url());
    let one = cost_of_one(&providers, &c).await;
    // Defaults everywhere but the URL: the documented prefix, timeout and policy.
    let yaml = format!(
        "{providers}governance:\n  redis:\n    url: {}\n  virtual_keys:\n    - {{id: vk-station-7, name: station-7, budget: {{max_limit: {}}}}}\n    - {{id: vk-line-2, name: line-2, rate_limit: {{request_max_limit: 10, request_reset_duration: 1m}}}}\n",
        redis.url(),
        one * 10.0
    );
    let gateways: Vec<Gateway> = (0..3).map(|_| Gateway::start_logged(Some(&yaml), &["--database-url", &db], &[]).0).collect();
    let calls_before = calls(&cloud);

    // 200 requests at once against a budget for exactly ten, spread over the three.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (c, url) = (c.clone(), gateways[i % 3].url("/v1/chat/completions"));
            tokio::spawn(async move { post_as(&c, &url, "vk-station-7").await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (s, b, _) = t.await.unwrap();
        match s {
            200 => ok += 1,
            402 => assert_eq!(b["error"]["code"], "budget_exceeded", "{b}"),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(ok, 10, "three replicas together serve exactly the budget");
    assert_eq!(calls(&cloud) - calls_before, 10, "a refused request sends nothing upstream");

    // 100 at once against a limit of ten a minute.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (c, url) = (c.clone(), gateways[i % 3].url("/v1/chat/completions"));
            tokio::spawn(async move { post_as(&c, &url, "vk-line-2").await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (s, b, retry) = t.await.unwrap();
        match s {
            200 => ok += 1,
            429 => {
                assert_eq!(b["error"]["code"], "rate_limit_exceeded", "{b}");
                assert!(retry.is_some(), "a 429 says when to come back");
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(ok, 10, "three replicas together serve exactly the rate limit");

    // A rolling deploy: one replica goes, a new process comes, and the limits are where they were.
    let mut gateways = gateways;
    gateways.remove(0).terminate();
    let newcomer = Gateway::start_logged(Some(&yaml), &["--database-url", &db], &[]).0;
    let (s, b, _) = post_as(&c, &newcomer.url("/v1/chat/completions"), "vk-station-7").await;
    assert_eq!((s, b["error"]["code"].as_str()), (402, Some("budget_exceeded")), "{b}");
    let (s, b, _) = post_as(&c, &newcomer.url("/v1/chat/completions"), "vk-line-2").await;
    assert_eq!((s, b["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")), "{b}");
    assert_eq!(metric(&c, &newcomer, "switchyard_shared_counters_up").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_unreachable_requests_are_served_locally_and_their_use_reaches_redis_after() {
    let Some(redis) = redis_server::server() else { return };
    let cloud = mock(Flavor::OpenAi).await;
    let c = client();
    let providers = providers(&cloud.base_url());
    let one = cost_of_one(&providers, &c).await;
    // A budget for five requests; the default policy (local).
    let yaml = format!(
        "{providers}governance:\n  redis:\n    url: {}\n  virtual_keys:\n    - {{id: vk-station-9, name: station-9, budget: {{max_limit: {}}}}}\n",
        redis.url(),
        one * 5.0
    );
    let (gw, logs) = Gateway::start_logged(Some(&yaml), &[], &[]);
    let url = gw.url("/v1/chat/completions");
    for _ in 0..2 {
        assert_eq!(post_as(&c, &url, "vk-station-9").await.0, 200);
    }
    // An outage that loses nothing: Redis holds every command for a while.
    redis.pause(6000);
    for _ in 0..2 {
        let (s, b, _) = post_as(&c, &url, "vk-station-9").await;
        assert_eq!(s, 200, "served on the process's own counters: {b}");
    }
    assert_eq!(metric(&c, &gw, "switchyard_shared_counters_up").await, Some(0.0));
    assert!(metric(&c, &gw, "switchyard_shared_counters_fallback_total").await.unwrap_or(0.0) >= 2.0);
    logs.wait_until("the outage logged", |t| t.contains("cannot be reached")).await;
    // Once Redis answers, what was used meanwhile reaches it (the gauge turns back when it has).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while metric(&c, &gw, "switchyard_shared_counters_up").await != Some(1.0) {
        assert!(std::time::Instant::now() < deadline, "the settlements never reached Redis: {}", logs.text());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Four used: one more fits, then none, and another replica sees the same.
    let other = Gateway::start(&yaml);
    assert_eq!(post_as(&c, &other.url("/v1/chat/completions"), "vk-station-9").await.0, 200);
    let (s, b, _) = post_as(&c, &url, "vk-station-9").await;
    assert_eq!((s, b["error"]["code"].as_str()), (402, Some("budget_exceeded")), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_refuse_policy_an_unreachable_redis_is_a_503_that_sends_nothing() {
    let cloud = mock(Flavor::OpenAi).await;
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        "{}governance:\n  redis:\n    url: redis://127.0.0.1:{port}\n    when_unreachable: refuse\n    timeout: 200ms\n  virtual_keys:\n    - {{id: vk-audit, name: audited, budget: {{max_limit: 100}}}}\n",
        providers(&cloud.base_url())
    );
    let (gw, logs) = Gateway::start_logged(Some(&yaml), &[], &[]);
    logs.wait_until("the start-up warning", |t| t.contains("do not answer yet")).await;
    let c = client();
    for _ in 0..3 {
        let (s, b, retry) = post_as(&c, &gw.url("/v1/chat/completions"), "vk-audit").await;
        assert_eq!((s, b["error"]["code"].as_str()), (503, Some("counters_unavailable")), "{b}");
        assert!(b["error"]["message"].as_str().unwrap().contains("when_unreachable is refuse"), "{b}");
        assert_eq!(retry.as_deref(), Some("1"));
    }
    assert_eq!(calls(&cloud), 0, "nothing metered is sent while it cannot be counted");
    let models = c.get(gw.url("/v1/models")).header("authorization", "Bearer vk-audit").send().await.unwrap();
    assert_eq!(models.status(), 200, "what needs no counting still works");
}

#[test]
fn check_names_each_mistake_in_the_redis_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "providers:\n  openai:\n    keys: [{value: sk-x}]\ngovernance:\n  redis:\n    url: rediss://cache:6380\n    when_unreachable: fail_open\n    timeot: 1s\n",
    )
    .unwrap();
    let (code, out, err) = run_to_exit(&["check", "--config", path.to_str().unwrap()], &[]);
    let text = format!("{out}{err}");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("governance.redis.timeot"), "{text}");
    let path2 = dir.path().join("bad2.yaml");
    std::fs::write(&path2, "providers:\n  openai:\n    keys: [{value: sk-x}]\ngovernance:\n  redis:\n    url: rediss://cache:6380\n    when_unreachable: fail_open\n").unwrap();
    let (code, out, err) = run_to_exit(&["check", "--config", path2.to_str().unwrap()], &[]);
    let text = format!("{out}{err}");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("governance.redis.url") && text.contains("rediss://"), "{text}");
    assert!(text.contains("governance.redis.when_unreachable") && text.contains("local or refuse"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_through_one_replica_is_taken_up_by_the_others() {
    let Some(pg) = pg::server().await else { return };
    let db = pg.create_database("writes").await;
    let cloud = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "{}governance:\n  require_virtual_key: true\n  virtual_keys:\n    - {{id: vk-boot, name: boot}}\n",
        providers(&cloud.base_url())
    );
    let env = [("SWITCHYARD_ADMIN_TOKEN", "sy-admin-replicas")];
    let a = Gateway::start_logged(Some(&yaml), &["--database-url", &db], &env).0;
    let (b, b_logs) = Gateway::start_logged(Some(&yaml), &["--database-url", &db], &env);
    let c = client();
    let resp = c
        .post(a.url("/api/governance/virtual-keys"))
        .header("authorization", "Bearer sy-admin-replicas")
        .header("content-type", "application/json")
        .body(r#"{"name": "station-12", "budget": {"max_limit": 10}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let made: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let value = made["virtual_key"]["value"].as_str().unwrap().to_string();
    assert_eq!(post_as(&c, &a.url("/v1/chat/completions"), &value).await.0, 200, "the replica written to knows it at once");
    // The other replica takes it up from the store within a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (s, b_body, _) = post_as(&c, &b.url("/v1/chat/completions"), &value).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 401, "{b_body}");
        assert!(std::time::Instant::now() < deadline, "the other replica never took the key up: {}", b_logs.text());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    b_logs.wait_until("the take-up logged", |t| t.contains("another replica wrote")).await;
}
