//! Client-facing API shapes other than OpenAI Chat Completions, each translated onto the canonical chat
//! request and back, so that every provider serves every API the gateway speaks. Pure translation: the
//! server's handlers decode the body into these types, hand the canonical request to the engine, and
//! render the answer with the encoders here.

pub mod completions;
pub mod responses;
