#![no_main]
//! Arbitrary bytes as a Bedrock ConverseStream body (event-stream frames of JSON events), cut several ways:
//! the same events every way.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    switchyard_fuzz::stream::decode_every_way(switchyard_wire::ProviderKind::Bedrock, data);
});
