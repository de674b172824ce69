//! What the gateway tells the outside world about the requests it served, beside its logs: the
//! Prometheus metrics of `GET /metrics` ([`metrics`]) and the traces exported over OTLP ([`trace`]).
//!
//! Both are fed by the one record every request leaves behind (`crate::observe`), so that a dashboard, a
//! trace and the request log describe a request the same way; neither does work on the request's path
//! beyond updating atomics or queueing.

pub mod metrics;
pub mod trace;
