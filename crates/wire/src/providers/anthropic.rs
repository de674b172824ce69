//! Anthropic Messages API codec (placeholder until the codec lands; every call refuses clearly).

use crate::codec::{Endpoint, ResponseCtx, StreamEvent, WireRequest};
use crate::error::{UpstreamError, WireError};
use crate::types::{ChatRequest, ChatResponse};

pub const DEFAULT_VERSION: &str = "2023-06-01";
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub fn build_chat(_ep: &Endpoint<'_>, _req: &ChatRequest, _model: &str) -> Result<WireRequest, WireError> {
    Err(WireError::unsupported("anthropic codec not built yet", None))
}

pub fn parse_chat(_body: &[u8], _ctx: ResponseCtx<'_>) -> Result<ChatResponse, WireError> {
    Err(WireError::malformed("response", "anthropic codec not built yet"))
}

pub fn parse_error(status: u16, body: &[u8]) -> UpstreamError {
    UpstreamError::from_body(status, body)
}

pub fn build_list_models(ep: &Endpoint<'_>) -> WireRequest {
    WireRequest::get(format!("{}/v1/models", ep.base_url))
}

#[derive(Debug)]
pub struct StreamDecoder {}

impl StreamDecoder {
    pub fn new(_ctx: ResponseCtx<'_>) -> Self {
        StreamDecoder {}
    }
    pub fn feed(&mut self, _bytes: &[u8], _out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        Err(WireError::malformed("stream", "anthropic codec not built yet"))
    }
    pub fn finish(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), WireError> {
        Ok(())
    }
}
