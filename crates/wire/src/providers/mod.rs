//! One module per provider wire format. OpenAI-compatible services share `openai` with small quirks.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod cohere;
pub mod gemini;
pub mod ollama;
pub mod openai;
