//! The fault-injection suite: the real binary in front of mock providers that fail on command.
//!
//! For every fault, JSON and streaming: with a healthy fallback nothing is lost and the answer is attributed
//! to the fallback; without one the caller gets a clear error of the right status within the deadline.
//! Then the policies one by one: key rotation and cooldown after 401/429, circuit breakers opening and
//! closing, caller faults not retried, retries with backoff, hedging, overload, keep-alives, cancellation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, FaultKind, Flavor, MockServer};

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The faults of the issue, as mock behaviour.
fn faults() -> Vec<(&'static str, Behavior)> {
    let status = |code: u16| Behavior { fault_rate: 1.0, fault_codes: vec![code], retry_after_secs: Some(1), ..Behavior::default() };
    let kind = |k: FaultKind| Behavior { fault_rate: 1.0, fault_kind: Some(k), ..Behavior::default() };
    vec![
        ("429", status(429)),
        ("500", status(500)),
        ("503", status(503)),
        ("529", status(529)),
        ("hang", kind(FaultKind::Hang)),
        ("slow first byte", kind(FaultKind::SlowFirstByte)),
        ("reset", kind(FaultKind::Reset)),
        ("malformed", kind(FaultKind::Malformed)),
        ("stream error event", kind(FaultKind::StreamError)),
    ]
}

const FAST_TIMEOUTS: &str = "    first_byte_timeout: 300ms\n    timeout: 2s\n";

async fn primary_and_fallback() -> (MockServer, MockServer, Gateway) {
    let bad = mock(Flavor::OpenAi).await;
    let good = mock(Flavor::Anthropic).await;
    let yaml = format!(
        "routing:\n  deadline: 8s\nproviders:\n  bad:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: sk-bad}}]\n{FAST_TIMEOUTS}  good:\n    type: anthropic\n    base_url: \"{}\"\n    keys: [{{value: sk-good}}]\nroutes:\n  - models: [\"bad/gpt-4o-mini\"]\n    fallbacks: [\"good/claude-sonnet-4-6\"]\n",
        bad.base_url(),
        good.base_url()
    );
    (bad, good, Gateway::start(&yaml))
}

#[tokio::test]
async fn with_a_healthy_fallback_no_request_is_lost() {
    let (bad, good, gw) = primary_and_fallback().await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for (name, behavior) in faults() {
        bad.set_behavior(behavior);
        for i in 0..3 {
            let started = Instant::now();
            let r = post(&c, &url, &json!({"model": "bad/gpt-4o-mini", "messages": user(&format!("{name} {i}"))})).await;
            assert_eq!(r.status, 200, "{name}: {}", r.body);
            assert_eq!(r.body["choices"][0]["message"]["content"], format!("echo: {name} {i}"), "{name}");
            assert_eq!(r.header("x-switchyard-provider"), Some("good"), "{name}");
            assert!(started.elapsed() < Duration::from_secs(8), "{name}: took {:?}", started.elapsed());

            let s = stream(&c, &url, &json!({"model": "bad/gpt-4o-mini", "stream": true, "messages": user(&format!("{name} {i}"))})).await;
            assert_eq!(s.status, 200, "{name} stream: {}", s.raw);
            if matches!(name, "reset" | "malformed") && s.headers.get("x-switchyard-provider").is_some_and(|p| p == "bad") {
                // These break after content reached the client: no fallback can undo that, so the stream ends
                // with an error event instead of a silent truncation.
                assert_eq!(s.chunks.last().unwrap()["error"]["code"], "stream_interrupted", "{name}: {}", s.raw);
                assert!(s.done, "{name}");
            } else {
                assert_eq!(s.text(), format!("echo: {name} {i}"), "{name} stream: {}", s.raw);
                assert_eq!(s.headers.get("x-switchyard-provider").unwrap(), "good", "{name} stream");
                assert!(s.done);
            }
        }
    }
    assert!(calls(&good) >= 9 * 3 * 2 - 6, "the fallback answered: {:?}", good.stats());
}

#[tokio::test]
async fn without_a_fallback_the_error_is_clear_and_on_time() {
    let bad = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "routing:\n  deadline: 5s\nproviders:\n  bad:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: sk-bad}}]\n    retry: {{max_retries: 1, initial_backoff: 10ms}}\n    circuit_breaker: {{enabled: false}}\n    key_cooldown: {{rate_limited: 10ms}}\n{FAST_TIMEOUTS}",
        bad.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for (name, behavior) in faults() {
        bad.set_behavior(behavior);
        let want = match name {
            "429" | "503" | "529" => 503,
            "hang" | "slow first byte" => 504,
            _ => 502,
        };
        for is_stream in [false, true] {
            let started = Instant::now();
            let body = json!({"model": "bad/gpt-4o-mini", "stream": is_stream, "messages": user("x")});
            let (status, raw) = if is_stream {
                let s = stream(&c, &url, &body).await;
                (s.status, s.raw)
            } else {
                let r = post(&c, &url, &body).await;
                (r.status, r.body.to_string())
            };
            let took = started.elapsed();
            if is_stream && matches!(name, "reset" | "malformed") {
                // Content went out before the break: an error event, not an HTTP error.
                assert_eq!(status, 200, "{name}: {raw}");
                assert!(raw.contains("stream_interrupted") && raw.ends_with("data: [DONE]\n\n"), "{name}: {raw}");
            } else {
                assert_eq!(status, want, "{name} stream={is_stream}: {raw}");
                let v: Value = serde_json::from_str(&raw).unwrap();
                assert_eq!(v["error"]["code"], "all_attempts_failed", "{name}: {raw}");
                assert!(v["error"]["attempts"].as_array().unwrap().iter().all(|a| a["class"].is_string()));
            }
            assert!(took < Duration::from_secs(6), "{name} stream={is_stream}: took {took:?}");
        }
    }
    // 429s carry the upstream's Retry-After through to the caller.
    bad.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![429], retry_after_secs: Some(1), ..Behavior::default() });
    let r = post(&c, &url, &json!({"model": "bad/gpt-4o-mini", "messages": user("x")})).await;
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
}

#[tokio::test]
async fn a_401_key_is_rotated_out_until_it_recovers() {
    let up = mock(Flavor::OpenAi).await;
    up.set_behavior(Behavior { key_status: [("sk-revoked".to_string(), 401)].into(), ..Behavior::default() });
    let yaml = format!(
        "providers:\n  openai:\n    base_url: \"{}\"\n    keys:\n      - {{name: revoked, value: sk-revoked, weight: 10}}\n      - {{name: good, value: sk-good, weight: 1}}\n    key_cooldown: {{key_invalid: 2s}}\n",
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for i in 0..30 {
        let r = post(&c, &url, &json!({"model": "openai/gpt-4o-mini", "messages": user(&format!("k{i}"))})).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-switchyard-key"), Some("good"));
    }
    assert_eq!(chat_calls_with_key(&up, "sk-revoked"), 1, "the revoked key was tried once, then rotated out");
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    let key = &health["providers"][0]["keys"][0];
    assert_eq!((key["name"].as_str(), key["cooldown_reason"].as_str()), (Some("revoked"), Some("key_invalid")), "{health}");

    // Fixed upstream-side and the cooldown over: the key is probed and back in rotation.
    up.set_behavior(Behavior::default());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for i in 0..20 {
        let r = post(&c, &url, &json!({"model": "openai/gpt-4o-mini", "messages": user(&format!("again {i}"))})).await;
        assert_eq!(r.status, 200);
    }
    assert!(chat_calls_with_key(&up, "sk-revoked") > 5, "{:?}", up.stats().by_key);
}

#[tokio::test]
async fn a_429_rotates_keys_at_once_and_a_lone_cold_key_is_waited_for() {
    let up = mock(Flavor::OpenAi).await;
    up.set_behavior(Behavior { key_status: [("sk-hot".to_string(), 429)].into(), retry_after_secs: Some(30), ..Behavior::default() });
    let yaml = format!(
        "providers:\n  openai:\n    base_url: \"{}\"\n    keys:\n      - {{name: hot, value: sk-hot, weight: 100}}\n      - {{name: cool, value: sk-cool, weight: 1}}\n",
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let started = Instant::now();
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "openai/gpt-4o-mini", "messages": user("x")})).await;
    assert_eq!((r.status, r.header("x-switchyard-key")), (200, Some("cool")));
    assert!(started.elapsed() < Duration::from_secs(2), "no sleeping on a cold key: {:?}", started.elapsed());

    // One key only, rate-limited with Retry-After 1: the request waits for it within its deadline.
    let lone = mock(Flavor::OpenAi).await;
    lone.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![429], retry_after_secs: Some(1), ..Behavior::default() });
    let yaml = format!(
        "routing:\n  deadline: 10s\nproviders:\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: sk-lone}}]\n",
        lone.base_url()
    );
    let gw = Gateway::start(&yaml);
    let url = gw.url("/v1/chat/completions");
    let task = tokio::spawn({
        let c = c.clone();
        async move { post(&c, &url, &json!({"model": "openai/gpt-4o-mini", "messages": user("patient")})).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    lone.set_behavior(Behavior::default());
    let r = task.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
}

#[tokio::test]
async fn an_open_circuit_stops_traffic_then_probes_close_it() {
    let bad = mock(Flavor::OpenAi).await;
    let good = mock(Flavor::OpenAi).await;
    bad.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![529], ..Behavior::default() });
    let yaml = format!(
        "providers:\n  bad:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: k}}]\n    retry: {{max_retries: 0}}\n    circuit_breaker: {{consecutive_failures: 3, open_for: 1s, half_open_successes: 2, half_open_share: 1.0}}\n  good:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: k}}]\nroutes:\n  - models: [\"bad/m\"]\n    fallbacks: [\"good/m\"]\n",
        bad.base_url(),
        good.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for i in 0..30 {
        let r = post(&c, &url, &json!({"model": "bad/m", "messages": user(&format!("{i}"))})).await;
        assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("good")));
    }
    assert_eq!(calls(&bad), 3, "after three failures the circuit opened and no more traffic went to bad");
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["circuit"]["state"], "open", "{health}");
    let r = post(&c, &url, &json!({"model": "bad/m", "messages": user("skip")})).await;
    assert_eq!(r.header("x-switchyard-attempts"), Some("1"), "a skipped target is not an attempt");
    // The same story in Prometheus terms.
    let m = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        r#"switchyard_circuit_open{breaker="bad"} 1"#,
        r#"switchyard_upstream_attempts_total{provider="bad",outcome="transient"} 3"#,
        r#"switchyard_upstream_attempts_total{provider="bad",outcome="circuit_open"}"#,
        r#"switchyard_upstream_attempts_total{provider="good",outcome="success"}"#,
        r#"switchyard_requests_total{endpoint="chat",status="200"}"#,
    ] {
        assert!(m.contains(needle), "missing {needle} in:\n{m}");
    }

    // Recovered upstream: after open_for, probes go through and close the circuit.
    bad.set_behavior(Behavior::default());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut served_by_bad = 0;
    for i in 0..10 {
        let r = post(&c, &url, &json!({"model": "bad/m", "messages": user(&format!("after {i}"))})).await;
        assert_eq!(r.status, 200);
        served_by_bad += usize::from(r.header("x-switchyard-provider") == Some("bad"));
    }
    assert_eq!(served_by_bad, 10, "probes succeed and close it");
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["circuit"]["state"], "closed", "{health}");
}

#[tokio::test]
async fn caller_faults_are_not_retried_and_transient_ones_are() {
    let up = mock(Flavor::OpenAi).await;
    let other = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "providers:\n  a:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: k}}]\n    retry: {{max_retries: 3, initial_backoff: 5ms}}\n    circuit_breaker: {{enabled: false}}\n  b:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: k}}]\nroutes:\n  - models: [\"a/m\"]\n    fallbacks: [\"b/m\"]\n",
        up.base_url(),
        other.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for code in [400, 404, 413, 422] {
        up.reset();
        let r = post(&c, &url, &json!({"model": "a/m", "messages": user(&format!("[[error:{code}]]"))})).await;
        assert_eq!(r.status, code, "{}", r.body);
        assert_eq!(calls(&up), 1, "{code} is not retried");
        assert_eq!(calls(&other), 0, "{code} does not fall back");
    }
    let r = post(&c, &url, &json!({"model": "a/m", "messages": user("[[context]]")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("context_length_exceeded")));

    // A transient failure is retried on the same target (3 retries), then falls back.
    up.reset();
    up.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    let r = post(&c, &url, &json!({"model": "a/m", "messages": user("x")})).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("b")));
    assert_eq!(calls(&up), 4);
    assert_eq!(r.header("x-switchyard-attempts"), Some("5"));
}

#[tokio::test]
async fn context_too_long_moves_to_the_context_fallbacks() {
    let small = mock(Flavor::OpenAi).await;
    let big = mock(Flavor::Anthropic).await;
    let yaml = format!(
        "providers:\n  small:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: k}}]\n  big:\n    type: anthropic\n    base_url: \"{}\"\n    keys: [{{value: k}}]\nroutes:\n  - models: [\"small/m\"]\n    context_fallbacks: [{{target: big/claude-sonnet-4-6, params: {{max_tokens: 64}}}}]\n",
        small.base_url(),
        big.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    // The mock answers [[context]] as a context-length error, so use a per-request override instead: the
    // small model fails with its context error, the big one sees the same text without it.
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "small/m", "messages": user("[[context]]")})).await;
    assert_eq!(r.status, 400, "the big mock refuses the same directive too: {}", r.body);
    assert_eq!(calls(&big), 1, "the context fallback was tried");
    assert_eq!(big.requests().last().unwrap().body["max_tokens"], 64, "with its own params");
    assert_eq!(r.body["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn hedging_takes_the_faster_answer_within_its_budget() {
    let slow = mock(Flavor::OpenAi).await;
    let fast = mock(Flavor::OpenAi).await;
    slow.set_behavior(Behavior { latency_ms: 4000, ..Behavior::default() });
    let gw_with = |share: f64| {
        Gateway::start(&format!(
            "providers:\n  slow:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: k}}]\n  fast:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{value: k}}]\nroutes:\n  - models: [\"slow/m\"]\n    fallbacks: [\"fast/m\"]\n    hedge: {{after: 100ms, max_share: {share}}}\n",
            slow.base_url(),
            fast.base_url()
        ))
    };
    let gw = gw_with(1.0);
    let c = client();
    for is_stream in [false, true] {
        let started = Instant::now();
        let body = json!({"model": "slow/m", "stream": is_stream, "messages": user("hedge me")});
        let (status, provider, hedged) = if is_stream {
            let s = stream(&c, &gw.url("/v1/chat/completions"), &body).await;
            assert_eq!(s.text(), "echo: hedge me");
            (
                s.status,
                s.headers.get("x-switchyard-provider").map(|v| v.to_str().unwrap().to_string()),
                s.headers.get("x-switchyard-hedged").is_some(),
            )
        } else {
            let r = post(&c, &gw.url("/v1/chat/completions"), &body).await;
            (r.status, r.header("x-switchyard-provider").map(str::to_string), r.header("x-switchyard-hedged").is_some())
        };
        assert_eq!((status, provider.as_deref(), hedged), (200, Some("fast"), true), "stream={is_stream}");
        // Well before the slow target could have answered (4 s): the hedge won.
        assert!(started.elapsed() < Duration::from_millis(3000), "took {:?}", started.elapsed());
    }
    // No budget: no hedge; the slow answer is awaited.
    let gw = gw_with(0.0);
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "slow/m", "messages": user("no hedge")})).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("slow")));
}

#[tokio::test]
async fn overload_is_refused_at_once_with_retry_after() {
    let up = mock(Flavor::OpenAi).await;
    up.set_behavior(Behavior { latency_ms: 4000, ..Behavior::default() });
    let yaml = format!(
        "providers:\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: k}}]\n    max_in_flight: 1\n    max_queue: 0\n",
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let first = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post(&c, &url, &json!({"model": "openai/m", "messages": user("first")})).await.status }
    });
    // Wait until the first request holds the only slot.
    for _ in 0..100 {
        if get_json(&c, &gw.url("/api/health/providers")).await["providers"][0]["in_flight"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let r = post(&c, &url, &json!({"model": "openai/m", "messages": user("second")})).await;
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(r.status, 503, "{} {health}", r.body);
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.body["error"]["attempts"][0]["class"], "overloaded");
    // Queued, it would have waited for the first request's 4 s.
    assert!(started.elapsed() < Duration::from_millis(2500), "refused at once, not queued: {:?}", started.elapsed());
    assert_eq!(first.await.unwrap(), 200);
}

/// Chat requests the mock received with this key (its model-list requests left out).
fn chat_calls_with_key(m: &MockServer, key: &str) -> usize {
    m.requests().iter().filter(|r| r.path.ends_with("/chat/completions") && r.key.as_deref() == Some(key)).count()
}

#[tokio::test]
async fn slow_first_tokens_get_keep_alives_and_disconnects_free_the_upstream() {
    let up = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "routing:\n  stream_keepalive: 150ms\nproviders:\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: k}}]\n",
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    up.set_behavior(Behavior { latency_ms: 700, ..Behavior::default() });
    let s =
        stream(&c, &gw.url("/v1/chat/completions"), &json!({"model": "openai/m", "stream": true, "messages": user("wait for it")})).await;
    assert_eq!(s.status, 200);
    assert!(s.raw.starts_with(": keep-alive\n\n"), "{}", s.raw);
    assert_eq!(s.text(), "echo: wait for it");
    assert!(s.done);

    // A failure after the keep-alives began arrives as an error event.
    let s =
        stream(&c, &gw.url("/v1/chat/completions"), &json!({"model": "openai/m+code=500", "stream": true, "messages": user("x")})).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.chunks.last().unwrap()["error"]["code"], "all_attempts_failed", "{}", s.raw);

    // A client that leaves mid-stream frees the provider's slot at once.
    up.set_behavior(Behavior { chunk_delay_ms: 200, ..Behavior::default() });
    let mut resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": "openai/m", "stream": true, "messages": user("a b c d e f g h i j k l m n o p")}).to_string())
        .send()
        .await
        .unwrap();
    let _ = resp.chunk().await.unwrap();
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["in_flight"], 1);
    drop(resp);
    // The stream has 16 more chunks 200 ms apart: a freed slot well before that means the upstream was cut.
    let mut health = Value::Null;
    for _ in 0..50 {
        health = get_json(&c, &gw.url("/api/health/providers")).await;
        if health["providers"][0]["in_flight"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health["providers"][0]["in_flight"], 0, "{health}");
}

async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}
