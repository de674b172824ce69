//! Client-facing API shapes other than OpenAI Chat Completions (the Anthropic Messages API, the Responses
//! API, legacy Completions, the Google GenAI API at `/genai`, ...), each translated onto the canonical chat
//! request and back, so the gateway is a drop-in base URL for clients built on any of those SDKs whatever
//! provider serves the model. Pure translation: the server's handlers decode the body into these types, hand
//! the canonical request to the engine, and render the answer, stream and errors with the encoders here.

pub mod anthropic;
pub mod bedrock;
pub mod completions;
pub mod genai;
pub mod responses;
