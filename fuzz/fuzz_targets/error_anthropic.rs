#![no_main]
//! A non-2xx body from Anthropic (or a proxy in front of it).

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::response::error_anthropic(data));
