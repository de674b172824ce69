//! Azure OpenAI: OpenAI's bodies and streams, with Azure's paths (deployments and `api-version`) and its
//! `api-key` header. Responses are parsed by the OpenAI codec, which already drops Azure's filter annotations.

use crate::error::WireError;
use crate::providers::openai::{embeddings_body, ChatBody};
use crate::spec::{Endpoint, WireRequest};
use crate::types::{ChatRequest, EmbeddingsRequest};

/// Latest GA inference API version at the time of writing.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

fn url(ep: &Endpoint<'_>, model: &str, op: &str) -> String {
    let version = ep.options.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION);
    if version == "v1" {
        return format!("{}/openai/v1/{op}", ep.base_url);
    }
    let deployment = ep.options.deployments.get(model).map(String::as_str).unwrap_or(model);
    format!("{}/openai/deployments/{}/{op}?api-version={}", ep.base_url, encode_segment(deployment), encode_segment(version))
}

/// Percent-encodes a path segment (deployment names are usually plain, but a model name may hold `/` or `:`).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn with_key(mut r: WireRequest, ep: &Endpoint<'_>) -> WireRequest {
    if let Some(k) = ep.api_key() {
        r = r.header("api-key", k);
    }
    r.with_extra_headers(ep)
}

fn body_model<'a>(ep: &'a Endpoint<'_>, model: &'a str) -> &'a str {
    // The v1 API routes on the body's model, which must be the deployment name.
    ep.options.deployments.get(model).map(String::as_str).unwrap_or(model)
}

pub fn build_chat(ep: &Endpoint<'_>, req: &ChatRequest, model: &str) -> Result<WireRequest, WireError> {
    let body = ChatBody::new(ep.kind, req, body_model(ep, model)).to_vec()?;
    Ok(with_key(WireRequest::post_json(url(ep, model, "chat/completions"), body), ep))
}

pub fn build_embeddings(ep: &Endpoint<'_>, req: &EmbeddingsRequest, model: &str) -> Result<WireRequest, WireError> {
    let body = embeddings_body(req, body_model(ep, model))?;
    Ok(with_key(WireRequest::post_json(url(ep, model, "embeddings"), body), ep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ProviderKind, ProviderOptions};

    #[test]
    fn deployment_urls_and_api_key() {
        let mut opts = ProviderOptions::default();
        opts.deployments.insert("gpt-4o-mini".into(), "prod-mini".into());
        let ep = Endpoint {
            kind: ProviderKind::Azure,
            base_url: "https://r.openai.azure.com",
            auth: crate::spec::Auth::Key("k1"),
            options: &opts,
        };
        let req: ChatRequest =
            serde_json::from_str(r#"{"model":"azure/gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let r = build_chat(&ep, &req, "gpt-4o-mini").unwrap();
        assert_eq!(r.url, "https://r.openai.azure.com/openai/deployments/prod-mini/chat/completions?api-version=2024-10-21");
        assert!(r.headers.contains(&("api-key".into(), "k1".into())));
        assert!(!r.headers.iter().any(|(k, _)| k == "authorization"));
        let r = build_chat(&ep, &req, "my model:1").unwrap();
        assert!(r.url.contains("/deployments/my%20model%3A1/"));
        let mut v1 = opts.clone();
        v1.api_version = Some("v1".into());
        let ep = Endpoint { options: &v1, ..ep };
        let r = build_chat(&ep, &req, "gpt-4o-mini").unwrap();
        assert_eq!(r.url, "https://r.openai.azure.com/openai/v1/chat/completions");
        let b: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(b["model"], "prod-mini");
    }
}
