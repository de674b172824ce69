//! Hostile and broken upstreams against the real binary: the gateway's provider keys never reach a caller
//! or a log line, credentials in a `base_url` are refused at load, and an upstream that sends without end
//! (a line that never finishes, a body that never stops) costs a bounded amount of memory.
//!
//! Every test uses the default limits unless it says why not. Each starts its own gateway with its stderr
//! captured (at `info`), so what the gateway logged is checked as closely as what it answered, and reads the
//! gateway's memory from `/proc/<pid>/status`. Every case proves from the mock's side that the misbehaviour
//! was served (a key the mock really echoed shows up as `[redacted]`; a body the gateway stopped reading
//! shows up in the mock's `cancelled` counter).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{client, mock, post, stream, Reply};
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockServer, Stats};

/// How long event-driven waits may take before a test gives up (a bound on a hang, not a speed target).
const PATIENCE: Duration = Duration::from_secs(20);

const OPENAI_KEY: &str = "sk-proj-H0st1leUpstr3amT3stK3yV4lu3Xq9Zw8abcd";
const ANTHROPIC_KEY: &str = "sk-ant-api03-An7hr0p1cH0st1leK3yQw3rTy-wxyz";

/// The gateway binary with its standard error captured line by line.
struct Gw {
    child: Child,
    base: String,
    log: Arc<(Mutex<String>, Condvar)>,
    _dir: tempfile::TempDir,
}

impl Gw {
    fn start(yaml: &str) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("SWITCHYARD_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let (text, changed) = &*sink;
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
                changed.notify_all();
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("gateway did not print its address: {line:?}; log:\n{}", log.0.lock().unwrap()))
            .to_string();
        Gw { child, base, log, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits until the log holds `needle` (woken by each new line).
    fn wait_log(&self, needle: &str) -> String {
        let (text, changed) = &*self.log;
        let guard = text.lock().unwrap();
        let (guard, timeout) = changed.wait_timeout_while(guard, PATIENCE, |t| !t.contains(needle)).unwrap();
        assert!(!timeout.timed_out(), "{needle:?} never logged; log:\n{}", *guard);
        guard.clone()
    }

    /// The gateway's peak resident memory so far, in bytes (`VmHWM`).
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in {status}"));
        kb * 1024
    }

    /// `switchyard_upstream_buffered_bytes` from `/metrics` (0 before anything was buffered).
    async fn buffered(&self, c: &reqwest::Client) -> f64 {
        let text = c.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("switchyard_upstream_buffered_bytes "))
            .map_or(0.0, |v| v.trim().parse().unwrap_or_else(|e| panic!("{v}: {e}")))
    }

    /// Polls `/metrics` until the buffered bytes satisfy `cond`.
    async fn until_buffered(&self, c: &reqwest::Client, cond: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let b = self.buffered(c).await;
            if cond(b) {
                return b;
            }
            assert!(tokio::time::Instant::now() < deadline, "buffered bytes stuck at {b}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider(name: &str, kind: &str, base: &str, key: &str) -> String {
    format!("  {name}:\n    type: {kind}\n    base_url: \"{base}\"\n    keys: [{{name: {name}-key, value: \"{key}\"}}]\n")
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there"}]})
}

/// Every form in which `key` could leak: any 8-byte run of it (which covers the whole key, `Bearer key`,
/// and the first 8 characters OpenAI's mask shows), and the mask itself.
fn assert_no_leak(what: &str, text: &str, key: &str) {
    for w in key.as_bytes().windows(8) {
        let w = std::str::from_utf8(w).unwrap();
        assert!(!text.contains(w), "{what} holds {w:?}, part of a provider key:\n{text}");
    }
    let masked = format!("{}{}{}", &key[..8], "*".repeat(key.len() - 12), &key[key.len() - 4..]);
    assert!(!text.contains(&masked) && !text.contains("****"), "{what} holds a masked key:\n{text}");
}

fn assert_clean(what: &str, text: &str) {
    assert_no_leak(what, text, OPENAI_KEY);
    assert_no_leak(what, text, ANTHROPIC_KEY);
}

/// The upstream did echo something, and the gateway passed the message on with the secret removed.
fn assert_redacted(what: &str, text: &str) {
    assert_clean(what, text);
    assert!(text.contains("[redacted]"), "{what}: the upstream's echo did not come through at all:\n{text}");
}

async fn until(m: &MockServer, cond: impl Fn(&Stats) -> bool) {
    assert!(m.wait_for(cond, PATIENCE).await, "mock counters never got there: {:?}", m.stats());
}

#[tokio::test]
async fn provider_keys_never_reach_callers_attempts_stream_events_or_logs() {
    let oa = mock(Flavor::OpenAi).await;
    let an = mock(Flavor::Anthropic).await;
    let yaml = format!(
        "providers:\n{}{}",
        provider("oa", "openai", &oa.base_url(), OPENAI_KEY),
        provider("an", "anthropic", &an.base_url(), ANTHROPIC_KEY)
    );
    let gw = Gw::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let body_text = |r: &Reply| r.body.to_string();

    // OpenAI's own 401, which quotes the key masked as OpenAI masks it.
    let r = post(&c, &url, &chat("oa/gpt-4o-mini+code=401", false)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (502, Some("provider_auth_failed")), "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "key_invalid");
    assert_redacted("the 401's attempts[].message", r.body["error"]["attempts"][0]["message"].as_str().unwrap());
    assert_redacted("the 401's error body", &body_text(&r));

    // A proxy that echoes the whole `Authorization` header.
    let r = post(&c, &url, &chat("oa/gpt-4o-mini+code=401+echo_key=bearer", false)).await;
    assert_eq!(r.status, 502);
    let attempt = r.body["error"]["attempts"][0]["message"].as_str().unwrap();
    assert!(attempt.starts_with("Incorrect API key provided: Bearer [redacted]"), "{attempt}");
    assert_redacted("the Bearer echo", &body_text(&r));

    // A caller fault: the upstream's own message becomes error.message itself.
    let r = post(&c, &url, &chat("oa/gpt-4o-mini+code=400+echo_key=bearer", false)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_redacted("a 400's error.message", r.body["error"]["message"].as_str().unwrap());

    // A masked key in a 5xx, and an Anthropic-shaped answer echoing `x-api-key`'s value.
    let r = post(&c, &url, &chat("oa/gpt-4o-mini+code=500+echo_key=masked", false)).await;
    assert_redacted("a 500 with a masked key", &body_text(&r));
    let r = post(&c, &url, &chat("an/claude-sonnet-4-6+code=529+echo_key=bearer", false)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_redacted("an anthropic 529", &body_text(&r));

    // An error event before the first chunk (a failed attempt) and one after it (a mid-stream event).
    let s = stream(&c, &url, &chat("oa/gpt-4o-mini+kind=stream_error+echo_key=bearer", true)).await;
    assert_redacted("an error event before the first chunk", &s.raw);
    for model in ["oa/gpt-4o-mini+kind=late_stream_error+echo_key=bearer", "an/claude-sonnet-4-6+kind=late_stream_error+echo_key=masked"] {
        let s = stream(&c, &url, &chat(model, true)).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.text(), "echo: ", "{}", s.raw);
        let event = s.chunks.last().unwrap();
        assert_eq!(event["error"]["code"], "stream_interrupted", "{}", s.raw);
        assert_redacted("a mid-stream error event", &event["error"]["message"].to_string());
        assert_clean("the whole stream", &s.raw);
    }

    // The mocks really were sent the keys they echoed.
    assert!(oa.requests().iter().any(|r| r.key.as_deref() == Some(OPENAI_KEY)));
    assert!(an.requests().iter().any(|r| r.key.as_deref() == Some(ANTHROPIC_KEY)));
    // And the gateway logged every failure, cleaned.
    let log = gw.wait_log("stream failed after it started");
    assert!(log.contains("WARN") && log.contains("upstream attempt failed"), "{log}");
    assert_redacted("the gateway's log", &log);
}

#[test]
fn credentials_in_a_base_url_are_a_config_error_naming_the_path_for_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("userinfo.yaml", "https://gateway:hunter2-pass@127.0.0.1:9/v1", "must not hold a user name or password", "hunter2-pass"),
        (
            "query.yaml",
            "http://127.0.0.1:9/v1beta/openai?key=AIzaSyQuerySecret",
            "must not hold a query string or fragment",
            "AIzaSyQuerySecret",
        ),
    ];
    for (file, url, problem, secret) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, format!("providers:\n  openai:\n    base_url: \"{url}\"\n    keys: [{{value: sk-test-key-value}}]\n"))
            .unwrap();
        for args in [vec!["check", "--config"], vec!["serve", "--listen", "127.0.0.1:0", "--config"]] {
            let out = Command::new(env!("CARGO_BIN_EXE_switchyard")).args(&args).arg(&path).env("SWITCHYARD_LOG", "info").output().unwrap();
            let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(!out.status.success(), "{args:?} accepted {url}: {stdout}");
            assert!(stderr.contains(&path.display().to_string()), "{args:?}: the file is not named:\n{stderr}");
            assert!(stderr.contains(&format!("providers.openai.base_url: {problem}")), "{args:?}:\n{stderr}");
            assert!(stderr.contains("providers.openai.keys"), "{args:?}: no pointer to keys:\n{stderr}");
            assert!(!stderr.contains(secret) && !stdout.contains(secret), "{args:?} echoed the secret:\n{stderr}");
            assert!(!stdout.contains("listening"), "{args:?}: {stdout}");
        }
    }
}

#[tokio::test]
async fn an_endless_stream_line_fails_the_stream_as_malformed_and_memory_stays_bounded() {
    const SENT: u64 = 200 << 20;
    let oa = mock(Flavor::OpenAi).await;
    let ol = mock(Flavor::Ollama).await;
    let gw = Gw::start(&format!(
        "providers:\n{}{}",
        provider("oa", "openai", &oa.base_url(), "sk-a"),
        provider("ol", "ollama", &ol.base_url(), "k")
    ));
    let c = client();
    for (m, model) in [(&oa, "oa/gpt-4o-mini"), (&ol, "ol/llama3.2")] {
        m.set_behavior(Behavior { endless_line_bytes: Some(SENT), ..Behavior::default() });
        let s = stream(&c, &gw.url("/v1/chat/completions"), &chat(model, true)).await;
        assert_eq!(s.status, 200, "{}", s.raw);
        assert_eq!(s.text(), "echo: ", "the stream began before the endless line");
        let error = &s.chunks.last().unwrap()["error"];
        assert_eq!(error["code"], "stream_interrupted", "{}", s.raw);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("malformed upstream stream") && message.contains("upstream.max_stream_event_size (4194304 bytes)"),
            "{message}"
        );
        assert!(s.done, "the client gets [DONE] after the error event");
        // The gateway dropped the connection instead of reading the rest.
        until(m, |st| st.cancelled == 1).await;
    }
    gw.wait_log("upstream.max_stream_event_size");
    let peak = gw.peak_rss();
    assert!(peak < 300 << 20, "the gateway peaked at {} MiB for two endless lines of {} MiB", peak >> 20, SENT >> 20);
}

#[tokio::test]
async fn a_huge_body_fails_over_to_a_healthy_fallback_and_alone_is_too_large() {
    // 100 MB answers (the mock's suffix knob, so that the gateway's model-list requests stay small).
    const BIG: &str = "big/gpt-4o-mini+huge_body=100000000";
    let big = mock(Flavor::OpenAi).await;
    let good = mock(Flavor::Anthropic).await;
    let yaml = format!(
        "providers:\n{}{}routes:\n  - models: [\"{BIG}\"]\n    fallbacks: [\"good/claude-sonnet-4-6\"]\n",
        provider("big", "openai", &big.base_url(), "sk-big"),
        provider("good", "anthropic", &good.base_url(), "sk-good"),
    );
    let gw = Gw::start(&yaml);
    let c = client();

    let r = post(&c, &gw.url("/v1/chat/completions"), &chat(BIG, false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-switchyard-provider"), Some("good"));
    assert_eq!(r.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(r.body["choices"][0]["message"]["content"], "echo: hello there");
    until(&big, |s| s.cancelled == 1).await;

    // Without a fallback the caller hears why.
    let r = post(&c, &gw.url("/v1/chat/completions"), &chat("big/other-model+huge_body=100000000", false)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (502, Some("upstream_response_too_large")), "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "too_large");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("upstream.max_response_size (67108864 bytes)"), "{}", r.body);
    until(&big, |s| s.cancelled == 2).await;

    gw.wait_log("limit=upstream.max_response_size");
    // Every buffered byte was given back, and the peak stayed near one body's limit.
    gw.until_buffered(&c, |b| b == 0.0).await;
    let peak = gw.peak_rss();
    assert!(peak < 300 << 20, "the gateway peaked at {} MiB", peak >> 20);
}

#[tokio::test]
async fn the_gateway_wide_budget_refuses_at_once_with_503_and_recovers_when_memory_is_returned() {
    // A budget of a few MiB so that two requests can fill it; the default (512 MiB) would need that much
    // traffic. The per-attempt limit is lowered to fit under it (the config requires that).
    let up = mock(Flavor::OpenAi).await;
    let yaml = format!(
        "upstream:\n  max_response_size: 2MiB\n  max_buffered_total: 3MiB\nproviders:\n{}",
        provider("oa", "openai", &up.base_url(), "sk-budget")
    );
    let gw = Gw::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");

    // The first request holds 1.8 MB of a 2 MB body whose upstream then stalls.
    let holder = {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move { post(&c, &url, &chat("oa/gpt-4o-mini+huge_body=2000000+stall_after=1800000", false)).await })
    };
    let held = gw.until_buffered(&c, |b| b >= 1_800_000.0).await;
    assert!(held <= 2_000_000.0, "{held}");

    // A second one needs 1.5 MB; 1.3 MB are left: refused at once, not queued.
    let r = post(&c, &url, &chat("oa/gpt-4o-mini+huge_body=1500000", false)).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (503, Some("upstream_unavailable")), "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "overloaded");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("upstream.max_buffered_total"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    gw.wait_log("limit=upstream.max_buffered_total");
    assert!(!holder.is_finished(), "the holder is still waiting on its stalled upstream");

    // The holder's client leaves: the gateway stops reading, closes the upstream and gives the bytes back.
    holder.abort();
    until(&up, |s| s.cancelled >= 1).await;
    gw.until_buffered(&c, |b| b == 0.0).await;
    let r = post(&c, &url, &chat("oa/gpt-4o-mini+huge_body=1500000", false)).await;
    assert_eq!((r.status, r.body["choices"][0]["message"]["content"].as_str()), (200, Some("echo: hello there")), "{}", r.body);
    gw.until_buffered(&c, |b| b == 0.0).await;
}
