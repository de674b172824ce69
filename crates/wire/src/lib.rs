//! Switchyard's translation layer: canonical (OpenAI-shaped) types, one codec per provider, stateful stream
//! decoders, and the client-facing stream encoder.
//!
//! This crate does no I/O and knows nothing of tokio, HTTP clients or servers. Every function takes bytes or
//! typed values and returns bytes or typed values, so translation can be unit-tested, fuzzed and benchmarked
//! on its own, and the engine never has to know what a provider's JSON looks like.

pub mod codec;
pub mod error;
pub mod eventstream;
pub mod google_auth;
pub mod image;
pub mod inbound;
pub mod kind;
pub mod outbound;
pub mod providers;
pub mod sigv4;
pub mod spec;
pub mod sse;
pub mod types;

pub use codec::StreamDecoder;
pub use error::{UpstreamError, WireError};
pub use spec::{Auth, AwsCredentials, Endpoint, Family, Method, ProviderKind, ProviderOptions, ResponseCtx, StreamEvent, WireRequest};
