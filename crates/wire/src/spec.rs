//! The vocabulary every codec shares: provider kinds and their static facts (base URLs and their
//! normalisation included), per-provider options, the endpoint a request goes to, the request the engine
//! sends, the identity given to responses, and the events a stream decoder yields.
//!
//! It exists so the dependency graph stays a tree: each module under `providers/` imports these types from
//! here, and `codec` (the dispatcher) imports both this module and the providers. Nothing here imports a
//! provider or the dispatcher. `codec` re-exports these types so `switchyard_wire::codec::…` paths keep working.

use std::collections::BTreeMap;

use crate::error::UpstreamError;
use crate::types::ChatChunk;

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

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Vllm => "vllm",
            ProviderKind::OpenAiCompatible => "openai-compatible",
            ProviderKind::Groq => "groq",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Xai => "xai",
            ProviderKind::OpenRouter => "openrouter",
            ProviderKind::Together => "together",
            ProviderKind::Fireworks => "fireworks",
            ProviderKind::Cerebras => "cerebras",
            ProviderKind::DeepSeek => "deepseek",
            ProviderKind::Perplexity => "perplexity",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Vertex => "vertex",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Cohere => "cohere",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn family(self) -> Family {
        match self {
            ProviderKind::Azure => Family::Azure,
            ProviderKind::Anthropic => Family::Anthropic,
            ProviderKind::Ollama => Family::Ollama,
            ProviderKind::Bedrock => Family::Bedrock,
            ProviderKind::Vertex => Family::Vertex,
            ProviderKind::Gemini => Family::Gemini,
            ProviderKind::Cohere => Family::Cohere,
            _ => Family::OpenAi,
        }
    }

    /// The public API base (everything before `/chat/completions` or `/messages`), when the service has one.
    pub fn default_base_url(self) -> Option<&'static str> {
        Some(match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::Ollama => "http://127.0.0.1:11434",
            ProviderKind::Vllm => "http://127.0.0.1:8000/v1",
            ProviderKind::Groq => "https://api.groq.com/openai/v1",
            ProviderKind::Mistral => "https://api.mistral.ai/v1",
            ProviderKind::Xai => "https://api.x.ai/v1",
            ProviderKind::OpenRouter => "https://openrouter.ai/api/v1",
            ProviderKind::Together => "https://api.together.xyz/v1",
            ProviderKind::Fireworks => "https://api.fireworks.ai/inference/v1",
            ProviderKind::Cerebras => "https://api.cerebras.ai/v1",
            ProviderKind::DeepSeek => "https://api.deepseek.com/v1",
            ProviderKind::Perplexity => "https://api.perplexity.ai",
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com",
            ProviderKind::Cohere => "https://api.cohere.com",
            // Bedrock and Vertex derive theirs from the region (`regional_base_url`).
            ProviderKind::Azure | ProviderKind::OpenAiCompatible | ProviderKind::Bedrock | ProviderKind::Vertex => return None,
        })
    }

    /// The API base of a regional service (Bedrock, Vertex), used when no `base_url` is configured.
    pub fn regional_base_url(self, region: &str) -> Option<String> {
        match self {
            ProviderKind::Bedrock => Some(format!("https://bedrock-runtime.{region}.amazonaws.com")),
            ProviderKind::Vertex if region == "global" => Some("https://aiplatform.googleapis.com".to_string()),
            ProviderKind::Vertex => Some(format!("https://{region}-aiplatform.googleapis.com")),
            _ => None,
        }
    }

    /// The environment variable that holds the service's key by convention.
    pub fn key_env_var(self) -> Option<&'static str> {
        Some(match self {
            ProviderKind::OpenAi => "OPENAI_API_KEY",
            ProviderKind::Azure => "AZURE_OPENAI_API_KEY",
            ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
            ProviderKind::Groq => "GROQ_API_KEY",
            ProviderKind::Mistral => "MISTRAL_API_KEY",
            ProviderKind::Xai => "XAI_API_KEY",
            ProviderKind::OpenRouter => "OPENROUTER_API_KEY",
            ProviderKind::Together => "TOGETHER_API_KEY",
            ProviderKind::Fireworks => "FIREWORKS_API_KEY",
            ProviderKind::Cerebras => "CEREBRAS_API_KEY",
            ProviderKind::DeepSeek => "DEEPSEEK_API_KEY",
            ProviderKind::Perplexity => "PERPLEXITY_API_KEY",
            ProviderKind::Gemini => "GEMINI_API_KEY",
            ProviderKind::Cohere => "CO_API_KEY",
            // A Bedrock API key; without one the AWS credential chain signs the requests.
            ProviderKind::Bedrock => "AWS_BEARER_TOKEN_BEDROCK",
            ProviderKind::Vertex => return None,
            ProviderKind::Ollama | ProviderKind::Vllm | ProviderKind::OpenAiCompatible => return None,
        })
    }

    /// Self-hosted servers run without keys; clouds refuse a request without one.
    /// Bedrock and Vertex take cloud credentials instead (or besides), which the engine resolves.
    pub fn requires_key(self) -> bool {
        !matches!(
            self,
            ProviderKind::Ollama | ProviderKind::Vllm | ProviderKind::OpenAiCompatible | ProviderKind::Bedrock | ProviderKind::Vertex
        )
    }

    /// A server the gateway's operator runs (Ollama, vLLM, any OpenAI-compatible base URL), as opposed to a
    /// cloud. Which models it serves is the operator's choice: a model it lacks is the operator's to fix
    /// (pull it, start the server with it, or fix the route), not the caller's.
    pub fn is_self_hosted(self) -> bool {
        matches!(self, ProviderKind::Ollama | ProviderKind::Vllm | ProviderKind::OpenAiCompatible)
    }

    /// Whether the provider can take an image by http(s) URL; if not, the engine fetches it and inlines it.
    pub fn accepts_image_urls(self) -> bool {
        !matches!(self, ProviderKind::Ollama | ProviderKind::Bedrock | ProviderKind::Gemini | ProviderKind::Vertex)
    }

    /// Whether the provider lists its models over HTTP in a shape we read.
    pub fn lists_models(self) -> bool {
        !matches!(self, ProviderKind::Azure | ProviderKind::Perplexity | ProviderKind::Bedrock | ProviderKind::Vertex)
    }

    /// Whether the provider has an embeddings endpoint (asking one that has none gets a clear 400 instead
    /// of the upstream's 404).
    pub fn has_embeddings(self) -> bool {
        !matches!(
            self,
            ProviderKind::Anthropic
                | ProviderKind::Perplexity
                | ProviderKind::Cerebras
                | ProviderKind::Groq
                | ProviderKind::DeepSeek
                | ProviderKind::Vertex
        )
    }
}

/// Per-provider settings the codecs need, resolved from configuration.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// Azure `api-version` (default `providers::azure::DEFAULT_API_VERSION`; `v1` selects the v1 API) or the
    /// `anthropic-version` header (default `providers::anthropic::DEFAULT_VERSION`).
    pub api_version: Option<String>,
    /// Anthropic needs `max_tokens`; used when the caller sets none.
    pub default_max_tokens: Option<u32>,
    /// Azure: gateway model name → deployment name (default: the same name).
    pub deployments: BTreeMap<String, String>,
    /// Extra headers sent on every request to this provider.
    pub extra_headers: Vec<(String, String)>,
    /// Bedrock's AWS region, or Vertex's location (`global` included).
    pub region: Option<String>,
    /// Vertex: the Google Cloud project id.
    pub project: Option<String>,
}

/// Static AWS credentials (from the configuration, the environment or a shared credentials file), resolved
/// by the engine; the wire crate only signs with them.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// How one request proves who sends it.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// No credential (a self-hosted server without keys).
    None,
    /// A static API key, sent the provider's own way (`Authorization: Bearer`, `x-api-key`, `api-key`,
    /// `x-goog-api-key`).
    Key(&'a str),
    /// An OAuth access token the engine obtained (Google service accounts and ADC).
    Bearer(&'a str),
    /// AWS SigV4: [`crate::codec::authorize`] signs the built request.
    Aws(&'a AwsCredentials),
}

/// Where and how to reach one provider with one key.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    pub kind: ProviderKind,
    /// Normalised with [`normalize_base_url`].
    pub base_url: &'a str,
    pub auth: Auth<'a>,
    pub options: &'a ProviderOptions,
}

impl<'a> Endpoint<'a> {
    /// The static API key, when that is how this endpoint authenticates.
    pub fn api_key(&self) -> Option<&'a str> {
        match self.auth {
            Auth::Key(k) => Some(k),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A request ready to send: the engine adds nothing but the transport.
#[derive(Debug, Clone, PartialEq)]
pub struct WireRequest {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WireRequest {
    pub fn post_json(url: String, body: Vec<u8>) -> Self {
        WireRequest { method: Method::Post, url, headers: vec![("content-type".into(), "application/json".into())], body }
    }

    pub fn get(url: String) -> Self {
        WireRequest { method: Method::Get, url, headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn with_extra_headers(mut self, ep: &Endpoint<'_>) -> Self {
        for (k, v) in &ep.options.extra_headers {
            self.headers.push((k.clone(), v.clone()));
        }
        self
    }
}

/// Identity the engine gives a response or stream whose provider does not supply one (Ollama has no ids).
#[derive(Debug, Clone, Copy)]
pub struct ResponseCtx<'a> {
    /// A `chatcmpl-…` id to use when the upstream gives none.
    pub id: &'a str,
    /// Unix seconds.
    pub created: i64,
    /// The upstream model name, used when the upstream does not echo one.
    pub model: &'a str,
}

/// What a stream decoder hands back.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Chunk(ChatChunk),
    /// An error the upstream sent inside a 200 stream.
    Error(UpstreamError),
    /// The upstream's own end marker (`[DONE]`, `message_stop`, `done: true`).
    Done,
}

/// Normalises a configured base URL to the API base the codecs append paths to.
///
/// OpenAI-style services: a URL without a version segment gets `/v1` (so `http://host:8000` and
/// `http://host:8000/v1` both work and `/v1/v1` never happens); Perplexity has no version segment.
/// Anthropic and Ollama: a trailing `/v1` (or Ollama's `/api`) is removed, since their paths carry it.
/// Azure: a trailing `/openai` or `/openai/v1` is removed.
pub fn normalize_base_url(kind: ProviderKind, url: &str) -> String {
    let mut u = url.trim().trim_end_matches('/').to_string();
    match kind.family() {
        Family::OpenAi => {
            if kind != ProviderKind::Perplexity && !ends_with_version_segment(&u) {
                u.push_str("/v1");
            }
        }
        Family::Anthropic => strip_suffix_in_place(&mut u, &["/v1"]),
        Family::Ollama => strip_suffix_in_place(&mut u, &["/v1", "/api"]),
        Family::Azure => strip_suffix_in_place(&mut u, &["/openai/v1", "/openai"]),
        Family::Gemini => strip_suffix_in_place(&mut u, &["/v1beta", "/v1"]),
        Family::Cohere => strip_suffix_in_place(&mut u, &["/v2", "/v1"]),
        Family::Vertex => strip_suffix_in_place(&mut u, &["/v1"]),
        Family::Bedrock => {}
    }
    u
}

fn strip_suffix_in_place(u: &mut String, suffixes: &[&str]) {
    for s in suffixes {
        if let Some(stripped) = u.strip_suffix(s) {
            *u = stripped.to_string();
            return;
        }
    }
}

fn ends_with_version_segment(u: &str) -> bool {
    let path_start = u.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &u[path_start..];
    let Some(slash) = rest.find('/') else { return false };
    let last = rest[slash..].rsplit('/').next().unwrap_or("");
    let mut chars = last.chars();
    chars.next() == Some('v') && chars.next().is_some_and(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_normalise_without_doubling_v1() {
        let k = ProviderKind::OpenAiCompatible;
        assert_eq!(normalize_base_url(k, "http://h:8000"), "http://h:8000/v1");
        assert_eq!(normalize_base_url(k, "http://h:8000/"), "http://h:8000/v1");
        assert_eq!(normalize_base_url(k, "http://h:8000/v1/"), "http://h:8000/v1");
        assert_eq!(normalize_base_url(k, "https://g.example/v1beta/openai"), "https://g.example/v1beta/openai/v1");
        assert_eq!(normalize_base_url(ProviderKind::Groq, "https://api.groq.com/openai/v1"), "https://api.groq.com/openai/v1");
        assert_eq!(normalize_base_url(ProviderKind::Perplexity, "https://api.perplexity.ai/"), "https://api.perplexity.ai");
        assert_eq!(normalize_base_url(ProviderKind::Anthropic, "https://api.anthropic.com/v1"), "https://api.anthropic.com");
        assert_eq!(normalize_base_url(ProviderKind::Ollama, "http://127.0.0.1:11434/v1/"), "http://127.0.0.1:11434");
        assert_eq!(normalize_base_url(ProviderKind::Azure, "https://r.openai.azure.com/openai/"), "https://r.openai.azure.com");
    }

    #[test]
    fn every_kind_round_trips_its_name() {
        for k in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(k.as_str()), Some(k));
        }
    }
}
