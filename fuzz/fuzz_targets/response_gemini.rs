#![no_main]
//! A 2xx body from the Gemini API or Vertex AI: chat, embeddings (float and base64) and model-list parsers.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::response::gemini(data));
