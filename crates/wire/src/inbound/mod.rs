//! Inbound API shapes: what a client speaking another provider's API sends to the gateway, translated to
//! the canonical request, and the canonical answer translated back into that API's responses, streams and
//! errors.
//!
//! It exists so the gateway can be a drop-in base URL for clients built on other SDKs (the Anthropic SDK,
//! Claude Code, ...) whatever provider ends up serving the model: the engine only ever sees canonical
//! types, and each module here owns one client-facing API, pure like the outbound codecs.

pub mod anthropic;
