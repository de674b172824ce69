//! The request log as an operator uses it, through the real binary: a request's `x-request-id` finds its
//! record and attempt trail, streams (finished or abandoned) are recorded with what they cost, filters and
//! cursor paging and the stats agree with the records, the last records survive a SIGTERM, a full queue
//! drops and counts, retention prunes, bodies are kept only when asked and never for a restricted key that
//! did not ask, and bad questions get a clear 400.
//!
//! Records are written in batches off the request path, so a test waits (bounded) for a record to appear
//! instead of expecting it at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockServer};

const TOKEN: &str = "sy-admin-request-log-tests";

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Starts the gateway with `yaml`, keeping its store in `data` when given (else the log is in memory).
fn start(yaml: &str, data: Option<&Path>) -> (Gateway, Logs) {
    let dir = data.map(|d| d.display().to_string());
    let mut args: Vec<&str> = Vec::new();
    if let Some(d) = &dir {
        args.extend(["--data-dir", d.as_str()]);
    }
    Gateway::start_logged(Some(yaml), &args, &[("SWITCHYARD_ADMIN_TOKEN", TOKEN), ("SWITCHYARD_LOG", "warn")])
}

fn provider(name: &str, m: &MockServer, tags: &str) -> String {
    format!(
        "  {name}:\n    type: openai\n    base_url: \"{}\"\n    tags: [{tags}]\n    keys: [{{name: {name}-key, value: sk-{name}-Hq72}}]\n",
        m.base_url()
    )
}

async fn api(c: &reqwest::Client, gw: &Gateway, path: &str) -> (u16, Value) {
    admin(c, reqwest::Method::GET, gw.url(path), Some(TOKEN), None).await
}

/// The record of request `id`, once the writer has written it.
async fn record(c: &reqwest::Client, gw: &Gateway, id: &str) -> Value {
    wait_for(c, gw, &format!("/api/logs/{id}"), |s, _| s == 200).await
}

/// Polls `path` until `done` holds (a bound on a hang, not a speed target).
async fn wait_for(c: &reqwest::Client, gw: &Gateway, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = api(c, gw, path).await;
        if done(s, &v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{path} never became what the test waits for: {s} {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every record `path` (a /api/logs query) lists, following the cursor; and how many pages it took.
async fn all_pages(c: &reqwest::Client, gw: &Gateway, path: &str) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let (s, v) = api(c, gw, &url).await;
        assert_eq!((s, v["object"].as_str()), (200, Some("list")), "{url}: {v}");
        pages += 1;
        out.extend(v["data"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return (out, pages),
        }
        assert!(pages < 1000);
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find(|l| l.starts_with(name) && !l.starts_with('#')).and_then(|l| l.split_whitespace().last()?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn a_fallback_after_a_5xx_is_found_by_its_request_id_with_both_attempts() {
    let bad = mock(Flavor::OpenAi).await;
    bad.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    let good = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "providers:\n{}{}routes:\n  - models: [\"bad/gpt-4o-mini\"]\n    fallbacks: [\"good/gpt-4o-mini\"]\n",
        provider("bad", &bad, "cloud"),
        provider("good", &good, "on-prem")
    );
    let dir = tempfile::tempdir().unwrap();
    let (gw, _logs) = start(&yaml, Some(dir.path()));
    let c = client();
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "bad/gpt-4o-mini", "messages": user("hello")})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.header("x-request-id").unwrap().to_string();
    let rec = record(&c, &gw, &id).await;
    assert_eq!(rec["id"], id.as_str());
    assert_eq!((rec["status"].as_u64(), rec["provider"].as_str(), rec["fallback_index"].as_u64()), (Some(200), Some("good"), Some(1)));
    let attempts = rec["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{rec}");
    assert_eq!((attempts[0]["target"].as_str(), attempts[0]["status"].as_u64()), (Some("bad/gpt-4o-mini"), Some(500)));
    assert_eq!(attempts[0]["outcome"], "transient", "the failure class of the 5xx");
    assert_eq!(attempts[0]["key"], "bad-key", "the key's name, never its value");
    assert_eq!((attempts[1]["target"].as_str(), attempts[1]["outcome"].as_str()), (Some("good/gpt-4o-mini"), Some("success")));
    assert_eq!(rec["provider_tags"], json!(["on-prem"]));
    assert!(!rec.to_string().contains("sk-bad-Hq72") && !rec.to_string().contains("sk-good-Hq72"), "{rec}");
    assert!(rec.get("request_body").is_none(), "bodies are off by default");

    // A caller's own well-formed id is kept, and finds the record; a malformed one is replaced.
    let sent = c
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-request-id", "caller-trace:42.a_b")
        .body(json!({"model": "good/gpt-4o-mini", "messages": user("mine")}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-request-id"], "caller-trace:42.a_b");
    let rec = record(&c, &gw, "caller-trace:42.a_b").await;
    assert_eq!(rec["attempts"].as_array().unwrap().len(), 1);
    let sent = c
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-request-id", "has spaces / and slashes")
        .body(json!({"model": "good/gpt-4o-mini", "messages": user("mine")}).to_string())
        .send()
        .await
        .unwrap();
    let replaced = sent.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(replaced, "has spaces / and slashes");
    record(&c, &gw, &replaced).await;
    // The failure class finds the fallback, the trail's text finds it too.
    let (list, _) = all_pages(&c, &gw, "/api/logs?error=transient").await;
    assert_eq!(list.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), vec![id.as_str()]);
    let (list, _) = all_pages(&c, &gw, "/api/logs?q=bad-key").await;
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn a_stream_has_its_time_to_first_token_tokens_and_cost_and_one_left_mid_stream_is_recorded_too() {
    let m = mock(Flavor::OpenAi).await;
    let yaml = format!("providers:\n{}", provider("openai", &m, "cloud"));
    let (gw, _logs) = start(&yaml, None);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let body =
        json!({"model": "openai/gpt-4o-mini", "messages": user("tell me"), "stream": true, "stream_options": {"include_usage": true}});
    let s = stream(&c, &url, &body).await;
    assert!(s.done, "{}", s.raw);
    let id = s.header("x-request-id").unwrap().to_string();
    let rec = record(&c, &gw, &id).await;
    assert_eq!((rec["stream"].as_bool(), rec["ended"].as_str()), (Some(true), Some("completed")), "{rec}");
    assert!(rec["ttft_ms"].is_u64(), "{rec}");
    assert!(rec["tokens_in"].as_u64().unwrap() > 0 && rec["tokens_out"].as_u64().unwrap() > 0, "{rec}");
    assert!(rec["cost_nano_usd"].as_u64().unwrap() > 0, "gpt-4o-mini is priced: {rec}");

    // A client that reads the first chunk and leaves.
    let slow = json!({"model": "openai/gpt-4o-mini+chunk_delay=300", "messages": user("a long story please"), "stream": true});
    let mut resp = c.post(&url).header("content-type", "application/json").body(slow.to_string()).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let first = resp.chunk().await.unwrap();
    assert!(first.is_some());
    drop(resp);
    let rec = record(&c, &gw, &id).await;
    assert_eq!((rec["stream"].as_bool(), rec["ended"].as_str()), (Some(true), Some("client_closed")), "{rec}");
    assert_eq!(rec["status"], 200, "the headers had gone: the status the client got");
}

#[tokio::test]
async fn filters_cursor_paging_and_stats_agree_with_the_records() {
    let a = mock(Flavor::OpenAi).await;
    let b = mock(Flavor::OpenAi).await;
    let yaml = format!("providers:\n{}{}logs:\n  flush: 50ms\n", provider("a", &a, "cloud"), provider("b", &b, "on-prem"));
    let dir = tempfile::tempdir().unwrap();
    let (gw, _logs) = start(&yaml, Some(dir.path()));
    let c = client();
    let url = gw.url("/v1/chat/completions");
    // 240 requests: a and b alternately, every fifth one refused by the upstream (a caller fault, 400),
    // every third one streamed.
    let mut expected = std::collections::BTreeMap::<(String, u16, bool), usize>::new();
    for round in 0..30 {
        let sends = (0..8).map(|j| {
            let i = round * 8 + j;
            let p = if i % 2 == 0 { "a" } else { "b" };
            let text = if i % 5 == 0 { "[[error:400]]".to_string() } else { format!("hello {i}") };
            let stream = i % 3 == 0;
            let body = json!({"model": format!("{p}/gpt-4o-mini"), "messages": user(&text), "stream": stream});
            let (c, url) = (c.clone(), url.clone());
            async move {
                let r = c.post(&url).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                (p.to_string(), status, stream)
            }
        });
        for (p, status, stream) in futures_util::future::join_all(sends).await {
            *expected.entry((p, status, stream)).or_default() += 1;
        }
    }
    let count = |f: &dyn Fn(&(String, u16, bool)) -> bool| expected.iter().filter(|(k, _)| f(k)).map(|(_, n)| n).sum::<usize>();
    let total = count(&|_| true);
    assert_eq!(total, 240);
    assert!(count(&|k| k.1 == 400) > 0 && count(&|k| k.1 == 200) > 0, "{expected:?}");
    wait_for(&c, &gw, "/api/stats", |s, v| s == 200 && v["totals"]["requests"] == total).await;

    let (all, pages) = all_pages(&c, &gw, "/api/logs?limit=17").await;
    assert_eq!((all.len(), pages), (total, total.div_ceil(17)));
    let keys: Vec<(i64, String)> = all.iter().map(|r| (r["at_ms"].as_i64().unwrap(), r["id"].as_str().unwrap().to_string())).collect();
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "newest first by (at_ms, id), no repeats");

    for (query, want) in [
        ("provider=a", count(&|k| k.0 == "a")),
        ("provider=b&status=4xx", count(&|k| k.0 == "b" && k.1 == 400)),
        ("status=400&stream=true", count(&|k| k.1 == 400 && k.2)),
        ("stream=false&limit=200", count(&|k| !k.2)),
        ("status=2xx&model=gpt-4o-mini", count(&|k| k.1 == 200)),
        ("error=caller_fault", count(&|k| k.1 == 400)),
        ("q=b%2Fgpt-4o-mini", count(&|k| k.0 == "b")),
        ("min_latency_ms=600000", 0),
    ] {
        let (list, _) = all_pages(&c, &gw, &format!("/api/logs?{query}")).await;
        assert_eq!(list.len(), want, "{query}");
    }

    // The stats say what the records say.
    let (s, v) = api(&c, &gw, "/api/stats?group_by=provider,status_class").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["group_by"], json!(["provider", "status_class"]));
    assert_eq!(v["totals"]["requests"], total);
    assert_eq!(v["totals"]["errors"], 0, "a 400 is not an error of the gateway's");
    for g in v["groups"].as_array().unwrap() {
        let p = g["keys"]["provider"].as_str().unwrap();
        let class = g["keys"]["status_class"].as_str().unwrap();
        let want = count(&|k| k.0 == p && format!("{}xx", k.1 / 100) == class);
        assert_eq!(g["totals"]["requests"], want, "{g}");
        let in_series: u64 = g["series"].as_array().unwrap().iter().map(|p| p["requests"].as_u64().unwrap()).sum();
        assert_eq!(in_series as usize, want);
        assert_eq!(g["labels"]["provider"], p);
    }
    let (_, v) = api(&c, &gw, "/api/stats?provider=a").await;
    assert_eq!(v["groups"].as_array().unwrap().len(), 1);
    assert_eq!(v["groups"][0]["keys"], json!({}));
    assert_eq!(v["totals"]["requests"], count(&|k| k.0 == "a"));
    let served: u64 = all.iter().filter(|r| r["status"] == 200).map(|r| r["tokens_out"].as_u64().unwrap_or(0)).sum();
    let (_, v) = api(&c, &gw, "/api/stats").await;
    assert_eq!(v["totals"]["tokens_out"], served);
    assert!(v["totals"]["p95_ms"].as_u64().unwrap() >= v["totals"]["p50_ms"].as_u64().unwrap());
}

#[tokio::test]
async fn after_sigterm_the_last_records_are_in_sqlite() {
    let m = mock(Flavor::OpenAi).await;
    // The writer waits a minute between writes: what the requests below leave in the queue is written
    // only by the drain at shutdown.
    let yaml = format!("providers:\n{}logs:\n  flush: 60s\n", provider("openai", &m, "cloud"));
    let dir = tempfile::tempdir().unwrap();
    let (gw, _logs) = start(&yaml, Some(dir.path()));
    let c = client();
    let mut ids = Vec::new();
    for i in 0..5 {
        let r =
            post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "openai/gpt-4o-mini", "messages": user(&format!("n{i}"))})).await;
        assert_eq!(r.status, 200);
        ids.push(r.header("x-request-id").unwrap().to_string());
    }
    assert!(gw.terminate().success());
    let (gw, _logs) = start(&yaml, Some(dir.path()));
    for id in &ids {
        let (s, v) = api(&c, &gw, &format!("/api/logs/{id}")).await;
        assert_eq!(s, 200, "{id} was lost at shutdown: {v}");
    }
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let m = mock(Flavor::OpenAi).await;
    // Pinned tiny on purpose: a queue of one record, batches of one, and a writer that sleeps a minute
    // after its first write, so that every record after the second finds the queue full.
    let yaml = format!("providers:\n{}logs:\n  queue: 1\n  batch: 1\n  flush: 60s\n", provider("openai", &m, "cloud"));
    let dir = tempfile::tempdir().unwrap();
    let (gw, _logs) = start(&yaml, Some(dir.path()));
    let c = client();
    let n = 12;
    for i in 0..n {
        let r =
            post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "openai/gpt-4o-mini", "messages": user(&format!("n{i}"))})).await;
        assert_eq!(r.status, 200);
    }
    let text = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let dropped = metric(&text, "switchyard_request_log_dropped_total");
    assert!(dropped >= 1.0, "nothing dropped with a queue of one:\n{text}");
    assert!(text.contains("switchyard_request_log_written_total"), "{text}");
    assert!(gw.terminate().success());
    // What was not dropped was written (at the latest by the drain at shutdown).
    let (gw, _logs) = start(&yaml, Some(dir.path()));
    let (kept, _) = all_pages(&c, &gw, "/api/logs?limit=200").await;
    assert_eq!(kept.len() as f64, n as f64 - dropped, "every record is either written or counted as dropped");
}

#[tokio::test]
async fn retention_prunes_by_row_count_and_by_age_and_the_coarse_stats_stay() {
    let m = mock(Flavor::OpenAi).await;
    // Pruned every second (a tenth of the retention, at least 1 s).
    let yaml = format!("providers:\n{}logs:\n  retention: 3s\n  max_rows: 4\n  flush: 10ms\n", provider("openai", &m, "cloud"));
    let dir = tempfile::tempdir().unwrap();
    let (gw, _logs) = start(&yaml, Some(dir.path()));
    let c = client();
    let mut ids = Vec::new();
    for i in 0..10 {
        let r =
            post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "openai/gpt-4o-mini", "messages": user(&format!("n{i}"))})).await;
        ids.push(r.header("x-request-id").unwrap().to_string());
    }
    // All ten written (the rollups count them), then cut to the newest four, then all aged out.
    wait_for(&c, &gw, "/api/stats?interval=1h", |s, v| s == 200 && v["totals"]["requests"] == 10).await;
    let v =
        wait_for(&c, &gw, "/api/logs?limit=200", |s, v| s == 200 && v["data"].as_array().is_some_and(|d| d.len() <= 4 && !d.is_empty()))
            .await;
    let kept: Vec<&str> = v["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(kept.iter().all(|id| ids[6..].contains(&id.to_string())), "the newest are kept: {kept:?}");
    wait_for(&c, &gw, "/api/logs", |s, v| s == 200 && v["data"].as_array().is_some_and(|d| d.is_empty())).await;
    let (s, _) = api(&c, &gw, &format!("/api/logs/{}", ids[9])).await;
    assert_eq!(s, 404);
    // The hourly rollups outlive the rows.
    let (_, v) = api(&c, &gw, "/api/stats?interval=1h").await;
    assert_eq!(v["totals"]["requests"], 10, "{v}");
}

#[tokio::test]
async fn bodies_are_kept_only_when_asked_and_never_for_a_restricted_key_without_log_bodies() {
    let local = mock(Flavor::OpenAi).await;
    let providers = format!("providers:\n{}", provider("local", &local, "on-prem"));
    // Off by default (and the log is in memory without a data directory).
    let (gw, _logs) = start(&providers, None);
    let c = client();
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "local/gpt-4o-mini", "messages": user("secret plans")})).await;
    let rec = record(&c, &gw, r.header("x-request-id").unwrap()).await;
    assert!(rec.get("request_body").is_none() && rec.get("response_body").is_none(), "{rec}");
    drop(gw);

    let yaml = format!(
        "{providers}logs:\n  bodies: true\n  max_body_size: 120\ngovernance:\n  virtual_keys:\n    - {{id: vk-open, name: open, value: sk-sy-open-8j2}}\n    - {{id: vk-sealed, name: sealed, value: sk-sy-sealed-8j2, residency: {{allowed_tags: [on-prem]}}}}\n    - {{id: vk-audited, name: audited, value: sk-sy-audited-8j2, residency: {{allowed_tags: [on-prem]}}, log_bodies: true}}\n"
    );
    let (gw, _logs) = start(&yaml, None);
    let url = gw.url("/v1/chat/completions");
    let send = |key: String, text: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c
                .post(&url)
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", "application/json")
                .body(json!({"model": "local/gpt-4o-mini", "messages": user(text)}).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-request-id"].to_str().unwrap().to_string()
        }
    };
    let open = record(&c, &gw, &send("sk-sy-open-8j2".into(), "hello open").await).await;
    let body = open["request_body"].as_str().unwrap();
    assert!(body.contains("hello open") && body.len() <= 120, "{body}");
    assert!(open["response_body"].as_str().unwrap().starts_with('{'), "{open}");
    assert!(!open.to_string().contains("sk-sy-open-8j2"), "the caller's key is a header, never a body");
    let sealed = record(&c, &gw, &send("sk-sy-sealed-8j2".into(), "hello sealed").await).await;
    assert_eq!(sealed["caller"]["restricted"], true);
    assert!(sealed.get("request_body").is_none() && sealed.get("response_body").is_none(), "{sealed}");
    let audited = record(&c, &gw, &send("sk-sy-audited-8j2".into(), "hello audited").await).await;
    assert!(audited["request_body"].as_str().unwrap().contains("hello audited"), "{audited}");

    // The management API takes log_bodies on a key it creates.
    let (s, v) = admin(
        &c,
        reqwest::Method::POST,
        gw.url("/api/governance/virtual-keys"),
        Some(TOKEN),
        Some(json!({"name": "api-audited", "residency": {"allowed_tags": ["on-prem"]}, "log_bodies": true})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["virtual_key"]["log_bodies"], true, "{v}");
    let value = v["virtual_key"]["value"].as_str().unwrap().to_string();
    let rec = record(&c, &gw, &send(value, "hello from the api").await).await;
    assert!(rec["request_body"].as_str().unwrap().contains("hello from the api"), "{rec}");
    // A stream keeps the text it delivered.
    let s = c
        .post(&url)
        .header("authorization", "Bearer sk-sy-open-8j2")
        .header("content-type", "application/json")
        .body(json!({"model": "local/gpt-4o-mini", "messages": user("stream it"), "stream": true}).to_string())
        .send()
        .await
        .unwrap();
    let id = s.headers()["x-request-id"].to_str().unwrap().to_string();
    let raw = s.text().await.unwrap();
    let delivered: String = raw
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    let rec = record(&c, &gw, &id).await;
    let text = rec["response_body"].as_str().unwrap();
    assert!(!text.is_empty() && delivered.starts_with(text), "kept {text:?}, delivered {delivered:?}");
}

#[tokio::test]
async fn unknown_query_parameters_and_bad_values_get_a_clear_400() {
    let m = mock(Flavor::OpenAi).await;
    let (gw, _logs) = start(&format!("providers:\n{}", provider("openai", &m, "cloud")), None);
    let c = client();
    for (path, param, code) in [
        ("/api/logs?limt=5", "limt", "invalid_log_query"),
        ("/api/logs?limit=500", "limit", "invalid_log_query"),
        ("/api/logs?status=9xx", "status", "invalid_log_query"),
        ("/api/logs?from=yesterday", "from", "invalid_log_query"),
        ("/api/logs?stream=maybe", "stream", "invalid_log_query"),
        ("/api/logs?cursor=not-a-cursor", "cursor", "invalid_log_query"),
        ("/api/logs?team=a&team=b", "team", "invalid_log_query"),
        ("/api/stats?interval=2m", "interval", "invalid_stats_query"),
        ("/api/stats?group_by=provider,model,team", "group_by", "invalid_stats_query"),
        ("/api/stats?group_by=region", "group_by", "invalid_stats_query"),
        ("/api/stats?from=2000&to=1000", "to", "invalid_stats_query"),
    ] {
        let (s, v) = api(&c, &gw, path).await;
        assert_eq!((s, v["error"]["param"].as_str(), v["error"]["code"].as_str()), (400, Some(param), Some(code)), "{path}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().starts_with(param), "{path}: {v}");
    }
    let (s, v) = api(&c, &gw, "/api/logs/no-such-request").await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
    let (s, v) = admin(&c, reqwest::Method::GET, gw.url("/api/logs"), None, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("admin_unauthorized")));
    let (s, _) = admin(&c, reqwest::Method::GET, gw.url("/api/stats"), Some("wrong"), None).await;
    assert_eq!(s, 401);
}
