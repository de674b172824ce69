#![no_main]
//! The body of `POST /v1/chat/completions`: decoded both ways the server does, round-tripped, and built for every provider.

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::request::chat(data));
