//! Every provider type the gateway speaks, and one table row per type holding what is fixed about it: its
//! configuration name, the codec family that speaks it, where its API lives, how it authenticates, which
//! environment variables name its key and base URL by convention, what it can do, and which per-type
//! settings its configuration takes.
//!
//! It exists so that adding or changing a provider type is one row, not a hunt through a dozen matches: the
//! base-URL normaliser, the configuration's checks (`switchyard-engine`'s `config`), its environment
//! detection, the engine's capability checks and the codec dispatcher's family all read this table.

/// Every provider type the configuration accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    Azure,
    Anthropic,
    Ollama,
    Vllm,
    OpenAiCompatible,
    Groq,
    Mistral,
    Xai,
    OpenRouter,
    Together,
    Fireworks,
    Cerebras,
    DeepSeek,
    Perplexity,
    Bedrock,
    Vertex,
    Gemini,
    Cohere,
}

/// Which codec speaks to a provider kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    OpenAi,
    Azure,
    Anthropic,
    Ollama,
    Bedrock,
    Gemini,
    /// Google Vertex AI: Gemini models through the Gemini codec, `claude*` models through the Anthropic one.
    Vertex,
    Cohere,
}

/// Where a provider type's API is when the configuration names no `base_url`.
#[derive(Debug, Clone, Copy)]
pub enum BaseUrl {
    /// One public endpoint (or a self-hosted server's usual local address).
    Fixed(&'static str),
    /// One endpoint per region, derived from the provider's `region`.
    Regional(fn(&str) -> String),
    /// None: the configuration must say (Azure resources, arbitrary OpenAI-compatible servers).
    Configured,
}

/// What a provider type needs to prove who calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// At least one API key: a cloud refuses a request without one.
    Key,
    /// Keys when the server was started with them; self-hosted servers usually run without.
    OptionalKey,
    /// Bedrock API keys, or AWS credentials (configured, from the environment or a profile) to sign with.
    KeyOrAws,
    /// Vertex express-mode API keys, or Google credentials (a credentials file or gcloud's ADC) for OAuth.
    KeyOrGoogle,
}

/// A per-type setting of a provider's configuration: a type that does not take it refuses it by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `api_version`: Azure's `api-version`, Anthropic's `anthropic-version`.
    ApiVersion,
    /// `deployments`: Azure's gateway-model to deployment map.
    Deployments,
    /// `default_max_tokens`: for APIs that insist on `max_tokens`.
    DefaultMaxTokens,
    /// `region`: Bedrock's AWS region, Vertex's location.
    Region,
    /// `project`: Vertex's Google Cloud project id.
    Project,
    /// `aws`: credentials to sign Bedrock requests with.
    Aws,
    /// `credentials_file`: Google credentials for Vertex.
    CredentialsFile,
}

impl Setting {
    pub const ALL: [Setting; 7] = [
        Setting::ApiVersion,
        Setting::Deployments,
        Setting::DefaultMaxTokens,
        Setting::Region,
        Setting::Project,
        Setting::Aws,
        Setting::CredentialsFile,
    ];

    /// The configuration field.
    pub fn field(self) -> &'static str {
        match self {
            Setting::ApiVersion => "api_version",
            Setting::Deployments => "deployments",
            Setting::DefaultMaxTokens => "default_max_tokens",
            Setting::Region => "region",
            Setting::Project => "project",
            Setting::Aws => "aws",
            Setting::CredentialsFile => "credentials_file",
        }
    }

    /// The setting as the object of "only … providers take …".
    pub fn described(self) -> &'static str {
        match self {
            Setting::ApiVersion => "an api_version",
            Setting::Deployments => "deployments",
            Setting::DefaultMaxTokens => "default_max_tokens",
            Setting::Region => "a region",
            Setting::Project => "a project",
            Setting::Aws => "AWS credentials",
            Setting::CredentialsFile => "a Google credentials file",
        }
    }

    /// "azure and anthropic": the types that take this setting, for an error that refuses it elsewhere.
    pub fn taken_by(self) -> String {
        let names: Vec<&str> = ProviderKind::ALL.into_iter().filter(|k| k.spec().takes(self)).map(ProviderKind::as_str).collect();
        match names.split_last() {
            None => String::new(),
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        }
    }
}

/// What a provider type can do, as far as the gateway must know before it asks.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// It has an embeddings endpoint (asking one that has none gets a clear 400 instead of the upstream's 404).
    pub embeddings: bool,
    /// It lists its models over HTTP in a shape we read.
    pub lists_models: bool,
    /// It can take an image by http(s) URL; if not, the engine fetches it (SSRF-guarded) and inlines it.
    pub image_urls: bool,
}

/// Everything fixed about one provider type.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec {
    pub kind: ProviderKind,
    /// The `type:` the configuration names it by.
    pub name: &'static str,
    pub family: Family,
    pub base_url: BaseUrl,
    /// Trailing path segments a configured base URL may carry that the codec's paths already hold.
    pub strip_suffixes: &'static [&'static str],
    /// OpenAI-style: a base URL without a version segment gets `/v1`.
    pub append_v1: bool,
    pub credential: Credential,
    /// The environment variables that hold its key by convention, the preferred first.
    pub key_env: &'static [&'static str],
    /// The environment variable that overrides its base URL when configured from the environment (required
    /// when [`BaseUrl::Configured`]).
    pub base_url_env: Option<&'static str>,
    /// A server the gateway's operator runs (Ollama, vLLM, any OpenAI-compatible base URL), as opposed to a
    /// cloud. Which models it serves is the operator's choice: a model it lacks is the operator's to fix.
    pub self_hosted: bool,
    pub caps: Caps,
    /// The per-type settings it takes.
    pub settings: &'static [Setting],
    /// Those of `settings` it cannot do without.
    pub required: &'static [Setting],
    /// A region to show in an error that asks for one.
    pub region_example: Option<&'static str>,
    /// The environment variables that name the region by convention, the preferred first.
    pub region_env: &'static [&'static str],
}

impl KindSpec {
    pub fn takes(&self, s: Setting) -> bool {
        self.settings.contains(&s)
    }

    pub fn requires(&self, s: Setting) -> bool {
        self.required.contains(&s)
    }
}

const CLOUD: Caps = Caps { embeddings: true, lists_models: true, image_urls: true };
const CHAT_ONLY: Caps = Caps { embeddings: false, lists_models: true, image_urls: true };

/// An OpenAI-compatible cloud: the OpenAI codec, a fixed base URL and one key variable.
const fn openai_cloud(
    kind: ProviderKind,
    name: &'static str,
    base: &'static str,
    key_env: &'static [&'static str],
    caps: Caps,
) -> KindSpec {
    KindSpec {
        kind,
        name,
        family: Family::OpenAi,
        base_url: BaseUrl::Fixed(base),
        strip_suffixes: &[],
        append_v1: true,
        credential: Credential::Key,
        key_env,
        base_url_env: None,
        self_hosted: false,
        caps,
        settings: &[],
        required: &[],
        region_example: None,
        region_env: &[],
    }
}

/// An OpenAI-compatible server the operator runs.
const fn self_hosted(kind: ProviderKind, name: &'static str, base_url: BaseUrl) -> KindSpec {
    KindSpec {
        kind,
        name,
        family: Family::OpenAi,
        base_url,
        strip_suffixes: &[],
        append_v1: true,
        credential: Credential::OptionalKey,
        key_env: &[],
        base_url_env: None,
        self_hosted: true,
        caps: CLOUD,
        settings: &[],
        required: &[],
        region_example: None,
        region_env: &[],
    }
}

fn bedrock_base(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

fn vertex_base(region: &str) -> String {
    if region == "global" {
        "https://aiplatform.googleapis.com".to_string()
    } else {
        format!("https://{region}-aiplatform.googleapis.com")
    }
}

/// The table, in [`ProviderKind`] order (a test holds it there, so `spec()` is an index).
static KINDS: [KindSpec; 19] = [
    KindSpec {
        base_url_env: Some("OPENAI_BASE_URL"),
        ..openai_cloud(ProviderKind::OpenAi, "openai", "https://api.openai.com/v1", &["OPENAI_API_KEY"], CLOUD)
    },
    KindSpec {
        kind: ProviderKind::Azure,
        name: "azure",
        family: Family::Azure,
        base_url: BaseUrl::Configured,
        strip_suffixes: &["/openai/v1", "/openai"],
        append_v1: false,
        credential: Credential::Key,
        key_env: &["AZURE_OPENAI_API_KEY"],
        base_url_env: Some("AZURE_OPENAI_ENDPOINT"),
        self_hosted: false,
        caps: Caps { embeddings: true, lists_models: false, image_urls: true },
        settings: &[Setting::ApiVersion, Setting::Deployments],
        required: &[],
        region_example: None,
        region_env: &[],
    },
    KindSpec {
        kind: ProviderKind::Anthropic,
        name: "anthropic",
        family: Family::Anthropic,
        base_url: BaseUrl::Fixed("https://api.anthropic.com"),
        strip_suffixes: &["/v1"],
        append_v1: false,
        credential: Credential::Key,
        key_env: &["ANTHROPIC_API_KEY"],
        base_url_env: Some("ANTHROPIC_BASE_URL"),
        self_hosted: false,
        caps: CHAT_ONLY,
        settings: &[Setting::ApiVersion, Setting::DefaultMaxTokens],
        required: &[],
        region_example: None,
        region_env: &[],
    },
    KindSpec {
        kind: ProviderKind::Ollama,
        name: "ollama",
        family: Family::Ollama,
        base_url: BaseUrl::Fixed("http://127.0.0.1:11434"),
        strip_suffixes: &["/v1", "/api"],
        append_v1: false,
        // Ollama has no keys of its own; one configured goes as Bearer to a proxy in front of it.
        caps: Caps { embeddings: true, lists_models: true, image_urls: false },
        ..self_hosted(ProviderKind::Ollama, "ollama", BaseUrl::Configured)
    },
    self_hosted(ProviderKind::Vllm, "vllm", BaseUrl::Fixed("http://127.0.0.1:8000/v1")),
    self_hosted(ProviderKind::OpenAiCompatible, "openai-compatible", BaseUrl::Configured),
    openai_cloud(ProviderKind::Groq, "groq", "https://api.groq.com/openai/v1", &["GROQ_API_KEY"], CHAT_ONLY),
    openai_cloud(ProviderKind::Mistral, "mistral", "https://api.mistral.ai/v1", &["MISTRAL_API_KEY"], CLOUD),
    openai_cloud(ProviderKind::Xai, "xai", "https://api.x.ai/v1", &["XAI_API_KEY"], CLOUD),
    openai_cloud(ProviderKind::OpenRouter, "openrouter", "https://openrouter.ai/api/v1", &["OPENROUTER_API_KEY"], CLOUD),
    openai_cloud(ProviderKind::Together, "together", "https://api.together.xyz/v1", &["TOGETHER_API_KEY"], CLOUD),
    openai_cloud(ProviderKind::Fireworks, "fireworks", "https://api.fireworks.ai/inference/v1", &["FIREWORKS_API_KEY"], CLOUD),
    openai_cloud(ProviderKind::Cerebras, "cerebras", "https://api.cerebras.ai/v1", &["CEREBRAS_API_KEY"], CHAT_ONLY),
    openai_cloud(ProviderKind::DeepSeek, "deepseek", "https://api.deepseek.com/v1", &["DEEPSEEK_API_KEY"], CHAT_ONLY),
    // Perplexity's paths have no version segment.
    KindSpec {
        append_v1: false,
        ..openai_cloud(
            ProviderKind::Perplexity,
            "perplexity",
            "https://api.perplexity.ai",
            &["PERPLEXITY_API_KEY"],
            Caps { embeddings: false, lists_models: false, image_urls: true },
        )
    },
    KindSpec {
        kind: ProviderKind::Bedrock,
        name: "bedrock",
        family: Family::Bedrock,
        base_url: BaseUrl::Regional(bedrock_base),
        strip_suffixes: &[],
        append_v1: false,
        credential: Credential::KeyOrAws,
        // A Bedrock API key; without one the AWS credential chain signs the requests.
        key_env: &["AWS_BEARER_TOKEN_BEDROCK"],
        base_url_env: None,
        self_hosted: false,
        caps: Caps { embeddings: true, lists_models: false, image_urls: false },
        settings: &[Setting::Region, Setting::Aws, Setting::DefaultMaxTokens],
        required: &[Setting::Region],
        region_example: Some("eu-central-1"),
        region_env: &["AWS_REGION", "AWS_DEFAULT_REGION"],
    },
    KindSpec {
        kind: ProviderKind::Vertex,
        name: "vertex",
        family: Family::Vertex,
        base_url: BaseUrl::Regional(vertex_base),
        strip_suffixes: &["/v1"],
        append_v1: false,
        credential: Credential::KeyOrGoogle,
        key_env: &[],
        base_url_env: None,
        self_hosted: false,
        caps: Caps { embeddings: false, lists_models: false, image_urls: false },
        // default_max_tokens: Claude on Vertex insists on max_tokens as Anthropic does.
        settings: &[Setting::Region, Setting::Project, Setting::CredentialsFile, Setting::DefaultMaxTokens],
        required: &[Setting::Region, Setting::Project],
        region_example: Some("europe-west4 (or global)"),
        region_env: &["GOOGLE_CLOUD_LOCATION"],
    },
    KindSpec {
        kind: ProviderKind::Gemini,
        name: "gemini",
        family: Family::Gemini,
        base_url: BaseUrl::Fixed("https://generativelanguage.googleapis.com"),
        strip_suffixes: &["/v1beta", "/v1"],
        append_v1: false,
        credential: Credential::Key,
        // The google-genai SDK reads both; GOOGLE_API_KEY wins there when both are set.
        key_env: &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        base_url_env: None,
        self_hosted: false,
        caps: Caps { embeddings: true, lists_models: true, image_urls: false },
        settings: &[],
        required: &[],
        region_example: None,
        region_env: &[],
    },
    KindSpec {
        kind: ProviderKind::Cohere,
        name: "cohere",
        family: Family::Cohere,
        base_url: BaseUrl::Fixed("https://api.cohere.com"),
        strip_suffixes: &["/v2", "/v1"],
        append_v1: false,
        credential: Credential::Key,
        // CO_API_KEY is what Cohere's SDK reads; COHERE_API_KEY what most other tools do.
        key_env: &["CO_API_KEY", "COHERE_API_KEY"],
        base_url_env: None,
        self_hosted: false,
        caps: CLOUD,
        settings: &[],
        required: &[],
        region_example: None,
        region_env: &[],
    },
];

impl ProviderKind {
    pub const ALL: [ProviderKind; 19] = [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Ollama,
        ProviderKind::Vllm,
        ProviderKind::OpenAiCompatible,
        ProviderKind::Groq,
        ProviderKind::Mistral,
        ProviderKind::Xai,
        ProviderKind::OpenRouter,
        ProviderKind::Together,
        ProviderKind::Fireworks,
        ProviderKind::Cerebras,
        ProviderKind::DeepSeek,
        ProviderKind::Perplexity,
        ProviderKind::Bedrock,
        ProviderKind::Vertex,
        ProviderKind::Gemini,
        ProviderKind::Cohere,
    ];

    /// This type's row of the table.
    pub fn spec(self) -> &'static KindSpec {
        &KINDS[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn family(self) -> Family {
        self.spec().family
    }

    /// The public API base (everything before `/chat/completions` or `/messages`), when the service has one
    /// that does not depend on a region.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self.spec().base_url {
            BaseUrl::Fixed(u) => Some(u),
            BaseUrl::Regional(_) | BaseUrl::Configured => None,
        }
    }

    /// The API base of a regional service (Bedrock, Vertex), used when no `base_url` is configured.
    pub fn regional_base_url(self, region: &str) -> Option<String> {
        match self.spec().base_url {
            BaseUrl::Regional(f) => Some(f(region)),
            BaseUrl::Fixed(_) | BaseUrl::Configured => None,
        }
    }

    /// The environment variable that holds the service's key by convention.
    pub fn key_env_var(self) -> Option<&'static str> {
        self.spec().key_env.first().copied()
    }

    /// Clouds refuse a request without a key; self-hosted servers run without, and Bedrock and Vertex take
    /// cloud credentials instead (or besides), which the engine resolves.
    pub fn requires_key(self) -> bool {
        self.spec().credential == Credential::Key
    }

    pub fn is_self_hosted(self) -> bool {
        self.spec().self_hosted
    }

    pub fn accepts_image_urls(self) -> bool {
        self.spec().caps.image_urls
    }

    pub fn lists_models(self) -> bool {
        self.spec().caps.lists_models
    }

    pub fn has_embeddings(self) -> bool {
        self.spec().caps.embeddings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_enum_order_and_names_are_unique() {
        for (i, k) in ProviderKind::ALL.into_iter().enumerate() {
            assert_eq!(KINDS[i].kind, k, "row {i}");
            assert_eq!(k as usize, i);
            assert_eq!(ProviderKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn required_settings_are_taken_and_base_urls_are_somewhere() {
        for k in ProviderKind::ALL {
            let s = k.spec();
            for r in s.required {
                assert!(s.takes(*r), "{} requires {:?} it does not take", s.name, r);
            }
            if matches!(s.base_url, BaseUrl::Regional(_)) {
                assert!(s.requires(Setting::Region) && s.region_example.is_some(), "{}", s.name);
            }
            if s.credential == Credential::Key {
                assert!(!s.key_env.is_empty(), "{} needs a key but names no variable for it", s.name);
            }
        }
    }

    #[test]
    fn settings_name_who_takes_them() {
        assert_eq!(Setting::ApiVersion.taken_by(), "azure and anthropic");
        assert_eq!(Setting::Deployments.taken_by(), "azure");
        assert_eq!(Setting::Region.taken_by(), "bedrock and vertex");
        assert_eq!(Setting::DefaultMaxTokens.taken_by(), "anthropic, bedrock and vertex");
    }

    /// docs/configuration.md's "Types and their defaults" says what this table says, for every type.
    #[test]
    fn the_configuration_docs_list_every_type_as_the_table_has_it() {
        let doc = include_str!("../../../docs/configuration.md");
        let section = doc.split("### Types and their defaults").nth(1).unwrap();
        let rows: Vec<Vec<&str>> = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), ProviderKind::ALL.len(), "one row per type");
        for k in ProviderKind::ALL {
            let s = k.spec();
            let row = rows.iter().find(|r| r[0] == format!("`{}`", s.name)).unwrap_or_else(|| panic!("no row for {}", s.name));
            match s.base_url {
                BaseUrl::Fixed(u) => assert_eq!(row[1], format!("`{u}`"), "{}", s.name),
                BaseUrl::Regional(f) => assert!(row[1].contains(&f("{region}")), "{}: {}", s.name, row[1]),
                BaseUrl::Configured => assert!(row[1].starts_with("none"), "{}: {}", s.name, row[1]),
            }
            // Environment-only mode enables a type by its key variable, so only then do the others matter.
            let region_env = if s.key_env.is_empty() { &[][..] } else { &s.region_env[..s.region_env.len().min(1)] };
            for var in s.key_env.iter().chain(s.base_url_env.iter()).chain(region_env) {
                assert!(row[3].contains(&format!("`{var}`")), "{}: {var} is not in {}", s.name, row[3]);
            }
        }
    }

    #[test]
    fn regional_bases() {
        assert_eq!(
            ProviderKind::Bedrock.regional_base_url("eu-central-1").as_deref(),
            Some("https://bedrock-runtime.eu-central-1.amazonaws.com")
        );
        assert_eq!(ProviderKind::Vertex.regional_base_url("global").as_deref(), Some("https://aiplatform.googleapis.com"));
        assert_eq!(ProviderKind::Vertex.regional_base_url("us-east5").as_deref(), Some("https://us-east5-aiplatform.googleapis.com"));
        assert_eq!(ProviderKind::OpenAi.regional_base_url("x"), None);
    }
}
