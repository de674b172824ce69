#![no_main]
//! A non-2xx body from the Gemini API or Vertex AI (or a proxy in front of them).

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard_fuzz::response::error_gemini(data));
