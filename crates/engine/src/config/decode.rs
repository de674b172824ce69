//! Decoding configuration sections so that one `switchyard check` names every mistake at once.
//!
//! serde stops at the first error of a structure. Users then fix a file in rounds, each error hiding the
//! next (issue 8's newcomer met `env`, then `region`, then the provider type). So a section is decoded
//! again after each error with the offending field taken out, until it decodes or nothing is left to take
//! out; every error is kept with its path. Unknown fields get the right form where one is known: the
//! shapes other gateways (Bifrost, LiteLLM) use and common misspellings.

use serde::Deserialize;
use serde_path_to_error::Segment;
use serde_yaml_ng::Value as Yaml;

use super::ConfigIssue;
use switchyard_wire::ProviderKind;

/// A section with more independent mistakes than this is reported in part; the rest shows on the next run.
const MAX_ROUNDS: usize = 64;

/// Collects issues while the sections are decoded one by one.
pub(super) struct Issues(pub(super) Vec<ConfigIssue>);

impl Issues {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let issue = ConfigIssue { path: path.into(), message: message.into() };
        // The same mistake reached twice (for instance through two alternative spellings) is said once.
        if !self.0.contains(&issue) {
            self.0.push(issue);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Decodes `v` as `T`, reporting each failure at `base` + the path inside `v`. After a failure the
    /// field at fault is removed and decoding starts again, so independent mistakes are all reported; the
    /// value returned (if any) lacks the fields that were wrong, which then take their defaults.
    pub(super) fn decode<T: for<'de> Deserialize<'de>>(&mut self, base: &str, mut v: Yaml) -> Option<T> {
        // Where unknown fields were taken out: a required field then missing there is most likely the one
        // the unknown field misspelt, and the unknown field's message already lists the expected ones.
        let mut misspelt_in: Vec<String> = Vec::new();
        for _ in 0..MAX_ROUNDS {
            match serde_path_to_error::deserialize::<_, T>(v.clone()) {
                Ok(t) => return Some(t),
                Err(e) => {
                    let segments: Vec<Segment> = e.path().iter().cloned().collect();
                    let path = join(base, &e.path().to_string());
                    let msg = e.into_inner().to_string();
                    if msg.starts_with("unknown field") {
                        misspelt_in.push(segments.iter().take(segments.len().saturating_sub(1)).map(|s| s.to_string()).collect());
                    } else if msg.starts_with("missing field") && misspelt_in.contains(&segments.iter().map(|s| s.to_string()).collect()) {
                        // Said already; the section cannot be decoded without the field.
                        if !remove_at(&mut v, &segments) {
                            return None;
                        }
                        continue;
                    }
                    self.push(path.clone(), humanize(&path, &msg));
                    if !remove_at(&mut v, &segments) {
                        return None;
                    }
                }
            }
        }
        None
    }
}

fn join(base: &str, inner: &str) -> String {
    if inner == "." || inner.is_empty() {
        base.to_string()
    } else if inner.starts_with('[') || base.is_empty() {
        format!("{base}{inner}")
    } else {
        format!("{base}.{inner}")
    }
}

/// Removes the innermost mapping entry on `path` (a list element takes its whole list with it, so that
/// the indices of later errors stay true). False when there is nothing to remove.
fn remove_at(root: &mut Yaml, path: &[Segment]) -> bool {
    let Some(last_map) = path.iter().rposition(|s| matches!(s, Segment::Map { .. })) else {
        return false;
    };
    let mut node = root;
    for seg in &path[..last_map] {
        node = match (seg, node) {
            (Segment::Map { key }, Yaml::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(n) => n,
                None => return false,
            },
            (Segment::Seq { index }, Yaml::Sequence(s)) => match s.get_mut(*index) {
                Some(n) => n,
                None => return false,
            },
            _ => return false,
        };
    }
    match (&path[last_map], node) {
        (Segment::Map { key }, Yaml::Mapping(m)) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

/// serde's messages are precise but terse; say what to do where we can.
fn humanize(path: &str, msg: &str) -> String {
    // serde_yaml appends " at line N column M" for positions inside the tree we built, which are meaningless.
    let msg = msg.split(" at line ").next().unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, expected) = match rest.split_once('`') {
            Some((f, tail)) => (f, tail),
            None => (rest, ""),
        };
        let known = expected_fields(expected);
        if let Some(hint) = field_hint(path, field) {
            return format!("unknown field `{field}`; {hint}");
        }
        if let Some(close) = closest(field, known.iter().copied()) {
            return format!("unknown field `{field}`; did you mean `{close}`?");
        }
        let list = if known.is_empty() { String::new() } else { format!("; expected one of {}", known.join(", ")) };
        return format!("unknown field `{field}`{list}; remove it or fix its spelling");
    }
    // Our raw structs' names mean nothing to a user.
    let mut out = msg.to_string();
    for (internal, shown) in [
        ("struct RawKey", "a key such as {value: env.NAME, weight: 1}"),
        ("struct RawProvider", "a provider's settings (type, base_url, keys, ...)"),
        ("struct RawRoute", "a route such as {models: [NAME], fallbacks: [provider/model]}"),
        ("struct RawFromTo", "{from: provider/model, to: provider/model}"),
        ("struct RawServer", "the server settings"),
        ("struct RawImages", "the image settings"),
        ("struct RawUpstream", "the upstream settings"),
        ("struct RawRouting", "the routing settings"),
        ("struct RawRetry", "retry settings (max_retries, initial_backoff, max_backoff)"),
        ("struct RawHealth", "health settings"),
        ("struct RawCooldown", "key cooldown settings"),
        ("struct RawHedge", "hedge settings (delay, max_share)"),
        (
            "struct RawMetrics",
            "the metrics settings (virtual_key_labels, team_labels, max_label_values, latency_buckets, overhead_buckets)",
        ),
    ] {
        out = out.replace(internal, shown);
    }
    out
}

/// The field names in serde's "expected one of `a`, `b`" (or "expected `a`" / "there are no fields").
fn expected_fields(tail: &str) -> Vec<&str> {
    tail.split('`').skip(1).step_by(2).collect()
}

/// The known field closest to `field` when it is plausibly a misspelling of it.
pub(super) fn closest<'a>(field: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = field.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (k, strsim::damerau_levenshtein(&lower, k)))
        .filter(|(k, d)| *d <= 2.min(k.len() / 3).max(1) || lower.replace(['-', ' '], "_") == *k)
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| k)
}

/// The right form for fields that other gateways' files use, or that mean something this release
/// does not have yet.
fn field_hint(path: &str, field: &str) -> Option<String> {
    let in_key = path.contains(".keys[");
    let in_provider = path.starts_with("providers.") && !in_key;
    let in_route = path.starts_with("routes[");
    let hint = match field {
        "region" if in_key || in_provider => {
            "`region` is a setting of bedrock and vertex providers (`region: eu-central-1` under the provider); this provider type has none: remove it"
        }
        "api_key" | "apikey" | "key" | "secret" | "token" if in_key => "write the key as `value: sk-...` or `value: env.NAME` (or `env: NAME`)",
        "api_key" | "apikey" | "key" if in_provider => "write `keys: [{value: env.NAME}]` (a provider may have several weighted keys)",
        "api_base" | "apibase" | "base" | "url" | "endpoint" | "host" | "baseurl" | "baseURL" | "base_uri" | "api_url" if in_provider => {
            "the provider's address is `base_url`"
        }
        "network_config" if in_provider => {
            "Bifrost's network_config is written directly under the provider here: network_config.base_url as `base_url`, default_request_timeout_in_seconds as `timeout: 60s`, extra_headers as `headers`"
        }
        "custom_provider_config" if in_provider => {
            "Bifrost's custom_provider_config is written as `type:` here: base_provider_type openai is `type: openai-compatible`, with `base_url`"
        }
        "provider" | "kind" | "provider_type" | "base_provider_type" if in_provider => "the provider type is `type` (for example type: openai-compatible)",
        "model" | "allowed_models" if in_provider || in_key => "write `models: [...]` (a list)",
        "timeout_seconds" | "request_timeout" | "default_request_timeout_in_seconds" if in_provider => {
            "write `timeout: 60s` (also connect_timeout, first_byte_timeout, stream_idle_timeout)"
        }
        "extra_headers" if in_provider => "write `headers: {Name: value}`",
        "weight" if in_provider => "weights belong to keys: `keys: [{value: ..., weight: 0.7}]`",
        "fallbacks" | "fallback" if in_provider => "fallbacks belong to a route: `routes: [{models: [provider/model], fallbacks: [...]}]`",
        "model" if in_route => "write `models: [...]` (a list of the model names the route applies to)",
        "fallback" if in_route => "write `fallbacks: [provider/model, ...]`",
        "target" | "chain" | "aliases" if in_route => "a route's chain is `targets: [provider/model, ...]`",
        "from" | "to" if in_route => "from/to belong to the top-level `fallbacks:` list; in a route write `models: [FROM]` and `fallbacks: [TO]`",
        "timeout" if in_route => "a route's time limit is `deadline: 30s`",
        "delay" | "wait" if path.contains(".hedge.") => "the hedge's wait is `after: 2s` (or after: p95)",
        _ => return None,
    };
    Some(hint.to_string())
}

/// What to say about a top-level key we do not know, when it comes from another gateway's file.
pub(super) fn top_level_hint(key: &str) -> Option<&'static str> {
    Some(match key {
        "model_list" => "this is LiteLLM's model_list: write `providers:` (one entry per upstream, with type, base_url and keys) and call models as provider/model, or name a chain with `routes: [{models: [NAME], targets: [provider/model, ...]}]`",
        "router_settings" | "litellm_settings" | "general_settings" => "this is a LiteLLM section; routing settings are `routing:` (deadline, ...) and fallbacks are `routes[].fallbacks`",
        "governance" | "virtual_keys" | "teams" | "customers" | "auth" | "auth_config" => {
            "virtual keys, teams and caller authentication are not supported yet (they are planned); until then the gateway answers anyone who can reach its port"
        }
        "port" | "host" | "address" | "bind" | "server_address" => "the address to listen on is `listen: \"127.0.0.1:8080\"`",
        "fallback" => "write `fallbacks:` (a list of {from, to}, or named chains)",
        "route" => "write `routes:` (a list)",
        "provider" => "write `providers:` (a mapping of name to settings)",
        "aliases" | "model_aliases" | "chains" | "model_groups" => {
            "a named chain is a route: `routes: [{models: [NAME], targets: [provider/model, ...]}]`"
        }
        "client" | "plugins" | "config_store" | "logs_store" | "vector_store" => "this is a Bifrost section, which Switchyard does not read",
        _ => return None,
    })
}

/// The provider type a misspelt or foreign type name means (`azure_openai` → `azure`).
pub(super) fn kind_suggestion(t: &str) -> Option<ProviderKind> {
    let n = normalize(t);
    let by_alias = match n.as_str() {
        "azureopenai" | "azureai" => Some(ProviderKind::Azure),
        "claude" | "anthropicai" => Some(ProviderKind::Anthropic),
        "openaicompatible" | "openailike" | "custom" | "openaicompat" | "generic" | "lmstudio" | "llamacpp" => {
            Some(ProviderKind::OpenAiCompatible)
        }
        "grok" | "xai" => Some(ProviderKind::Xai),
        "awsbedrock" | "aws" | "bedrockruntime" => Some(ProviderKind::Bedrock),
        "vertexai" | "googlevertex" | "googlevertexai" | "vertexgemini" => Some(ProviderKind::Vertex),
        "google" | "googleai" | "googlegenai" | "genai" | "googleaistudio" | "aistudio" => Some(ProviderKind::Gemini),
        "cohereai" | "coherev2" => Some(ProviderKind::Cohere),
        "togetherai" => Some(ProviderKind::Together),
        "fireworksai" => Some(ProviderKind::Fireworks),
        "mistralai" => Some(ProviderKind::Mistral),
        "vllmopenai" => Some(ProviderKind::Vllm),
        _ => None,
    };
    by_alias.or_else(|| ProviderKind::ALL.into_iter().find(|k| normalize(k.as_str()) == n)).or_else(|| {
        let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
        closest(&n, names).and_then(ProviderKind::parse)
    })
}

fn normalize(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        weight: Option<f64>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[test]
    fn every_independent_mistake_is_reported_and_the_rest_decodes() {
        let v: Yaml = serde_yaml_ng::from_str("nmae: x\nweight: heavy\ntags: [a, [b]]\ncolour: red\n").unwrap();
        let mut issues = Issues(vec![]);
        let t: Option<T> = issues.decode("providers.p", v);
        assert!(t.is_some(), "{:?}", issues.0);
        let text: Vec<String> = issues.0.iter().map(|i| format!("{}: {}", i.path, i.message)).collect();
        assert_eq!(issues.0.len(), 4, "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("providers.p.nmae: unknown field `nmae`; did you mean `name`?")), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("providers.p.weight: invalid type")), "{text:?}");
        assert!(text.iter().any(|t| t.starts_with("providers.p.tags[1]: invalid type")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("colour") && t.contains("expected one of name, weight, tags")), "{text:?}");
    }

    #[test]
    fn foreign_spellings_get_the_right_form() {
        assert!(field_hint("providers.openai.keys[0].region", "region").unwrap().contains("bedrock and vertex"));
        assert!(field_hint("providers.x.api_base", "api_base").unwrap().contains("base_url"));
        assert_eq!(kind_suggestion("azure_openai"), Some(ProviderKind::Azure));
        assert_eq!(kind_suggestion("openai_compatible"), Some(ProviderKind::OpenAiCompatible));
        assert_eq!(kind_suggestion("olama"), Some(ProviderKind::Ollama));
        assert_eq!(kind_suggestion("zzzzzz"), None);
        assert_eq!(kind_suggestion("aws_bedrock"), Some(ProviderKind::Bedrock));
        assert_eq!(kind_suggestion("Vertex_AI"), Some(ProviderKind::Vertex));
        assert_eq!(kind_suggestion("google-genai"), Some(ProviderKind::Gemini));
        assert_eq!(closest("wieght", ["name", "weight", "models"]), Some("weight"));
        assert_eq!(closest("zz", ["name", "weight"]), None);
    }
}
