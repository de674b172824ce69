//! The gateway's log as an operator reads it, through the real binary with standard error on a pipe (as
//! under systemd, docker or a log file): no colour codes, no Rust debug formatting, one line per finished
//! request with who served it, JSON lines that parse, switches that work, and start lines that say what
//! the gateway found.
//!
//! Each run goes through the paths that log the most (a fallback, a key rotation, a caller fault, a
//! stream), and each test first checks that those lines are there, so that a check for what must be
//! absent cannot pass on an empty log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockServer};

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

const REQUEST_TARGET: &str = "switchyard::request";

/// Command-line arguments and environment of one gateway run.
type Args = &'static [&'static str];
type Env = &'static [(&'static str, &'static str)];

/// `bad` always answers 500; `cloud` has a key the provider refuses (heavily weighted, so it is chosen
/// first) and a good one; the route goes from `bad` to `cloud`.
async fn busy_stack() -> (MockServer, MockServer, String) {
    let bad = mock(Flavor::OpenAi).await;
    bad.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500], ..Behavior::default() });
    let cloud = mock(Flavor::OpenAi).await;
    cloud.set_behavior(Behavior { key_status: [("sk-revoked-Zq81".to_string(), 401)].into(), ..Behavior::default() });
    let yaml = format!(
        "providers:\n  bad:\n    type: openai\n    base_url: \"{}\"\n    keys: [{{name: bad-key, value: sk-bad-Xw20}}]\n  cloud:\n    type: openai\n    base_url: \"{}\"\n    tags: [cloud, eu]\n    keys:\n      - {{name: revoked, value: sk-revoked-Zq81, weight: 1000}}\n      - {{name: good, value: sk-good-Pp47, weight: 0.001}}\nroutes:\n  - models: [\"bad/gpt-4o-mini\"]\n    fallbacks: [\"cloud/gpt-4o-mini\"]\n",
        bad.base_url(),
        cloud.base_url()
    );
    (bad, cloud, yaml)
}

/// Drives one of everything through the gateway: a fallback with a key rotation, a plain answer, a stream,
/// bad JSON and a caller fault from the upstream. Returns how many requests were made.
async fn traffic(gw: &Gateway) -> usize {
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let r = post(&c, &url, &json!({"model": "bad/gpt-4o-mini", "messages": user("hello")})).await;
    assert_eq!(
        (r.status, r.header("x-switchyard-provider"), r.header("x-switchyard-key")),
        (200, Some("cloud"), Some("good")),
        "{}",
        r.body
    );
    assert_eq!(r.header("x-switchyard-attempts"), Some("3"), "bad's 500, cloud's refused key, cloud's good key");
    let r = post(&c, &url, &json!({"model": "cloud/gpt-4o-mini", "messages": user("again")})).await;
    assert_eq!(r.status, 200);
    let s = stream(&c, &url, &json!({"model": "cloud/gpt-4o-mini", "messages": user("a b c"), "stream": true})).await;
    assert!(s.done, "{}", s.raw);
    let r = c.post(&url).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = post(&c, &url, &json!({"model": "cloud/gpt-4o-mini", "messages": user("[[error:400]]")})).await;
    assert_eq!(r.status, 400);
    5
}

fn request_lines(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.contains(REQUEST_TARGET)).collect()
}

#[tokio::test]
async fn text_logs_on_a_pipe_have_no_colour_codes_and_no_debug_formatting() {
    let (_bad, _cloud, yaml) = busy_stack().await;
    for args in [&[][..], &["--log-format", "text"][..]] {
        let (gw, logs) = Gateway::start_logged(Some(&yaml), args, &[]);
        let n = traffic(&gw).await;
        let text = logs.wait_until("a request line per request", |t| request_lines(t).len() >= n).await;
        // The lines that print the most fields are there...
        for expected in ["upstream attempt failed", "key taken out of rotation", "provider cloud (openai)", "INFO switchyard::request"] {
            assert!(text.contains(expected), "{args:?}: no {expected:?} in\n{text}");
        }
        // ...and none of them is written for programmers.
        assert!(!text.contains("\x1b["), "{args:?}: colour codes on a pipe:\n{text:?}");
        for debug in ["Some(", "None", "key=\"", "status=Some"] {
            assert!(!text.contains(debug), "{args:?}: {debug:?} in\n{text}");
        }
        for secret in ["sk-revoked-Zq81", "sk-good-Pp47", "sk-bad-Xw20"] {
            assert!(!text.contains(secret), "{args:?}: a key value in the log:\n{text}");
        }
        // Durations read like the configuration.
        assert!(text.contains("header_read_timeout=10s") && text.contains("cooldown=5m"), "{text}");
        // Caller faults are INFO: the only WARN lines are the provider's 500 and the refused key.
        let warns: Vec<&str> = text.lines().filter(|l| l.contains(" WARN ")).collect();
        assert!(warns.iter().all(|l| l.contains("bad/gpt-4o-mini") || l.contains("revoked")), "{warns:#?}");
        assert!(text.lines().any(|l| l.contains(" INFO ") && l.contains("caller_fault")), "{text}");
    }
}

#[tokio::test]
async fn json_lines_parse_and_the_request_line_says_who_served_it() {
    let (_bad, _cloud, yaml) = busy_stack().await;
    let (gw, logs) = Gateway::start_logged(Some(&yaml), &["--log-format", "json"], &[]);
    let n = traffic(&gw).await;
    let text = logs.wait_until("a request line per request", |t| request_lines(t).len() >= n).await;
    let lines: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["message"].is_string()), "{text}");
    let requests: Vec<&Value> = lines.iter().filter(|l| l["target"] == REQUEST_TARGET).collect();
    assert_eq!(requests.len(), n, "one line per request:\n{text}");

    let fallback = requests[0];
    for (field, want) in [
        ("method", json!("POST")),
        ("path", json!("/v1/chat/completions")),
        ("model", json!("bad/gpt-4o-mini")),
        ("provider", json!("cloud")),
        ("served_model", json!("gpt-4o-mini")),
        ("key", json!("good")),
        ("status", json!(200)),
        ("attempts", json!(3)),
        ("fallback_index", json!(1)),
        ("tokens_in", json!(1)),
        ("tokens_out", json!(2)),
    ] {
        assert_eq!(fallback[field], want, "{field} in {fallback}");
    }
    assert!(fallback["request_id"].as_str().is_some_and(|id| id.starts_with("chatcmpl-")), "{fallback}");
    assert!(fallback["latency_ms"].is_u64(), "{fallback}");

    let plain = requests[1];
    assert_eq!(
        (plain["provider"].as_str(), plain["attempts"].as_u64(), plain["fallback_index"].as_u64()),
        (Some("cloud"), Some(1), Some(0))
    );
    let streamed = requests[2];
    assert_eq!(
        (streamed["stream"].as_bool(), streamed["ended"].as_str(), streamed["status"].as_u64()),
        (Some(true), Some("completed"), Some(200))
    );
    assert!(streamed["tokens_in"].as_u64() >= Some(1) && streamed["tokens_out"].as_u64() >= Some(1), "the stream's usage: {streamed}");
    let bad_json = requests[3];
    assert_eq!(bad_json["status"], 400);
    assert!(bad_json.get("provider").is_none() && bad_json.get("model").is_none(), "nothing that did not happen: {bad_json}");
    let refused = requests[4];
    assert_eq!((refused["status"].as_u64(), refused["attempts"].as_u64()), (Some(400), Some(1)), "{refused}");
    assert!(refused["error"].is_string(), "the error's code: {refused}");
    assert!(refused.get("provider").is_none(), "{refused}");

    // The id in the line is the one the caller got back.
    let c = client();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(json!({"model": "cloud/gpt-4o-mini", "messages": user("x")}).to_string())
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-switchyard-request-id"].to_str().unwrap().to_string();
    logs.wait_until("the request id", |t| t.lines().any(|l| l.contains(REQUEST_TARGET) && l.contains(&id))).await;

    // The format can come from the environment as well.
    let (gw, logs) = Gateway::start_logged(Some(&yaml), &[], &[("SWITCHYARD_LOG_FORMAT", "json")]);
    post(&client(), &gw.url("/v1/chat/completions"), &json!({"model": "cloud/gpt-4o-mini", "messages": user("x")})).await;
    let text = logs.wait_until("a request line", |t| !request_lines(t).is_empty()).await;
    assert!(text.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{text}");
}

#[tokio::test]
async fn the_request_line_can_be_switched_off_three_ways() {
    let (_bad, _cloud, yaml) = busy_stack().await;
    let ways: [(Args, Env); 3] = [
        (&["--no-request-log"], &[]),
        (&[], &[("SWITCHYARD_REQUEST_LOG", "off")]),
        // Naming only the target leaves the rest of the log at info.
        (&[], &[("SWITCHYARD_LOG", "switchyard::request=off")]),
    ];
    for (args, env) in ways {
        let (gw, logs) = Gateway::start_logged(Some(&yaml), args, env);
        let c = client();
        let url = gw.url("/v1/chat/completions");
        let r = post(&c, &url, &json!({"model": "cloud/gpt-4o-mini", "messages": user("x")})).await;
        assert_eq!(r.status, 200);
        // A later request's WARN marks a point after which the first request's line would have been
        // written (it is written before its answer is sent).
        post(&c, &url, &json!({"model": "bad/gpt-4o-mini", "messages": user("x"), "fallbacks": []})).await;
        let text = logs.wait_until("the later request's warning", |t| t.contains("upstream attempt failed")).await;
        assert!(request_lines(&text).is_empty(), "{args:?} {env:?}: a request line is left:\n{text}");
        assert!(text.contains("provider cloud (openai)"), "the rest of the log stays: {text}");
    }
    // A value that is neither on nor off is refused, not guessed at.
    let (code, _, err) = run_to_exit(&["serve", "--config", "/nonexistent.yaml"], &[("SWITCHYARD_REQUEST_LOG", "quiet")]);
    assert_eq!(code, Some(1));
    assert!(err.contains("SWITCHYARD_REQUEST_LOG must be on or off, got \"quiet\""), "{err}");
}

// Two threads: the mock Ollama must answer the probe while this test waits for the gateway to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_lines_name_each_provider_and_what_the_ollama_probe_found() {
    let (_bad, _cloud, yaml) = busy_stack().await;
    let (_gw, logs) = Gateway::start_logged(Some(&yaml), &[], &[]);
    let text = logs.wait_until("the provider lines", |t| t.contains("provider cloud (openai)")).await;
    let line = text.lines().find(|l| l.contains("provider cloud (openai)")).unwrap();
    for part in ["2 key(s): revoked, good", "key_names=revoked,good", "tags=cloud,eu", "keys=2", "base_url=http://127.0.0.1:"] {
        assert!(line.contains(part), "no {part:?} in {line}");
    }
    assert!(!text.contains("local Ollama"), "with a configuration file nothing is probed: {text}");

    // Without a configuration file: an Ollama where OLLAMA_HOST says...
    let ollama = mock(Flavor::Ollama).await;
    let hostport = ollama.base_url().trim_start_matches("http://").to_string();
    let (_gw, logs) = Gateway::start_logged(None, &[], &[("OLLAMA_HOST", &hostport)]);
    // The probe's line comes before the provider line; both are waited for (stderr is read by a thread).
    let text = logs
        .wait_until("the probe's result and the provider line", |t| t.contains("local Ollama") && t.contains("provider ollama (ollama)"))
        .await;
    assert!(text.contains(&format!("found a local Ollama at http://{hostport} (OLLAMA_HOST)")), "{text}");
    assert!(text.contains(&format!("provider ollama (ollama) at http://{hostport}, no keys")), "{text}");

    // ...nothing where it says...
    let (_gw, logs) = Gateway::start_logged(None, &[], &[("OLLAMA_HOST", "127.0.0.1:1")]);
    let text = logs.wait_until("the probe's result", |t| t.contains("local Ollama")).await;
    assert!(text.contains("no local Ollama: nothing answered at http://127.0.0.1:1 (OLLAMA_HOST)"), "{text}");

    // ...or something that is not an address.
    let (_gw, logs) = Gateway::start_logged(None, &[], &[("OLLAMA_HOST", "gpu-box:eleven")]);
    let text = logs
        .wait_until("the probe's result and the warning after it", |t| t.contains("local Ollama") && t.contains("no providers configured"))
        .await;
    assert!(
        text.contains("no local Ollama: OLLAMA_HOST is not a valid address (the port eleven is not a number from 1 to 65535)"),
        "{text}"
    );
    assert!(text.contains("no providers configured"), "{text}");
}
