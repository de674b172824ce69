//! The codec entry points the engine calls: the dispatcher from a provider kind to its codec.
//!
//! Providers form a closed enum ([`ProviderKind`], defined with the other shared types in [`crate::spec`])
//! and every call here is a `match` on its family: no trait objects on the hot path, and adding a provider
//! means adding a variant in `spec`, a file under `providers/` and the arms here, without touching the
//! engine. Outside `providers/` this is the only module that imports a
//! provider, and no provider imports it. Every function is pure: the engine does the I/O and hands us bytes.

use crate::error::{UpstreamError, WireError};
use crate::providers::{anthropic, azure, bedrock, cohere, gemini, ollama, openai};
use crate::types::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};

// The shared types live in `spec` (so providers need not import this module); re-exported here so the
// engine's `switchyard_wire::codec::…` paths keep resolving.
pub use crate::spec::{
    normalize_base_url, Auth, AwsCredentials, Endpoint, Family, Method, ProviderKind, ProviderOptions, ResponseCtx, StreamEvent,
    WireRequest,
};

/// Vertex AI serves Anthropic's models (`claude-…@version`) through the Anthropic codec; Google's through
/// the Gemini one.
fn vertex_claude(model: &str) -> bool {
    model.starts_with("claude")
}

/// Per-stream state for translating an upstream stream into canonical chunks.
#[derive(Debug)]
pub enum StreamDecoder {
    OpenAi(openai::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Ollama(ollama::StreamDecoder),
    Cohere(cohere::StreamDecoder),
    Gemini(gemini::StreamDecoder),
    Bedrock(bedrock::StreamDecoder),
}

impl StreamDecoder {
    pub fn new(kind: ProviderKind, ctx: ResponseCtx<'_>) -> Self {
        match kind.family() {
            Family::OpenAi | Family::Azure => StreamDecoder::OpenAi(openai::StreamDecoder::new(kind, ctx)),
            Family::Cohere => StreamDecoder::Cohere(cohere::StreamDecoder::new(ctx)),
            Family::Vertex if vertex_claude(ctx.model) => StreamDecoder::Anthropic(anthropic::StreamDecoder::new(ctx)),
            Family::Gemini | Family::Vertex => StreamDecoder::Gemini(gemini::StreamDecoder::new(ctx)),
            Family::Anthropic => StreamDecoder::Anthropic(anthropic::StreamDecoder::new(ctx)),
            Family::Ollama => StreamDecoder::Ollama(ollama::StreamDecoder::new(ctx)),
            Family::Bedrock => StreamDecoder::Bedrock(bedrock::StreamDecoder::new(ctx)),
        }
    }

    /// Feeds raw body bytes, as they arrive, and appends the events they complete.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        match self {
            StreamDecoder::OpenAi(d) => d.feed(bytes, out),
            StreamDecoder::Anthropic(d) => d.feed(bytes, out),
            StreamDecoder::Ollama(d) => d.feed(bytes, out),
            StreamDecoder::Cohere(d) => d.feed(bytes, out),
            StreamDecoder::Gemini(d) => d.feed(bytes, out),
            StreamDecoder::Bedrock(d) => d.feed(bytes, out),
        }
    }

    /// Bounds one line or event of the upstream stream: past it, [`StreamDecoder::feed`] fails with
    /// [`WireError::TooLong`] instead of buffering on.
    pub fn set_max_event_bytes(&mut self, max: usize) {
        match self {
            StreamDecoder::OpenAi(d) => d.set_max_event_bytes(max),
            StreamDecoder::Anthropic(d) => d.set_max_event_bytes(max),
            StreamDecoder::Ollama(d) => d.set_max_event_bytes(max),
            StreamDecoder::Cohere(d) => d.set_max_event_bytes(max),
            StreamDecoder::Gemini(d) => d.set_max_event_bytes(max),
            StreamDecoder::Bedrock(d) => d.set_max_event_bytes(max),
        }
    }

    /// The body ended. Emits what was pending; an error if the stream ended before its end marker.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        match self {
            StreamDecoder::OpenAi(d) => d.finish(out),
            StreamDecoder::Anthropic(d) => d.finish(out),
            StreamDecoder::Ollama(d) => d.finish(out),
            StreamDecoder::Cohere(d) => d.finish(out),
            StreamDecoder::Gemini(d) => d.finish(out),
            StreamDecoder::Bedrock(d) => d.finish(out),
        }
    }
}

/// Builds the upstream chat request. `model` is the upstream model name (the provider prefix removed).
pub fn build_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    match ep.kind.family() {
        Family::OpenAi => openai::build_chat(ep, req, model),
        Family::Azure => azure::build_chat(ep, req, model),
        Family::Anthropic => anthropic::build_chat(ep, req, model),
        Family::Ollama => ollama::build_chat(ep, req, model),
        Family::Cohere => cohere::build_chat(ep, req, model),
        Family::Bedrock => bedrock::build_chat(ep, req, model),
        Family::Vertex if vertex_claude(model) => anthropic::build_vertex_chat(ep, req, model),
        Family::Gemini | Family::Vertex => gemini::build_chat(ep, req, model),
    }
}

/// Adds what must be computed over the finished request: an AWS SigV4 signature for [`Auth::Aws`]. A no-op
/// for every other kind of auth, whose headers the codec already set. `now_unix` is the signing time.
pub fn authorize(ep: &Endpoint<'_>, req: &mut WireRequest, now_unix: i64) -> Result<(), WireError> {
    match ep.auth {
        Auth::Aws(creds) => {
            if ep.kind.family() != Family::Bedrock {
                return Err(WireError::unsupported(format!("AWS credentials cannot sign {} requests", ep.kind.as_str()), None));
            }
            let Some(region) = ep.options.region.as_deref() else {
                return Err(WireError::unsupported("signing a bedrock request needs the provider's region", None));
            };
            Ok(crate::sigv4::sign(req, creds, region, bedrock::SERVICE, now_unix)?)
        }
        Auth::None | Auth::Key(_) | Auth::Bearer(_) => Ok(()),
    }
}

/// Parses a successful (2xx) non-streaming chat response.
pub fn parse_chat(kind: ProviderKind, body: &[u8], ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    match kind.family() {
        Family::OpenAi | Family::Azure => openai::parse_chat(kind, body, ctx),
        Family::Anthropic => anthropic::parse_chat(body, ctx),
        Family::Ollama => ollama::parse_chat(body, ctx),
        Family::Cohere => cohere::parse_chat(body, ctx),
        Family::Bedrock => bedrock::parse_chat(body, ctx),
        Family::Vertex if vertex_claude(ctx.model) => anthropic::parse_chat(body, ctx),
        Family::Gemini | Family::Vertex => gemini::parse_chat(body, ctx),
    }
}

/// Parses a non-2xx body into the provider-neutral error.
pub fn parse_error(kind: ProviderKind, status: u16, body: &[u8]) -> UpstreamError {
    match kind.family() {
        Family::Anthropic => anthropic::parse_error(status, body),
        Family::Cohere => cohere::parse_error(status, body),
        Family::Gemini => gemini::parse_error(status, body),
        // Google's front end answers quota and auth in its RPC shape; Claude's own errors keep Anthropic's.
        Family::Vertex => gemini::parse_rpc_error(status, body).unwrap_or_else(|| anthropic::parse_error(status, body)),
        Family::Bedrock => bedrock::parse_error(status, None, body),
        _ => UpstreamError::from_body(status, body),
    }
}

/// The response header that names an error's type, for providers that put it there rather than in the
/// body (AWS: `x-amzn-ErrorType`). The engine passes its value to [`parse_error_typed`].
pub fn error_type_header(kind: ProviderKind) -> Option<&'static str> {
    match kind.family() {
        Family::Bedrock => Some("x-amzn-errortype"),
        _ => None,
    }
}

/// [`parse_error`], given the value of [`error_type_header`] when the response carried it.
pub fn parse_error_typed(kind: ProviderKind, status: u16, error_type: Option<&str>, body: &[u8]) -> UpstreamError {
    match kind.family() {
        Family::Bedrock => bedrock::parse_error(status, error_type, body),
        _ => parse_error(kind, status, body),
    }
}

pub fn build_embeddings(ep: &Endpoint<'_>, req: &EmbeddingsRequest, model: &str) -> Result<WireRequest, WireError> {
    if !ep.kind.has_embeddings() {
        return Err(WireError::unsupported(format!("{} has no embeddings endpoint", ep.kind.as_str()), Some("model")));
    }
    match ep.kind.family() {
        Family::OpenAi => openai::build_embeddings(ep, req, model),
        Family::Azure => azure::build_embeddings(ep, req, model),
        Family::Ollama => ollama::build_embeddings(ep, req, model),
        Family::Anthropic => Err(WireError::unsupported("anthropic has no embeddings endpoint", Some("model"))),
        Family::Cohere => cohere::build_embeddings(ep, req, model),
        Family::Vertex if vertex_claude(model) => Err(WireError::unsupported(
            format!("\"{model}\" on vertex is one of Anthropic's models, which have no embeddings endpoint"),
            Some("model"),
        )),
        Family::Gemini | Family::Vertex => gemini::build_embeddings(ep, req, model),
        Family::Bedrock => {
            let mut parts = bedrock::build_embeddings(ep, req, model)?;
            match parts.len() {
                1 => Ok(parts.remove(0)),
                n => Err(WireError::unsupported(format!("this bedrock embeddings request takes {n} upstream requests"), Some("input"))),
            }
        }
    }
}

/// The upstream requests an embeddings request takes: one for most providers; Bedrock's Titan models embed
/// one text per request and Cohere on Bedrock at most 96. Send them all (each through [`authorize`]) and
/// hand the answers, in order, to [`parse_embeddings_parts`].
pub fn build_embeddings_parts(ep: &Endpoint<'_>, req: &EmbeddingsRequest, model: &str) -> Result<Vec<WireRequest>, WireError> {
    match ep.kind.family() {
        Family::Bedrock if ep.kind.has_embeddings() => bedrock::build_embeddings(ep, req, model),
        _ => build_embeddings(ep, req, model).map(|w| vec![w]),
    }
}

/// Joins the answers to [`build_embeddings_parts`]' requests into one response.
pub fn parse_embeddings_parts(
    kind: ProviderKind,
    bodies: &[&[u8]],
    ctx: ResponseCtx<'_>,
    encoding_format: Option<&str>,
) -> Result<EmbeddingsResponse, WireError> {
    match (kind.family(), bodies) {
        (Family::Bedrock, _) => bedrock::parse_embeddings(ctx.model, bodies, ctx, encoding_format),
        (_, [one]) => parse_embeddings(kind, one, ctx, encoding_format),
        (_, _) => Err(WireError::malformed("embeddings response", format!("{} answers to one request", bodies.len()))),
    }
}

/// Parses an embeddings response. `encoding_format` is the caller's: providers that only return floats are
/// re-encoded to base64 when the caller asked for it.
pub fn parse_embeddings(
    kind: ProviderKind,
    body: &[u8],
    ctx: ResponseCtx<'_>,
    encoding_format: Option<&str>,
) -> Result<EmbeddingsResponse, WireError> {
    match kind.family() {
        Family::Ollama => ollama::parse_embeddings_as(body, ctx, encoding_format),
        // The request asked Cohere for the encoding the caller wants.
        Family::Cohere => cohere::parse_embeddings(body, ctx),
        Family::Gemini | Family::Vertex => gemini::parse_embeddings(body, ctx, encoding_format),
        // `ctx.model` is the upstream model, which says which InvokeModel body it answers.
        Family::Bedrock => bedrock::parse_embeddings(ctx.model, &[body], ctx, encoding_format),
        _ => openai::parse_embeddings(body),
    }
}

/// The request that lists the upstream's models, when the provider has one.
pub fn build_list_models(ep: &Endpoint<'_>) -> Option<WireRequest> {
    if !ep.kind.lists_models() {
        return None;
    }
    Some(match ep.kind.family() {
        Family::OpenAi => openai::build_list_models(ep),
        Family::Anthropic => anthropic::build_list_models(ep),
        Family::Ollama => ollama::build_list_models(ep),
        Family::Cohere => cohere::build_list_models(ep),
        Family::Gemini | Family::Vertex => return gemini::build_list_models(ep),
        Family::Azure | Family::Bedrock => return None,
    })
}

/// Model ids from a model-list response.
pub fn parse_models(kind: ProviderKind, body: &[u8]) -> Result<Vec<String>, WireError> {
    match kind.family() {
        Family::Ollama => ollama::parse_models(body),
        Family::Cohere => cohere::parse_models(body),
        Family::Gemini | Family::Vertex => gemini::parse_models(body),
        // OpenAI and Anthropic both answer `{"data":[{"id":…}]}`.
        _ => openai::parse_models(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_reaches_the_ollama_codec() {
        let opts = ProviderOptions::default();
        let ep = Endpoint { kind: ProviderKind::Ollama, base_url: "http://127.0.0.1:11434", auth: crate::spec::Auth::None, options: &opts };
        let r: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let w = build_chat(&ep, &r, "llama3.2").unwrap();
        assert!(w.url.ends_with("/api/chat"));
        let ctx = ResponseCtx { id: "chatcmpl-gw1", created: 1_700_000_000, model: "fallback-model" };
        let mut d = StreamDecoder::new(ProviderKind::Ollama, ctx);
        let mut out = Vec::new();
        d.feed(include_bytes!("../tests/fixtures/ollama/stream_text.ndjson"), &mut out).unwrap();
        d.finish(&mut out).unwrap();
        assert_eq!(out.last(), Some(&StreamEvent::Done));
    }

    #[test]
    fn vertex_dispatches_by_model() {
        let opts = ProviderOptions { region: Some("us-east5".into()), project: Some("p".into()), ..ProviderOptions::default() };
        let ep = Endpoint {
            kind: ProviderKind::Vertex,
            base_url: "https://us-east5-aiplatform.googleapis.com",
            auth: Auth::Bearer("t"),
            options: &opts,
        };
        let r: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let w = build_chat(&ep, &r, "gemini-2.5-flash").unwrap();
        assert!(w.url.ends_with("/projects/p/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"), "{}", w.url);
        let w = build_chat(&ep, &r, "claude-sonnet-4@20250514").unwrap();
        assert!(
            w.url.ends_with("/projects/p/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"),
            "{}",
            w.url
        );
        let ctx = |model| ResponseCtx { id: "chatcmpl-gw1", created: 1, model };
        assert!(matches!(StreamDecoder::new(ProviderKind::Vertex, ctx("gemini-2.5-pro")), StreamDecoder::Gemini(_)));
        assert!(matches!(StreamDecoder::new(ProviderKind::Vertex, ctx("claude-haiku-4-5@20251001")), StreamDecoder::Anthropic(_)));
        assert!(matches!(StreamDecoder::new(ProviderKind::Gemini, ctx("x")), StreamDecoder::Gemini(_)));
        let e = parse_error(
            ProviderKind::Vertex,
            429,
            br#"{"error":{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(e.kind.as_deref(), Some("RESOURCE_EXHAUSTED"));
        let e = parse_error(ProviderKind::Vertex, 529, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
        assert_eq!(e.kind.as_deref(), Some("overloaded_error"));
    }

    #[test]
    fn authorize_signs_bedrock_requests_only() {
        let creds = AwsCredentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: "secret".into(), session_token: None };
        let opts = ProviderOptions { region: Some("eu-central-1".into()), ..ProviderOptions::default() };
        let ep = Endpoint { kind: ProviderKind::Bedrock, base_url: "http://127.0.0.1:9", auth: Auth::Aws(&creds), options: &opts };
        let r: ChatRequest = serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let mut w = build_chat(&ep, &r, "anthropic.claude-3-5-haiku-20241022-v1:0").unwrap();
        assert!(!w.headers.iter().any(|(n, _)| n == "authorization"));
        authorize(&ep, &mut w, 1_735_732_800).unwrap();
        let auth = w.headers.iter().find(|(n, _)| n == "authorization").map(|(_, v)| v.as_str()).unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/eu-central-1/bedrock/aws4_request, "), "{auth}");
        let headers: Vec<(String, String)> = w.headers.iter().cloned().chain([("host".to_string(), "127.0.0.1:9".to_string())]).collect();
        let rcv = crate::sigv4::Received {
            method: "POST",
            path: "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
            query: "",
            headers: &headers,
            body: &w.body,
        };
        assert!(crate::sigv4::verify(&rcv, "eu-central-1", "bedrock", 1_735_732_800, |_| Some("secret".into())).is_ok());
        let no_region = ProviderOptions::default();
        let ep2 = Endpoint { options: &no_region, ..ep };
        assert!(matches!(authorize(&ep2, &mut w, 0), Err(WireError::Unsupported { .. })));
        let ep3 = Endpoint { kind: ProviderKind::OpenAi, ..ep };
        assert!(matches!(authorize(&ep3, &mut w, 0), Err(WireError::Unsupported { .. })));
        // A Bedrock API key needs no signing.
        let ep4 = Endpoint { auth: Auth::Key("ABSK"), ..ep };
        let mut w = build_chat(&ep4, &r, "m").unwrap();
        authorize(&ep4, &mut w, 0).unwrap();
        assert!(w.headers.iter().any(|(n, v)| n == "authorization" && v == "Bearer ABSK"));
    }

    #[test]
    fn bedrock_errors_read_their_type_header() {
        assert_eq!(error_type_header(ProviderKind::Bedrock), Some("x-amzn-errortype"));
        assert_eq!(error_type_header(ProviderKind::OpenAi), None);
        let e = parse_error_typed(ProviderKind::Bedrock, 400, Some("ServiceQuotaExceededException:http://x/"), br#"{"message":"q"}"#);
        assert_eq!(e.code.as_deref(), Some("ServiceQuotaExceededException"));
        let e = parse_error_typed(ProviderKind::OpenAi, 400, Some("ignored"), br#"{"error":{"message":"m","code":"c"}}"#);
        assert_eq!(e.code.as_deref(), Some("c"));
    }
}
