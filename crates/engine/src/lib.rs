//! Switchyard's engine: everything between a decoded request and an upstream answer.
//!
//! The request path, stage by stage (the server does 1 and 7, the engine the rest):
//!
//! 1. **Accept** (server): decode the body into the canonical request; reject bad input with an
//!    OpenAI-shaped 400/413; attach a [`RequestCtx`].
//! 2. **Identify**: the caller's virtual key and policy (a later issue).
//! 3. **Plan** ([`Gateway::plan`]): `provider/model` or a bare name, plus the request's `fallbacks` and the
//!    config's `routes[].fallbacks`, become an ordered list of targets.
//! 4. **Admit**: budgets and rate limits (a later issue).
//! 5. **Look up**: cache (a later issue).
//! 6. **Execute** ([`Gateway::chat`]): targets ordered by [`health`] (never dropped: a lone provider is
//!    always tried), per target a weighted key choice ([`keys`]), image inlining where a provider needs
//!    bytes ([`images`]), the pure codec builds the request, [`upstream`] sends it with connect / first-byte
//!    / idle / total timeouts and classifies the outcome, and [`retry`] decides what comes next. Streams
//!    commit to a target at their first chunk.
//! 7. **Respond** (server): translate to the caller's API shape; stream chunk by chunk.
//! 8. **Account**: usage settled ([`account`]); the request's record (`observe`) goes to the request log
//!    and the metrics ([`telemetry`]).

pub mod account;
pub mod batch;
pub mod config;
pub mod ctx;
pub mod error;
mod executor;
pub mod gateway;
mod google;
pub mod governance;
pub mod health;
pub mod human;
pub mod images;
pub mod keys;
pub mod observe;
pub mod plan;
pub mod pool;
pub mod pricing;
pub mod providers;
pub mod reqlog;
pub mod retry;
pub mod scrub;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use ctx::{RequestCtx, Served};
pub use error::{Attempt, FailureClass, GatewayError};
pub use gateway::{ChatOutcome, Gateway};
pub use plan::Via;
pub use pool::ProviderHealthView;
pub use upstream::{ChatStream, StreamItem};
