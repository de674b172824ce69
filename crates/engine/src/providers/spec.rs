//! A provider as the management API writes it, in Bifrost's shape (`provider`, `keys[{name, value, weight,
//! models}]`, `network_config`, `concurrency_and_buffer_size`, `custom_provider_config`), plus Switchyard's
//! own `type`, `tags` and `models`. It is never checked on its own terms: [`ProviderSpec::to_section`]
//! writes it as the file's `providers.NAME` section and the configuration loader decodes that, so an API
//! provider passes exactly the checks a provider in the file passes; [`body_path`] turns the loader's paths
//! back into the body's.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value as Yaml};
use switchyard_wire::{Family, ProviderKind};

use crate::config::ConfigIssue;

/// A key's value as written: a literal secret or `env.NAME`. Its `Debug` never shows it. It serializes
/// whole, for the store only: what the API shows is masked by whoever renders it.
#[derive(Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct KeyValue(String);

impl KeyValue {
    pub fn new(v: impl Into<String>) -> Self {
        KeyValue(v.into())
    }

    /// `Some(NAME)` for `env.NAME`: a reference, not a secret, shown as it is.
    pub fn env_var(&self) -> Option<&str> {
        self.0.strip_prefix("env.")
    }

    /// The value as written (a secret unless [`KeyValue::env_var`]).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.env_var() {
            Some(v) => write!(f, "env.{v}"),
            None => f.write_str("<secret>"),
        }
    }
}

/// Bifrost writes a value as a string or, in newer versions, as `{"value", "env_var", "from_env"}`.
impl<'de> Deserialize<'de> for KeyValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Object {
            #[serde(default)]
            value: Option<String>,
            #[serde(default)]
            env_var: Option<String>,
            #[serde(default)]
            from_env: Option<bool>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Object(Object),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a string (the key, or env.NAME) or {\"value\" | \"env_var\"}"))?
        {
            Raw::Text(t) => Ok(KeyValue(t)),
            Raw::Object(o) => match (o.env_var.filter(|v| !v.is_empty()), o.value) {
                (Some(var), _) => Ok(KeyValue(if var.starts_with("env.") { var } else { format!("env.{var}") })),
                (None, Some(v)) if o.from_env == Some(true) && !v.starts_with("env.") => Ok(KeyValue(format!("env.{v}"))),
                (None, Some(v)) => Ok(KeyValue(v)),
                (None, None) => Err(serde::de::Error::custom("give the key in \"value\" or the variable in \"env_var\"")),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Unique per provider; health and cooldowns follow it across writes. Default: Bifrost's `id`, else
    /// `key-N` as in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Omitted (or sent back masked, as `GET` shows it) on an update: the key of that name keeps its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<KeyValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// `false`: kept, but not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl KeySpec {
    pub fn key_name(&self) -> Option<&str> {
        self.name.as_deref().or(self.id.as_deref()).filter(|n| !n.is_empty())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// With or without `/v1` for OpenAI-type providers (never `/v1/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_headers: BTreeMap<String, String>,
    /// One attempt's whole time. `0` (what Go clients send for "unset") means the default, as in Bifrost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_request_timeout_in_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_timeout_in_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout_in_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Milliseconds, as Bifrost writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_initial: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_max: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyAndBufferSize {
    /// Requests in flight at once (`max_in_flight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Requests that may wait for a slot (`max_queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_size: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomProviderConfig {
    /// The API the server speaks: `openai` (any OpenAI-compatible server), `anthropic`, or a Switchyard
    /// provider type.
    pub base_provider_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_key_less: Option<bool>,
    /// Per request type, whether it may go here. Switchyard serves chat and embeddings; it cannot switch
    /// chat off per provider (refused), and does not restrict the other types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_requests: Option<BTreeMap<String, bool>>,
}

/// `POST /api/providers`, `PUT /api/providers/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// The name: the prefix of `name/model`. On `PUT` it comes from the path.
    #[serde(default)]
    pub provider: String,
    /// Switchyard's provider type (`openai`, `vllm`, `ollama`, `openai-compatible`, ...). Default: from
    /// `custom_provider_config.base_provider_type`, else the name itself (`openai`, `anthropic`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<NetworkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_and_buffer_size: Option<ConcurrencyAndBufferSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_provider_config: Option<CustomProviderConfig>,
    /// What residency policies match (`on-prem`, `cloud`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// An allow-list of the models served (empty: any), as `providers.NAME.models`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    // Bifrost switches that Switchyard has no counterpart for: accepted when off, never stored.
    #[serde(default, skip_serializing)]
    pub proxy_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub send_back_raw_request: Option<bool>,
    #[serde(default, skip_serializing)]
    pub send_back_raw_response: Option<bool>,
    #[serde(default, skip_serializing)]
    pub store_raw_request_response: Option<bool>,
    // What `GET` shows besides the body, so that a shown provider can be sent back as it is.
    #[serde(default, skip_serializing)]
    pub name: Option<String>,
    #[serde(default, skip_serializing)]
    pub source: Option<String>,
    #[serde(default, skip_serializing)]
    pub provider_status: Option<String>,
}

/// Request types Switchyard serves that cannot be switched off per provider.
const SERVED_ALWAYS: [&str; 2] = ["chat_completion", "chat_completion_stream"];

impl ProviderSpec {
    /// Keys whose value was left out, or sent back masked (`…abcd`, as the API shows it), take the value of
    /// the key of the same name in `before`. Issues for keys that have none.
    pub fn keep_values(&mut self, before: Option<&ProviderSpec>) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (i, k) in self.keys.iter_mut().enumerate() {
            let missing = k.value.as_ref().is_none_or(|v| v.expose().starts_with('…'));
            if !missing {
                continue;
            }
            let old = before.and_then(|b| b.keys.iter().find(|o| o.key_name().is_some() && o.key_name() == k.key_name()));
            match old.and_then(|o| o.value.clone()) {
                Some(v) => k.value = Some(v),
                None => issues.push(ConfigIssue {
                    path: format!("keys[{i}].value"),
                    message: "required: the key itself, or env.NAME to read it from the gateway's environment (a value may be left out only to keep that of an existing key of the same name)".into(),
                }),
            }
        }
        issues
    }

    /// The provider type to write into the section, or the issue why none can be.
    fn kind(&self) -> Result<Option<String>, ConfigIssue> {
        if let Some(k) = &self.kind {
            return Ok(Some(k.clone()));
        }
        let Some(custom) = &self.custom_provider_config else { return Ok(None) };
        let base = custom.base_provider_type.trim();
        let by_name = ProviderKind::parse(&self.provider);
        let family = |k: ProviderKind| k.family();
        let wanted = match base {
            "openai" => Family::OpenAi,
            "anthropic" => Family::Anthropic,
            other => match ProviderKind::parse(other) {
                Some(k) => return Ok(Some(k.as_str().to_string())),
                None => {
                    return Err(ConfigIssue {
                        path: "custom_provider_config.base_provider_type".into(),
                        message: format!(
                            "\"{other}\" is not a base type Switchyard speaks; use openai (any OpenAI-compatible server: vLLM, Ollama's /v1, ...), anthropic, or set \"type\" to one of {}",
                            ProviderKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    })
                }
            },
        };
        // A custom name on an OpenAI-type base is an OpenAI-compatible server; a built-in name keeps its own
        // type (its pricing, default base URL and quirks).
        Ok(Some(match by_name {
            Some(k) if family(k) == wanted => k.as_str().to_string(),
            _ if wanted == Family::Anthropic => "anthropic".into(),
            _ => ProviderKind::OpenAiCompatible.as_str().into(),
        }))
    }

    /// What Bifrost's body asks that Switchyard cannot do, each at its body path.
    fn unsupported(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut push = |path: &str, message: String| out.push(ConfigIssue { path: path.into(), message });
        if let Some(custom) = &self.custom_provider_config {
            for (t, on) in custom.allowed_requests.iter().flatten() {
                if !on && SERVED_ALWAYS.contains(&t.as_str()) {
                    push(
                        &format!("custom_provider_config.allowed_requests.{t}"),
                        "Switchyard cannot switch chat completions off per provider; leave it out or true (to keep a provider from some callers, use their virtual keys' provider_configs)".into(),
                    );
                }
            }
            if custom.is_key_less == Some(true) && !self.keys.is_empty() {
                push("keys", "a key-less provider (custom_provider_config.is_key_less) takes no keys; remove them or is_key_less".into());
            }
        }
        if self.proxy_config.as_ref().is_some_and(|p| !p.is_null() && p.get("type").and_then(|t| t.as_str()).is_none_or(|t| t != "none")) {
            push("proxy_config", "per-provider proxies are not supported; leave proxy_config out".into());
        }
        for (field, v) in [
            ("send_back_raw_request", self.send_back_raw_request),
            ("send_back_raw_response", self.send_back_raw_response),
            ("store_raw_request_response", self.store_raw_request_response),
        ] {
            if v == Some(true) {
                push(field, "not supported: Switchyard never returns or stores the raw provider exchange; leave it out or false".into());
            }
        }
        if let Some(n) = self.name.as_deref().filter(|n| *n != self.provider) {
            push("name", format!("\"{n}\" differs from the provider's name \"{}\"", self.provider));
        }
        out
    }

    /// The provider as the file's `providers.NAME` section, for the configuration loader; or the issues
    /// (at body paths) found before it.
    pub fn to_section(&self) -> Result<Yaml, Vec<ConfigIssue>> {
        let mut issues = self.unsupported();
        let kind = self.kind().map_err(|i| issues.push(i)).ok().flatten();
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut m = Mapping::new();
        let s = |v: &str| Yaml::String(v.to_string());
        let list = |v: &[String]| Yaml::Sequence(v.iter().map(|x| s(x)).collect());
        if let Some(k) = kind {
            m.insert(s("type"), s(&k));
        }
        let keys: Vec<Yaml> = self
            .keys
            .iter()
            .filter(|k| k.enabled != Some(false))
            .map(|k| {
                let mut km = Mapping::new();
                if let Some(n) = k.key_name() {
                    km.insert(s("name"), s(n));
                }
                if let Some(v) = &k.value {
                    km.insert(s("value"), s(v.expose()));
                }
                if let Some(w) = k.weight {
                    km.insert(s("weight"), Yaml::Number(w.into()));
                }
                if !k.models.is_empty() {
                    km.insert(s("models"), list(&k.models));
                }
                Yaml::Mapping(km)
            })
            .collect();
        if !keys.is_empty() {
            m.insert(s("keys"), Yaml::Sequence(keys));
        }
        // Zero is what Go clients send for "unset"; Bifrost takes it as the default, and so does Switchyard.
        let secs = |v: Option<u64>| v.filter(|n| *n > 0).map(|n| s(&format!("{n}s")));
        if let Some(n) = &self.network_config {
            if let Some(u) = &n.base_url {
                m.insert(s("base_url"), s(u));
            }
            if !n.extra_headers.is_empty() {
                m.insert(s("headers"), Yaml::Mapping(n.extra_headers.iter().map(|(k, v)| (s(k), s(v))).collect()));
            }
            for (field, v) in [
                ("timeout", n.default_request_timeout_in_seconds),
                ("connect_timeout", n.connection_timeout_in_seconds),
                ("stream_idle_timeout", n.stream_idle_timeout_in_seconds),
            ] {
                if let Some(d) = secs(v) {
                    m.insert(s(field), d);
                }
            }
            let mut retry = Mapping::new();
            if let Some(r) = n.max_retries {
                retry.insert(s("max_retries"), Yaml::Number(r.into()));
            }
            for (field, v) in [("initial_backoff", n.retry_backoff_initial), ("max_backoff", n.retry_backoff_max)] {
                if let Some(ms) = v.filter(|ms| *ms > 0) {
                    retry.insert(s(field), s(&format!("{ms}ms")));
                }
            }
            if !retry.is_empty() {
                m.insert(s("retry"), Yaml::Mapping(retry));
            }
        }
        if let Some(c) = &self.concurrency_and_buffer_size {
            if let Some(n) = c.concurrency.filter(|n| *n > 0) {
                m.insert(s("max_in_flight"), Yaml::Number(n.into()));
            }
            if let Some(n) = c.buffer_size {
                m.insert(s("max_queue"), Yaml::Number(n.into()));
            }
        }
        if !self.tags.is_empty() {
            m.insert(s("tags"), list(&self.tags));
        }
        if !self.models.is_empty() {
            m.insert(s("models"), list(&self.models));
        }
        Ok(Yaml::Mapping(m))
    }
}

/// The body path of an issue the loader reported at a path of the file's `providers.NAME` section.
pub fn body_path(name: &str, file_path: &str, spec: &ProviderSpec) -> String {
    let base = format!("providers.{name}");
    let Some(rest) = file_path.strip_prefix(&base) else { return file_path.to_string() };
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    let mapped = |to: &str, tail: &str| format!("{to}{tail}");
    for (field, to) in [
        ("base_url", "network_config.base_url"),
        ("headers", "network_config.extra_headers"),
        ("timeout", "network_config.default_request_timeout_in_seconds"),
        ("connect_timeout", "network_config.connection_timeout_in_seconds"),
        ("stream_idle_timeout", "network_config.stream_idle_timeout_in_seconds"),
        ("retry.max_retries", "network_config.max_retries"),
        ("retry.initial_backoff", "network_config.retry_backoff_initial"),
        ("retry.max_backoff", "network_config.retry_backoff_max"),
        ("max_in_flight", "concurrency_and_buffer_size.concurrency"),
        ("max_queue", "concurrency_and_buffer_size.buffer_size"),
    ] {
        if let Some(tail) = rest.strip_prefix(field).filter(|t| t.is_empty() || t.starts_with(['.', '['])) {
            return mapped(to, tail);
        }
    }
    if rest.is_empty() {
        return "provider".into();
    }
    if let Some(tail) = rest.strip_prefix("type").filter(|t| t.is_empty()) {
        let to =
            if spec.kind.is_none() && spec.custom_provider_config.is_some() { "custom_provider_config.base_provider_type" } else { "type" };
        return mapped(to, tail);
    }
    rest.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ProviderSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_walkthrough_body_becomes_an_openai_compatible_section() {
        let s = spec(serde_json::json!({"provider": "vllm-local",
            "keys": [{"name": "vllm-key-1", "value": "dummy", "weight": 1.0, "models": []}],
            "network_config": {"base_url": "http://vllm:8000", "default_request_timeout_in_seconds": 60, "max_retries": 0, "retry_backoff_initial": 0},
            "custom_provider_config": {"base_provider_type": "openai", "allowed_requests": {"chat_completion": true, "chat_completion_stream": true}}}));
        let y = s.to_section().unwrap();
        assert_eq!(y["type"].as_str(), Some("openai-compatible"));
        assert_eq!(y["timeout"].as_str(), Some("60s"));
        assert_eq!(y["keys"][0]["value"].as_str(), Some("dummy"));
        assert!(y.get("retry").and_then(|r| r.get("initial_backoff")).is_none(), "0 is unset");
        // A built-in name keeps its type.
        let s = spec(serde_json::json!({"provider": "groq", "custom_provider_config": {"base_provider_type": "openai"}}));
        assert_eq!(s.to_section().unwrap()["type"].as_str(), Some("groq"));
        assert!(format!("{:?}", spec(serde_json::json!({"provider": "x", "keys": [{"value": "sk-secret"}]}))).contains("<secret>"));
    }

    #[test]
    fn what_switchyard_cannot_do_is_refused_at_its_path() {
        let s = spec(
            serde_json::json!({"provider": "x", "custom_provider_config": {"base_provider_type": "replicate", "allowed_requests": {"chat_completion": false}}, "send_back_raw_response": true}),
        );
        let paths: Vec<String> = s.to_section().unwrap_err().into_iter().map(|i| i.path).collect();
        assert_eq!(
            paths,
            [
                "custom_provider_config.allowed_requests.chat_completion",
                "send_back_raw_response",
                "custom_provider_config.base_provider_type"
            ]
        );
        assert_eq!(body_path("x", "providers.x.keys[1].value", &s), "keys[1].value");
        assert_eq!(body_path("x", "providers.x.base_url", &s), "network_config.base_url");
        assert_eq!(body_path("x", "providers.x.type", &s), "custom_provider_config.base_provider_type");
    }

    #[test]
    fn values_left_out_or_masked_keep_the_old_ones_by_name() {
        let before = spec(serde_json::json!({"provider": "x", "keys": [{"name": "a", "value": "sk-a"}]}));
        let mut next = spec(serde_json::json!({"provider": "x", "keys": [{"name": "a", "value": "…-a"}, {"name": "b"}]}));
        let issues = next.keep_values(Some(&before));
        assert_eq!(next.keys[0].value.as_ref().map(KeyValue::expose), Some("sk-a"));
        assert_eq!(issues.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(), ["keys[1].value"]);
        let env: ProviderSpec =
            serde_json::from_value(serde_json::json!({"provider": "x", "keys": [{"value": {"env_var": "OPENAI_API_KEY"}}]})).unwrap();
        assert_eq!(env.keys[0].value.as_ref().and_then(KeyValue::env_var), Some("OPENAI_API_KEY"));
    }
}
