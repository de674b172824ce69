#![no_main]
//! Arbitrary bytes as an AWS event-stream body, cut several ways: the same messages every way, and each
//! accepted message re-encodes to its own bytes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::eventstream::check(data);
});
