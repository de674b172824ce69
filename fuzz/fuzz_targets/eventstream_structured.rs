#![no_main]
//! Event-stream messages built from the fuzzer's choices: what we encode decodes back, however it is cut.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    if let Ok(messages) = switchyard_fuzz::eventstream::messages(&mut u) {
        switchyard_fuzz::eventstream::round_trip(&messages);
    }
});
