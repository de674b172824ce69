#![no_main]
//! A 2xx body from Anthropic: the Messages parser and the model-list parser.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::response::anthropic(data));
