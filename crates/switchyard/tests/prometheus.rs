//! A real Prometheus (Debian's `prometheus` package) scrapes the gateway while its primary provider fails,
//! and the shipped fallback-rate alert fires; every query of the shipped Grafana dashboard is one
//! Prometheus accepts.
//!
//! Needs the `prometheus` binary on PATH (`.ci/run` installs the package); SWITCHYARD_SKIP_PROMETHEUS=1
//! skips the test instead, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor};

/// The Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A query-string value, percent-encoded.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The shipped rules with the fallback alert's `for:` cut from 2 minutes to 1 second: the expression and
/// everything else are the shipped ones, only the test does not wait two minutes for the alert to fire.
fn test_rules() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/alerts.yml");
    let shipped = std::fs::read_to_string(path).unwrap();
    let at = shipped.find("- alert: SwitchyardFallbackRateHigh").expect("the shipped rules have the fallback-rate alert");
    let rest = &shipped[at..];
    let f = rest.find("for: 2m").expect("the fallback-rate alert waits 2m");
    format!("{}{}for: 1s{}", &shipped[..at], &rest[..f], &rest[f + "for: 2m".len()..])
}

impl Prometheus {
    /// Starts Prometheus on a free port scraping `target` (host:port) every second, with `rules`.
    fn start(target: &str, rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start prometheus; install Debian's prometheus package or set SWITCHYARD_SKIP_PROMETHEUS=1");
        Prometheus { child, base: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    async fn get(&self, c: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        match c.get(format!("{}{path}?{}", self.base, qs.join("&"))).send().await {
            Ok(r) => serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Waits until the server answers and has scraped the gateway at least once successfully.
    async fn wait_scraping(&self, c: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let targets = self.get(c, "/api/v1/targets", &[]).await;
            if targets["data"]["activeTargets"][0]["health"] == "up" {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus never scraped the gateway: {targets}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn skip() -> bool {
    if std::env::var("SWITCHYARD_SKIP_PROMETHEUS").as_deref() == Ok("1") {
        eprintln!("SKIPPED: SWITCHYARD_SKIP_PROMETHEUS=1; the real-Prometheus test did not run");
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway_and_the_fallback_rate_alert_fires_through_a_fault() {
    if skip() {
        return;
    }
    let primary = mock(Flavor::OpenAi).await;
    let fallback = mock(Flavor::Anthropic).await;
    let yaml = format!(
        "providers:
  primary:
    type: openai
    base_url: \"{}\"
    keys: [{{name: main, value: sk-1}}]
  fallback:
    type: anthropic
    base_url: \"{}\"
    keys: [{{name: main, value: sk-2}}]
routes:
  - models: [assistant]
    targets: [primary/gpt-4o-mini, fallback/claude-sonnet-4-6]
",
        primary.base_url(),
        fallback.base_url()
    );
    let gw = Gateway::start(&yaml);
    let target = gw.base.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&target, &test_rules());
    let c = client();
    prom.wait_scraping(&c).await;

    // Healthy traffic first, then the primary answers 500 and 529 (Anthropic's "overloaded" in an
    // OpenAI-shaped upstream): every request is served by the fallback.
    let url = gw.url("/v1/chat/completions");
    let ask = || json!({"model": "assistant", "messages": [{"role": "user", "content": "status?"}]});
    for _ in 0..5 {
        assert_eq!(post(&c, &url, &ask()).await.status, 200);
    }
    primary.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![500, 529], ..Behavior::default() });

    let rules = test_rules();
    let expr = {
        // The alert's own expression, as shipped.
        let at = rules.find("- alert: SwitchyardFallbackRateHigh").unwrap();
        let block = &rules[at..];
        let start = block.find("expr: |").unwrap() + "expr: |".len();
        let end = block.find("for:").unwrap();
        block[start..end].lines().map(str::trim).collect::<Vec<_>>().join(" ")
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let (value, alert) = loop {
        for _ in 0..5 {
            let r = post(&c, &url, &ask()).await;
            assert_eq!((r.status, r.header("x-switchyard-provider")), (200, Some("fallback")), "{}", r.body);
        }
        let q = prom.get(&c, "/api/v1/query", &[("query", &expr)]).await;
        assert_eq!(q["status"], "success", "prometheus refused the alert's expression: {q}");
        let value = q["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
        let alerts = prom.get(&c, "/api/v1/alerts", &[]).await;
        let firing = alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["labels"]["alertname"] == "SwitchyardFallbackRateHigh" && a["state"] == "firing")
            .cloned();
        if let (Some(v), Some(a)) = (value, firing) {
            break (v, a);
        }
        assert!(Instant::now() < deadline, "the fallback-rate alert never fired; expression {expr} gave {q}; alerts: {alerts}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(value > 0.1, "{value}");
    assert!(alert["annotations"]["summary"].as_str().unwrap().contains("served by a fallback"), "{alert}");
    assert!(!alert["annotations"]["runbook"].as_str().unwrap().is_empty(), "{alert}");

    // What Prometheus stored, by the labels the dashboard groups by.
    let q = prom.get(&c, "/api/v1/query", &[("query", "sum by (provider) (switchyard_fallbacks_total)")]).await;
    assert_eq!(q["data"]["result"][0]["metric"]["provider"], "fallback", "{q}");
    let q = prom.get(&c, "/api/v1/query", &[("query", "max by (provider) (switchyard_provider_degraded)")]).await;
    let degraded: Vec<(String, String)> = q["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"]["provider"].as_str().unwrap().to_string(), r["value"][1].as_str().unwrap().to_string()))
        .collect();
    assert!(degraded.contains(&("fallback".to_string(), "0".to_string())), "{q}");

    // Every query of the shipped dashboard parses and runs, with Grafana's variables as Grafana fills them.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/switchyard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("\"$provider\"", "\".*\"")
                .replace("\"$virtual_key\"", "\".*\"");
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            let q = prom.get(&c, "/api/v1/query", &[("query", &expr)]).await;
            assert_eq!(q["status"], "success", "panel {:?}: {expr}: {q}", p["title"]);
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked}");
}
