//! Inbound API shapes other than OpenAI Chat Completions: each module translates one client-facing API
//! to the canonical (Chat Completions-shaped) request and back, so that every provider serves every API
//! the gateway speaks without a codec per pair.

pub mod responses;
