//! The configuration shapes users paste from published field reports, through the real binary: each is
//! accepted by `check`, which prints the chain `serve` will try, and `serve` then serves a request through
//! exactly that chain. Also: `check` and `serve` refuse the same broken file with every mistake named once,
//! and a provider's `models` is an allow-list.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{calls, check, client, mock_serving, post, stream, Gateway};
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockConfig, MockServer};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "caption this frame"}]})
}

fn failing(code: u16) -> Behavior {
    Behavior { fault_rate: 1.0, fault_codes: vec![code], ..Behavior::default() }
}

const ANTHROPIC_ENV: [(&str, &str); 1] = [("ANTHROPIC_KEY", "sk-ant-test")];

/// A local Ollama mock with the caption model, an Anthropic mock, and a file naming both (the key as
/// field reports write it) followed by `rest`.
async fn captions(rest: &str) -> (MockServer, MockServer, String) {
    let local = mock_serving(Flavor::Ollama, &["qwen2.5-vl:7b"]).await;
    let cloud = mock_serving(Flavor::Anthropic, &["claude-sonnet-4-6"]).await;
    let yaml = format!(
        "providers:\n  ollama:\n    base_url: \"{}\"\n  anthropic:\n    base_url: \"{}\"\n    keys:\n      - env: ANTHROPIC_KEY\n{rest}",
        local.base_url(),
        cloud.base_url()
    );
    (local, cloud, yaml)
}

#[tokio::test]
async fn a_named_chain_from_a_field_report_is_a_model_callers_can_ask_for() {
    // The snippet as published, below the mocks' addresses.
    let (local, cloud, yaml) = captions(
        r#"
fallbacks:
  synthetic-captions:
    - provider: ollama
      model: "qwen2.5-vl:7b"
    - provider: anthropic
      model: "claude-sonnet-4-6"
"#,
    )
    .await;
    let (ok, out, err) = check(&yaml, &ANTHROPIC_ENV);
    assert!(ok, "check refused the snippet: {err}");
    assert!(out.contains("synthetic-captions [a named chain]: ollama/qwen2.5-vl:7b -> anthropic/claude-sonnet-4-6"), "{out}");

    let gw = Gateway::start_with_env(&yaml, &ANTHROPIC_ENV);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let r = post(&c, &url, &chat("synthetic-captions")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.header("x-switchyard-provider"), r.header("x-switchyard-model")), (Some("ollama"), Some("qwen2.5-vl:7b")));
    assert_eq!(r.header("x-switchyard-fallback-index"), Some("0"));

    // The local model fails: the chain's next target answers, and the caller learns which one did.
    local.set_behavior(failing(500));
    let r = post(&c, &url, &chat("synthetic-captions")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.header("x-switchyard-provider"), r.header("x-switchyard-model")), (Some("anthropic"), Some("claude-sonnet-4-6")));
    assert_eq!(r.header("x-switchyard-fallback-index"), Some("1"));
    let s = stream(&c, &url, &json!({"model": "synthetic-captions", "stream": true, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!((s.status, s.header("x-switchyard-provider")), (200, Some("anthropic")));
    assert!(s.done && !s.text().is_empty(), "{}", s.raw);

    // The chain's name is ours: no provider is ever asked for it.
    for m in [&local, &cloud] {
        assert!(!m.stats().by_model.contains_key("synthetic-captions"), "{:?}", m.stats().by_model);
    }
    let models: Value = serde_json::from_slice(&c.get(gw.url("/v1/models")).send().await.unwrap().bytes().await.unwrap()).unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "synthetic-captions"), "{models}");
}

#[tokio::test]
async fn a_route_for_a_name_no_provider_serves_is_served_by_its_fallbacks() {
    // Issue 8, finding 2: this passed check and then answered every request with a 404.
    let (_local, cloud, yaml) = captions(
        r#"
routes:
  - models: [synthetic-captions]
    fallbacks: [ollama/qwen2.5-vl:7b, anthropic/claude-sonnet-4-6]
"#,
    )
    .await;
    let (ok, out, err) = check(&yaml, &ANTHROPIC_ENV);
    assert!(ok, "{err}");
    assert!(out.contains("synthetic-captions [a name no provider lists, served by the route's fallbacks in order]: ollama/qwen2.5-vl:7b -> anthropic/claude-sonnet-4-6"), "{out}");
    let gw = Gateway::start_with_env(&yaml, &ANTHROPIC_ENV);
    let c = client();
    let r = post(&c, &gw.url("/v1/chat/completions"), &chat("synthetic-captions")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.header("x-switchyard-provider"), r.header("x-switchyard-attempts")), (Some("ollama"), Some("1")));
    assert_eq!(calls(&cloud), 0);
}

#[tokio::test]
async fn top_level_from_to_fallbacks_move_an_outage_to_the_other_provider() {
    let anthropic = mock_serving(Flavor::Anthropic, &["claude-sonnet-4-6"]).await;
    let openai = mock_serving(Flavor::OpenAi, &["gpt-4o"]).await;
    let yaml = format!(
        r#"
providers:
  anthropic:
    base_url: "{}"
    keys: [{{env: ANTHROPIC_KEY}}]
  openai:
    base_url: "{}"
    keys: [{{value: sk-openai}}]
fallbacks:
  - from: anthropic/claude-sonnet-4-6
    to: openai/gpt-4o
"#,
        anthropic.base_url(),
        openai.base_url()
    );
    let (ok, out, err) = check(&yaml, &ANTHROPIC_ENV);
    assert!(ok, "{err}");
    assert!(out.contains("anthropic/claude-sonnet-4-6 [provider/model]: anthropic/claude-sonnet-4-6 -> openai/gpt-4o"), "{out}");
    let gw = Gateway::start_with_env(&yaml, &ANTHROPIC_ENV);
    anthropic.set_behavior(failing(529));
    let r = post(&client(), &gw.url("/v1/chat/completions"), &chat("anthropic/claude-sonnet-4-6")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.header("x-switchyard-provider"), r.header("x-switchyard-model")), (Some("openai"), Some("gpt-4o")));
    assert!(calls(&anthropic) >= 1);
}

#[tokio::test]
async fn keys_written_env_name_with_weights_are_read_from_the_environment() {
    let mut cfg = MockConfig::new(Flavor::OpenAi);
    cfg.require_key = Some("sk-from-the-environment".into());
    let openai = MockServer::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let yaml = format!(
        r#"
providers:
  openai:
    base_url: "{}"
    keys:
      - name: primary
        env: OPENAI_KEY_PRIMARY
        weight: 0.7
"#,
        openai.base_url()
    );
    let vars = [("OPENAI_KEY_PRIMARY", "sk-from-the-environment")];
    let (ok, out, err) = check(&yaml, &vars);
    assert!(ok, "{err}");
    assert!(out.contains("keys: primary weight 0.7"), "{out}");
    assert!(!out.contains("sk-from-the-environment"), "check printed a secret: {out}");
    let gw = Gateway::start_with_env(&yaml, &vars);
    let r = post(&client(), &gw.url("/v1/chat/completions"), &chat("openai/gpt-4o-mini")).await;
    assert_eq!((r.status, r.header("x-switchyard-key")), (200, Some("primary")), "{}", r.body);

    // The variable missing: both commands say which one, at which path.
    let (ok, _, err) = check(&yaml, &[]);
    assert!(!ok);
    assert!(err.contains("providers.openai.keys[0].env: environment variable OPENAI_KEY_PRIMARY is not set"), "{err}");
}

/// `serve` on a file it refuses: (exit code, stderr).
fn serve_refuses(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("OPENAI_KEY_PRIMARY")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started on a broken file");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_and_serve_report_every_independent_mistake_once_with_its_fix() {
    // A newcomer's file with five unrelated mistakes and the published Bedrock key.
    let yaml = r#"
providers:
  openai:
    api_base: https://api.openai.com
    keys:
      - env: OPENAI_KEY_PRIMARY
        wieght: 0.7
  bedrock:
    keys:
      - env: BEDROCK_KEY
        region: eu-central-1
  anthropic:
    type: claude
    keys: [{value: sk-ant}]
routes:
  - models: [anthropic/claude-sonnet-4-6]
    fallbacks: [openai/gpt-4o, bedrock/anthropic.claude-3-5-haiku, nobody/x]
model_list: []
"#;
    let (ok, _, err) = check(yaml, &[]);
    assert!(!ok);
    let expected = [
        "providers.openai.api_base: unknown field `api_base`; the provider's address is `base_url`",
        "providers.openai.keys[0].wieght: unknown field `wieght`; did you mean `weight`?",
        "providers.openai.keys[0].env: environment variable OPENAI_KEY_PRIMARY is not set",
        // The key's `region` is the provider's region (the published shape), not an unknown field.
        "providers.bedrock.keys[0].env: environment variable BEDROCK_KEY is not set",
        "providers.anthropic.type: unknown provider type \"claude\"; did you mean \"anthropic\"?",
        "routes[0].fallbacks[2]: \"nobody/x\" names provider \"nobody\", which is not configured; providers in the file: anthropic, bedrock, openai",
        "model_list: unknown top-level key; this is LiteLLM's model_list",
    ];
    let lines: Vec<&str> = err.lines().filter_map(|l| l.strip_prefix("  - ")).collect();
    for e in expected {
        assert_eq!(lines.iter().filter(|l| l.starts_with(e)).count(), 1, "{e:?} not said exactly once in:\n{err}");
    }
    // Nothing else: no "unknown field `region`", no "not configured" for the providers with mistakes.
    assert_eq!(lines.len(), expected.len(), "{err}");
    assert!(err.contains(": 7 errors"), "{err}");
    // The same words from serve (each run has its own temporary file name in the first line).
    let body = |s: &str| s.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(body(&serve_refuses(yaml)), body(&err), "serve and check disagree");
}

#[tokio::test]
async fn a_providers_models_list_is_an_allow_list() {
    let openai = mock_serving(Flavor::OpenAi, &[]).await;
    let yaml = format!("providers:\n  openai:\n    base_url: \"{}\"\n    keys: [{{value: k}}]\n    models: [gpt-4o]\n", openai.base_url());
    let (ok, out, err) = check(&yaml, &[]);
    assert!(ok, "{err}");
    assert!(out.contains("models: only gpt-4o (an allow-list)"), "{out}");
    let gw = Gateway::start(&yaml);
    let c = client();
    let r = post(&c, &gw.url("/v1/chat/completions"), &chat("openai/gpt-4o-mini")).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("model_not_found")), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("providers.openai.models"), "{}", r.body);
    let r = post(&c, &gw.url("/v1/chat/completions"), &chat("gpt-4o")).await;
    assert_eq!((r.status, r.header("x-switchyard-model")), (200, Some("gpt-4o")), "{}", r.body);
    assert_eq!(calls(&openai), 1, "the refused model never reached the provider");
}
