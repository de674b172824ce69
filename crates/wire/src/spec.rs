//! The vocabulary every codec shares: provider kinds (their static facts are [`crate::kind`]'s table) and
//! base-URL normalisation, per-provider options, the endpoint a request goes to, the request the engine
//! sends, the identity given to responses, and the events a stream decoder yields.
//!
//! It exists so the dependency graph stays a tree: each module under `providers/` imports these types from
//! here, and `codec` (the dispatcher) imports both this module and the providers. Nothing here imports a
//! provider or the dispatcher. `codec` re-exports these types so `switchyard_wire::codec::…` paths keep working.

use std::collections::BTreeMap;

use crate::error::UpstreamError;
use crate::types::ChatChunk;

pub use crate::kind::{Family, ProviderKind};

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
    let spec = kind.spec();
    let mut u = url.trim().trim_end_matches('/').to_string();
    if spec.append_v1 && !ends_with_version_segment(&u) {
        u.push_str("/v1");
    }
    strip_suffix_in_place(&mut u, spec.strip_suffixes);
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
