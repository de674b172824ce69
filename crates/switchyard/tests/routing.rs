//! Routing through the real binary: fallbacks (config and request body, JSON and streams), what does and
//! does not fall back, timeouts, weighted keys and allow-lists, model resolution, the image fetch guard and
//! request limits. Where a test counts upstream calls exactly, same-target retries and health ordering are
//! switched off (a degraded primary would be tried after its fallback); they have their own suite
//! (`faults.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, FaultKind, Flavor};

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// A flaky OpenAI-format primary and a steady Anthropic-format fallback, joined by a route.
async fn pair(primary_timeouts: &str) -> (switchyard_mock::MockServer, switchyard_mock::MockServer, Gateway) {
    let flaky = mock(Flavor::OpenAi).await;
    let steady = mock(Flavor::Anthropic).await;
    let yaml = format!(
        r#"
providers:
  flaky:
    type: openai
    base_url: "{}"
    keys: [{{name: fk, value: sk-flaky-secret}}]
    retry: {{max_retries: 0}}
    health: {{enabled: false}}
{primary_timeouts}
  steady:
    type: anthropic
    base_url: "{}"
    keys: [{{name: sk, value: sk-steady-secret}}]
routes:
  - models: ["flaky/gpt-4o-mini"]
    fallbacks: ["steady/claude-sonnet-4-6"]
"#,
        flaky.base_url(),
        steady.base_url()
    );
    let gw = Gateway::start(&yaml);
    (flaky, steady, gw)
}

#[tokio::test]
async fn route_fallback_loses_nothing_and_says_who_served() {
    let (flaky, steady, gw) = pair("").await;
    flaky.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![529], ..Behavior::default() });
    let c = client();
    for i in 0..20 {
        let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/gpt-4o-mini", "messages": user(&format!("frame {i}"))}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["choices"][0]["message"]["content"], format!("echo: frame {i}"));
        assert_eq!(r.header("x-switchyard-provider"), Some("steady"));
        assert_eq!(r.header("x-switchyard-model"), Some("claude-sonnet-4-6"));
        assert_eq!(r.header("x-switchyard-key"), Some("sk"));
        assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
        assert_eq!(r.header("x-switchyard-fallback-index"), Some("1"));
    }
    assert_eq!(calls(&flaky), 20);
    assert_eq!(calls(&steady), 20);

    // Streams fall back the same way before their first chunk.
    let s =
        stream(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/gpt-4o-mini", "stream": true, "messages": user("streamed")}))
            .await;
    assert_eq!(s.status, 200);
    assert_eq!(s.text(), "echo: streamed");
    assert!(s.done);
    assert_eq!(s.headers.get("x-switchyard-provider").unwrap(), "steady");
}

#[tokio::test]
async fn request_body_fallbacks_are_tried_in_order() {
    let a = mock(Flavor::OpenAi).await;
    let b = mock(Flavor::OpenAi).await;
    let d = mock(Flavor::Ollama).await;
    let yaml = format!(
        "providers:\n  a:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: ka}}]\n    retry: {{max_retries: 0}}\n  b:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: kb}}]\n    retry: {{max_retries: 0}}\n  d:\n    type: ollama\n    base_url: \"{}\"\n",
        a.base_url(),
        b.base_url(),
        d.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let r = post(
        &c,
        &gw.url("/v1/chat/completions"),
        &json!({"model": "a/m+fault=1+code=503", "fallbacks": ["b/m+fault=1+code=500", "d/llava"], "messages": user("hi")}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-switchyard-provider"), Some("d"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("3"));
    assert_eq!(r.header("x-switchyard-fallback-index"), Some("2"));
    assert_eq!((calls(&a), calls(&b), calls(&d)), (1, 1, 1));

    // Every target failing: one error listing every attempt, with a status saying why.
    let r = post(
        &c,
        &gw.url("/v1/chat/completions"),
        &json!({"model": "a/m+fault=1+code=529", "fallbacks": ["b/m+fault=1+code=500"], "messages": user("hi")}),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.body);
    let attempts = r.body["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["target"], "a/m+fault=1+code=529");
    assert_eq!(attempts[0]["status"], 529);
    assert_eq!(attempts[1]["status"], 500);
    assert_eq!(attempts[1]["class"], "transient");
    assert_eq!(r.body["error"]["code"], "all_attempts_failed");

    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "a/m", "fallbacks": ["nowhere/x"], "messages": user("hi")})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "fallbacks[0]");
}

#[tokio::test]
async fn caller_faults_do_not_fall_back() {
    let (flaky, steady, gw) = pair("").await;
    let c = client();
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/gpt-4o-mini", "messages": user("[[error:400]]")})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
    assert_eq!(calls(&flaky), 1);
    assert_eq!(calls(&steady), 0);
    assert!(!r.body.to_string().contains("sk-flaky-secret"));
}

#[tokio::test]
async fn timeouts_fail_over_and_never_hang() {
    let (flaky, steady, gw) = pair("    first_byte_timeout: 300ms\n    timeout: 1s\n").await;
    let c = client();
    for kind in [FaultKind::Hang, FaultKind::SlowFirstByte] {
        flaky.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(kind), ..Behavior::default() });
        let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/gpt-4o-mini", "messages": user("patience")})).await;
        assert_eq!(r.status, 200, "{kind:?}: {}", r.body);
        assert_eq!(r.header("x-switchyard-provider"), Some("steady"));
        let s = stream(
            &c,
            &gw.url("/v1/chat/completions"),
            &json!({"model": "flaky/gpt-4o-mini", "stream": true, "messages": user("patience")}),
        )
        .await;
        assert_eq!(s.status, 200, "{kind:?}");
        assert_eq!(s.text(), "echo: patience");
    }
    assert_eq!(calls(&steady), 4);

    // No route, so no fallback: a timeout is a 504 after the provider's deadline.
    flaky.set_behavior(Behavior::default());
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/other+kind=hang", "messages": user("x")})).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "timeout");
    let s = stream(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/other+kind=hang", "stream": true, "messages": user("x")}))
        .await;
    assert_eq!(s.status, 504, "{}", s.raw);
}

#[tokio::test]
async fn malformed_answers_and_stream_errors_before_the_first_chunk_fail_over() {
    let (flaky, _steady, gw) = pair("").await;
    let c = client();
    flaky.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(FaultKind::StreamError), ..Behavior::default() });
    let s =
        stream(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/gpt-4o-mini", "stream": true, "messages": user("go")})).await;
    assert_eq!((s.status, s.text().as_str()), (200, "echo: go"), "{}", s.raw);
    assert_eq!(s.headers.get("x-switchyard-provider").unwrap(), "steady");

    // A broken line after content went out cannot fail over: the client gets an error event, never a
    // silent truncation.
    flaky.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(FaultKind::Malformed), ..Behavior::default() });
    let s =
        stream(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/gpt-4o-mini", "stream": true, "messages": user("go")})).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.chunks.last().unwrap()["error"]["code"], "stream_interrupted", "{}", s.raw);
    assert!(s.done);
    flaky.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(FaultKind::Malformed), ..Behavior::default() });
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "flaky/gpt-4o-mini", "messages": user("go")})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-provider"), Some("steady"));
}

#[tokio::test]
async fn a_stream_broken_after_its_first_chunk_ends_with_an_error_event() {
    let (flaky, steady, gw) = pair("").await;
    flaky.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(FaultKind::Reset), ..Behavior::default() });
    let c = client();
    let s = stream(
        &c,
        &gw.url("/v1/chat/completions"),
        &json!({"model": "flaky/gpt-4o-mini", "stream": true, "messages": user("one two three four five")}),
    )
    .await;
    assert_eq!(s.status, 200);
    assert!(!s.text().is_empty(), "the first chunks reached the client: {}", s.raw);
    let last = s.chunks.last().unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{}", s.raw);
    assert!(s.done, "the stream still ends with [DONE]: {}", s.raw);
    assert_eq!(calls(&steady), 0, "no fallback once bytes went out");
}

#[tokio::test]
async fn weighted_keys_split_within_two_points_and_respect_allow_lists() {
    let up = mock(Flavor::OpenAi).await;
    let yaml = format!(
        r#"
providers:
  openai:
    base_url: "{}"
    keys:
      - {{name: primary, value: sk-primary, weight: 0.7}}
      - {{name: failover, value: sk-failover, weight: 0.3}}
      - {{name: big-only, value: sk-big, weight: 100, models: [gpt-4o]}}
"#,
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let n = 10_000;
    let body = json!({"model": "openai/gpt-4o-mini", "messages": user("k")});
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32 {
        let (c, url, body) = (c.clone(), url.clone(), body.clone());
        tasks.spawn(async move {
            let mut ok = 0;
            for _ in (w..n).step_by(32) {
                let r = c.post(&url).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
                ok += usize::from(r.status() == 200);
                let _ = r.bytes().await;
            }
            ok
        });
    }
    let ok: usize = tasks.join_all().await.into_iter().sum();
    assert_eq!(ok, n);
    let stats = up.stats();
    let primary = stats.by_key.get("sk-primary").copied().unwrap_or(0) as f64 / n as f64;
    assert!((0.68..=0.72).contains(&primary), "primary share {primary}, stats {:?}", stats.by_key);
    assert_eq!(stats.by_key.get("sk-big"), None, "a key limited to gpt-4o never serves gpt-4o-mini");

    up.reset();
    for _ in 0..50 {
        let r = post(&c, &url, &json!({"model": "openai/gpt-4o", "messages": user("k")})).await;
        assert_eq!(r.status, 200);
    }
    let big = up.stats().by_key.get("sk-big").copied().unwrap_or(0);
    assert!(big >= 45, "weight 100 of 101 should take nearly all gpt-4o traffic, got {big}/50");
}

#[tokio::test]
async fn model_resolution_errors_are_clear() {
    let a = mock(Flavor::OpenAi).await;
    let b = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "providers:\n  a:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: ka}}]\n    models: [shared, only-a]\n  b:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: kb}}]\n    models: [shared]\n",
        a.base_url(),
        b.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let r = post(&c, &url, &json!({"model": "only-a", "messages": user("x")})).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("a")));
    let r = post(&c, &url, &json!({"model": "shared", "messages": user("x")})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "ambiguous_model");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("a/shared, b/shared"), "{}", r.body);
    let r = post(&c, &url, &json!({"model": "nobody-serves-this", "messages": user("x")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("model_not_found")));
    let r = post(&c, &url, &json!({"messages": user("x")})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "model");
}

#[tokio::test]
async fn image_fetches_refuse_private_addresses_unless_allowed() {
    let up = mock(Flavor::Ollama).await;
    let image = image_server().await;
    let yaml = format!("providers:\n  local:\n    type: ollama\n    base_url: \"{}\"\n", up.base_url());
    let gw = Gateway::start(&yaml);
    let c = client();
    for url in [image.clone(), image.replace("127.0.0.1", "localhost"), "http://169.254.169.254/latest/meta-data".to_string()] {
        let r = post(
            &c,
            &gw.url("/v1/chat/completions"),
            &json!({"model": "local/llava", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]}]}),
        )
        .await;
        assert_eq!(r.status, 400, "{url}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "image_fetch_failed", "{url}");
        assert_eq!(r.body["error"]["param"], "messages[0].content[1].image_url");
    }
    assert_eq!(calls(&up), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn oversized_and_malformed_bodies_get_openai_errors() {
    let up = mock(Flavor::OpenAi).await;
    let yaml =
        format!("server:\n  max_body_size: 1KiB\nproviders:\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: k}}]\n", up.base_url());
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let big = "x".repeat(2048);
    let r = post(&c, &url, &json!({"model": "openai/gpt-4o-mini", "messages": user(&big)})).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "payload_too_large");
    for (body, param) in [
        ("{not json", Value::Null),
        ("", Value::Null),
        (r#"{"model":"openai/gpt-4o-mini","messages":"hi"}"#, json!("messages")),
        (r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"wizard","content":"hi"}]}"#, json!("messages[0].role")),
        (r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#, json!("temperature")),
        (r#"[1,2,3]"#, Value::Null),
    ] {
        let r = c.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    assert_eq!(calls(&up), 0);
    let r = c.get(gw.url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = c.get(gw.url("/v2/whatever")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "unknown_route");
}
