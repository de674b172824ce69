//! The conformance suite: every scenario of "translation fidelity", written once and run against every
//! provider type through its mock and the real gateway binary.
//!
//! A provider declares what it supports ([`Caps`]); a scenario it does not support must fail with a clear
//! 400 rather than pass silently. Each provider's run collects every failing scenario before failing, so one
//! run shows the whole picture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_mock::{Behavior, Flavor, MockServer, RecordedRequest, BEDROCK_ACCESS_KEY_ID, BEDROCK_SECRET_ACCESS_KEY};

#[derive(Clone, Copy)]
struct Caps {
    /// Takes http(s) image URLs itself (otherwise the gateway fetches and inlines them).
    image_urls: bool,
    json_mode: bool,
    n: bool,
    content_filter: bool,
    embeddings: bool,
    cached_tokens: bool,
    /// The upstream reports usage on streams (Mistral's does without being asked; our OpenAI-format mock
    /// only when asked, and Mistral rejects `stream_options`, so it is not checked there).
    stream_usage: bool,
    /// Lists its models over HTTP.
    lists_models: bool,
    /// Can be made to call a named tool (Ollama has no `tool_choice`; the gateway narrows the tools instead).
    forced_tool_choice: bool,
    /// Authenticates with an OAuth token the gateway obtains from the mock's `/token` (Vertex through a
    /// service account), not with a configured key.
    oauth: bool,
    /// Embeddings come from a model of their own (Bedrock: Titan or Cohere through InvokeModel, never the
    /// chat model), which the mock then serves too.
    embeddings_model: Option<&'static str>,
}

const OPENAI_LIKE: Caps = Caps {
    image_urls: true,
    json_mode: true,
    n: true,
    content_filter: true,
    embeddings: true,
    cached_tokens: true,
    stream_usage: true,
    lists_models: true,
    forced_tool_choice: true,
    oauth: false,
    embeddings_model: None,
};

/// Bedrock through Converse: no `n`, JSON mode emulated with a forced tool, images only as bytes (the
/// gateway fetches URLs), no model list on the runtime endpoint, embeddings from Titan through InvokeModel.
const BEDROCK: Caps = Caps {
    image_urls: false,
    json_mode: false,
    n: false,
    lists_models: false,
    embeddings_model: Some("amazon.titan-embed-text-v2:0"),
    ..OPENAI_LIKE
};

struct Case {
    /// Provider name in the config (and its type).
    name: &'static str,
    flavor: Flavor,
    model: &'static str,
    caps: Caps,
    /// The provider's config block, given the mock's base URL.
    block: fn(&str) -> String,
}

fn keyed(kind: &str, base: &str) -> String {
    format!("    type: {kind}\n    base_url: \"{base}\"\n    keys: [{{name: k1, value: sk-test-{kind}}}]\n")
}

/// A Vertex provider that authenticates with the test service account (the fixture key), its `token_uri`
/// pointed at the mock, written to a file of its own as `credentials_file` takes it.
fn service_account_block(base: &str) -> String {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../wire/tests/fixtures/google/service_account.json");
    let mut sa: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    sa["token_uri"] = Value::String(format!("{base}/token"));
    let port = base.rsplit(':').next().unwrap_or("0").trim_end_matches('/');
    let path = std::env::temp_dir().join(format!("switchyard-conformance-sa-{}-{port}.json", std::process::id()));
    std::fs::write(&path, sa.to_string()).unwrap();
    format!(
        "    type: vertex\n    base_url: \"{base}\"\n    region: us-central1\n    project: proj-1\n    credentials_file: \"{}\"\n",
        path.display()
    )
}

/// A Bedrock provider that signs with SigV4, the static credentials in its `aws:` section (the mock knows
/// only its documented test pair, and checks every signature).
fn bedrock_signed(base: &str, secret: &str) -> String {
    format!(
        "    type: bedrock\n    base_url: \"{base}\"\n    region: eu-central-1\n    aws: {{access_key_id: {BEDROCK_ACCESS_KEY_ID}, secret_access_key: \"{secret}\"}}\n"
    )
}

async fn run(case: Case) {
    let models: Vec<&str> = [case.model].into_iter().chain(case.caps.embeddings_model).collect();
    let mock = mock_serving(case.flavor, &models).await;
    let image_url = image_server().await;
    // Translation is under test here, not resilience: no same-target retries, so each scenario's error
    // shows the one upstream answer it provoked; health stays at its defaults (a lone provider is never
    // skipped), and a 429 cools the key only for a moment so the next scenario can use it.
    let yaml = format!(
        "images:\n  allow_private_networks: [\"127.0.0.1/32\"]\nproviders:\n  {}:\n{}{}",
        case.name,
        (case.block)(&mock.base_url()),
        "    retry: {max_retries: 0}\n    key_cooldown: {rate_limited: 1ms}\n"
    );
    let gw = Gateway::start(&yaml);
    let s = Suite { c: client(), gw, mock, case, image_url, failures: Vec::new() };
    s.all().await;
}

struct Suite {
    c: reqwest::Client,
    gw: Gateway,
    mock: MockServer,
    case: Case,
    image_url: String,
    failures: Vec<String>,
}

macro_rules! check {
    ($fails:expr, $scenario:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $fails.push(format!("{}: {}", $scenario, format!($($msg)+)));
        }
    };
}

impl Suite {
    /// The wire format the upstream speaks: the mock's flavour, except for Claude on Vertex, which the
    /// Gemini mock serves with Anthropic's Messages API.
    fn wire(&self) -> Flavor {
        if self.case.flavor == Flavor::Gemini && self.case.model.starts_with("claude") {
            Flavor::Anthropic
        } else {
            self.case.flavor
        }
    }

    fn model(&self) -> String {
        format!("{}/{}", self.case.name, self.case.model)
    }

    async fn chat(&self, body: Value) -> Reply {
        let mut body = body;
        body["model"] = Value::String(self.model());
        post(&self.c, &self.gw.url("/v1/chat/completions"), &body).await
    }

    async fn chat_stream(&self, body: Value) -> StreamReply {
        let mut body = body;
        body["model"] = Value::String(self.model());
        body["stream"] = Value::Bool(true);
        stream(&self.c, &self.gw.url("/v1/chat/completions"), &body).await
    }

    /// The body the mock received last.
    fn upstream_body(&self) -> Value {
        self.mock.requests().last().map(|r| r.body.clone()).unwrap_or(Value::Null)
    }

    fn content(r: &Reply) -> String {
        r.body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
    }

    async fn all(mut self) {
        let f = &mut Vec::new();
        self.text(f).await;
        self.system(f).await;
        self.multi_turn(f).await;
        self.params(f).await;
        self.images(f).await;
        self.tools(f).await;
        self.tool_round_trip(f).await;
        self.streams(f).await;
        self.finish_reasons(f).await;
        self.json_mode_and_n(f).await;
        self.usage_details(f).await;
        self.errors(f).await;
        self.embeddings(f).await;
        self.models(f).await;
        self.credentials(f);
        self.failures.append(f);
        assert!(
            self.failures.is_empty(),
            "{} failed {} scenario(s):\n  {}",
            self.case.name,
            self.failures.len(),
            self.failures.join("\n  ")
        );
    }

    async fn text(&self, f: &mut Vec<String>) {
        let r = self.chat(json!({"messages": [{"role": "user", "content": "hello world"}]})).await;
        check!(f, "text", r.status == 200, "status {} body {}", r.status, r.body);
        check!(f, "text", Self::content(&r) == "echo: hello world", "content {:?}", Self::content(&r));
        check!(f, "text", r.body["choices"][0]["finish_reason"] == "stop", "finish {}", r.body["choices"][0]["finish_reason"]);
        check!(f, "text", r.body["object"] == "chat.completion", "object {}", r.body["object"]);
        check!(f, "text", r.body["id"].as_str().is_some_and(|s| !s.is_empty()), "missing id");
        let u = &r.body["usage"];
        check!(f, "text usage", u["prompt_tokens"] == 2 && u["completion_tokens"] == 3 && u["total_tokens"] == 5, "usage {u}");
        check!(
            f,
            "attribution",
            r.header("x-switchyard-provider") == Some(self.case.name),
            "provider header {:?}",
            r.header("x-switchyard-provider")
        );
        check!(
            f,
            "attribution",
            r.header("x-switchyard-model") == Some(self.case.model),
            "model header {:?}",
            r.header("x-switchyard-model")
        );
        check!(f, "attribution", r.header("x-switchyard-attempts") == Some("1"), "attempts header {:?}", r.header("x-switchyard-attempts"));
        let alias = post(
            &self.c,
            &self.gw.url("/openai/v1/chat/completions"),
            &json!({"model": self.model(), "messages": [{"role": "user", "content": "via alias"}]}),
        )
        .await;
        check!(f, "alias prefix", alias.status == 200 && Self::content(&alias) == "echo: via alias", "{} {}", alias.status, alias.body);
    }

    async fn system(&self, f: &mut Vec<String>) {
        let r = self.chat(json!({"messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}]})).await;
        check!(f, "system", r.status == 200 && Self::content(&r) == "echo: hi", "{} {}", r.status, r.body);
        check!(f, "system", r.body["usage"]["prompt_tokens"] == 3, "system words not counted upstream: {}", r.body["usage"]);
        let b = self.upstream_body();
        let ok = match self.wire() {
            // Anthropic's `system` string or blocks, Bedrock's `system` text blocks.
            Flavor::Anthropic | Flavor::Bedrock => b["system"].to_string().contains("be terse") && b["messages"][0]["role"] == "user",
            Flavor::Gemini => b["systemInstruction"] == json!({"parts": [{"text": "be terse"}]}) && b["contents"][0]["role"] == "user",
            _ => b["messages"][0]["role"] == "system" && b["messages"][0]["content"] == "be terse",
        };
        check!(f, "system", ok, "upstream body {b}");
        let r = self.chat(json!({"messages": [{"role": "developer", "content": "dev rules"}, {"role": "user", "content": "hi"}]})).await;
        check!(f, "developer role", r.status == 200 && r.body["usage"]["prompt_tokens"] == 3, "{} {}", r.status, r.body);
    }

    async fn multi_turn(&self, f: &mut Vec<String>) {
        let r = self
            .chat(json!({"messages": [
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second"}]}))
            .await;
        check!(f, "multi-turn", r.status == 200 && Self::content(&r) == "echo: second", "{} {}", r.status, r.body);
        check!(f, "multi-turn", r.body["usage"]["prompt_tokens"] == 5, "usage {}", r.body["usage"]);
    }

    async fn params(&self, f: &mut Vec<String>) {
        let r = self
            .chat(json!({"messages": [{"role": "user", "content": "p"}], "temperature": 0.5, "top_p": 0.9, "seed": 7,
                          "stop": ["zzz"], "max_tokens": 50, "top_k": 3, "logit_bias": {"50256": -100}}))
            .await;
        check!(f, "params", r.status == 200, "{} {}", r.status, r.body);
        let b = self.upstream_body();
        let ok = match self.wire() {
            Flavor::Anthropic => {
                b["temperature"] == 0.5
                    && b["top_p"] == 0.9
                    && b["stop_sequences"] == json!(["zzz"])
                    && b["max_tokens"] == 50
                    && b["top_k"] == 3
            }
            Flavor::Cohere => {
                // Cohere's own names; OpenAI-only fields (logit_bias) are not sent, since Cohere rejects
                // fields it does not know.
                b["temperature"] == 0.5
                    && b["p"] == 0.9
                    && b["seed"] == 7
                    && b["stop_sequences"] == json!(["zzz"])
                    && b["max_tokens"] == 50
                    && b["k"] == 3
                    && b.get("logit_bias").is_none()
            }
            Flavor::Gemini => {
                let g = &b["generationConfig"];
                g["temperature"] == 0.5
                    && g["topP"] == 0.9
                    && g["seed"] == 7
                    && g["stopSequences"] == json!(["zzz"])
                    && g["maxOutputTokens"] == 50
                    && g["topK"] == 3
                    && b.get("logit_bias").is_none()
            }
            Flavor::Bedrock => {
                // Converse's `inferenceConfig`; what it has no field for goes in
                // `additionalModelRequestFields` (top_k) or is dropped (seed, logit_bias: Converse refuses
                // unknown top-level fields).
                let c = &b["inferenceConfig"];
                c["temperature"] == 0.5
                    && c["topP"] == 0.9
                    && c["stopSequences"] == json!(["zzz"])
                    && c["maxTokens"] == 50
                    && b["additionalModelRequestFields"]["top_k"] == 3
                    && b.get("seed").is_none()
                    && b.get("logit_bias").is_none()
            }
            Flavor::Ollama => {
                let o = &b["options"];
                o["temperature"] == 0.5
                    && o["top_p"] == 0.9
                    && o["seed"] == 7
                    && o["stop"] == json!(["zzz"])
                    && o["num_predict"] == 50
                    && o["top_k"] == 3
            }
            _ => {
                // Unknown fields reach OpenAI-compatible upstreams untouched.
                let seed_ok = if self.case.name == "mistral" { b["random_seed"] == 7 } else { b["seed"] == 7 };
                b["temperature"] == 0.5
                    && b["top_p"] == 0.9
                    && seed_ok
                    && b["stop"] == json!(["zzz"])
                    && b["max_tokens"] == 50
                    && b["top_k"] == 3
                    && b["logit_bias"] == json!({"50256": -100})
            }
        };
        check!(f, "params", ok, "upstream body {b}");
        if self.wire() == Flavor::Anthropic {
            let r = self.chat(json!({"messages": [{"role": "user", "content": "p"}]})).await;
            let b = self.upstream_body();
            check!(f, "anthropic default max_tokens", r.status == 200 && b["max_tokens"].as_u64().is_some_and(|n| n > 0), "{b}");
        }
    }

    async fn images(&self, f: &mut Vec<String>) {
        let data_url = format!("data:image/png;base64,{PNG_B64}");
        let r = self
            .chat(json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}}]}]}))
            .await;
        let want = format!("echo: look {}", png_description());
        check!(f, "image base64", r.status == 200 && Self::content(&r) == want, "{} {}", r.status, r.body);

        let r = self
            .chat(json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": self.image_url}}]}]}))
            .await;
        let want = if self.case.caps.image_urls {
            format!("echo: look [image-url {}]", self.image_url)
        } else {
            format!("echo: look {}", png_description())
        };
        check!(f, "image url", r.status == 200 && Self::content(&r) == want, "{} {}", r.status, r.body);
    }

    fn tool_defs() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
    }

    async fn tools(&self, f: &mut Vec<String>) {
        let r = self
            .chat(json!({"tools": Self::tool_defs(), "tool_choice": "auto",
                "messages": [{"role": "user", "content": "[[tool:get_weather {\"city\":\"Paris\"}]] [[tool:get_weather {\"city\":\"Oslo\"}]]"}]}))
            .await;
        check!(f, "tools", r.status == 200, "{} {}", r.status, r.body);
        check!(f, "tools", r.body["choices"][0]["finish_reason"] == "tool_calls", "finish {}", r.body["choices"][0]["finish_reason"]);
        let calls = r.body["choices"][0]["message"]["tool_calls"].as_array().cloned().unwrap_or_default();
        check!(f, "parallel tools", calls.len() == 2, "calls {calls:?}");
        if calls.len() == 2 {
            let args: Vec<Value> = calls
                .iter()
                .map(|c| serde_json::from_str(c["function"]["arguments"].as_str().unwrap_or("")).unwrap_or(Value::Null))
                .collect();
            check!(f, "tools args", args == vec![json!({"city": "Paris"}), json!({"city": "Oslo"})], "args {args:?}");
            check!(f, "tools names", calls.iter().all(|c| c["function"]["name"] == "get_weather" && c["type"] == "function"), "{calls:?}");
            let ids: Vec<&str> = calls.iter().filter_map(|c| c["id"].as_str()).collect();
            check!(f, "tools ids", ids.len() == 2 && ids[0] != ids[1] && !ids[0].is_empty(), "ids {ids:?}");
        }
        let r = self
            .chat(json!({"tools": Self::tool_defs(), "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "messages": [{"role": "user", "content": "whatever"}]}))
            .await;
        let calls = r.body["choices"][0]["message"]["tool_calls"].as_array().map(Vec::len).unwrap_or(0);
        let want = if self.case.caps.forced_tool_choice { 1 } else { 0 };
        check!(f, "named tool_choice", r.status == 200 && calls == want, "{} {}", r.status, r.body);
    }

    async fn tool_round_trip(&self, f: &mut Vec<String>) {
        let r = self
            .chat(json!({"tools": Self::tool_defs(), "messages": [
                {"role": "user", "content": "weather in Paris and Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_a1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_b2", "content": "20C"}]}))
            .await;
        check!(f, "tool round trip", r.status == 200 && Self::content(&r) == "tool results: 18C | 20C", "{} {}", r.status, r.body);
    }

    async fn streams(&self, f: &mut Vec<String>) {
        let s = self
            .chat_stream(json!({"messages": [{"role": "user", "content": "hello stream"}], "stream_options": {"include_usage": true}}))
            .await;
        check!(f, "stream text", s.status == 200 && s.text() == "echo: hello stream", "{} {:?}", s.status, s.raw);
        check!(f, "stream text", s.done && s.finish_reason().as_deref() == Some("stop"), "{:?}", s.raw);
        check!(f, "stream content-type", s.headers.get("content-type").is_some_and(|v| v == "text/event-stream"), "{:?}", s.headers);
        check!(
            f,
            "stream chunks",
            s.chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"].as_str().is_some_and(|i| !i.is_empty())),
            "{:?}",
            s.raw
        );
        check!(
            f,
            "stream role first",
            s.chunks.first().is_some_and(|c| c["choices"][0]["delta"]["role"] == "assistant"),
            "{:?}",
            s.chunks.first()
        );
        check!(f, "stream attribution", s.headers.get("x-switchyard-provider").is_some_and(|v| v == self.case.name), "{:?}", s.headers);
        if self.case.caps.stream_usage {
            let last = s.chunks.last().cloned().unwrap_or(Value::Null);
            check!(f, "stream usage", last["choices"] == json!([]) && last["usage"]["total_tokens"] == 5, "last chunk {last}");
        }
        let s = self.chat_stream(json!({"messages": [{"role": "user", "content": "no usage please"}]})).await;
        check!(f, "stream without usage", s.status == 200 && s.usage().is_none() && s.done, "{:?}", s.raw);

        let s = self
            .chat_stream(json!({"tools": Self::tool_defs(),
                "messages": [{"role": "user", "content": "[[tool:get_weather {\"city\":\"Paris\"}]] [[tool:get_weather {\"city\":\"Reykjavik\"}]]"}]}))
            .await;
        let calls = s.tool_calls();
        let args: Vec<Value> = calls.iter().map(|c| serde_json::from_str(&c.2).unwrap_or(Value::Null)).collect();
        check!(f, "stream tools", s.status == 200 && calls.len() == 2, "{:?}", s.raw);
        check!(f, "stream tools args", args == vec![json!({"city": "Paris"}), json!({"city": "Reykjavik"})], "{args:?} from {:?}", s.raw);
        check!(
            f,
            "stream tools ids",
            calls.iter().all(|c| !c.0.is_empty() && c.1 == "get_weather") && calls.first().map(|c| &c.0) != calls.get(1).map(|c| &c.0),
            "{calls:?}"
        );
        check!(f, "stream tools finish", s.finish_reason().as_deref() == Some("tool_calls") && s.done, "{:?}", s.raw);
    }

    async fn finish_reasons(&self, f: &mut Vec<String>) {
        let r = self.chat(json!({"messages": [{"role": "user", "content": "one two three four"}], "max_tokens": 2})).await;
        check!(
            f,
            "length",
            r.status == 200 && Self::content(&r) == "echo: one" && r.body["choices"][0]["finish_reason"] == "length",
            "{} {}",
            r.status,
            r.body
        );
        let r = self.chat(json!({"messages": [{"role": "user", "content": "one two three four"}], "max_completion_tokens": 2})).await;
        check!(f, "max_completion_tokens", r.status == 200 && r.body["choices"][0]["finish_reason"] == "length", "{} {}", r.status, r.body);
        let r = self.chat(json!({"messages": [{"role": "user", "content": "one two three four"}], "stop": "three"})).await;
        check!(
            f,
            "stop",
            r.status == 200 && Self::content(&r) == "echo: one two " && r.body["choices"][0]["finish_reason"] == "stop",
            "{} {}",
            r.status,
            r.body
        );
        if self.case.caps.content_filter {
            let r = self.chat(json!({"messages": [{"role": "user", "content": "[[filter]]"}]})).await;
            check!(
                f,
                "content_filter",
                r.status == 200 && r.body["choices"][0]["finish_reason"] == "content_filter",
                "{} {}",
                r.status,
                r.body
            );
        }
    }

    async fn json_mode_and_n(&self, f: &mut Vec<String>) {
        let r = self.chat(json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}})).await;
        if self.case.caps.json_mode {
            let parsed: Value = serde_json::from_str(&Self::content(&r)).unwrap_or(Value::Null);
            check!(f, "json mode", r.status == 200 && parsed == json!({"echo": "hi"}), "{} {}", r.status, r.body);
            let inner =
                json!({"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"], "additionalProperties": false});
            let schema = json!({"type": "json_schema", "json_schema": {"name": "out", "schema": inner}});
            let r = self.chat(json!({"messages": [{"role": "user", "content": "hi"}], "response_format": schema})).await;
            let parsed: Value = serde_json::from_str(&Self::content(&r)).unwrap_or(Value::Null);
            check!(f, "json schema", r.status == 200 && conforms(&parsed, &inner), "{} {}", r.status, r.body);
            // The schema itself reached the upstream (OpenAI style as `response_format`, Ollama as `format`,
            // Cohere as `response_format.json_schema`).
            let sent = self.upstream_body();
            // Gemini as `responseJsonSchema`, which takes JSON Schema as it is.
            let gemini = sent["generationConfig"]["responseJsonSchema"] == inner;
            check!(
                f,
                "json schema forwarded",
                sent["response_format"] == schema || sent["format"] == inner || sent["response_format"]["json_schema"] == inner || gemini,
                "{sent}"
            );
        } else if matches!(self.wire(), Flavor::Anthropic | Flavor::Bedrock) {
            // Anthropic and Converse have no JSON mode: the gateway emulates it with a forced tool whose
            // arguments become the content, so the answer is a JSON object (the mock's forced call is the
            // smallest value the schema accepts) and the schema went up as that tool's input schema.
            let parsed: Value = serde_json::from_str(&Self::content(&r)).unwrap_or(Value::Null);
            check!(
                f,
                "json mode (emulated)",
                r.status == 200 && parsed.is_object() && r.body["choices"][0]["finish_reason"] == "stop",
                "{} {}",
                r.status,
                r.body
            );
            let inner =
                json!({"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"], "additionalProperties": false});
            let schema = json!({"type": "json_schema", "json_schema": {"name": "out", "schema": inner}});
            let r = self.chat(json!({"messages": [{"role": "user", "content": "hi"}], "response_format": schema})).await;
            let parsed: Value = serde_json::from_str(&Self::content(&r)).unwrap_or(Value::Null);
            check!(f, "json schema (emulated)", r.status == 200 && conforms(&parsed, &inner), "{} {}", r.status, r.body);
            let sent = self.upstream_body();
            let (tools, schema_at) = match self.wire() {
                Flavor::Bedrock => (&sent["toolConfig"]["tools"], "/toolSpec/inputSchema/json"),
                _ => (&sent["tools"], "/input_schema"),
            };
            check!(
                f,
                "json schema sent as a tool",
                tools.as_array().is_some_and(|t| t.iter().any(|t| t.pointer(schema_at) == Some(&inner))),
                "{sent}"
            );
        } else {
            check!(
                f,
                "json mode refused",
                r.status == 400 && r.body["error"]["message"].as_str().is_some_and(|m| m.contains("response_format")),
                "{} {}",
                r.status,
                r.body
            );
        }
        let r = self.chat(json!({"messages": [{"role": "user", "content": "hi"}], "n": 2})).await;
        if self.case.caps.n {
            let n = r.body["choices"].as_array().map(Vec::len).unwrap_or(0);
            check!(f, "n", r.status == 200 && n == 2 && r.body["choices"][1]["index"] == 1, "{} {}", r.status, r.body);
        } else {
            check!(f, "n refused", r.status == 400 && r.body["error"]["type"] == "invalid_request_error", "{} {}", r.status, r.body);
        }
    }

    async fn usage_details(&self, f: &mut Vec<String>) {
        if !self.case.caps.cached_tokens {
            return;
        }
        let r = self.chat(json!({"messages": [{"role": "user", "content": "hello [[cached:1]]"}]})).await;
        let u = &r.body["usage"];
        check!(
            f,
            "cached tokens",
            r.status == 200 && u["prompt_tokens_details"]["cached_tokens"] == 1 && u["prompt_tokens"] == 2,
            "{} {u}",
            r.status
        );
    }

    async fn errors(&self, f: &mut Vec<String>) {
        let r = self.chat(json!({"messages": [{"role": "user", "content": "[[error:400]]"}]})).await;
        check!(
            f,
            "upstream 400",
            r.status == 400 && r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{} {}",
            r.status,
            r.body
        );
        check!(
            f,
            "upstream 400 shape",
            ["message", "type", "param", "code"].iter().all(|k| r.body["error"].get(k).is_some()),
            "{}",
            r.body
        );
        let r = self.chat(json!({"messages": [{"role": "user", "content": "[[context]]"}]})).await;
        check!(f, "context too long", r.status == 400, "{} {}", r.status, r.body);
        for code in [429, 500, 503, 529] {
            let r = self.chat(json!({"messages": [{"role": "user", "content": format!("[[error:{code}]]")}]})).await;
            // The first attempt that reached the upstream (a key may still be cooling down from the 429 before).
            let sent: Vec<&Value> =
                r.body["error"]["attempts"].as_array().into_iter().flatten().filter(|a| a.get("skipped").is_none()).collect();
            let attempt = sent.first().copied().unwrap_or(&Value::Null);
            // The status says what to do: 429 wait (a rate limit), 503 the upstream is unavailable, 502 it broke.
            let (want, want_code) = match code {
                429 => (429, "rate_limit_exceeded"),
                503 | 529 => (503, "upstream_unavailable"),
                _ => (502, "all_attempts_failed"),
            };
            check!(
                f,
                "upstream failure",
                r.status == want && attempt["status"] == code && r.body["error"]["code"] == want_code,
                "{code}: {} {}",
                r.status,
                r.body
            );
            let text = r.body.to_string();
            check!(
                f,
                "attempt names key, never secret",
                !text.contains("sk-test") && !text.contains(BEDROCK_SECRET_ACCESS_KEY),
                "{}",
                r.body
            );
        }
        // Faults on the wire: an error event inside a 200 stream before any chunk, a reset after the first
        // chunks, a malformed body.
        let faulty = |kind: &str| json!({"model": format!("{}+kind={kind}", self.model()), "stream": true, "messages": [{"role": "user", "content": "one two three four five six"}]});
        let r = stream(&self.c, &self.gw.url("/v1/chat/completions"), &faulty("stream_error")).await;
        let first = &r.body_json()["error"];
        check!(
            f,
            "error event before the first chunk",
            // Anthropic's in-stream error is `overloaded_error` (a 529): unavailable, not broken. Bedrock's
            // is a `throttlingException`: a rate limit, answered as one.
            r.chunks.is_empty()
                && if first["attempts"][0]["class"] == "rate_limited" {
                    self.case.flavor == Flavor::Bedrock && r.status == 429 && first["code"] == "rate_limit_exceeded"
                } else if first["attempts"][0]["class"] != "transient" {
                    false
                } else if matches!(first["attempts"][0]["status"].as_u64(), Some(503 | 529)) {
                    r.status == 503 && first["code"] == "upstream_unavailable"
                } else {
                    r.status == 502 && first["code"] == "all_attempts_failed"
                },
            "{} {:?}",
            r.status,
            r.raw
        );
        let r = stream(&self.c, &self.gw.url("/v1/chat/completions"), &faulty("reset")).await;
        let last = r.chunks.last().cloned().unwrap_or(Value::Null);
        check!(
            f,
            "reset mid-stream",
            r.status == 200 && !r.text().is_empty() && last["error"]["code"] == "stream_interrupted" && r.done,
            "{:?}",
            r.raw
        );
        let mut body = faulty("malformed");
        body["stream"] = Value::Bool(false);
        let r = post(&self.c, &self.gw.url("/v1/chat/completions"), &body).await;
        check!(f, "malformed body", r.status == 502 && r.body["error"]["attempts"][0]["class"] == "malformed", "{} {}", r.status, r.body);

        let r = self.chat_stream(json!({"messages": [{"role": "user", "content": "[[error:529]]"}]})).await;
        check!(
            f,
            "stream upstream failure is an HTTP error before any byte",
            r.status == 503 && r.body_json()["error"]["code"] == "upstream_unavailable",
            "{} {:?}",
            r.status,
            r.raw
        );
        let r = post(
            &self.c,
            &self.gw.url("/v1/chat/completions"),
            &json!({"model": format!("{}/", self.case.name), "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        check!(f, "empty model after prefix", r.status == 400, "{} {}", r.status, r.body);
    }

    async fn embeddings(&self, f: &mut Vec<String>) {
        let model = match self.case.caps.embeddings_model {
            Some(m) => format!("{}/{m}", self.case.name),
            None => self.model(),
        };
        let r = post(&self.c, &self.gw.url("/v1/embeddings"), &json!({"model": model, "input": ["alpha", "beta"]})).await;
        if self.case.caps.embeddings {
            let data = r.body["data"].as_array().cloned().unwrap_or_default();
            check!(
                f,
                "embeddings",
                r.status == 200
                    && data.len() == 2
                    && data[1]["index"] == 1
                    && data[0]["embedding"].as_array().is_some_and(|v| !v.is_empty()),
                "{} {}",
                r.status,
                r.body
            );
            let r = post(&self.c, &self.gw.url("/v1/embeddings"), &json!({"model": model, "input": "alpha", "encoding_format": "base64"}))
                .await;
            check!(f, "embeddings base64", r.status == 200 && r.body["data"][0]["embedding"].is_string(), "{} {}", r.status, r.body);
        } else {
            check!(f, "embeddings refused", r.status == 400, "{} {}", r.status, r.body);
        }
    }

    /// An OAuth provider traded its service account's assertion at the credential's `token_uri` (the
    /// mock's `/token`) once, the token was cached for every later call, and each upstream call carried that
    /// token as Bearer on the project's regional path, with no API key beside it.
    fn credentials(&self, f: &mut Vec<String>) {
        if !self.case.caps.oauth {
            return;
        }
        let tokens = self.mock.issued_tokens();
        let exchanges = self.mock.stats().by_path.get("/token").copied().unwrap_or(0);
        check!(
            f,
            "oauth token exchange",
            tokens.len() == 1 && exchanges == 1,
            "{} token(s) issued in {exchanges} exchange(s)",
            tokens.len()
        );
        let want = tokens.first().map(|t| format!("Bearer {t}"));
        let calls: Vec<RecordedRequest> = self.mock.requests().into_iter().filter(|r| r.path != "/token").collect();
        let bad: Vec<String> = calls
            .iter()
            .filter(|r| {
                r.headers.get("authorization") != want.as_ref()
                    || r.headers.contains_key("x-goog-api-key")
                    || r.query.as_deref().is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")))
                    || !["google", "anthropic"]
                        .iter()
                        .any(|p| r.path.starts_with(&format!("/v1/projects/proj-1/locations/us-central1/publishers/{p}/models/")))
            })
            .map(|r| format!("{} {:?} {:?}", r.path, r.query, r.headers.get("authorization")))
            .collect();
        check!(f, "oauth bearer on every call", !calls.is_empty() && bad.is_empty(), "{} call(s), off: {bad:?}", calls.len());
    }

    async fn models(&self, f: &mut Vec<String>) {
        let r = self.c.get(self.gw.url("/v1/models")).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
        let ids: Vec<&str> = body["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
        if self.case.caps.lists_models {
            check!(f, "models", status == 200 && ids.iter().any(|i| i.starts_with(&format!("{}/", self.case.name))), "{status} {body}");
        } else {
            check!(f, "models", status == 200 && body["object"] == "list", "{status} {body}");
        }
    }
}

macro_rules! conformance {
    ($($test:ident: $case:expr;)+) => {
        $(
            #[tokio::test]
            async fn $test() {
                run($case).await;
            }
        )+
    };
}

conformance! {
    openai: Case { name: "openai", flavor: Flavor::OpenAi, model: "gpt-4o-mini", caps: OPENAI_LIKE, block: |b| keyed("openai", b) };
    azure: Case {
        name: "azure", flavor: Flavor::Azure, model: "gpt-4o-mini",
        caps: Caps { lists_models: false, ..OPENAI_LIKE },
        block: |b| format!("{}    deployments: {{gpt-4o-mini: gpt-4o-mini}}\n", keyed("azure", b)),
    };
    anthropic: Case {
        name: "anthropic", flavor: Flavor::Anthropic, model: "claude-sonnet-4-6",
        caps: Caps { json_mode: false, n: false, embeddings: false, ..OPENAI_LIKE },
        block: |b| keyed("anthropic", b),
    };
    ollama: Case {
        name: "ollama", flavor: Flavor::Ollama, model: "llava:latest",
        caps: Caps { image_urls: false, n: false, content_filter: false, cached_tokens: false, forced_tool_choice: false, ..OPENAI_LIKE },
        block: |b| format!("    type: ollama\n    base_url: \"{b}\"\n"),
    };
    vllm: Case {
        name: "vllm", flavor: Flavor::OpenAi, model: "meta-llama/Llama-3.1-8B-Instruct", caps: OPENAI_LIKE,
        block: |b| keyed("vllm", b),
    };
    openai_compatible: Case {
        name: "openai-compatible", flavor: Flavor::OpenAi, model: "local-model", caps: OPENAI_LIKE,
        block: |b| format!("    type: openai-compatible\n    base_url: \"{b}/v1\"\n    keys: [{{value: dummy}}]\n"),
    };
    groq: Case { name: "groq", flavor: Flavor::OpenAi, model: "llama-3.3-70b-versatile", caps: Caps { embeddings: false, ..OPENAI_LIKE }, block: |b| keyed("groq", &format!("{b}/openai/v1")) };
    mistral: Case {
        name: "mistral", flavor: Flavor::OpenAi, model: "mistral-small-latest",
        caps: Caps { stream_usage: false, ..OPENAI_LIKE },
        block: |b| keyed("mistral", b),
    };
    xai: Case { name: "xai", flavor: Flavor::OpenAi, model: "grok-3", caps: OPENAI_LIKE, block: |b| keyed("xai", b) };
    openrouter: Case { name: "openrouter", flavor: Flavor::OpenAi, model: "openai/gpt-4o-mini", caps: OPENAI_LIKE, block: |b| keyed("openrouter", &format!("{b}/api/v1")) };
    together: Case { name: "together", flavor: Flavor::OpenAi, model: "meta-llama/Llama-3-70b", caps: OPENAI_LIKE, block: |b| keyed("together", b) };
    fireworks: Case { name: "fireworks", flavor: Flavor::OpenAi, model: "accounts/fireworks/models/llama-v3p1-8b-instruct", caps: OPENAI_LIKE, block: |b| keyed("fireworks", &format!("{b}/inference/v1")) };
    cerebras: Case { name: "cerebras", flavor: Flavor::OpenAi, model: "llama3.1-8b", caps: Caps { embeddings: false, ..OPENAI_LIKE }, block: |b| keyed("cerebras", b) };
    deepseek: Case { name: "deepseek", flavor: Flavor::OpenAi, model: "deepseek-chat", caps: Caps { embeddings: false, ..OPENAI_LIKE }, block: |b| keyed("deepseek", b) };
    cohere: Case {
        name: "cohere", flavor: Flavor::Cohere, model: "command-a-03-2025",
        caps: Caps { n: false, content_filter: false, ..OPENAI_LIKE },
        block: |b| keyed("cohere", b),
    };
    gemini: Case {
        name: "gemini", flavor: Flavor::Gemini, model: "gemini-2.5-flash",
        caps: Caps { image_urls: false, ..OPENAI_LIKE },
        block: |b| keyed("gemini", b),
    };
    // Vertex with an API key (express mode); `vertex_oauth` below takes the service-account path.
    vertex_gemini: Case {
        name: "vertex", flavor: Flavor::Gemini, model: "gemini-2.5-pro",
        caps: Caps { image_urls: false, lists_models: false, ..OPENAI_LIKE },
        block: |b| format!("{}    region: us-central1\n    project: proj-1\n", keyed("vertex", b)),
    };
    // Vertex as most deployments run it: a service account's credentials file, whose token endpoint is the
    // mock's, and a Bearer token on the project's paths.
    vertex_oauth: Case {
        name: "vertex", flavor: Flavor::Gemini, model: "gemini-2.5-pro",
        caps: Caps { image_urls: false, lists_models: false, oauth: true, ..OPENAI_LIKE },
        block: service_account_block,
    };
    // Claude on Vertex: the same service account, Anthropic's Messages API on the rawPredict paths.
    vertex_claude: Case {
        name: "vertex", flavor: Flavor::Gemini, model: "claude-sonnet-4@20250514",
        caps: Caps { image_urls: false, lists_models: false, oauth: true, json_mode: false, n: false, embeddings: false, ..OPENAI_LIKE },
        block: service_account_block,
    };
    bedrock: Case {
        name: "bedrock", flavor: Flavor::Bedrock, model: "anthropic.claude-3-5-haiku-20241022-v1:0",
        caps: BEDROCK,
        block: |b| bedrock_signed(b, BEDROCK_SECRET_ACCESS_KEY),
    };
    // A Bedrock API key goes as `Authorization: Bearer`, unsigned.
    bedrock_api_key: Case {
        name: "bedrock", flavor: Flavor::Bedrock, model: "anthropic.claude-3-5-haiku-20241022-v1:0",
        caps: BEDROCK,
        block: |b| format!("{}    region: eu-central-1\n", keyed("bedrock", b)),
    };
    perplexity: Case {
        name: "perplexity", flavor: Flavor::OpenAi, model: "sonar",
        caps: Caps { embeddings: false, lists_models: false, ..OPENAI_LIKE },
        block: |b| keyed("perplexity", b),
    };
}

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// What is Bedrock's alone: the model id travels percent-encoded in the signed path (an inference-profile
/// ARN holds `:` and `/`), Cohere embeddings go as one InvokeModel call, a ValidationException is the
/// caller's 400 with Bedrock's words, and the in-stream `throttlingException` is a rate limit.
#[tokio::test]
async fn bedrock_paths_embeddings_and_error_shapes() {
    let profile = "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-3-5-haiku-20241022-v1:0";
    let up = mock(Flavor::Bedrock).await;
    let yaml =
        format!("providers:\n  bedrock:\n{}    retry: {{max_retries: 0}}\n", bedrock_signed(&up.base_url(), BEDROCK_SECRET_ACCESS_KEY));
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");

    let r = post(&c, &url, &json!({"model": format!("bedrock/{profile}"), "messages": [{"role": "user", "content": "via profile"}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["choices"][0]["message"]["content"], "echo: via profile");
    let path = up.requests().last().map(|q| q.path.clone()).unwrap_or_default();
    assert_eq!(
        path,
        "/model/arn%3Aaws%3Abedrock%3Aeu-central-1%3A123456789012%3Ainference-profile%2Feu.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );

    let r =
        post(&c, &gw.url("/v1/embeddings"), &json!({"model": "bedrock/cohere.embed-multilingual-v3", "input": ["alpha", "beta", "gamma"]}))
            .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(3), "{}", r.body);
    let sent = up.requests().last().map(|q| q.body.clone()).unwrap_or(Value::Null);
    assert_eq!(sent["texts"], json!(["alpha", "beta", "gamma"]), "{sent}");
    // Titan embeds one text per call: three inputs are three InvokeModel requests, answered as one list.
    let before = up.requests().len();
    let r = post(&c, &gw.url("/v1/embeddings"), &json!({"model": "bedrock/amazon.titan-embed-text-v2:0", "input": ["a", "b", "c"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let idx: Vec<u64> = r.body["data"].as_array().into_iter().flatten().filter_map(|d| d["index"].as_u64()).collect();
    assert_eq!(idx, [0, 1, 2], "{}", r.body);
    assert_eq!(up.requests().len() - before, 3);

    let r = post(&c, &url, &json!({"model": format!("bedrock/{HAIKU}"), "messages": [{"role": "user", "content": "[[error:400]]"}]})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["attempts"][0]["class"], "caller_fault", "{}", r.body);

    // A throttlingException inside a 200 stream, before any content: a rate limit, answered as one.
    let body =
        json!({"model": format!("bedrock/{HAIKU}+kind=stream_error"), "stream": true, "messages": [{"role": "user", "content": "x y"}]});
    let s = stream(&c, &url, &body).await;
    let e = &s.body_json()["error"];
    assert!(s.chunks.is_empty(), "{:?}", s.raw);
    assert_eq!(e["attempts"][0]["class"], "rate_limited", "{:?}", s.raw);
    assert_eq!(s.status, 429, "{:?}", s.raw);
}

/// A throttled Bedrock provider is retried (rotating to its other key) and then left for the fallback,
/// as the engine treats every rate limit; streams too, since nothing had reached the client.
#[tokio::test]
async fn bedrock_throttling_retries_and_falls_back() {
    let throttled = mock(Flavor::Bedrock).await;
    throttled.set_behavior(Behavior { fault_rate: 1.0, fault_codes: vec![429], ..Behavior::default() });
    let good = mock(Flavor::Bedrock).await;
    let yaml = format!(
        "providers:\n  slow:\n{}    keys: [{{name: a, value: ABSK-a}}, {{name: b, value: ABSK-b}}]\n  spare:\n{}routes:\n  - models: [\"slow/{HAIKU}\"]\n    fallbacks: [\"spare/{HAIKU}\"]\n",
        format_args!("    type: bedrock\n    base_url: \"{}\"\n    region: eu-central-1\n", throttled.base_url()),
        bedrock_signed(&good.base_url(), BEDROCK_SECRET_ACCESS_KEY),
    );
    let gw = Gateway::start(&yaml);
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let r = post(&c, &url, &json!({"model": format!("slow/{HAIKU}"), "messages": [{"role": "user", "content": "hello"}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(r.header("x-switchyard-provider"), Some("spare"));
    assert_eq!(r.header("x-switchyard-fallback-index"), Some("1"));
    let throttled_calls = calls(&throttled);
    assert!(throttled_calls >= 1, "the throttled provider was never tried");
    let attempts: u64 = r.header("x-switchyard-attempts").and_then(|a| a.parse().ok()).unwrap_or(0);
    assert_eq!(attempts, throttled_calls + 1, "every throttled call is an attempt, then the fallback's");

    let s =
        stream(&c, &url, &json!({"model": format!("slow/{HAIKU}"), "stream": true, "messages": [{"role": "user", "content": "hello"}]}))
            .await;
    assert_eq!(s.status, 200, "{:?}", s.raw);
    assert_eq!(s.text(), "echo: hello");
    assert!(s.headers.get("x-switchyard-provider").is_some_and(|p| p == "spare"), "{:?}", s.headers);
}

/// Credentials the service refuses: the mock recomputes the signature with the secret it knows, so a
/// wrong secret is AWS's 403 InvalidSignatureException, and the gateway reports its own provider
/// credential as refused (a key failure, not the caller's fault), with no secret in the answer.
#[tokio::test]
async fn bedrock_wrong_secret_is_a_key_failure() {
    let up = mock(Flavor::Bedrock).await;
    let wrong = "not-the-secret-the-mock-knows";
    let yaml = format!("providers:\n  bedrock:\n{}", bedrock_signed(&up.base_url(), wrong));
    let gw = Gateway::start(&yaml);
    let r = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        &json!({"model": format!("bedrock/{HAIKU}"), "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "provider_auth_failed", "{}", r.body);
    let attempt = &r.body["error"]["attempts"][0];
    assert_eq!(attempt["class"], "key_invalid", "{}", r.body);
    assert_eq!(attempt["status"], 403, "{}", r.body);
    let text = r.body.to_string();
    assert!(!text.contains(wrong) && !text.contains(BEDROCK_SECRET_ACCESS_KEY), "{text}");
    assert!(calls(&up) >= 1, "the signed request never reached the mock");
}

/// Whether `v` satisfies the small JSON-schema subset the suite uses: `type: object` with typed
/// `properties`, `required` and `additionalProperties: false`.
fn conforms(v: &Value, schema: &Value) -> bool {
    let Some(obj) = v.as_object() else { return false };
    let props = schema["properties"].as_object().cloned().unwrap_or_default();
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    let typed = |val: &Value, t: &str| match t {
        "string" => val.is_string(),
        "number" => val.is_number(),
        "integer" => val.is_i64() || val.is_u64(),
        "boolean" => val.is_boolean(),
        "object" => val.is_object(),
        "array" => val.is_array(),
        _ => false,
    };
    required.iter().all(|k| k.as_str().is_some_and(|k| obj.contains_key(k)))
        && obj.iter().all(|(k, val)| match props.get(k) {
            Some(p) => typed(val, p["type"].as_str().unwrap_or("")),
            None => schema["additionalProperties"] != Value::Bool(false),
        })
}
