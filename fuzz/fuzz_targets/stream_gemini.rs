#![no_main]
//! Arbitrary bytes as a Gemini `alt=sse` stream, cut several ways: the same events every way.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::stream::decode_every_way(switchyard_wire::ProviderKind::Gemini, data);
});
