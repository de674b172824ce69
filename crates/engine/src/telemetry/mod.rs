//! What the gateway tells the outside about the requests it served: traces (OTLP) built from each
//! finished request's record (see `observe`).

pub mod trace;
