//! Ollama native API codec (placeholder until the codec lands; every call refuses clearly).

use crate::codec::{Endpoint, ResponseCtx, StreamEvent, WireRequest};
use crate::error::WireError;
use crate::types::{ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse};

pub fn build_chat(_ep: &Endpoint<'_>, _req: &ChatRequest, _model: &str) -> Result<WireRequest, WireError> {
    Err(WireError::unsupported("ollama codec not built yet", None))
}

pub fn parse_chat(_body: &[u8], _ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    Err(WireError::malformed("response", "ollama codec not built yet"))
}

pub fn build_embeddings(_ep: &Endpoint<'_>, _req: &EmbeddingsRequest, _model: &str) -> Result<WireRequest, WireError> {
    Err(WireError::unsupported("ollama codec not built yet", None))
}

pub fn parse_embeddings(_body: &[u8], _ctx: ResponseCtx<'_>) -> Result<EmbeddingsResponse, WireError> {
    Err(WireError::malformed("response", "ollama codec not built yet"))
}

pub fn build_list_models(ep: &Endpoint<'_>) -> WireRequest {
    WireRequest::get(format!("{}/api/tags", ep.base_url))
}

pub fn parse_models(_body: &[u8]) -> Result<Vec<String>, WireError> {
    Ok(Vec::new())
}

#[derive(Debug)]
pub struct StreamDecoder {}

impl StreamDecoder {
    pub fn new(_ctx: ResponseCtx<'_>) -> Self {
        StreamDecoder {}
    }
    pub fn feed(&mut self, _bytes: &[u8], _out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        Err(WireError::malformed("stream", "ollama codec not built yet"))
    }
    pub fn finish(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        Ok(())
    }
}
