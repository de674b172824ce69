//! The fault-injection suite: the real binary in front of mock providers that fail on command.
//!
//! Every test runs with the default resilience settings unless it says why not; most users never change
//! them. Each fault case starts from a fresh gateway and fresh mocks, and proves from the mock's own counters
//! that the fault was served to the gateway (a test that passes without meeting its fault proves nothing).
//! Cancellation is observed where it happens: on the mock, as a response it never finished sending.
//!
//! The promise under test: with defaults, the gateway never makes an outage worse than calling the provider
//! directly. A lone provider is always tried; a rejected key fails at once; a rate limit comes back as 429
//! with its reset; a poison request cannot take a healthy provider out of the path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, FaultKind, Flavor, MockServer, Stats};

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// How long event-driven waits may take before a test gives up (a bound on a hang, not a speed target).
const PATIENCE: Duration = Duration::from_secs(10);

/// The faults of the outage reports, as mock behaviour.
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

/// Pinned so that hang and slow-first-byte faults end within a test's patience; the defaults (60 s first
/// byte, 600 s total) would make every such case a minute long. Nothing else is pinned.
const FAST_TIMEOUTS: &str = "    first_byte_timeout: 300ms\n    timeout: 1s\n";

fn provider(name: &str, kind: &str, base: &str, key: &str, extra: &str) -> String {
    format!("  {name}:\n    type: {kind}\n    base_url: \"{base}\"\n    keys: [{{name: {name}-key, value: {key}}}]\n{extra}")
}

async fn primary_and_fallback() -> (MockServer, MockServer, Gateway) {
    let bad = mock(Flavor::OpenAi).await;
    let good = mock(Flavor::Anthropic).await;
    let yaml = format!(
        "providers:\n{}{}routes:\n  - models: [\"bad/gpt-4o-mini\"]\n    fallbacks: [\"good/claude-sonnet-4-6\"]\n",
        provider("bad", "openai", &bad.base_url(), "sk-bad", FAST_TIMEOUTS),
        provider("good", "anthropic", &good.base_url(), "sk-good", ""),
    );
    (bad, good, Gateway::start(&yaml))
}

async fn lone(flavor: Flavor, extra: &str) -> (MockServer, Gateway) {
    let up = mock(flavor).await;
    let yaml = format!("providers:\n{}", provider("solo", flavor.as_str(), &up.base_url(), "sk-solo", extra));
    (up, Gateway::start(&yaml))
}

/// Two OpenAI-format providers `a` and `b` with default settings, and their config.
async fn two_providers() -> (MockServer, MockServer, String) {
    let a = mock(Flavor::OpenAi).await;
    let b = mock(Flavor::OpenAi).await;
    let yaml =
        format!("providers:\n{}{}", provider("a", "openai", &a.base_url(), "sk-a", ""), provider("b", "openai", &b.base_url(), "sk-b", ""));
    (a, b, yaml)
}

async fn until(m: &MockServer, cond: impl Fn(&Stats) -> bool) {
    assert!(m.wait_for(cond, PATIENCE).await, "the mock never reached the expected state: {:?}", m.stats());
}

#[tokio::test]
async fn every_fault_with_a_healthy_fallback_loses_nothing() {
    let c = client();
    for (name, behavior) in faults() {
        let (bad, good, gw) = primary_and_fallback().await;
        bad.set_behavior(behavior);
        let url = gw.url("/v1/chat/completions");
        let mut interrupted = 0;
        for i in 0..3 {
            let text = format!("{name} {i}");
            let r = post(&c, &url, &json!({"model": "bad/gpt-4o-mini", "messages": user(&text)})).await;
            assert_eq!(r.status, 200, "{name}: {}", r.body);
            assert_eq!(r.body["choices"][0]["message"]["content"], format!("echo: {text}"), "{name}");
            assert_eq!(r.header("x-switchyard-provider"), Some("good"), "{name}");

            let s = stream(&c, &url, &json!({"model": "bad/gpt-4o-mini", "stream": true, "messages": user(&text)})).await;
            assert_eq!(s.status, 200, "{name} stream: {}", s.raw);
            assert!(s.done, "{name}: {}", s.raw);
            if s.headers.get("x-switchyard-provider").is_some_and(|p| p == "bad") {
                // Reset and malformed break after content reached the client: no fallback can undo that, so
                // the stream ends with an error event instead of a silent truncation.
                assert!(matches!(name, "reset" | "malformed"), "{name}: {}", s.raw);
                assert_eq!(s.chunks.last().unwrap()["error"]["code"], "stream_interrupted", "{name}: {}", s.raw);
                interrupted += 1;
            } else {
                assert_eq!(s.text(), format!("echo: {text}"), "{name} stream: {}", s.raw);
                assert_eq!(s.headers.get("x-switchyard-provider").unwrap(), "good", "{name} stream");
            }
        }
        let served = bad.stats().faults;
        assert!(served >= 1, "{name}: the fault was never served to the gateway: {:?}", bad.stats());
        assert_eq!(calls(&good), 6 - interrupted, "{name}: the fallback answered the rest");
    }
}

#[tokio::test]
async fn every_fault_without_a_fallback_gets_an_honest_error() {
    let c = client();
    for (name, behavior) in faults() {
        for is_stream in [false, true] {
            let (up, gw) = lone(Flavor::OpenAi, FAST_TIMEOUTS).await;
            up.set_behavior(behavior.clone());
            let body = json!({"model": "solo/gpt-4o-mini", "stream": is_stream, "messages": user("x")});
            let url = gw.url("/v1/chat/completions");
            let (status, raw, headers) = if is_stream {
                let s = stream(&c, &url, &body).await;
                (s.status, s.raw, s.headers)
            } else {
                let r = post(&c, &url, &body).await;
                (r.status, r.body.to_string(), r.headers)
            };
            assert!(up.stats().faults >= 1, "{name}: the fault was never served: {:?}", up.stats());
            if is_stream && matches!(name, "reset" | "malformed") {
                // Content went out before the break: an error event, not an HTTP error.
                assert_eq!(status, 200, "{name}: {raw}");
                assert!(raw.contains("stream_interrupted") && raw.ends_with("data: [DONE]\n\n"), "{name}: {raw}");
                continue;
            }
            let (want_status, want_code, want_class) = match name {
                "429" => (429, "rate_limit_exceeded", "rate_limited"),
                "503" | "529" => (503, "upstream_unavailable", "transient"),
                "hang" | "slow first byte" => (504, "upstream_timeout", "timeout"),
                "malformed" => (502, "all_attempts_failed", "malformed"),
                _ => (502, "all_attempts_failed", "transient"),
            };
            let v: Value = serde_json::from_str(&raw).unwrap();
            assert_eq!((status, v["error"]["code"].as_str()), (want_status, Some(want_code)), "{name} stream={is_stream}: {raw}");
            let attempts = v["error"]["attempts"].as_array().unwrap();
            assert!(attempts.iter().all(|a| a["class"] == want_class), "{name}: {raw}");
            if name != "429" {
                // One retry of the lone target (the default policy) after a transient failure.
                assert_eq!(attempts.len(), 2, "{name}: {raw}");
            } else {
                assert!(headers.get("retry-after").is_some() && headers.get("retry-after-ms").is_some(), "{name}: {headers:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_lone_rejected_key_fails_at_once_every_time_and_names_the_key_not_its_value() {
    for status in [401u16, 403] {
        let (up, gw) = lone(Flavor::OpenAi, "").await;
        up.set_behavior(Behavior { key_status: [("sk-solo".to_string(), status)].into(), ..Behavior::default() });
        // A client that gives up long before the old five-minute key cooldown: a wait would fail the test.
        let c = client_with_timeout(Duration::from_secs(5));
        for i in 0..5u64 {
            let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "solo/gpt-4o-mini", "messages": user("hi")})).await;
            assert_eq!(r.status, 502, "{status}: {}", r.body);
            assert_eq!(r.body["error"]["code"], "provider_auth_failed", "{}", r.body);
            assert_eq!(r.body["error"]["type"], "upstream_authentication_error");
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(message.contains("solo-key") && message.contains("solo/gpt-4o-mini"), "names the key and target: {message}");
            assert!(message.contains("not your API key"), "{message}");
            assert!(!r.body.to_string().contains("sk-solo"), "never the key's value: {}", r.body);
            assert!(r.header("retry-after").is_none(), "waiting does not fix a rejected key");
            // The lone key is the request's last resort, so it is tried each time: a fixed key is noticed at once.
            assert_eq!(calls(&up), i + 1);
        }
        // Fixed at the provider: the very next request succeeds.
        up.set_behavior(Behavior::default());
        let r = post(&client(), &gw.url("/v1/chat/completions"), &json!({"model": "solo/gpt-4o-mini", "messages": user("hi")})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

#[tokio::test]
async fn a_rejected_key_among_two_is_rotated_out_until_it_recovers() {
    let up = mock(Flavor::OpenAi).await;
    up.set_behavior(Behavior { key_status: [("sk-revoked".to_string(), 401)].into(), ..Behavior::default() });
    // key_invalid pinned short so the key's return is seen within the test (the default is 5 minutes).
    let yaml = format!(
        "providers:\n  openai:\n    base_url: \"{}\"\n    keys:\n      - {{name: revoked, value: sk-revoked, weight: 10}}\n      - {{name: good, value: sk-good, weight: 1}}\n    key_cooldown: {{key_invalid: 1s}}\n",
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

    // Fixed upstream-side: once the cooldown is over the key is used again.
    up.set_behavior(Behavior::default());
    let mut back = false;
    for i in 0..100 {
        let r = post(&c, &url, &json!({"model": "openai/gpt-4o-mini", "messages": user(&format!("again {i}"))})).await;
        assert_eq!(r.status, 200);
        if r.header("x-switchyard-key") == Some("revoked") {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the recovered key never came back: {:?}", up.stats().by_key);
}

#[tokio::test]
async fn an_exhausted_quota_rotates_at_once_and_is_never_waited_on() {
    let up = mock(Flavor::OpenAi).await;
    up.set_behavior(Behavior { quota_exhausted_keys: ["sk-empty".to_string(), "sk-solo".to_string()].into(), ..Behavior::default() });
    let yaml = format!(
        "providers:\n  openai:\n    base_url: \"{}\"\n    keys:\n      - {{name: empty, value: sk-empty, weight: 10}}\n      - {{name: paid, value: sk-paid, weight: 1}}\n  solo:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{name: solo-key, value: sk-solo}}]\n",
        up.base_url(),
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for i in 0..10 {
        let r = post(&c, &url, &json!({"model": "openai/gpt-4o-mini", "messages": user(&format!("q{i}"))})).await;
        assert_eq!((r.status, r.header("x-switchyard-key")), (200, Some("paid")), "{}", r.body);
    }
    assert_eq!(chat_calls_with_key(&up, "sk-empty"), 1, "tried once, then out");
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["keys"][0]["cooldown_reason"], "quota_exhausted", "{health}");

    // Alone, it is answered at once as the operator's problem, with no Retry-After: waiting will not help.
    let r = post(&c, &url, &json!({"model": "solo/gpt-4o-mini", "messages": user("q")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (502, Some("provider_quota_exhausted")), "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "quota_exhausted");
    assert!(r.header("retry-after").is_none());
    assert_eq!(chat_calls_with_key(&up, "sk-solo"), 1, "one attempt, no retry, no wait");
}

#[tokio::test]
async fn a_rate_limited_lone_key_answers_429_with_the_providers_reset() {
    let (up, gw) = lone(Flavor::OpenAi, "").await;
    up.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![429], retry_after_secs: Some(7), ..Behavior::default() });
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let r = post(&c, &url, &json!({"model": "solo/gpt-4o-mini", "messages": user("x")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")), "{}", r.body);
    assert_eq!(r.body["error"]["type"], "rate_limit_error");
    assert_eq!(r.header("retry-after"), Some("7"));
    let ms: u64 = r.header("retry-after-ms").unwrap().parse().unwrap();
    assert!((6000..=7000).contains(&ms), "{ms}");
    assert_eq!(calls(&up), 1, "a 7 s reset is longer than the gateway waits: answered at once");
    // While the key is cooling, the answer comes from what the provider said, without hammering it.
    let r = post(&c, &url, &json!({"model": "solo/gpt-4o-mini", "messages": user("x")})).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let left: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=7).contains(&left), "{left}");
    assert_eq!(calls(&up), 1, "a rate-limited key is not sent to before its reset");
}

#[tokio::test]
async fn a_429_rotates_keys_at_once_and_a_short_reset_is_waited_for_once() {
    let up = mock(Flavor::OpenAi).await;
    up.set_behavior(Behavior { key_status: [("sk-hot".to_string(), 429)].into(), retry_after_secs: Some(30), ..Behavior::default() });
    let yaml = format!(
        "providers:\n  openai:\n    base_url: \"{}\"\n    keys:\n      - {{name: hot, value: sk-hot, weight: 100}}\n      - {{name: cool, value: sk-cool, weight: 1}}\n",
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    // The hot key is chosen first 100 times in 101; a request that drew the cool key first is not the
    // rotation under test, so requests go on until one met the hot key. (The start-up model-list request,
    // sent with the first key, is let through before counting.)
    until(&up, |s| s.by_path.contains_key("/v1/models")).await;
    let hot = || up.stats().by_key.get("sk-hot").copied().unwrap_or(0);
    let mut rotated = false;
    for _ in 0..10 {
        let before = hot();
        let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "openai/gpt-4o-mini", "messages": user("x")})).await;
        let met_hot = hot() > before;
        let attempts = if met_hot { "2" } else { "1" };
        assert_eq!((r.status, r.header("x-switchyard-key"), r.header("x-switchyard-attempts")), (200, Some("cool"), Some(attempts)));
        if met_hot {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the hot key was never chosen");

    // One key only, rate-limited with a 1 s reset (within routing.max_key_wait): the request waits once.
    let (lone_up, gw) = lone(Flavor::OpenAi, "").await;
    // The gateway's start-up model-list request must not take the fault meant for the chat request.
    until(&lone_up, |s| s.by_path.contains_key("/v1/models")).await;
    lone_up.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![429], retry_after_secs: Some(1), ..Behavior::default() });
    let url = gw.url("/v1/chat/completions");
    let task = tokio::spawn({
        let c = c.clone();
        async move { post(&c, &url, &json!({"model": "solo/gpt-4o-mini", "messages": user("patient")})).await }
    });
    until(&lone_up, |s| s.faults >= 1).await;
    lone_up.set_behavior(Behavior::default());
    let r = task.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
}

/// Requests the upstream fails on purpose, whatever its health: a 500 for one prompt, a malformed body, a
/// reset, each through a per-request model suffix or directive the mock reads.
fn poison(i: usize, provider: &str) -> Value {
    match i % 3 {
        0 => json!({"model": format!("{provider}/m"), "messages": user("[[error:500]]")}),
        1 => json!({"model": format!("{provider}/m+kind=malformed"), "messages": user("poison")}),
        _ => json!({"model": format!("{provider}/m+kind=reset"), "messages": user("poison")}),
    }
}

#[tokio::test]
async fn poison_requests_never_black_out_a_lone_provider() {
    let (up, gw) = lone(Flavor::OpenAi, "").await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut failed = 0;
    for i in 0..40 {
        failed += usize::from(post(&c, &url, &poison(i, "solo")).await.status != 200);
        let r = post(&c, &url, &json!({"model": "solo/m", "messages": user(&format!("healthy {i}"))})).await;
        assert_eq!(r.status, 200, "healthy request {i} after poison: {}", r.body);
    }
    for i in 0..40 {
        let r = post(&c, &url, &json!({"model": "solo/m", "messages": user(&format!("after {i}"))})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(failed, 40, "the poison requests did fail");
    assert!(up.stats().faults >= 26, "{:?}", up.stats());
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["health"]["state"], "healthy", "the request's failures are not the provider's: {health}");
}

#[tokio::test]
async fn poison_requests_with_a_fallback_lose_nothing_and_move_no_traffic() {
    let (_a, _b, yaml) = two_providers().await;
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let healthy = |text: String| json!({"model": "a/m", "fallbacks": ["b/m"], "messages": user(&text)});
    for i in 0..40 {
        // The same poison on both targets: `[[error:500]]` fails everywhere.
        let r = post(&c, &url, &json!({"model": "a/m", "fallbacks": ["b/m"], "messages": user("[[error:500]]")})).await;
        assert_eq!(r.status, 502, "{}", r.body);
        let r = post(&c, &url, &healthy(format!("healthy {i}"))).await;
        assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("a")), "request {i}: {}", r.body);
    }
    for i in 0..40 {
        let r = post(&c, &url, &healthy(format!("after {i}"))).await;
        assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("a")), "{}", r.body);
    }
    // `a` serves everyone else, so the poison's failures there are taken back. `b` never answered anything
    // but poison, so nothing speaks for it; it may well be degraded, and that moves no traffic either.
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["health"]["state"], "healthy", "{health}");
    assert!(health["providers"][0]["health"]["failures"].as_u64().unwrap() <= 1, "{health}");
}

#[tokio::test]
async fn a_failing_primary_moves_traffic_to_its_fallback_and_comes_back_when_it_recovers() {
    let (bad, good, gw) = primary_and_fallback().await;
    bad.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![529], ..Behavior::default() });
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let started = Instant::now();
    for i in 0..20 {
        let r = post(&c, &url, &json!({"model": "bad/gpt-4o-mini", "messages": user(&format!("{i}"))})).await;
        assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("good")), "{}", r.body);
    }
    // Three failures degrade it; after that only probes (one per 2 s by default) reach it.
    let probes_possible = started.elapsed().as_secs() / 2 + 1;
    assert!(calls(&bad) >= 3 && calls(&bad) <= 3 + probes_possible, "{:?}", bad.stats());
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["health"]["state"], "degraded", "{health}");
    let m = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        r#"switchyard_provider_degraded{provider="bad"} 1"#,
        r#"switchyard_provider_degraded_total{provider="bad"} 1"#,
        // Attempts carry the key's name, requests their route, serving model and status.
        r#"switchyard_upstream_attempts_total{provider="bad",key="bad-key",outcome="transient"}"#,
        r#"switchyard_upstream_attempts_total{provider="good",key="good-key",outcome="success"} 20"#,
        r#"switchyard_requests_total{endpoint="chat",route="bad/gpt-4o-mini",provider="good",model="claude-sonnet-4-6",status="200",status_class="2xx"} 20"#,
        r#"switchyard_fallbacks_total{route="bad/gpt-4o-mini",provider="good"} 20"#,
    ] {
        assert!(m.contains(needle), "missing {needle} in:\n{m}");
    }
    assert_eq!(calls(&good), 20);

    // Recovered: probes succeed, each brings the next one closer, and traffic returns.
    bad.set_behavior(Behavior::default());
    let mut back = 0;
    for i in 0..400 {
        let r = post(&c, &url, &json!({"model": "bad/gpt-4o-mini", "messages": user(&format!("after {i}"))})).await;
        assert_eq!(r.status, 200);
        back = if r.header("x-switchyard-provider") == Some("bad") { back + 1 } else { 0 };
        if back >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(back, 10, "traffic never came back: {:?}", bad.stats());
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["health"]["state"], "healthy", "{health}");
}

/// A hung primary under the default timeouts leaves its fallback room: an attempt with a target behind it
/// may use at most half of what is left of the deadline, so the fallback answers instead of being skipped
/// with "the request's deadline passed".
#[tokio::test]
async fn a_hung_primary_under_default_timeouts_leaves_the_fallback_room() {
    let bad = mock(Flavor::OpenAi).await;
    let good = mock(Flavor::Anthropic).await;
    bad.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(FaultKind::Hang), ..Behavior::default() });
    // The default deadline is 600 s (so a hung primary would take 300 s here); 4 s keeps the test short.
    // Provider timeouts stay at their defaults (60 s first byte, 600 s total): both exceed the deadline.
    let yaml = format!(
        "routing:\n  deadline: 4s\nproviders:\n{}{}routes:\n  - models: [\"bad/gpt-4o-mini\"]\n    fallbacks: [\"good/claude-sonnet-4-6\"]\n",
        provider("bad", "openai", &bad.base_url(), "sk-bad", ""),
        provider("good", "anthropic", &good.base_url(), "sk-good", ""),
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    for stream in [false, true] {
        let r =
            post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "bad/gpt-4o-mini", "stream": stream, "messages": user("hello")}))
                .await;
        assert_eq!(r.status, 200, "stream={stream}: {}", r.body);
        assert_eq!((r.header("x-switchyard-provider"), r.header("x-switchyard-attempts")), (Some("good"), Some("2")), "stream={stream}");
    }
    // Both requests met the hang (and so did the gateway's model discovery), and the gateway let go of both.
    assert_eq!(calls(&bad), 2, "{:?}", bad.stats());
    until(&bad, |s| s.cancelled >= 2).await;
}

/// A stream that fails after its first chunk cannot move to the fallback any more, but the failure still
/// counts against the provider: streams that keep breaking move later requests to the fallback.
#[tokio::test]
async fn streams_that_break_after_their_first_chunk_count_against_the_provider() {
    let (bad, good, gw) = primary_and_fallback().await;
    bad.set_behavior(Behavior { fault_rate: 1.0, fault_kind: Some(FaultKind::LateStreamError), ..Behavior::default() });
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let body = json!({"model": "bad/gpt-4o-mini", "stream": true, "messages": user("hello")});
    for i in 0..3 {
        let r = stream(&c, &url, &body).await;
        assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("bad")), "stream {i}");
        let last = r.chunks.last().cloned().unwrap_or_default();
        assert_eq!(last["error"]["code"], "stream_interrupted", "stream {i} ends in an error event: {:?}", r.chunks);
    }
    wait_health(&c, &gw, |p| p["health"]["state"] == "degraded").await;
    let r = stream(&c, &url, &body).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("good")), "{:?}", r.chunks);
    assert!(r.done, "the fallback's stream ends with [DONE]");
    assert_eq!(calls(&good), 1);
}

/// While a healthy fallback exists, a degraded provider is probed with a copy of a request: the caller is
/// served by the fallback in one attempt whether the probe fails or not, and the probe still reaches the
/// degraded provider (seen on its mock) and still brings it back once it recovers.
#[tokio::test]
async fn probes_of_a_degraded_provider_cost_its_callers_nothing() {
    let (bad, good, gw) = primary_and_fallback().await;
    bad.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![529], ..Behavior::default() });
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let ask = |i: usize| {
        let (c, url) = (&c, &url);
        async move { post(c, url, &json!({"model": "bad/gpt-4o-mini", "messages": user(&format!("p{i}"))})).await }
    };
    for i in 0..3 {
        let r = ask(i).await;
        assert_eq!((r.status, r.header("x-switchyard-attempts")), (200, Some("2")), "{}", r.body);
    }
    wait_health(&c, &gw, |p| p["health"]["state"] == "degraded").await;
    // (`faults`, not chat calls: the gateway's model discovery meets the fault too.)
    let tripped = bad.stats().faults;
    // Two failed probes (the default interval is 2 s) while requests keep coming: each request is served by
    // the fallback at its first attempt.
    let mut i = 3;
    while bad.stats().faults < tripped + 2 {
        let r = ask(i).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!((r.header("x-switchyard-provider"), r.header("x-switchyard-attempts")), (Some("good"), Some("1")), "request {i}");
        i += 1;
        assert!(i < 2000, "no probe reached the degraded provider: {:?}", bad.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = c.get(gw.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains(r#"switchyard_health_probes_total{provider="bad",outcome="failed"}"#), "{m}");
    assert_eq!(calls(&good), i as u64, "every request was served by the fallback once");
}

#[tokio::test]
async fn a_forty_percent_error_rate_moves_traffic_within_a_few_requests_but_a_blip_does_not() {
    let (_a, _b, yaml) = two_providers().await;
    let c = client();
    let send = |url: String, fail: bool, i: usize| {
        let c = c.clone();
        async move {
            let model = if fail { "a/m+fault=1+code=529" } else { "a/m" };
            post(&c, &url, &json!({"model": model, "fallbacks": ["b/m"], "messages": user(&format!("r{i}"))})).await
        }
    };
    // A 40% outage: failure, success, success, failure, success, failure. Every request is answered.
    let gw = Gateway::start(&yaml);
    let url = gw.url("/v1/chat/completions");
    for (i, fail) in [true, false, false, true, false, true].into_iter().enumerate() {
        let r = send(url.clone(), fail, i).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-switchyard-provider"), Some(if fail { "b" } else { "a" }));
    }
    let r = send(url.clone(), false, 99).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("b"), "after three failures in six, traffic moved: {}", r.body);
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["health"]["state"], "degraded", "{health}");

    // A blip: two failures, then the provider is fine. Nothing moves.
    let gw = Gateway::start(&yaml);
    let url = gw.url("/v1/chat/completions");
    for i in 0..22 {
        let fail = i < 2;
        let r = send(url.clone(), fail, i).await;
        assert_eq!(r.header("x-switchyard-provider"), Some(if fail { "b" } else { "a" }), "request {i}");
    }
    let health = get_json(&c, &gw.url("/api/health/providers")).await;
    assert_eq!(health["providers"][0]["health"]["state"], "healthy", "{health}");
}

#[tokio::test]
async fn a_fail_fast_route_refuses_a_degraded_target_without_sending() {
    let up = mock(Flavor::OpenAi).await;
    // fail_fast is the opt-in under test.
    let yaml = format!(
        "providers:\n{}routes:\n  - models: [\"solo/m\"]\n    fail_fast: true\n",
        provider("solo", "openai", &up.base_url(), "sk-solo", "")
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    up.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    for _ in 0..3 {
        assert_eq!(post(&c, &url, &json!({"model": "solo/m", "messages": user("x")})).await.status, 502);
    }
    let r = post(&c, &url, &json!({"model": "solo/m", "messages": user("x")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (503, Some("upstream_unavailable")), "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "degraded");
    assert_eq!(r.body["error"]["attempts"][0]["skipped"], true);
    assert!(r.header("retry-after").is_some());
    assert_eq!(calls(&up), 6, "nothing sent while it is degraded (three requests, each retried once, before)");
}

#[tokio::test]
async fn caller_faults_are_not_retried_and_transient_ones_go_to_the_fallback_first() {
    let up = mock(Flavor::OpenAi).await;
    let other = mock(Flavor::OpenAi).await;
    // Three retries, so the rounds are visible below.
    let yaml = format!(
        "providers:\n{}{}routes:\n  - models: [\"a/m\"]\n    fallbacks: [\"b/m\"]\n",
        provider("a", "openai", &up.base_url(), "sk-a", "    retry: {max_retries: 3, initial_backoff: 5ms}\n"),
        provider("b", "openai", &other.base_url(), "sk-b", "")
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for code in [400, 404, 413, 422] {
        up.reset();
        let r = post(&c, &url, &json!({"model": "a/m", "messages": user(&format!("[[error:{code}]]"))})).await;
        assert_eq!(r.status, code, "{}", r.body);
        assert_eq!(r.body["error"]["attempts"][0]["class"], "caller_fault", "{}", r.body);
        assert_eq!(calls(&up), 1, "{code} is not retried");
        assert_eq!(calls(&other), 0, "{code} does not fall back");
    }
    let r = post(&c, &url, &json!({"model": "a/m", "messages": user("[[context]]")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("context_length_exceeded")));

    // A transient failure moves to the fallback at once; no sleeping on the failed target first.
    up.reset();
    up.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    let r = post(&c, &url, &json!({"model": "a/m", "messages": user("x")})).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("b")));
    assert_eq!((calls(&up), r.header("x-switchyard-attempts")), (1, Some("2")));

    // With nowhere else to go, the policy's retries happen, in rounds with backoff.
    let (solo_up, gw) = lone(Flavor::OpenAi, "    retry: {max_retries: 3, initial_backoff: 5ms}\n").await;
    solo_up.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "solo/m", "messages": user("x")})).await;
    assert_eq!((r.status, r.body["error"]["attempts"].as_array().unwrap().len()), (502, 4), "{}", r.body);
    assert_eq!(calls(&solo_up), 4);
}

#[tokio::test]
async fn context_too_long_moves_to_the_context_fallbacks() {
    let small = mock(Flavor::OpenAi).await;
    let big = mock(Flavor::Anthropic).await;
    small.set_behavior(Behavior { context_window: Some(5), ..Behavior::default() });
    let yaml = format!(
        "providers:\n{}{}routes:\n  - models: [\"small/m\"]\n    context_fallbacks: [{{target: big/claude-sonnet-4-6, params: {{max_tokens: 64}}}}]\n",
        provider("small", "openai", &small.base_url(), "sk-small", ""),
        provider("big", "anthropic", &big.base_url(), "sk-big", "")
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let long = "one two three four five six seven eight nine ten";
    let r = post(&c, &url, &json!({"model": "small/m", "messages": user(long)})).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("big")), "{}", r.body);
    assert_eq!(r.body["choices"][0]["message"]["content"], format!("echo: {long}"));
    assert_eq!(big.requests().last().unwrap().body["max_tokens"], 64, "with its own params");
    assert_eq!(calls(&small), 1);
    // A short prompt stays on the small model.
    let r = post(&c, &url, &json!({"model": "small/m", "messages": user("short")})).await;
    assert_eq!(r.header("x-switchyard-provider"), Some("small"));

    // When the big one refuses too, the caller hears the context error.
    big.set_behavior(Behavior { context_window: Some(5), ..Behavior::default() });
    let r = post(&c, &url, &json!({"model": "small/m", "messages": user(long)})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("context_length_exceeded")), "{}", r.body);
}

#[tokio::test]
async fn hedging_takes_the_faster_answer_and_cancels_the_slower_within_its_budget() {
    let slow = mock(Flavor::OpenAi).await;
    let fast = mock(Flavor::OpenAi).await;
    slow.set_behavior(Behavior { latency_ms: 4000, ..Behavior::default() });
    let gw_with = |share: f64| {
        Gateway::start(&format!(
            "providers:\n{}{}routes:\n  - models: [\"slow/m\"]\n    fallbacks: [\"fast/m\"]\n    hedge: {{after: 100ms, max_share: {share}}}\n",
            provider("slow", "openai", &slow.base_url(), "k", ""),
            provider("fast", "openai", &fast.base_url(), "k", "")
        ))
    };
    let gw = gw_with(1.0);
    let c = client();
    for (n, is_stream) in [false, true].into_iter().enumerate() {
        let body = json!({"model": "slow/m", "stream": is_stream, "messages": user("hedge me")});
        let (status, provider, hedged) = if is_stream {
            let s = stream(&c, &gw.url("/v1/chat/completions"), &body).await;
            assert_eq!(s.text(), "echo: hedge me");
            let h = |n: &str| s.headers.get(n).map(|v| v.to_str().unwrap().to_string());
            (s.status, h("x-switchyard-provider"), h("x-switchyard-hedged").is_some())
        } else {
            let r = post(&c, &gw.url("/v1/chat/completions"), &body).await;
            (r.status, r.header("x-switchyard-provider").map(str::to_string), r.header("x-switchyard-hedged").is_some())
        };
        assert_eq!((status, provider.as_deref(), hedged), (200, Some("fast"), true), "stream={is_stream}");
        // The loser's upstream request is closed, as the slow mock sees it.
        let want = n as u64 + 1;
        until(&slow, move |s| s.cancelled >= want).await;
    }
    // No budget: no hedge; the slow answer is awaited.
    let gw = gw_with(0.0);
    let r = post(&c, &gw.url("/v1/chat/completions"), &json!({"model": "slow/m", "messages": user("no hedge")})).await;
    assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("slow")));
}

#[tokio::test]
async fn overload_is_refused_at_once_and_a_bounded_queue_serves_in_turn() {
    let up = mock(Flavor::OpenAi).await;
    up.set_behavior(Behavior { latency_ms: 1500, ..Behavior::default() });
    // One slot and one queue place: small enough to fill from a test.
    let gw = Gateway::start(&format!(
        "providers:\n{}",
        provider("solo", "openai", &up.base_url(), "k", "    max_in_flight: 1\n    max_queue: 1\n")
    ));
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let spawn = |text: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move { post(&c, &url, &json!({"model": "solo/m", "messages": user(text)})).await })
    };
    let first = spawn("first");
    wait_health(&c, &gw, |p| p["in_flight"] == 1).await;
    let second = spawn("second");
    wait_health(&c, &gw, |p| p["queued"] == 1).await;
    let r = post(&c, &url, &json!({"model": "solo/m", "messages": user("third")})).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (503, Some("upstream_unavailable")), "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "overloaded");
    assert!(r.header("retry-after").is_some());
    assert_eq!(first.await.unwrap().status, 200);
    let second = second.await.unwrap();
    assert_eq!((second.status, second.body["choices"][0]["message"]["content"].as_str()), (200, Some("echo: second")));

    // Clients that leave while queued give their place back (no leak that would refuse everyone later).
    let holder = spawn("holder");
    wait_health(&c, &gw, |p| p["in_flight"] == 1).await;
    let quitter = {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move {
            c.post(&url)
                .header("content-type", "application/json")
                .body(r#"{"model":"solo/m","messages":[{"role":"user","content":"q"}]}"#)
                .send()
                .await
        })
    };
    wait_health(&c, &gw, |p| p["queued"] == 1).await;
    quitter.abort();
    wait_health(&c, &gw, |p| p["queued"] == 0).await;
    assert_eq!(holder.await.unwrap().status, 200);
    let r = post(&c, &url, &json!({"model": "solo/m", "messages": user("later")})).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Chat requests the mock received with this key (its model-list requests left out).
fn chat_calls_with_key(m: &MockServer, key: &str) -> usize {
    m.requests().iter().filter(|r| r.path.ends_with("/chat/completions") && r.key.as_deref() == Some(key)).count()
}

#[tokio::test]
async fn slow_first_tokens_get_keep_alives_and_disconnects_close_the_upstream() {
    let up = mock(Flavor::OpenAi).await;
    // A short keep-alive interval so the test sees one (the default is 10 s).
    let yaml = format!("routing:\n  stream_keepalive: 150ms\nproviders:\n{}", provider("openai", "openai", &up.base_url(), "k", ""));
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

    // A client that leaves mid-stream closes the upstream request and frees the provider's slot.
    up.set_behavior(Behavior { chunk_delay_ms: 200, ..Behavior::default() });
    up.reset();
    let mut resp = c
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": "openai/m", "stream": true, "messages": user("a b c d e f g h i j k l m n o p")}).to_string())
        .send()
        .await
        .unwrap();
    let _ = resp.chunk().await.unwrap();
    drop(resp);
    until(&up, |s| s.cancelled == 1).await;
    wait_health(&c, &gw, |p| p["in_flight"] == 0).await;
}

/// The GenAI route shares the stream machinery but not its SSE comments: Google's SDK parses every line
/// that is not blank, so its keep-alives are blank lines and no `served by` note is written, and a failure
/// after they began is a last `data:` frame holding Google's error body.
#[tokio::test]
async fn genai_streams_keep_alive_with_blank_lines_and_fail_in_googles_shape() {
    let up = mock(Flavor::OpenAi).await;
    let yaml = format!("routing:\n  stream_keepalive: 150ms\nproviders:\n{}", provider("openai", "openai", &up.base_url(), "k", ""));
    let gw = Gateway::start(&yaml);
    let c = client();
    up.set_behavior(Behavior { latency_ms: 700, ..Behavior::default() });
    let ask = |text: &str| json!({"contents": [{"role": "user", "parts": [{"text": text}]}]});
    let url = |model: &str| gw.url(&format!("/genai/v1beta/models/{model}:streamGenerateContent?alt=sse"));
    // Read raw: Google's frames end in CRLF pairs, which the OpenAI-shaped `stream` helper does not split.
    let raw = |model: &str, text: &str| {
        let req = c.post(url(model)).header("content-type", "application/json").body(ask(text).to_string());
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned())
        }
    };
    let data = |raw: &str| -> Vec<Value> {
        raw.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d.trim()).unwrap()).collect()
    };
    let (status, body) = raw("openai/m", "wait for it").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("\r\n"), "{body:?}");
    assert!(!body.lines().any(|l| l.starts_with(':')), "no SSE comment may reach Google's parser: {body:?}");
    let frames = data(&body);
    let text: String = frames.iter().filter_map(|f| f["candidates"][0]["content"]["parts"][0]["text"].as_str()).collect();
    assert_eq!(text, "echo: wait for it", "{body:?}");
    assert_eq!(frames.last().unwrap()["candidates"][0]["finishReason"], "STOP", "{body:?}");

    let (status, body) = raw("openai/m+code=500", "x").await;
    assert_eq!(status, 200);
    let e = data(&body).pop().unwrap();
    assert_eq!((e["error"]["code"].as_u64(), e["error"]["status"].as_str()), (Some(502), Some("UNAVAILABLE")), "{body:?}");
}

#[tokio::test]
async fn image_fetch_limits_hold_end_to_end() {
    let images = image_server().await;
    let base = images.trim_end_matches("/cat.png").to_string();
    let up = mock(Flavor::Ollama).await;
    // A 1 s fetch timeout and a 1 KiB size limit so the slow and big images trip them; loopback allowed so
    // the test's own image server can be reached.
    let yaml = format!(
        "images:\n  allow_private_networks: [\"127.0.0.1/32\"]\n  fetch_timeout: 1s\n  max_size: 1KiB\nproviders:\n  local:\n    type: ollama\n    base_url: \"{}\"\n",
        up.base_url()
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let ask = |url: String| json!({"model": "local/llava:latest", "messages": [{"role": "user", "content": [{"type": "text", "text": "what"}, {"type": "image_url", "image_url": {"url": url}}]}]});
    let url = gw.url("/v1/chat/completions");
    let r = post(&c, &url, &ask(format!("{base}/redirect"))).await;
    assert_eq!(r.status, 200, "a redirect to an allowed address is followed: {}", r.body);
    assert!(r.body["choices"][0]["message"]["content"].as_str().unwrap().contains(&png_description()), "{}", r.body);
    for (path, why) in [("/big", "larger than"), ("/slow", "longer than"), ("/loop", "redirect")] {
        let r = post(&c, &url, &ask(format!("{base}{path}"))).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("image_fetch_failed")), "{path}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(why), "{path}: {}", r.body);
    }
    assert_eq!(calls(&up), 1, "refused images never reach the provider");
}

async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    let r = c.get(url).send().await.unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// Polls `/api/health/providers` until the first provider satisfies `cond`.
async fn wait_health(c: &reqwest::Client, gw: &Gateway, cond: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let h = get_json(c, &gw.url("/api/health/providers")).await;
        if cond(&h["providers"][0]) {
            return;
        }
        assert!(Instant::now() < deadline, "the gateway never reached the expected state: {h}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
