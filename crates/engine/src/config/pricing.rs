//! The `pricing:` section: prices that replace or extend the built-in table (see [`crate::pricing`]).
//!
//! ```yaml
//! pricing:
//!   "openai/gpt-4o": {input: 2.5, output: 10, cached_input: 1.25}   # one model of one provider
//!   "vllm-local": {input: 0.1, output: 0.1}                         # every model of that provider
//! ```
//!
//! Keys name a configured provider (by its name in the file, not its type), optionally followed by
//! `/MODEL`; prices are USD per 1,000,000 tokens. A price a budget depends on must not be silently wrong,
//! so every mistake is refused at its path: a negative or infinite price, a provider that is not
//! configured, or a per-token figure copied from another gateway's file (LiteLLM's `input_cost_per_token`).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

use super::decode::Issues;
use super::yaml_brief;
use crate::pricing::{Price, TOKENS_PER_UNIT};

/// The decoded `pricing:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PricingConfig {
    /// In the file's order; keys are unique (compared without case).
    pub overrides: Vec<PriceOverride>,
}

/// One `pricing:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceOverride {
    /// A provider's name under `providers:`.
    pub provider: String,
    /// `None`: every model of the provider.
    pub model: Option<String>,
    pub price: Price,
}

/// What the file may say for one price.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    // Optional here and required below: serde's decode would report a bad value and then, once the
    // value is taken out, the same field again as missing.
    #[serde(default)]
    input: Option<f64>,
    #[serde(default)]
    output: Option<f64>,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
}

/// An entry that decoded, waiting for the providers to be known.
pub(super) struct Pending {
    path: String,
    key: String,
    entry: PriceOverride,
}

const EXAMPLE: &str = "{input: 2.5, output: 10, cached_input: 1.25} (USD per 1M tokens)";

/// Other gateways' per-token fields, and ours (per 1M tokens).
const PER_TOKEN_FIELDS: [(&str, &str); 4] = [
    ("input_cost_per_token", "input"),
    ("output_cost_per_token", "output"),
    ("cache_read_input_token_cost", "cached_input"),
    ("cache_creation_input_token_cost", "cache_write"),
];

/// Decodes `pricing:`; what depends on the providers is checked by [`resolve`].
pub(super) fn decode(v: Yaml, issues: &mut Issues) -> Vec<Pending> {
    let map = match v {
        Yaml::Mapping(m) => m,
        Yaml::Null => return Vec::new(),
        other => {
            issues.push(
                "pricing",
                format!(
                    "expected a mapping of \"provider/model\" or \"provider\" to a price such as {EXAMPLE}, got {}",
                    yaml_brief(&other)
                ),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<Pending> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (k, v) in map {
        let Some(key) = k.as_str().map(str::to_string) else {
            issues.push("pricing", format!("keys must be strings (\"provider/model\" or \"provider\"), got {}", yaml_brief(&k)));
            continue;
        };
        let path = format!("pricing.{}", quoted(&key));
        let (provider, model) = match key.split_once('/') {
            Some((p, m)) => (p.trim(), Some(m.trim())),
            None => (key.trim(), None),
        };
        if provider.is_empty() || model.is_some_and(str::is_empty) {
            issues.push(
                &path,
                "write \"provider/model\" for one model or \"provider\" for all of its models (the provider's name under providers:)",
            );
            continue;
        }
        let fold = key.trim().to_ascii_lowercase();
        if let Some(first) = seen.get(&fold) {
            issues.push(&path, format!("prices the same as {first} (names are compared without case); keep one"));
            continue;
        }
        seen.insert(fold, path.clone());
        let Some(price) = decode_price(&path, v, issues) else { continue };
        out.push(Pending {
            path,
            key: key.trim().to_string(),
            entry: PriceOverride { provider: provider.to_string(), model: model.map(str::to_string), price },
        });
    }
    out
}

/// One price; `None` after reporting what is wrong with it.
fn decode_price(path: &str, v: Yaml, issues: &mut Issues) -> Option<Price> {
    let mut m = match v {
        Yaml::Mapping(m) => m,
        other => {
            issues.push(path, format!("expected a price such as {EXAMPLE}, got {}", yaml_brief(&other)));
            return None;
        }
    };
    // LiteLLM's per-token costs are a million times smaller than ours: accepted, they would make every
    // request look free. Say what to write instead, with the number converted.
    let mut foreign = false;
    for (theirs, ours) in PER_TOKEN_FIELDS {
        if let Some(x) = m.remove(theirs) {
            foreign = true;
            let converted = x.as_f64().map(|f| format!(" ({ours}: {})", f * TOKENS_PER_UNIT)).unwrap_or_default();
            issues.push(
                format!("{path}.{theirs}"),
                format!("this is LiteLLM's cost per token; prices here are USD per 1M tokens: write `{ours}`{converted}"),
            );
        }
    }
    if foreign {
        // The fields are said already; the entry would only add "missing input" to them.
        return None;
    }
    let before = issues.len();
    let raw: RawPrice = issues.decode(path, Yaml::Mapping(m))?;
    let mut ok = issues.len() == before;
    for (field, value) in [("input", raw.input), ("output", raw.output)] {
        let said = issues.0[before..].iter().any(|i| i.path == format!("{path}.{field}"));
        if value.is_none() && !said {
            issues.push(path, format!("missing `{field}`; a price is written {EXAMPLE}"));
            ok = false;
        }
    }
    for (field, value) in
        [("input", raw.input), ("output", raw.output), ("cached_input", raw.cached_input), ("cache_write", raw.cache_write)]
    {
        if let Some(x) = value.filter(|x| !(x.is_finite() && *x >= 0.0)) {
            issues.push(format!("{path}.{field}"), format!("must be a number >= 0 (USD per 1M tokens), got {x}"));
            ok = false;
        }
    }
    match (ok, raw.input, raw.output) {
        (true, Some(input), Some(output)) => Some(Price { input, output, cached_input: raw.cached_input, cache_write: raw.cache_write }),
        _ => None,
    }
}

/// Checks each entry's provider against the file's providers (`declared`: every name under `providers:`,
/// also those with mistakes of their own, which are reported already).
pub(super) fn resolve(pending: Vec<Pending>, declared: &HashSet<String>, issues: &mut Issues) -> PricingConfig {
    let mut overrides = Vec::new();
    for p in pending {
        if !declared.contains(&p.entry.provider) {
            let mut names: Vec<&str> = declared.iter().map(String::as_str).collect();
            names.sort_unstable();
            let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            let what = match &p.entry.model {
                Some(_) => format!("\"{}\" names provider \"{}\"", p.key, p.entry.provider),
                None => format!("\"{}\" is a provider name", p.key),
            };
            issues.push(
                &p.path,
                format!(
                    "{what}, which is not configured (keys are provider names from providers:, not types); providers in the file: {names}"
                ),
            );
            continue;
        }
        overrides.push(p.entry);
    }
    PricingConfig { overrides }
}

/// A key as it appears in a path: bare when it is a plain name, quoted when it holds `/`, `.` or the like.
fn quoted(key: &str) -> String {
    if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')) {
        key.to_string()
    } else {
        format!("\"{key}\"")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::parse_str;
    use super::*;

    const PROVIDERS: &str = "providers:\n  openai: {keys: [{value: k}]}\n  vllm-local: {type: vllm}\n";

    fn errors(yaml: &str) -> Vec<String> {
        let env: BTreeMap<String, String> = BTreeMap::new();
        parse_str(yaml, &env).unwrap_err().issues.into_iter().map(|i| format!("{}: {}", i.path, i.message)).collect()
    }

    #[test]
    fn pricing_section_decodes_overrides() {
        let env: BTreeMap<String, String> = BTreeMap::new();
        let yaml = format!(
            "{PROVIDERS}pricing:\n  \"openai/gpt-4o\": {{input: 2.5, output: 10, cached_input: 1.25}}\n  vllm-local: {{input: 0.1, output: 0.1}}\n  \"openai/ft:gpt-4o-mini:acme\": {{input: 0.3, output: 1.2, cache_write: 0.4}}\n"
        );
        let c = parse_str(&yaml, &env).unwrap();
        assert_eq!(
            c.pricing.overrides,
            vec![
                PriceOverride {
                    provider: "openai".into(),
                    model: Some("gpt-4o".into()),
                    price: Price { input: 2.5, output: 10.0, cached_input: Some(1.25), cache_write: None }
                },
                PriceOverride { provider: "vllm-local".into(), model: None, price: Price::new(0.1, 0.1) },
                PriceOverride {
                    provider: "openai".into(),
                    model: Some("ft:gpt-4o-mini:acme".into()),
                    price: Price { input: 0.3, output: 1.2, cached_input: None, cache_write: Some(0.4) }
                },
            ]
        );
        // Absent or empty: no overrides.
        assert!(parse_str(PROVIDERS, &env).unwrap().pricing.overrides.is_empty());
        assert!(parse_str(&format!("{PROVIDERS}pricing:\n"), &env).unwrap().pricing.overrides.is_empty());
        assert!(crate::config::from_env(&env).pricing.overrides.is_empty());
    }

    #[test]
    fn pricing_section_reports_every_mistake_at_its_path() {
        let yaml = format!(
            r#"{PROVIDERS}pricing:
  "openai/gpt-4o": {{input: -1, output: .inf}}
  "openai/gpt-4.1": {{input: 2, output: 8, cached: 0.5}}
  "openai/o3": {{input: 2}}
  "openai/o1": 15
  "nobody/x": {{input: 1, output: 1}}
  vllm: {{input: 1, output: 1}}
  "openai/": {{input: 1, output: 1}}
  "openai/GPT-4o-mini": {{input: 1, output: 1}}
  "openai/gpt-4o-mini": {{input: 1, output: 1}}
  "openai/gpt-5": {{input_cost_per_token: 0.00000125, output_cost_per_token: 0.00001}}
  "openai/gpt-5-mini": {{input: "cheap", output: 2}}
"#
        );
        let e = errors(&yaml);
        let expected = [
            "pricing.\"openai/gpt-4o\".input: must be a number >= 0 (USD per 1M tokens), got -1",
            "pricing.\"openai/gpt-4o\".output: must be a number >= 0 (USD per 1M tokens), got inf",
            "pricing.\"openai/gpt-4.1\".cached: unknown field `cached`",
            "pricing.\"openai/o3\": missing `output`; a price is written {input: 2.5",
            "pricing.\"openai/o1\": expected a price such as {input: 2.5, output: 10, cached_input: 1.25} (USD per 1M tokens), got 15",
            "pricing.\"nobody/x\": \"nobody/x\" names provider \"nobody\", which is not configured (keys are provider names from providers:, not types); providers in the file: openai, vllm-local",
            "pricing.vllm: \"vllm\" is a provider name, which is not configured",
            "pricing.\"openai/\": write \"provider/model\" for one model",
            "pricing.\"openai/gpt-4o-mini\": prices the same as pricing.\"openai/GPT-4o-mini\"",
            "pricing.\"openai/gpt-5\".input_cost_per_token: this is LiteLLM's cost per token; prices here are USD per 1M tokens: write `input` (input: 1.25)",
            "pricing.\"openai/gpt-5\".output_cost_per_token: this is LiteLLM's cost per token; prices here are USD per 1M tokens: write `output` (output: 10)",
            "pricing.\"openai/gpt-5-mini\".input: invalid type: string \"cheap\", expected f64",
        ];
        for needle in expected {
            assert_eq!(e.iter().filter(|x| x.starts_with(needle)).count(), 1, "{needle:?} not reported exactly once in {e:#?}");
        }
        assert_eq!(e.len(), expected.len(), "{e:#?}");
    }

    #[test]
    fn pricing_section_shape_and_neighbours() {
        let e = errors(&format!("{PROVIDERS}pricing: [openai]\n"));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("pricing: expected a mapping of \"provider/model\" or \"provider\" to a price"), "{e:#?}");
        // A provider with mistakes of its own is not reported a second time here.
        let e = errors("providers:\n  openai: {keys: [{value: k}], timeout: soon}\npricing:\n  \"openai/gpt-4o\": {input: 1, output: 1}\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("providers.openai.timeout"), "{e:#?}");
        // The key may come before providers: in the file.
        let env: BTreeMap<String, String> = BTreeMap::new();
        let c = parse_str("pricing:\n  openai: {input: 1, output: 2}\nproviders:\n  openai: {keys: [{value: k}]}\n", &env).unwrap();
        assert_eq!(c.pricing.overrides.len(), 1);
        // A misspelt section name is pointed at the right one.
        let e = errors("pricng: {}\n");
        assert!(e[0].starts_with("pricng: unknown top-level key; did you mean `pricing`?"), "{e:#?}");
    }
}
