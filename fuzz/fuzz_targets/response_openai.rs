#![no_main]
//! A 2xx body from an OpenAI-compatible upstream: chat, embeddings and model-list parsers.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::response::openai(data));
