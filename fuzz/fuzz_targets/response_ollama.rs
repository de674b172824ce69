#![no_main]
//! A 2xx body from Ollama's native API: chat, embeddings (float and base64) and model-list parsers.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::response::ollama(data));
