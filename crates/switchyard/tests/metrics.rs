//! `/metrics` as an operator scrapes it: bounded whatever callers send, and holding every series the
//! shipped Grafana dashboard queries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor};

fn random_word(rng: &mut fastrand::Rng, n: usize) -> String {
    std::iter::repeat_with(|| rng.alphanumeric()).take(n).collect()
}

async fn scrape(c: &reqwest::Client, gw: &Gateway) -> String {
    let r = c.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Every series on the page (name and labels, without the value).
fn series(text: &str) -> BTreeSet<String> {
    text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string())).collect()
}

/// Waits (a bound on a hang, not a speed target) until every name in `names` has a sample on the page.
async fn wait_for_names(c: &reqwest::Client, gw: &Gateway, names: &BTreeSet<String>) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(c, gw).await;
        let present: BTreeSet<String> = series(&text).iter().map(|s| s.split('{').next().unwrap().to_string()).collect();
        let missing: Vec<&String> = names.iter().filter(|n| !present.contains(*n)).collect();
        if missing.is_empty() {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "never on /metrics: {missing:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shipped dashboard, parsed: every query's metric names (a histogram's `_bucket` as it is exported).
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/switchyard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "switchyard");
    let mut names = BTreeSet::new();
    let mut queries = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            queries += 1;
            let mut rest = expr;
            while let Some(at) = rest.find("switchyard_") {
                let tail = &rest[at..];
                let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(queries > 20 && names.len() > 15, "{queries} queries of {names:?}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_models_and_headers_do_not_grow_metrics() {
    let up = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "providers:\n  cloud:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{name: main, value: sk-1}}]\n    tags: [cloud]\n\
         governance:\n  virtual_keys:\n    - {{id: vk-app, name: app}}\n",
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let mut rng = fastrand::Rng::with_seed(10);
    let mut sent_words = Vec::new();
    let mut before = None;
    for i in 0..1000 {
        let model = random_word(&mut rng, 12);
        let header = random_word(&mut rng, 16);
        // Four kinds in turn: answered for a made-up model, a made-up provider, a made-up key, a made-up route.
        let (path, model, vk) = match i % 4 {
            0 => ("/v1/chat/completions", format!("cloud/{model}"), "vk-app".to_string()),
            1 => ("/v1/chat/completions", format!("{model}/{model}"), "vk-app".to_string()),
            2 => ("/v1/chat/completions", format!("cloud/{model}"), format!("vk-{header}")),
            _ => ("/v1/embeddings", model.clone(), "vk-app".to_string()),
        };
        let body = if path.ends_with("embeddings") {
            json!({"model": model, "input": "hi"})
        } else {
            json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "fallbacks": [format!("cloud/{header}")]})
        };
        let r = c
            .post(gw.url(path))
            .header("authorization", format!("Bearer {vk}"))
            .header("x-request-id", &header)
            .header("traceparent", format!("00-{:032x}-{:016x}-01", rng.u128(1..), rng.u64(1..)))
            .header(format!("x-{}", header.to_lowercase()), &model)
            .header("user-agent", &header)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 200 | 400 | 401 | 404), "{}", r.status());
        // And a route that does not exist, which makes no record at all.
        let _ = c.get(gw.url(&format!("/v1/{model}"))).send().await.unwrap();
        sent_words.extend([model, header]);
        if i == 49 {
            before = Some(scrape(&c, &gw).await);
        }
    }
    let before = before.unwrap();
    let after = scrape(&c, &gw).await;
    let (s1, s2) = (series(&before), series(&after));
    assert_eq!(s2.difference(&s1).collect::<Vec<_>>(), Vec::<&String>::new(), "new series after the first 50 requests");
    // A bound on the page itself: the series of one provider, one key, a few statuses; values only grow digits.
    assert!(s2.len() < 400, "{} series:\n{after}", s2.len());
    assert!(after.len() < before.len() + before.len() / 10, "{} bytes, then {} bytes", before.len(), after.len());
    for w in &sent_words {
        assert!(!after.contains(w.as_str()), "a caller's string became a label value: {w}");
    }
    assert!(after.contains(r#"model="other""#), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists_after_traffic() {
    let primary = mock(Flavor::OpenAi).await;
    let fallback = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "providers:
  cloud:
    type: openai
    base_url: \"{}\"
    keys: [{{name: main, value: sk-1}}]
    models: [gpt-4o-mini]
    tags: [cloud]
  local:
    type: openai
    base_url: \"{}\"
    keys: [{{name: gpu, value: sk-2}}]
    models: [llama-3-8b]
    tags: [on-prem]
routes:
  - models: [chat-default]
    targets: [cloud/gpt-4o-mini, local/llama-3-8b]
pricing:
  \"local/llama-3-8b\": {{input: 1, output: 2}}
governance:
  teams:
    - {{id: research, name: Research, budget: {{max_limit: 100}}}}
  virtual_keys:
    - {{id: vk-batch, name: batch, team_id: research, budget: {{max_limit: 10}}}}
",
        primary.base_url(),
        fallback.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let chat = |stream: bool| json!({"model": "chat-default", "stream": stream, "messages": [{"role": "user", "content": "hello there"}]});
    let send = |body: Value| {
        let c = c.clone();
        let url = gw.url("/v1/chat/completions");
        async move {
            let r = c
                .post(url)
                .header("authorization", "Bearer vk-batch")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert_eq!(status, 200, "{text}");
            text
        }
    };
    for stream in [false, true, false, true] {
        send(chat(stream)).await;
    }
    // The primary fails: requests fall back to the local model.
    primary.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    for stream in [false, true, false] {
        send(chat(stream)).await;
    }
    let names: BTreeSet<String> = dashboard_metrics();
    wait_for_names(&c, &gw, &names).await;
    // What the dashboard's panels show, with the labels they group by (a stream is counted once it has
    // ended, which may be just after its client read the last chunk: hence the wait).
    let needles = [
        r#"switchyard_fallbacks_total{route="chat-default",provider="local"} 3"#,
        r#"switchyard_time_to_first_token_seconds_count{provider="cloud",model="gpt-4o-mini"} 2"#,
        r#"switchyard_inter_token_gap_seconds_count{provider="local",model="llama-3-8b"}"#,
        r#"switchyard_virtual_key_requests_total{virtual_key="batch",provider="local",provider_tags="on-prem"} 3"#,
        r#"switchyard_virtual_key_requests_total{virtual_key="batch",provider="cloud",provider_tags="cloud"} 4"#,
        r#"switchyard_virtual_key_budget_limit_usd{virtual_key="batch"} 10"#,
        r#"switchyard_team_budget_used_ratio{team="research"}"#,
        r#"switchyard_provider_degraded{provider="cloud"}"#,
        r#"switchyard_request_log_dropped_total 0"#,
        r#"switchyard_upstream_attempts_total{provider="cloud",key="main",outcome="transient"} 3"#,
        r#"switchyard_retries_total{provider="local"} 3"#,
        r#"switchyard_overhead_seconds_count{endpoint="chat"} 7"#,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(&c, &gw).await;
        let missing: Vec<&&str> = needles.iter().filter(|n| !text.contains(**n)).collect();
        if missing.is_empty() {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{missing:?} missing:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.lines().any(|l| l.starts_with(r#"switchyard_cost_usd_total{provider="local",model="llama-3-8b"}"#) && !l.ends_with(" 0")),
        "{text}"
    );
    // Histograms are bucketed (not summaries), and the overhead's buckets are below a millisecond too.
    assert!(text.contains(r#"switchyard_overhead_seconds_bucket{endpoint="chat",le="0.0005"}"#), "{text}");
    assert!(!text.contains("quantile="), "{text}");
}

#[tokio::test]
async fn the_metrics_section_is_checked_like_the_rest_of_the_file() {
    let (ok, _, err) = check("metrics:\n  max_label_values: 0\n  latency_buckets: [2, 1]\n  histogram: true\n", &[]);
    assert!(!ok);
    for needle in ["metrics.max_label_values: must be at least 1", "metrics.latency_buckets[1]: bounds must increase", "histogram"] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }
    let (ok, out, err) = check("metrics:\n  virtual_key_labels: false\n  latency_buckets: [100ms, 1s, 10s]\n", &[]);
    assert!(ok, "{out}{err}");
}
