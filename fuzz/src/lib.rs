//! The checks behind Switchyard's fuzz targets, kept out of the target files so every target is one line
//! and the checks can be read (and reused) in one place.
//!
//! Every target feeds bytes a hostile client or upstream could send to a pure function of
//! `switchyard-wire` and asserts more than "no panic" where it is cheap: a stream decoder yields the same
//! events however its input is split, a decoded request survives a round trip and builds an upstream body
//! that is valid JSON without duplicate keys, every error has a message, and so on. A failed assertion is a
//! panic, which libFuzzer reports as a crash with the input that caused it.

pub mod eventstream;
pub mod gen;
pub mod json;
pub mod request;
pub mod response;
pub mod split;
pub mod stream;

use std::fmt::Display;

/// Unwraps a result that the checked property says must be `Ok`; the panic message names the property.
pub(crate) fn must<T, E: Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}
