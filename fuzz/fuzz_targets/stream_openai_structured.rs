#![no_main]
//! A valid OpenAI stream built from the input, framed every allowed way: decoded exactly.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::gen::openai(data));
