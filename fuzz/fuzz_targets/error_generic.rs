#![no_main]
//! A non-2xx body from OpenAI, Azure, Ollama or any compatible server (or a proxy in front of one).

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::response::error_generic(data));
