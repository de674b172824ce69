//! What `serve` tells a newcomer at start, through the real binary: a warning when it listens where others
//! can reach it without requiring virtual keys, and the demo's mock ports, chosen or in use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;

const EXPOSED: &str = "not a loopback address, and no virtual key is required";

fn demo_request() -> serde_json::Value {
    json!({"model": "local/llava:latest", "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn listening_beyond_loopback_warns_and_names_the_fix() {
    // Bound on every address, but only ever spoken to over loopback here.
    let (gw, logs) = Gateway::start_logged(None, &["--demo", "--listen", "0.0.0.0:0"], &[]);
    let text = logs.wait_until("the exposure warning", |t| t.contains(EXPOSED)).await;
    let line = text.lines().find(|l| l.contains(EXPOSED)).unwrap();
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains("anyone who can reach this port"), "{line}");
    assert!(line.contains("listen on 127.0.0.1") && line.contains("behind a proxy that authenticates callers"), "{line}");
    let port = gw.base.rsplit(':').next().unwrap();
    let r = post(&client(), &format!("http://127.0.0.1:{port}/v1/chat/completions"), &demo_request()).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // On loopback there is nobody else to warn about.
    let (gw, logs) = Gateway::start_logged(None, &["--demo"], &[]);
    post(&client(), &gw.url("/v1/chat/completions"), &demo_request()).await;
    let text = logs.wait_until("the request line", |t| t.contains("switchyard::request")).await;
    assert!(!text.contains(EXPOSED), "{text}");

    // Nor where every request needs a virtual key.
    let yaml = "governance:\n  virtual_keys:\n    - {id: vk-a, name: a}\n";
    let (gw, logs) = Gateway::start_logged(Some(yaml), &["--demo", "--listen", "0.0.0.0:0"], &[]);
    let port = gw.base.rsplit(':').next().unwrap();
    let r = post(&client(), &format!("http://127.0.0.1:{port}/v1/chat/completions"), &demo_request()).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let text = logs.wait_until("the request line", |t| t.contains("switchyard::request")).await;
    assert!(!text.contains(EXPOSED), "{text}");
}

/// A port nothing listens on right now (the listener that found it is closed again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn the_demo_mocks_listen_where_they_are_told() {
    let (cloud, local) = (free_port(), free_port());
    let (gw, logs) =
        Gateway::start_logged(None, &["--demo", "--demo-cloud-port", &cloud.to_string(), "--demo-local-port", &local.to_string()], &[]);
    let text = logs.wait_until("both demo providers", |t| t.matches("demo provider started").count() == 2).await;
    assert!(text.contains(&format!("provider=cloud base_url=http://127.0.0.1:{cloud}")), "{text}");
    assert!(text.contains(&format!("provider=local base_url=http://127.0.0.1:{local}")), "{text}");
    let r = post(&client(), &gw.url("/v1/chat/completions"), &demo_request()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The mock itself answers on the chosen port.
    let r = client().get(format!("http://127.0.0.1:{local}/api/version")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_demo_port_in_use_is_a_clear_error_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, err) = run_to_exit(&["serve", "--demo", "--listen", "127.0.0.1:0", "--demo-local-port", &port], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("cannot start the demo local provider on 127.0.0.1:{port} (--demo-local-port {port})")), "{err}");
    assert!(err.contains("choose another port with --demo-local-port, or 0 for a free one"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The flags mean nothing without --demo, and say so.
    let (code, _, err) = run_to_exit(&["serve", "--demo-cloud-port", "9"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--demo"), "{err}");
}

#[test]
fn the_mock_takes_the_log_format_too() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["mock", "--provider", "ollama", "--print-addr", "--log-format", "json"])
        .env_clear()
        .env("SWITCHYARD_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("listening on http://127.0.0.1:"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let lines: Vec<serde_json::Value> = err.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().any(|l| l["message"] == "mock server listening"), "{err}");

    let (code, _, err) = run_to_exit(&["mock", "--log-format", "fancy"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("auto") && err.contains("text") && err.contains("json"), "the choices are named: {err}");
}
