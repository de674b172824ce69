//! What a response cost, in US dollars.
//!
//! Budgets (issue 9) are kept in USD, while providers report tokens; this module turns one into the other.
//! It knows nothing of keys or budgets: governance asks [`PriceTable::price`] for a target's price once it
//! knows the provider and the model, reserves [`PriceTable::estimate`] before the request, and settles
//! with [`PriceTable::cost`] from the usage the provider reported.
//!
//! Prices come from two places, in this order:
//! 1. the configuration's `pricing:` section (see [`crate::config::PricingConfig`]): an operator's own
//!    contract prices, or prices for models the built-in table does not know;
//! 2. the built-in table, `crates/engine/data/prices.yaml`, embedded in the binary so that a gateway never
//!    needs network access to price a request. It is parsed once, on first use; a unit test parses it too,
//!    so a malformed table fails `cargo test` and not a running gateway.
//!
//! Self-hosted providers (Ollama, vLLM, any OpenAI-compatible base URL) cost nothing unless an override
//! prices them: the operator pays for the hardware, not per token.
//!
//! Every price is in **USD per 1,000,000 tokens**, the unit every provider publishes.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;
use switchyard_wire::types::Usage;
use switchyard_wire::ProviderKind;

use crate::config::PricingConfig;

/// The built-in table. Its header comment says what is deliberately left out.
const PRICES_YAML: &str = include_str!("../data/prices.yaml");

/// Prices are quoted per this many tokens.
pub const TOKENS_PER_UNIT: f64 = 1_000_000.0;

/// A model's list price, each rate in USD per 1,000,000 tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Prompt tokens that were neither read from nor written to a prompt cache.
    pub input: f64,
    /// Completion tokens (reasoning tokens included: providers count them as output).
    pub output: f64,
    /// Prompt tokens read from the provider's prompt cache; `None`: priced as `input`.
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the cache (Anthropic bills them above `input`); `None`: priced as `input`.
    pub cache_write: Option<f64>,
}

impl Price {
    /// What self-hosted models cost.
    pub const ZERO: Price = Price { input: 0.0, output: 0.0, cached_input: None, cache_write: None };

    pub fn new(input: f64, output: f64) -> Self {
        Price { input, output, cached_input: None, cache_write: None }
    }

    /// The cost of a response with this `usage`, in USD.
    ///
    /// The usage is the canonical (OpenAI-shaped) one: `prompt_tokens` counts every prompt token,
    /// `prompt_tokens_details.cached_tokens` those of them read from the cache and, for Anthropic,
    /// `prompt_tokens_details.cache_write_tokens` those written to it (the Anthropic codec adds both back
    /// into `prompt_tokens`, since Anthropic's own `input_tokens` leaves them out). So the cached and
    /// written tokens are taken *out* of the prompt and priced at their own rates: nothing is counted twice.
    /// Counts that do not add up (more cached than prompt tokens) are clamped rather than trusted.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let prompt = usage.prompt_tokens;
        let cached = usage.cached_tokens().unwrap_or(0).min(prompt);
        let written = cache_write_tokens(usage).min(prompt - cached);
        let fresh = prompt - cached - written;
        (fresh as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + written as f64 * self.cache_write.unwrap_or(self.input)
            + usage.completion_tokens as f64 * self.output)
            / TOKENS_PER_UNIT
    }

    /// An upper bound of what a request can cost before it is sent: every prompt token at the dearest
    /// input rate that may apply (a cache write costs more than plain input) and `max_output_tokens` of
    /// output. Governance reserves this and settles the real [`Price::cost`] later.
    pub fn estimate(&self, prompt_tokens: u64, max_output_tokens: u64) -> f64 {
        let input = self.input.max(self.cache_write.unwrap_or(self.input));
        (prompt_tokens as f64 * input + max_output_tokens as f64 * self.output) / TOKENS_PER_UNIT
    }

    /// Whether every rate is a finite number ≥ 0 (what both the table and the configuration require).
    pub fn is_valid(&self) -> bool {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        ok(self.input) && ok(self.output) && self.cached_input.is_none_or(ok) && self.cache_write.is_none_or(ok)
    }
}

/// Anthropic cache writes, as the Anthropic codec reports them (`prompt_tokens_details.cache_write_tokens`).
fn cache_write_tokens(usage: &Usage) -> u64 {
    usage.prompt_tokens_details.as_ref().and_then(|d| d.extra.get("cache_write_tokens")).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// The prices a gateway uses: the built-in table with the configuration's overrides on top. Cheap to
/// build (the built-in table is shared), immutable once built, so it can live in a configuration snapshot.
#[derive(Debug, Clone)]
pub struct PriceTable {
    builtin: &'static Builtin,
    /// Provider name → its overrides.
    overrides: HashMap<String, ProviderOverrides>,
}

#[derive(Debug, Clone, Default)]
struct ProviderOverrides {
    /// `pricing: {NAME: ...}`: every model of the provider.
    all: Option<Price>,
    /// `pricing: {NAME/MODEL: ...}`, by lowercased model name.
    models: HashMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable { builtin: builtin(), overrides: HashMap::new() }
    }
}

impl PriceTable {
    /// The built-in table with the configuration's `pricing:` overrides.
    pub fn new(config: &PricingConfig) -> Self {
        let mut overrides: HashMap<String, ProviderOverrides> = HashMap::new();
        for o in &config.overrides {
            let entry = overrides.entry(o.provider.clone()).or_default();
            match &o.model {
                Some(m) => {
                    entry.models.insert(m.to_ascii_lowercase(), o.price);
                }
                None => entry.all = Some(o.price),
            }
        }
        PriceTable { builtin: builtin(), overrides }
    }

    /// The price of `model` served by the provider named `provider_name` of type `kind`:
    ///
    /// 1. an override for `provider_name/model`, then one for `provider_name` (all its models);
    /// 2. for a self-hosted kind ([`ProviderKind::is_self_hosted`]), zero;
    /// 3. for OpenRouter, its own entries, then `:free` models at zero, then the vendor's entry
    ///    (`openai/gpt-4o` is priced as OpenAI's `gpt-4o`: OpenRouter passes list prices through);
    /// 4. the built-in entry for the kind (Azure uses OpenAI's).
    ///
    /// Model names are matched without case and the way providers version them: `gpt-4o-2024-08-06` is
    /// `gpt-4o`, `claude-sonnet-4-5-20250929` and `claude-sonnet-4-5-latest` are `claude-sonnet-4-5`,
    /// `claude-sonnet-4.5` (OpenRouter's spelling) is too; an exact entry always wins over a shortened one.
    /// Azure callers pass the model, not the deployment name.
    ///
    /// `None`: a cloud model nobody priced. The caller decides what that means; governance treats the
    /// response as unpriced (it counts against no USD budget) and logs the provider and model once, so the
    /// operator can add an override.
    pub fn price(&self, provider_name: &str, kind: ProviderKind, model: &str) -> Option<Price> {
        let names = candidates(model);
        if let Some(o) = self.overrides.get(provider_name) {
            if let Some(p) = names.iter().find_map(|n| o.models.get(n)) {
                return Some(*p);
            }
            if let Some(p) = o.all {
                return Some(p);
            }
        }
        if kind.is_self_hosted() {
            return Some(Price::ZERO);
        }
        if kind == ProviderKind::OpenRouter {
            return self.builtin.openrouter(model);
        }
        self.builtin.lookup(kind.as_str(), model)
    }

    /// Whether the table names `model` itself (no version shortening, case aside): an override for
    /// `provider_name/model`, or a built-in entry of the provider's kind. Metrics label only models some
    /// table or file names, and shortening would let a caller mint names (`gpt-4o-2099-01-01`).
    pub fn names(&self, provider_name: &str, kind: ProviderKind, model: &str) -> bool {
        let lower = model.to_ascii_lowercase();
        self.overrides.get(provider_name).is_some_and(|o| o.models.contains_key(&lower))
            || self.builtin.table(kind.as_str()).is_some_and(|t| t.contains_key(&lower))
    }

    /// [`Price::cost`]: what a response with `usage` cost at `price`, in USD.
    pub fn cost(&self, price: &Price, usage: &Usage) -> f64 {
        price.cost(usage)
    }

    /// [`Price::estimate`]: an upper bound, in USD, before the request is sent.
    pub fn estimate(&self, price: &Price, prompt_tokens: u64, max_output_tokens: u64) -> f64 {
        price.estimate(prompt_tokens, max_output_tokens)
    }
}

/// The names a model may be listed under, most specific first: as given (lowercased), without a Vertex
/// `@version`, without `-latest`, without a version date (`-2024-08-06`, `-20250929`, or `-0613`), and for
/// Claude models with dots as dashes (`claude-sonnet-4.5`).
fn candidates(model: &str) -> Vec<String> {
    let lower = model.trim().to_ascii_lowercase();
    let mut out = vec![lower.clone()];
    let mut base = lower.as_str();
    if let Some((b, _)) = base.split_once('@') {
        base = b;
        out.push(base.to_string());
    }
    if let Some(b) = base.strip_suffix("-latest") {
        base = b;
        out.push(base.to_string());
    }
    if let Some(b) = strip_date(base) {
        out.push(b.to_string());
    }
    let dotted: Vec<String> = out.iter().filter(|n| n.starts_with("claude") && n.contains('.')).map(|n| n.replace('.', "-")).collect();
    for d in dotted {
        // A dotted Claude name may also carry a date: `claude-3.5-sonnet-20241022`.
        let undated = strip_date(&d).map(str::to_string);
        out.push(d);
        out.extend(undated);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    out
}

/// `name` without a trailing version date: `-YYYY-MM-DD` (OpenAI), `-YYYYMMDD` (Anthropic) or a four-digit
/// `-MMDD` / `-YYMM` (`gpt-4-0613`, `grok-4-0709`).
fn strip_date(name: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (head, last) = name.rsplit_once('-')?;
    if digits(last) && (last.len() == 8 || last.len() == 4) && !head.is_empty() {
        return Some(head);
    }
    // -YYYY-MM-DD: three numeric segments of 4, 2 and 2 digits.
    let (head2, month) = head.rsplit_once('-')?;
    let (head3, year) = head2.rsplit_once('-')?;
    (digits(last) && last.len() == 2 && digits(month) && month.len() == 2 && digits(year) && year.len() == 4 && !head3.is_empty())
        .then_some(head3)
}

// ---------------------------------------------------------------------------------------------------------
// The built-in table
// ---------------------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Builtin {
    /// Provider kind (`openai`, `anthropic`, ...) → lowercased model name or alias → price.
    tables: HashMap<String, HashMap<String, Price>>,
    /// Kinds whose prices are another kind's (`azure` → `openai`).
    same_as: HashMap<String, String>,
    /// OpenRouter vendor prefix (`x-ai`) → the kind whose table prices it (`xai`).
    openrouter_vendors: HashMap<String, String>,
}

impl Builtin {
    fn table(&self, kind: &str) -> Option<&HashMap<String, Price>> {
        let kind = self.same_as.get(kind).map_or(kind, String::as_str);
        self.tables.get(kind)
    }

    fn lookup(&self, kind: &str, model: &str) -> Option<Price> {
        let table = self.table(kind)?;
        candidates(model).iter().find_map(|n| table.get(n)).copied()
    }

    fn openrouter(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.lookup("openrouter", model) {
            return Some(p);
        }
        let (name, variant) = match model.rsplit_once(':') {
            Some((n, v)) => (n, Some(v.to_ascii_lowercase())),
            None => (model, None),
        };
        match variant.as_deref() {
            None => {}
            Some("free") => return Some(Price::ZERO),
            // Routing preferences (fastest, cheapest provider): the list price is the vendor's.
            Some("nitro" | "floor") => {}
            // `:online` adds web-search fees, `:extended` other limits: not the vendor's price.
            Some(_) => return None,
        }
        let (vendor, vendor_model) = name.split_once('/')?;
        let kind = self.openrouter_vendors.get(&vendor.to_ascii_lowercase())?;
        self.lookup(kind, vendor_model)
    }
}

/// The table, parsed on first use. A table that does not parse (a unit test makes sure it does) leaves
/// every cloud model unpriced rather than stopping the gateway.
fn builtin() -> &'static Builtin {
    static TABLE: OnceLock<Builtin> = OnceLock::new();
    TABLE.get_or_init(|| {
        parse_builtin(PRICES_YAML).unwrap_or_else(|problems| {
            tracing::error!(problems = %problems.join("; "), "the built-in price table is invalid; cloud models are unpriced");
            Builtin::default()
        })
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    providers: std::collections::BTreeMap<String, ProviderPrices>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderPrices {
    /// Where the provider publishes these prices.
    source: String,
    /// The day they were checked, `YYYY-MM-DD`.
    as_of: String,
    #[serde(default)]
    note: Option<String>,
    /// Another provider kind whose prices apply.
    #[serde(default)]
    same_as: Option<String>,
    /// OpenRouter only: vendor prefix → provider kind.
    #[serde(default)]
    vendors: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    models: std::collections::BTreeMap<String, ModelPrice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelPrice {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    aliases: Vec<String>,
}

/// Parses and checks the table: known provider kinds, a source and a date per provider, finite prices
/// ≥ 0, names already in their lookup form (lowercase, no date) and no name listed twice. Every problem is
/// returned, not just the first.
fn parse_builtin(text: &str) -> Result<Builtin, Vec<String>> {
    let file: PriceFile = serde_yaml_ng::from_str(text).map_err(|e| vec![format!("not a valid price table: {e}")])?;
    let mut problems = Vec::new();
    let mut out = Builtin::default();
    for (kind, p) in &file.providers {
        let at = format!("providers.{kind}");
        if ProviderKind::parse(kind).is_none() {
            problems.push(format!("{at}: not a provider type"));
        }
        if !p.source.starts_with("https://") {
            problems.push(format!("{at}.source: must be the https:// page the prices are published on"));
        }
        if !is_date(&p.as_of) {
            problems.push(format!("{at}.as_of: must be a date YYYY-MM-DD, got \"{}\"", p.as_of));
        }
        if p.note.as_deref().is_some_and(str::is_empty) {
            problems.push(format!("{at}.note: empty"));
        }
        if let Some(other) = &p.same_as {
            if !p.models.is_empty() {
                problems.push(format!("{at}: same_as and models together; list the models under {other}"));
            }
            match file.providers.get(other) {
                Some(o) if o.same_as.is_none() && !o.models.is_empty() => {}
                _ => problems.push(format!("{at}.same_as: \"{other}\" is not a provider with models in this table")),
            }
            out.same_as.insert(kind.clone(), other.clone());
        }
        if !p.vendors.is_empty() && kind != "openrouter" {
            problems.push(format!("{at}.vendors: only openrouter maps vendors"));
        }
        for (vendor, target) in &p.vendors {
            if file.providers.get(target).is_none_or(|t| t.models.is_empty()) {
                problems.push(format!("{at}.vendors.{vendor}: \"{target}\" is not a provider with models in this table"));
            }
            out.openrouter_vendors.insert(vendor.to_ascii_lowercase(), target.clone());
        }
        let mut table = HashMap::new();
        for (model, m) in &p.models {
            let mat = format!("{at}.models.{model}");
            let price = Price { input: m.input, output: m.output, cached_input: m.cached_input, cache_write: m.cache_write };
            if !price.is_valid() {
                problems.push(format!("{mat}: every price must be a finite number >= 0 (USD per 1M tokens)"));
            }
            for name in std::iter::once(model).chain(&m.aliases) {
                if *name != name.trim().to_ascii_lowercase() || name.ends_with("-latest") {
                    problems.push(format!("{mat}: \"{name}\" must be written lowercase and without -latest (that is matched anyway)"));
                }
                if table.insert(name.clone(), price).is_some() {
                    problems.push(format!("{mat}: \"{name}\" is listed twice under {at}"));
                }
            }
        }
        // A dated snapshot is listed only where its price differs from the model's (gpt-4o-2024-05-13);
        // otherwise the undated entry prices it already.
        for (name, price) in &table {
            if strip_date(name).and_then(|base| table.get(base)) == Some(price) {
                problems
                    .push(format!("{at}.models: \"{name}\" has the price of its undated name; remove it (dated names are matched anyway)"));
            }
        }
        if !table.is_empty() {
            out.tables.insert(kind.clone(), table);
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&s[5..7].parse::<u8>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u8>().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PriceOverride, PricingConfig};

    fn table() -> PriceTable {
        PriceTable::default()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn pricing_shipped_table_parses_and_every_entry_is_sane() {
        let b = parse_builtin(PRICES_YAML).unwrap_or_else(|p| panic!("prices.yaml is invalid:\n{}", p.join("\n")));
        let file: PriceFile = serde_yaml_ng::from_str(PRICES_YAML).unwrap();
        let mut n = 0;
        for (kind, p) in &file.providers {
            assert!(ProviderKind::parse(kind).is_some(), "{kind}");
            assert!(p.source.starts_with("https://") && is_date(&p.as_of), "{kind}: source {:?} as_of {:?}", p.source, p.as_of);
            for (model, m) in &p.models {
                assert!(m.input >= 0.0 && m.output >= 0.0 && m.input.is_finite() && m.output.is_finite(), "{kind}/{model}");
                // A cache hit is never dearer than plain input; a cache write never cheaper.
                assert!(m.cached_input.is_none_or(|c| c <= m.input), "{kind}/{model} cached_input");
                assert!(m.cache_write.is_none_or(|c| c >= m.input), "{kind}/{model} cache_write");
                n += 1;
            }
        }
        assert!(n > 40, "only {n} models");
        // Every cloud type with a table, and the pass-through ones, answer for a flagship model.
        for (kind, model) in [
            (ProviderKind::OpenAi, "gpt-4o"),
            (ProviderKind::Azure, "gpt-4.1"),
            (ProviderKind::Anthropic, "claude-sonnet-4-5"),
            (ProviderKind::Xai, "grok-4"),
            (ProviderKind::Groq, "llama-3.3-70b-versatile"),
            (ProviderKind::Mistral, "codestral-latest"),
            (ProviderKind::OpenRouter, "anthropic/claude-haiku-4.5"),
        ] {
            assert!(b.lookup(kind.as_str(), model).is_some() || kind == ProviderKind::OpenRouter, "{kind:?} {model}");
            assert!(table().price(kind.as_str(), kind, model).is_some(), "{kind:?} {model}");
        }
    }

    #[test]
    fn pricing_malformed_tables_are_refused_with_every_problem() {
        assert!(parse_builtin("providers: [").is_err());
        let bad = r#"
providers:
  opneai:
    source: http://x
    as_of: "2026-13-01"
    models:
      GPT-4o: {input: -1, output: 1}
      gpt-z: {input: 1, output: 1, aliases: [gpt-x]}
      gpt-z-2024-08-06: {input: 1, output: 1}
      gpt-w-latest: {input: 1, output: 2}
      gpt-y: {input: 1, output: .inf, aliases: [gpt-x]}
  azure: {source: "https://a", as_of: "2026-01-01", same_as: nobody}
"#;
        let p = parse_builtin(bad).unwrap_err();
        for needle in [
            "providers.opneai: not a provider type",
            "providers.opneai.source: must be the https://",
            "providers.opneai.as_of: must be a date",
            "providers.opneai.models.GPT-4o: every price must be a finite number",
            "\"GPT-4o\" must be written lowercase",
            "\"gpt-z-2024-08-06\" has the price of its undated name",
            "\"gpt-w-latest\" must be written lowercase and without -latest",
            "providers.opneai.models.gpt-y: every price must be a finite number",
            "\"gpt-x\" is listed twice",
            "providers.azure.same_as: \"nobody\"",
        ] {
            assert!(p.iter().any(|x| x.contains(needle)), "missing {needle:?} in {p:#?}");
        }
        let unknown = parse_builtin(
            "providers:\n  openai: {source: \"https://a\", as_of: \"2026-01-01\", models: {m: {input: 1, output: 1, cached: 1}}}\n",
        );
        assert!(unknown.unwrap_err()[0].contains("unknown field `cached`"));
    }

    #[test]
    fn pricing_lookup_normalises_provider_versions() {
        let t = table();
        let openai = |m| t.price("openai", ProviderKind::OpenAi, m);
        assert_eq!(openai("gpt-4o-2024-08-06"), openai("gpt-4o"));
        assert_eq!(openai("GPT-4o").map(|p| p.input), Some(2.5));
        // An exact entry wins over the shortened name: this snapshot kept its launch price.
        assert_eq!(openai("gpt-4o-2024-05-13").map(|p| (p.input, p.output)), Some((5.0, 15.0)));
        assert_eq!(openai("gpt-4-0613"), openai("gpt-4"));
        assert_eq!(openai("o3-2025-04-16"), openai("o3"));
        assert!(openai("gpt-4o-mini").is_some_and(|p| p.input == 0.15), "gpt-4o-mini is its own entry, not gpt-4o");

        let claude = |m| t.price("anthropic", ProviderKind::Anthropic, m);
        let sonnet = claude("claude-sonnet-4-5").unwrap();
        assert_eq!((sonnet.input, sonnet.output, sonnet.cached_input, sonnet.cache_write), (3.0, 15.0, Some(0.3), Some(3.75)));
        for m in ["claude-sonnet-4-5-20250929", "claude-sonnet-4-5-latest", "claude-sonnet-4.5", "Claude-Sonnet-4-5@20250929"] {
            assert_eq!(claude(m), Some(sonnet), "{m}");
        }
        assert_eq!(claude("claude-3-5-haiku-latest").map(|p| p.input), Some(0.8));
        assert_eq!(claude("claude-3-5-sonnet-20241022").map(|p| p.input), Some(3.0));
        assert_eq!(claude("claude-opus-4-0").map(|p| p.input), Some(15.0));
        assert_eq!(claude("claude-opus-4-20250514").map(|p| p.input), Some(15.0));
        assert_eq!(claude("claude-opus-4-5-20251101").map(|p| p.input), Some(5.0));

        // Azure prices are OpenAI's; the caller passes the model, not the deployment.
        assert_eq!(t.price("my-azure", ProviderKind::Azure, "gpt-4o-2024-11-20"), openai("gpt-4o"));
        // OpenAI-compatible clouds have their own entries, with their own names.
        assert_eq!(t.price("groq", ProviderKind::Groq, "openai/gpt-oss-120b").map(|p| p.output), Some(0.6));
        assert_eq!(t.price("groq", ProviderKind::Groq, "gpt-4o"), None, "Groq does not serve gpt-4o");
        assert_eq!(t.price("x", ProviderKind::Xai, "grok-4-0709").map(|p| p.input), Some(3.0));
        assert_eq!(t.price("m", ProviderKind::Mistral, "codestral-2501").map(|p| p.input), Some(0.3));
    }

    #[test]
    fn pricing_openrouter_passes_vendor_prices_through() {
        let t = table();
        let or = |m| t.price("openrouter", ProviderKind::OpenRouter, m);
        assert_eq!(or("openai/gpt-4o"), t.price("openai", ProviderKind::OpenAi, "gpt-4o"));
        assert_eq!(or("anthropic/claude-3.5-sonnet"), t.price("anthropic", ProviderKind::Anthropic, "claude-3-5-sonnet"));
        assert_eq!(or("x-ai/grok-3-mini"), t.price("xai", ProviderKind::Xai, "grok-3-mini"));
        assert_eq!(or("openai/gpt-4o:nitro"), or("openai/gpt-4o"));
        assert_eq!(or("meta-llama/llama-3.3-70b-instruct:free"), Some(Price::ZERO));
        assert_eq!(or("openai/gpt-4o:online"), None, "web search is billed on top of the vendor's price");
        assert_eq!(or("meta-llama/llama-3.3-70b-instruct"), None);
        assert_eq!(or("openrouter/auto"), None);
        assert_eq!(or("gpt-4o"), None);
    }

    #[test]
    fn pricing_self_hosted_is_free_unless_overridden_and_unknown_clouds_are_none() {
        let t = table();
        for kind in [ProviderKind::Ollama, ProviderKind::Vllm, ProviderKind::OpenAiCompatible] {
            assert_eq!(t.price("local", kind, "llava:latest"), Some(Price::ZERO), "{kind:?}");
            // Even a cloud model's name: what a self-hosted server serves is the operator's.
            assert_eq!(t.price("local", kind, "gpt-4o"), Some(Price::ZERO), "{kind:?}");
        }
        assert_eq!(t.price("openai", ProviderKind::OpenAi, "gpt-9-ultra"), None);
        assert_eq!(t.price("anthropic", ProviderKind::Anthropic, "claude-unknown"), None);
        assert_eq!(t.price("ds", ProviderKind::DeepSeek, "deepseek-chat"), None, "DeepSeek is left out of the table");
        assert_eq!(t.price("pplx", ProviderKind::Perplexity, "sonar"), None);
    }

    #[test]
    fn pricing_overrides_win_model_first_then_provider() {
        let o = |provider: &str, model: Option<&str>, price: Price| PriceOverride {
            provider: provider.into(),
            model: model.map(Into::into),
            price,
        };
        let contract = Price { input: 2.0, output: 8.0, cached_input: Some(1.0), cache_write: None };
        let cfg = PricingConfig {
            overrides: vec![
                o("openai", Some("gpt-4o"), contract),
                o("vllm-local", None, Price::new(0.1, 0.1)),
                o("vllm-local", Some("big-model"), Price::new(1.0, 2.0)),
                o("openai", Some("ft:gpt-4o-mini:acme"), Price::new(0.3, 1.2)),
            ],
        };
        let t = PriceTable::new(&cfg);
        assert_eq!(t.price("openai", ProviderKind::OpenAi, "gpt-4o"), Some(contract));
        assert_eq!(t.price("openai", ProviderKind::OpenAi, "gpt-4o-2024-08-06"), Some(contract), "the override applies to dated names too");
        assert_eq!(t.price("openai", ProviderKind::OpenAi, "FT:gpt-4o-mini:acme"), Some(Price::new(0.3, 1.2)));
        assert_eq!(t.price("openai", ProviderKind::OpenAi, "gpt-4o-mini").map(|p| p.input), Some(0.15), "other models keep the table");
        // By provider name, not type: a second OpenAI provider is not overridden.
        assert_eq!(t.price("openai-eu", ProviderKind::OpenAi, "gpt-4o").map(|p| p.input), Some(2.5));
        assert_eq!(t.price("vllm-local", ProviderKind::Vllm, "qwen2.5"), Some(Price::new(0.1, 0.1)));
        assert_eq!(t.price("vllm-local", ProviderKind::Vllm, "big-model"), Some(Price::new(1.0, 2.0)));
        assert_eq!(t.price("other-vllm", ProviderKind::Vllm, "qwen2.5"), Some(Price::ZERO));
    }

    #[test]
    fn pricing_cost_prices_cached_and_written_tokens_once() {
        let t = table();
        let gpt4o = t.price("openai", ProviderKind::OpenAi, "gpt-4o").unwrap();
        // 1M prompt tokens of which 400k cached, 100k completion: 600k × 2.5 + 400k × 1.25 + 100k × 10.
        let u = Usage::new(1_000_000, 100_000).with_cached(400_000);
        assert!(close(t.cost(&gpt4o, &u), 1.5 + 0.5 + 1.0), "{}", t.cost(&gpt4o, &u));
        assert!(close(t.cost(&gpt4o, &Usage::new(1_000_000, 0)), 2.5));
        // Without a cached price, cached tokens cost what input costs.
        let plain = Price::new(1.0, 2.0);
        assert!(close(plain.cost(&u), 1.0 + 0.2));
        // A cached count above the prompt is clamped, never negative.
        assert!(close(plain.cost(&Usage::new(10, 0).with_cached(50)), 10.0 / 1e6));
        assert_eq!(Price::ZERO.cost(&u), 0.0);
    }

    #[test]
    fn pricing_cost_of_anthropic_usage_as_the_codec_maps_it() {
        // Anthropic said input_tokens 10, cache_read 20, cache_creation 5, output 7; the codec reports
        // prompt_tokens 35 with cached_tokens 20 and cache_write_tokens 5 (see providers/anthropic.rs).
        let body = br#"{"id":"m","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
            "content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn",
            "usage":{"input_tokens":10,"output_tokens":7,"cache_read_input_tokens":20,"cache_creation_input_tokens":5}}"#;
        let ctx = switchyard_wire::ResponseCtx { id: "x", created: 0, model: "claude-sonnet-4-5" };
        let r = switchyard_wire::providers::anthropic::parse_chat(body, ctx).unwrap();
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.cached_tokens()), (35, Some(20)));
        let t = table();
        let p = t.price("anthropic", ProviderKind::Anthropic, &r.model).unwrap();
        let want = (10.0 * 3.0 + 20.0 * 0.3 + 5.0 * 3.75 + 7.0 * 15.0) / 1e6;
        assert!(close(t.cost(&p, &u), want), "{} != {want}", t.cost(&p, &u));
    }

    #[test]
    fn pricing_estimate_is_an_upper_bound() {
        let t = table();
        let p = t.price("anthropic", ProviderKind::Anthropic, "claude-haiku-4-5").unwrap();
        // Every prompt token at the cache-write rate (1.25), all output allowed (5).
        assert!(close(t.estimate(&p, 1_000_000, 200_000), 1.25 + 1.0));
        for (prompt, cached, out) in [(1000, 0, 10), (1000, 900, 500), (50, 50, 0)] {
            let u = Usage::new(prompt, out).with_cached(cached);
            assert!(p.cost(&u) <= p.estimate(prompt, out) + 1e-15, "{prompt} {cached} {out}");
        }
        assert!(close(Price::new(1.0, 4.0).estimate(1_000_000, 1_000_000), 5.0));
    }

    #[test]
    fn pricing_candidate_names() {
        assert_eq!(candidates("gpt-4o-2024-08-06"), ["gpt-4o-2024-08-06", "gpt-4o"]);
        assert_eq!(
            candidates("claude-3.5-sonnet-20241022"),
            ["claude-3.5-sonnet-20241022", "claude-3.5-sonnet", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet"]
        );
        assert_eq!(candidates("text-embedding-3-large"), ["text-embedding-3-large"]);
        assert_eq!(candidates("llama-3.1-8b-instant"), ["llama-3.1-8b-instant"]);
        assert_eq!(strip_date("2024-08-06"), None);
        assert_eq!(strip_date("gpt-4-0613"), Some("gpt-4"));
    }
}
