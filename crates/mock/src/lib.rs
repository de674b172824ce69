//! Mock upstream servers for the OpenAI, Azure OpenAI, Anthropic, Ollama (native), Cohere (v2), Gemini
//! (Gemini API and Vertex AI) and AWS Bedrock wire formats.
//!
//! Why this crate exists: Switchyard's conformance suite, its fault-injection tests, `switchyard serve --demo`
//! and `switchyard mock` all need upstreams that speak each provider's exact wire format (paths, headers,
//! JSON shapes, stream framing, error bodies), answer deterministically, and fail on command. The mocks are
//! strict like the real servers, so a gateway translation bug shows up as a 400 instead of a silent pass.
//! Nothing in the production request path may depend on this crate.
//!
//! # Using it
//! [`MockServer::start`] binds a port (0 allowed) and serves one flavour; [`router`] gives the bare
//! [`axum::Router`] plus a [`MockHandle`] for in-process use. Every flavour also answers these admin routes
//! (not counted, not recorded): `GET /mock/stats`, `GET /mock/requests` (the last 200),
//! `POST /mock/reset`, `GET /mock/behavior`, `PUT /mock/behavior` (a [`Behavior`] JSON replaces the
//! current one).
//!
//! # Deterministic replies (the contract tests rely on)
//! The flavour's request is parsed into a neutral conversation, then:
//! 0. **Context window**: if a context window is set ([`Behavior::context_window`], model suffix
//!    `+context=N`, header `x-mock-context-window`) and the prompt tokens (rule 7's count) exceed it, the
//!    answer is the flavour's context-length error (the one `[[context]]` gives, naming that window and
//!    the real count). This comes before everything below, tool results and directives included, so one
//!    mock can be a small-context model and another a big one for the same prompt. Chat only: embeddings
//!    and Anthropic's token counting are not checked.
//! 1. **Tool results**: if the trailing message(s) carry tool results (OpenAI/Ollama role `tool`, Anthropic
//!    user `tool_result` blocks) the reply is `tool results: ` + their contents joined with ` | `.
//! 2. Otherwise the last user message's text parts are joined with a single space and scanned for
//!    directives, in this order of precedence:
//!    - `[[error:STATUS]]`: answer that HTTP status with the flavour's error body (404 is model-not-found).
//!    - `[[quota]]`: the flavour's out-of-quota error (see "Exhausted quota" below).
//!    - `[[context]]`: the flavour's context-length error (400).
//!    - `[[filter]]`: empty content, finish `content_filter` (Anthropic `refusal`, Ollama `stop`, Cohere
//!      `COMPLETE`: Cohere has no filter finish).
//!    - `[[tool:NAME {json}]]` (one or more): those tool calls in order, arguments exactly the JSON given
//!      (`{}` when absent), no text, finish `tool_calls` (Anthropic `tool_use`, Ollama `stop`, Cohere
//!      `TOOL_CALL`). Ids are `call_` / `toolu_` + 24 alphanumerics (Cohere: the tool's name, `_` and 12
//!      lower-case alphanumerics) derived from a hash of the request's `messages` and the call index.
//!      Cohere's reply also carries the `tool_plan` `I will call NAME, NAME.` (streamed as
//!      `tool-plan-delta`s split like text).
//!    - otherwise `echo: ` + the text, then for each image of that message
//!      ` [image MEDIA_TYPE BYTES bytes sha256=FIRST16HEX]` (hash of the decoded bytes) or
//!      ` [image-url URL]` for an http(s) URL (OpenAI, Azure, Anthropic `url` source, Cohere); for each
//!      Anthropic `document` block ` [document MEDIA_TYPE BYTES bytes sha256=FIRST16HEX]` (a base64 PDF's
//!      decoded bytes, a text source's UTF-8; URL, `content` and `file` sources are noted as
//!      `(url) 0 bytes` and so on; a base64 document must be `application/pdf` and start with `%PDF-`);
//!      then for each of Cohere's request `documents` ` [document TITLE BYTES bytes sha256=FIRST16HEX]`
//!      (TITLE `untitled` when the document has none; the hash is of its text).
//! 3. **Forced tools**: if tools were given, tool_choice forces a call (OpenAI `required` or named,
//!    Anthropic `any`/`tool`, Cohere `REQUIRED`) and nothing above produced calls, the named (or first)
//!    tool is called. Its arguments are the smallest value its parameter schema (OpenAI
//!    `function.parameters`, Anthropic `input_schema`) accepts, built from the user text X: only the
//!    required properties of an object, strings X (an `enum`'s or `const`'s first value), numbers and
//!    integers the count of X's words, booleans `true`, arrays empty, `anyOf`/`oneOf` their first branch,
//!    `$ref`s to `#/$defs/…` followed. A tool without required parameters is called with `{}`.
//! 4. **JSON mode** (OpenAI/Azure `response_format` json_object/json_schema, Ollama `format`, Anthropic
//!    `output_config.format`, Cohere `response_format` json_object): the text becomes `{"echo":"<X>"}`
//!    where X is the user text for the echo case, or the whole reply otherwise.
//! 5. **Stop sequences** cut the reply before the earliest match (finish `stop`, Anthropic `stop_sequence`);
//!    then **max tokens** keeps the first N words of the reply split on single spaces (finish `length`,
//!    Anthropic `max_tokens`, Ollama `length`; Cohere `STOP_SEQUENCE` and `MAX_TOKENS`).
//! 6. `n` (OpenAI/Azure) gives n identical choices.
//! 7. **Usage**: prompt tokens = whitespace-separated words of every message text (tool results included)
//!    plus the system prompt; completion tokens = words of the reply, or 5 per tool call, times `n`.
//!    `[[cached:N]]` anywhere in the message text reports N cached tokens (OpenAI
//!    `prompt_tokens_details.cached_tokens`; Anthropic `cache_read_input_tokens`, with
//!    `input_tokens = total - N`; Cohere `usage.cached_tokens`). Cohere reports these counts as
//!    `billed_units` and adds 7 template tokens to the prompt count in `tokens`, as the real API's `tokens`
//!    count its chat template.
//! 8. **Streams** split the text after each space (`"echo: "`, `"hello "`, ...) and tool arguments into
//!    fragments of at most 8 characters. `stream` defaults to false, except Ollama native (true). Cohere's
//!    in-stream error (`stream_error`, `late_stream_error`) is a `message-end` with `finish_reason`
//!    `ERROR` and `delta.error`, the way its API reports a generation that failed.
//!    Gemini, as Google does, sends tool calls whole in one frame and the last text piece with the
//!    `finishReason` and the final `usageMetadata`; it is a stream by route (`:streamGenerateContent`).
//!
//! Gemini's words for the above: tool results are `functionResponse` parts (a `response` object of one
//! string value reads as that string, any other as its JSON), finish `STOP` (also for tool calls),
//! `MAX_TOKENS`, `SAFETY` (no content); JSON mode is `responseMimeType: application/json`, `n` is
//! `candidateCount`, cached tokens are `cachedContentTokenCount`; calls carry no ids (Gemini 2.5 sends
//! none) and Gemini 3 models sign the first call of a turn.
//!
//! # Faults and knobs
//! [`Behavior`] holds the knobs. Per request they can be overridden by headers (`x-mock-latency-ms`,
//! `x-mock-jitter-ms`, `x-mock-ttft-ms`, `x-mock-chunk-delay-ms`, `x-mock-fault-rate`, `x-mock-fault-codes` (comma list),
//! `x-mock-fault-kind`, `x-mock-retry-after`, `x-mock-context-window`, `x-mock-echo-key`,
//! `x-mock-endless-line`, `x-mock-huge-body`, `x-mock-stall-after`, `x-mock-trickle-ms`) and, stronger
//! still, by a model-name suffix such as `gpt-4o-mini+fault=1+code=529` (keys `fault`, `code`/`codes`,
//! `kind`, `latency`, `jitter`, `ttft`, `chunk_delay`, `retry_after`, `context`, `echo_key`,
//! `endless_line`, `huge_body`, `stall_after`, `trickle`; for Azure in the deployment path segment). The suffix is stripped before the model is echoed, checked or counted; a name whose `+`
//! segments are not all `key=value` is left alone. A request that names a fault code or kind but no rate
//! fails every time. A status fault answers the flavour's error body for that status; `retry-after` /
//! `retry-after-ms` go on 429/503/529 answers (not the quota 429) when `retry_after_secs` (or
//! `retry_after`) is set, and a 429's rate-limit headers name the same wait.
//!
//! # Misbehaving upstreams
//! Knobs for the hostile-upstream tests, each in the flavour's own paths, headers and error shapes:
//! - `echo_key` (`masked` or `bearer`): a careless upstream that quotes the presented key. Every error
//!   message the flavour renders (error bodies and in-stream error events) ends with
//!   ` (request key: X)`, X being OpenAI's mask (first 8 characters, `*` for the middle, last 4) or
//!   `Bearer KEY` verbatim. OpenAI's and Azure's 401 say `Incorrect API key provided: X.` instead, as
//!   OpenAI does; OpenAI's 401 quotes the masked key even without the knob, as OpenAI does.
//! - fault kind `late_stream_error`: the stream's frames up to its first content, then the in-stream
//!   error event (an error after the stream began; `stream_error` sends it first).
//! - `endless_line_bytes`: a stream's frames up to its first content, then a `data: {…` line (NDJSON: a
//!   `{…` line) of that many more bytes that never ends; then the body ends.
//! - `huge_body_bytes`: non-stream JSON answers padded with whitespace before their last `}` to that
//!   many bytes (the same JSON), sent in 64 KiB pieces with no `content-length`.
//! - `stall_after_bytes`: the body stops after that many bytes until the client leaves.
//! - `trickle_ms`: the body goes out one byte at a time, that pause before each byte.
//!
//! A non-stream body shaped by the last three is delivered only at its end: a client that leaves before
//! counts in `cancelled`, as a stream does.
//!
//! # Rate-limit headers
//! The mock enforces no limit, but reports one as each provider does, on the responses the provider sends
//! them on: served inference answers (chat and embeddings, streams and body faults included; Anthropic:
//! messages) and every 429 but the quota one. Other errors, model lists and Anthropic's token counting
//! carry none.
//! - OpenAI: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for 10,000 requests and 30,000,000
//!   tokens a minute; a reset is a Go duration (`6ms`, `1s`, `1m30s`): the time until the limit is full.
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
//!   for 4,000 requests, 2,000,000 input and 400,000 output tokens a minute (`tokens-*` repeats the tighter
//!   token limit); a reset is an RFC 3339 time in whole seconds.
//! - Azure: only `x-ratelimit-remaining-requests` (of 100 per 10-second window) and
//!   `x-ratelimit-remaining-tokens` (of 100,000 a minute); no limit or reset headers.
//! - Ollama and Gemini: none (a Gemini 429 names its wait in a `RetryInfo` detail instead).
//! - Cohere: none (it documents no rate-limit headers); every answer carries an `x-debug-trace-id`.
//! - Bedrock: none (AWS documents no rate-limit headers for Bedrock Runtime).
//!
//! An answer uses one request and its estimated tokens (one per 4 bytes of body, plus `max_tokens` or
//! `max_completion_tokens`); limits refill continuously, so a reset is `used / limit` of a minute away. A
//! 429 reports the limit its message names as used up (OpenAI and Anthropic: requests; Azure: tokens) with
//! `remaining` 0 and a reset `retry_after_secs` away (1 s when unset: the wait the message names), so a
//! client reading `retry-after` or the reset waits the same; the other limits read full, since the refused
//! request used none of them.
//!
//! # Exhausted quota
//! A key in [`Behavior::quota_exhausted_keys`] (on every route, checked right after `key_status`, which
//! wins for a key named in both) or a `[[quota]]` directive (chat) gets the provider's "out of quota /
//! credit" answer. It is not
//! a rate limit, so it carries no `retry-after`, `retry-after-ms` or rate-limit headers.
//! - OpenAI and Azure: 429 `{"error":{"message":"You exceeded your current quota, please check your plan
//!   and billing details. For more information on this error, read the docs:
//!   https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota",
//!   "param":null,"code":"insufficient_quota"}}` (Azure with its usual headers).
//! - Anthropic: 400 `invalid_request_error` "Your credit balance is too low to access the Anthropic API.
//!   Please go to Plans & Billing to upgrade or purchase credits.", with the usual `request-id` header and
//!   body `request_id`.
//! - Cohere: 402 `{"id":…,"message":"Please add or update your payment method at
//!   https://dashboard.cohere.com/billing to continue"}` (Cohere documents 402 for billing; the wording is
//!   the mock's).
//! - Ollama: Ollama Cloud's plan-usage limit, 429 `{"error":"you (switchyard-mock) have reached your
//!   weekly usage limit, upgrade for higher limits: https://ollama.com/upgrade"}` (Ollama documents the 429
//!   and the `error` shape; the wording is the one its cloud API is seen to send).
//! - Bedrock: 400 `ServiceQuotaExceededException` (the `x-amzn-ErrorType` header, body `{"message":…}`).
//!
//! # Cancellation
//! [`Stats::cancelled`] counts the requests whose answer was not delivered to its end because the client
//! went away: the request's handling was dropped before it produced a response (during `latency_ms`, a
//! `hang` or `slow_first_byte` fault, ...), or a stream's body was dropped before its last frame was sent
//! (during `ttft_ms` or `chunk_delay_ms`, say). Answers delivered in full never count, nor does a `reset`
//! fault (the mock ends those on purpose), nor a `hang` cut short by shutdown (it is answered 503).
//! Non-stream answers go out in one piece once produced, so for them only the first case applies (unless
//! a huge, stalled or trickled body was asked for; see "Misbehaving upstreams"). A test
//! proves from the mock's side that a connection was closed (a hedge loser cancelled, a client's
//! disconnect passed upstream) with [`MockServer::wait_for`], which polls the counters every 10 ms until a
//! condition holds or a timeout passes: `m.wait_for(|s| s.cancelled == 1, Duration::from_secs(2)).await`.
//!
//! # Order of handling (every flavour)
//! 1. Admin routes (`/mock/...`) are answered at once.
//! 2. The request is counted (`requests`, `by_path`, `by_key` for any key header, `by_model` with the
//!    suffix stripped) and recorded, then `latency_ms` is slept. From here until its response is produced
//!    (and, for a stream, until its last frame is sent) a client that goes away counts in `cancelled`.
//! 3. `key_status` for the presented key answers before anything else, then `quota_exhausted_keys`.
//! 4. Unknown route: the flavour's 404 (Azure deployments without `api-version` too); wrong method: 405.
//! 5. Authentication as the real service reads it (OpenAI, Ollama and Cohere: `Authorization: Bearer`; Azure:
//!    `api-key` or Bearer; Anthropic: `x-api-key` or Bearer, plus a required `anthropic-version`;
//!    Bedrock: a SigV4 signature checked against the test credentials, or a Bedrock API key as Bearer).
//!    A missing key is a 401 (Ollama needs none; Bedrock answers 403, as AWS does), and `require_key`
//!    turns every other key into a 401 (Bedrock: 403).
//!    Gemini answers as Google does: the Gemini API reads `x-goog-api-key` or `?key=` (missing: 403
//!    `PERMISSION_DENIED`; wrong: 400 `API_KEY_INVALID`), Vertex paths a Bearer token (401 `UNAUTHENTICATED`).
//!    The Gemini mock's `POST /token` answers a service account's JWT-bearer grant as Google's token
//!    endpoint does ([`MockHandle::issued_tokens`] lists what it issued); a Vertex path refuses a
//!    `ya29.mock-` token it did not issue.
//! 6. A fault is drawn ([`Stats::faults`] counts it): status faults answer now, `hang` waits until the
//!    client leaves or the mock shuts down, `slow_first_byte` sleeps 30 s, and `reset`, `malformed`,
//!    `stream_error` are applied to the body.
//! 7. The body is validated as strictly as the real service does, the model (Azure: the deployment) must
//!    be one of [`MockConfig::models`] (an empty list accepts any), and the reply is decided (the context
//!    window first, for chat) and rendered.
//!
//! # Module layout
//! Imports run one way, so no two modules import each other: `knobs` (what a request asked for) is
//! imported by `common` (request context, neutral errors, helpers), which `behaviour`, `faults` and
//! `ratelimit` build on; the flavours (`openai`, `anthropic`, `ollama`, `cohere`, and `azure`, which reuses
//! `openai`'s renderers through its `Dialect`) import those; this file dispatches to the flavours.

mod anthropic;
mod azure;
mod bedrock;
mod behaviour;
mod cohere;
mod common;
mod faults;
mod gemini;
mod knobs;
mod ollama;
mod openai;
mod ratelimit;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

pub use crate::bedrock::{ACCESS_KEY_ID as BEDROCK_ACCESS_KEY_ID, SECRET_ACCESS_KEY as BEDROCK_SECRET_ACCESS_KEY};
use crate::common::{ApiError, Ctx};
use crate::faults::CancelGuard;

/// How often [`MockHandle::wait_for`] looks at the counters.
const WAIT_POLL: Duration = Duration::from_millis(10);
/// How many recorded requests are kept (oldest dropped first).
const MAX_RECORDED: usize = 200;
/// Largest request body accepted (Anthropic's documented Messages limit); larger bodies get a 413.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The wire format a mock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// OpenAI Chat Completions, Embeddings and Models, under any path prefix.
    OpenAi,
    /// Azure OpenAI: deployment routes with `api-version`, plus the `/openai/v1` routes.
    Azure,
    /// Anthropic Messages API.
    Anthropic,
    /// Ollama's native `/api/*` API.
    Ollama,
    /// Cohere's v2 API: `/v2/chat`, `/v2/embed` and `/v1/models`.
    Cohere,
    /// Google Gemini: the Gemini API's `/v1beta/models/…` and Vertex AI's
    /// `/v1/projects/…/publishers/google/models/…` paths (and Claude's `…/publishers/anthropic/…`).
    Gemini,
    /// AWS Bedrock Runtime: Converse, ConverseStream (event-stream framing) and InvokeModel for
    /// embeddings, authenticated by SigV4 (the test credentials in `bedrock`) or a Bedrock API key.
    Bedrock,
}

impl Flavor {
    /// Parses `openai`, `azure`, `anthropic`, `ollama`, `cohere`, `gemini` or `bedrock` (ASCII
    /// case-insensitive; `vertex` is `gemini`, whose mock serves both path styles).
    pub fn parse(s: &str) -> Option<Flavor> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Some(Flavor::OpenAi),
            "azure" => Some(Flavor::Azure),
            "anthropic" => Some(Flavor::Anthropic),
            "ollama" => Some(Flavor::Ollama),
            "cohere" => Some(Flavor::Cohere),
            "gemini" | "vertex" => Some(Flavor::Gemini),
            "bedrock" => Some(Flavor::Bedrock),
            _ => None,
        }
    }

    /// The name [`Flavor::parse`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::OpenAi => "openai",
            Flavor::Azure => "azure",
            Flavor::Anthropic => "anthropic",
            Flavor::Ollama => "ollama",
            Flavor::Cohere => "cohere",
            Flavor::Gemini => "gemini",
            Flavor::Bedrock => "bedrock",
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runtime-changeable knobs of a mock (replace them with [`MockHandle::set_behavior`] or `PUT /mock/behavior`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Behavior {
    /// Delay before the response headers (streams too).
    pub latency_ms: u64,
    /// `latency_ms` varies uniformly by up to this much either way (model suffix `+jitter=`).
    pub latency_jitter_ms: u64,
    /// Streams: delay between the headers and the first chunk.
    pub ttft_ms: u64,
    /// Streams: delay between chunks.
    pub chunk_delay_ms: u64,
    /// Share (0..1) of requests that fail with a fault.
    pub fault_rate: f64,
    /// Status codes a status fault is drawn from; empty means `[500]`.
    pub fault_codes: Vec<u16>,
    /// A non-status fault applied at `fault_rate` instead of a status code.
    pub fault_kind: Option<FaultKind>,
    /// `Retry-After` value (seconds) on 429/503/529 answers, and the reset of a 429's used-up rate limit
    /// (which is 1 s away when this is unset).
    pub retry_after_secs: Option<u64>,
    /// API key value -> status always answered for that key, with the flavour's error body.
    pub key_status: BTreeMap<String, u16>,
    /// The model's context window in tokens (model suffix `+context=`, header `x-mock-context-window`): a
    /// chat prompt of more tokens (by the mock's prompt-token rule) gets the flavour's context-length
    /// error. `None`: no limit.
    pub context_window: Option<u64>,
    /// API key values whose account is out of quota or credit: such a key gets the provider's quota error
    /// (as the `[[quota]]` directive does). A key also in `key_status` gets its `key_status` answer.
    pub quota_exhausted_keys: BTreeSet<String>,
    /// A careless upstream that quotes the presented key in its error messages (model suffix
    /// `+echo_key=`, header `x-mock-echo-key`); see "Misbehaving upstreams".
    pub echo_key: Option<KeyEcho>,
    /// Streams: after the first content frame, a line of this many bytes that never ends, then the body
    /// ends (suffix `+endless_line=`, header `x-mock-endless-line`).
    pub endless_line_bytes: Option<u64>,
    /// Non-stream JSON answers are padded with whitespace (still valid JSON) to this many bytes, sent in
    /// 64 KiB pieces without a `content-length` (suffix `+huge_body=`, header `x-mock-huge-body`).
    pub huge_body_bytes: Option<u64>,
    /// The body (stream or not) stops after this many bytes and sends nothing more until the client goes
    /// away or the mock shuts down (suffix `+stall_after=`, header `x-mock-stall-after`).
    pub stall_after_bytes: Option<u64>,
    /// The body (stream or not) goes out one byte at a time, this many milliseconds before each byte; 0 is
    /// off (suffix `+trickle=`, header `x-mock-trickle-ms`).
    pub trickle_ms: u64,
}

/// How [`Behavior::echo_key`] quotes the key.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyEcho {
    /// OpenAI's mask: the first 8 characters, `*` for the middle, the last 4.
    Masked,
    /// The whole key after `Bearer `, as a proxy echoing the `Authorization` header does.
    Bearer,
}

impl KeyEcho {
    /// Parses `masked` or `bearer` (ASCII case-insensitive; `verbatim` is `bearer`).
    pub fn parse(s: &str) -> Option<KeyEcho> {
        match s.trim().to_ascii_lowercase().as_str() {
            "masked" | "mask" => Some(KeyEcho::Masked),
            "bearer" | "verbatim" => Some(KeyEcho::Bearer),
            _ => None,
        }
    }
}

/// A fault that is not just an error status.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Never answer (until the client goes away or the mock shuts down).
    Hang,
    /// Sleep 30 s before the response headers, then answer normally.
    SlowFirstByte,
    /// Streams: two content chunks, then the connection is aborted. Otherwise: abort mid-body.
    Reset,
    /// 200 with a body that is not valid JSON (streams: a broken data line after one good chunk).
    Malformed,
    /// 200 stream whose first event is the flavour's in-stream error event; non-stream: 500.
    StreamError,
    /// 200 stream that sends its opening frames up to the first content, then the flavour's in-stream
    /// error event (an error after the stream has begun); non-stream: 500.
    LateStreamError,
}

impl FaultKind {
    /// Parses the snake_case name (`hang`, `slow_first_byte`, `reset`, `malformed`, `stream_error`).
    pub fn parse(s: &str) -> Option<FaultKind> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "hang" => Some(FaultKind::Hang),
            "slow_first_byte" | "slow" => Some(FaultKind::SlowFirstByte),
            "reset" => Some(FaultKind::Reset),
            "malformed" => Some(FaultKind::Malformed),
            "stream_error" => Some(FaultKind::StreamError),
            "late_stream_error" => Some(FaultKind::LateStreamError),
            _ => None,
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Hang => "hang",
            FaultKind::SlowFirstByte => "slow_first_byte",
            FaultKind::Reset => "reset",
            FaultKind::Malformed => "malformed",
            FaultKind::StreamError => "stream_error",
            FaultKind::LateStreamError => "late_stream_error",
        }
    }
}

/// What a mock serves.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Wire format.
    pub flavor: Flavor,
    /// A name for logs (defaults to the flavour name).
    pub name: String,
    /// Known models (Azure: deployment names). Unknown models get the flavour's 404; empty accepts any.
    pub models: Vec<String>,
    /// Initial knobs.
    pub behavior: Behavior,
    /// If set, every other key gets a 401.
    pub require_key: Option<String>,
}

impl MockConfig {
    /// A config with the flavour's default models and no faults.
    pub fn new(flavor: Flavor) -> Self {
        let models: &[&str] = match flavor {
            Flavor::OpenAi => &["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"],
            Flavor::Azure => &["gpt-4o-mini", "text-embedding-3-small"],
            Flavor::Anthropic => &["claude-sonnet-4-6", "claude-haiku-4-5"],
            Flavor::Ollama => &["llava:latest", "llama3.2:latest", "all-minilm:latest"],
            Flavor::Cohere => &["command-a-03-2025", "command-r-plus-08-2024", "embed-v4.0"],
            Flavor::Gemini => &["gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-embedding-001", "text-embedding-005"],
            Flavor::Bedrock => &bedrock::DEFAULT_MODELS,
        };
        MockConfig {
            flavor,
            name: flavor.as_str().to_string(),
            models: models.iter().map(|m| (*m).to_string()).collect(),
            behavior: Behavior::default(),
            require_key: None,
        }
    }
}

/// Counters since start or the last reset.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Non-admin requests received.
    pub requests: u64,
    /// Injected faults (status or kind) drawn from the fault rate.
    pub faults: u64,
    /// Requests whose answer was not delivered to its end because the client went away: dropped while
    /// the mock was still working on it (latency, `hang`, `slow_first_byte`, ...) or while its stream
    /// was still being sent. Not requests answered in full, nor `reset` faults (the mock aborts those).
    #[serde(default)]
    pub cancelled: u64,
    /// Requests per API key value (requests without a key are not listed).
    pub by_key: BTreeMap<String, u64>,
    /// Requests per model, suffix stripped (requests without a model are not listed).
    pub by_model: BTreeMap<String, u64>,
    /// Requests per URL path (no query).
    pub by_path: BTreeMap<String, u64>,
}

/// One request as the mock saw it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers, lowercase names (repeated headers joined with `, `).
    pub headers: BTreeMap<String, String>,
    /// The body as JSON, exactly as sent (model suffix included); `Null` if it was not JSON.
    pub body: serde_json::Value,
    /// The API key presented (Bearer token, `x-api-key` or `api-key`).
    pub key: Option<String>,
}

struct Shared {
    cfg: MockConfig,
    behavior: Mutex<Behavior>,
    stats: Mutex<Stats>,
    log: Mutex<VecDeque<RecordedRequest>>,
    /// Gemini: the OAuth access tokens `/token` handed out (kept across `reset`, as a real token outlives
    /// a test's counters).
    tokens: Mutex<Vec<String>>,
    closing_tx: watch::Sender<bool>,
    closing_rx: watch::Receiver<bool>,
}

/// Locks a mutex, recovering the data if a panicking holder poisoned it (counters stay usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cheap, cloneable handle to a mock's state: counters, recorded requests and knobs.
#[derive(Clone)]
pub struct MockHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle").field("flavor", &self.shared.cfg.flavor).field("name", &self.shared.cfg.name).finish_non_exhaustive()
    }
}

impl MockHandle {
    fn new(cfg: MockConfig) -> Self {
        let (closing_tx, closing_rx) = watch::channel(false);
        let behavior = cfg.behavior.clone();
        MockHandle {
            shared: Arc::new(Shared {
                cfg,
                behavior: Mutex::new(behavior),
                stats: Mutex::new(Stats::default()),
                log: Mutex::new(VecDeque::new()),
                tokens: Mutex::new(Vec::new()),
                closing_tx,
                closing_rx,
            }),
        }
    }

    /// The wire format served.
    pub fn flavor(&self) -> Flavor {
        self.shared.cfg.flavor
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.shared.cfg.name
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Recent requests, oldest first (at most the last 200).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// The current knobs.
    pub fn behavior(&self) -> Behavior {
        lock(&self.shared.behavior).clone()
    }

    /// Replaces the knobs.
    pub fn set_behavior(&self, b: Behavior) {
        *lock(&self.shared.behavior) = b;
    }

    /// Zeroes the counters and forgets the recorded requests.
    pub fn reset(&self) {
        *lock(&self.shared.stats) = Stats::default();
        lock(&self.shared.log).clear();
    }

    pub(crate) fn config(&self) -> &MockConfig {
        &self.shared.cfg
    }

    /// The OAuth access tokens the Gemini mock's `/token` issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.shared.tokens).clone()
    }

    /// A new access token, remembered so that Vertex paths can tell it from a forged one.
    pub(crate) fn issue_token(&self) -> String {
        let t = format!("{}{}", gemini::MOCK_TOKEN_PREFIX, common::random_alnum(32));
        lock(&self.shared.tokens).push(t.clone());
        t
    }

    pub(crate) fn token_issued(&self, token: &str) -> bool {
        lock(&self.shared.tokens).iter().any(|t| t == token)
    }

    pub(crate) fn count_fault(&self) {
        lock(&self.shared.stats).faults += 1;
    }

    pub(crate) fn count_cancelled(&self) {
        lock(&self.shared.stats).cancelled += 1;
    }

    /// Polls the counters (every 10 ms) until `cond` holds for them, for at most `timeout`; returns
    /// whether it held. For tests, instead of sleeping and then asserting: a counter that moves after the
    /// client's side is done (`cancelled` after a disconnect) is seen as soon as it moves.
    pub async fn wait_for(&self, mut cond: impl FnMut(&Stats) -> bool, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond(&self.stats()) {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep((deadline - now).min(WAIT_POLL)).await;
        }
    }

    /// Resolves when the mock starts shutting down (used to cut long fault sleeps short).
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.shared.closing_rx.clone()
    }

    fn begin_close(&self) {
        let _ = self.shared.closing_tx.send(true);
    }

    fn record(&self, rec: RecordedRequest, model: Option<&str>) {
        {
            let mut s = lock(&self.shared.stats);
            s.requests += 1;
            if let Some(k) = &rec.key {
                *s.by_key.entry(k.clone()).or_default() += 1;
            }
            if let Some(m) = model {
                *s.by_model.entry(m.to_string()).or_default() += 1;
            }
            *s.by_path.entry(rec.path.clone()).or_default() += 1;
        }
        let mut log = lock(&self.shared.log);
        while log.len() >= MAX_RECORDED {
            log.pop_front();
        }
        log.push_back(rec);
    }
}

/// The mock as an axum router (serve it yourself) plus a handle to its state.
pub fn router(cfg: MockConfig) -> (Router, MockHandle) {
    let handle = MockHandle::new(cfg);
    let app = Router::new().fallback(entry).with_state(handle.clone());
    (app, handle)
}

/// A mock bound to a TCP port and served on a background task. Dropping it stops the server too.
pub struct MockServer {
    handle: MockHandle,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer").field("flavor", &self.handle.flavor()).field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds `addr` (port 0 picks a free port), starts serving on a spawned task and returns at once.
    pub async fn start(cfg: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (app, handle) = router(cfg);
        let (stop, stopped) = oneshot::channel::<()>();
        let name = handle.name().to_string();
        let listener = listener.tap_io(|s| {
            let _ = s.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(mock = %name, error = %e, "mock server stopped with an error");
            }
        });
        tracing::debug!(mock = %handle.name(), %addr, "mock server listening");
        Ok(MockServer { handle, addr, stop: Some(stop), task: Some(task) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, with a loopback host when bound to an unspecified address.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// A clone of the state handle.
    pub fn handle(&self) -> MockHandle {
        self.handle.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.handle.stats()
    }

    /// Recent requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.handle.requests()
    }

    /// The OAuth access tokens the Gemini mock's `/token` issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.handle.issued_tokens()
    }

    /// Replaces the knobs.
    pub fn set_behavior(&self, b: Behavior) {
        self.handle.set_behavior(b);
    }

    /// Zeroes counters and recorded requests.
    pub fn reset(&self) {
        self.handle.reset();
    }

    /// Polls the counters until `cond` holds, for at most `timeout`; see [`MockHandle::wait_for`].
    pub async fn wait_for(&self, cond: impl FnMut(&Stats) -> bool, timeout: Duration) -> bool {
        self.handle.wait_for(cond, timeout).await
    }

    /// Stops accepting, lets in-flight responses finish (hanging faults are cut short), waits up to 5 s.
    pub async fn shutdown(mut self) {
        self.handle.begin_close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.handle.begin_close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Every request lands here: admin routes, then the common steps, then the flavour.
async fn entry(State(handle): State<MockHandle>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if path == "/mock" || path.starts_with("/mock/") {
        return admin(&handle, &parts.method, &path, body).await;
    }
    let query = parts.uri.query().map(str::to_string);
    let flavor = handle.flavor();
    let (raw, too_large) = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => (b, false),
        Err(_) => (bytes::Bytes::new(), true),
    };
    let body_json: Option<serde_json::Value> = if raw.is_empty() { None } else { serde_json::from_slice(&raw).ok() };
    let mut key = common::extract_key(flavor, &parts.headers);
    if flavor == Flavor::Gemini && key.is_none() {
        key = gemini::query_key(query.as_deref());
    }
    let raw_model = match flavor {
        Flavor::Azure => azure::deployment_of(&path).or_else(|| body_model(body_json.as_ref(), "model")),
        Flavor::Gemini => gemini::model_of(&path),
        Flavor::Bedrock => bedrock::model_of(&path),
        _ => body_model(body_json.as_ref(), "model"),
    };
    let (model, suffix) = match raw_model {
        Some(m) => {
            let (base, pairs) = knobs::split_model_suffix(&m);
            (Some(base), pairs)
        }
        None => (None, Vec::new()),
    };
    handle.record(
        RecordedRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: query.clone(),
            headers: header_map(&parts.headers),
            body: body_json.clone().unwrap_or(serde_json::Value::Null),
            key: key.clone(),
        },
        model.as_deref(),
    );
    // From here on the request is counted: if this future is dropped before it produces the response
    // (the client went away), the guard counts it as cancelled.
    let guard = CancelGuard::new(handle.clone());
    let behavior = handle.behavior();
    let knobs = knobs::Knobs::resolve(&behavior, &parts.headers, &suffix);
    let ctx = Ctx {
        handle: handle.clone(),
        flavor,
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        raw,
        body: body_json,
        key,
        model,
        knobs,
        started,
        request_id: common::random_alnum(24),
    };
    let response = answer(ctx, &behavior, too_large).await;
    guard.disarm();
    response
}

/// The common steps after counting (latency, body size, `key_status`, quota keys), then the flavour.
async fn answer(ctx: Ctx, behavior: &Behavior, too_large: bool) -> Response {
    faults::pause(&ctx.handle, ctx.knobs.jittered_latency()).await;
    if too_large {
        return error(&ctx, ApiError::TooLarge);
    }
    if let Some(k) = &ctx.key {
        if let Some(status) = behavior.key_status.get(k) {
            return error(&ctx, ApiError::Status(*status));
        }
        if behavior.quota_exhausted_keys.contains(k) {
            return error(&ctx, ApiError::Quota);
        }
    }
    match ctx.flavor {
        Flavor::OpenAi => openai::handle(ctx).await,
        Flavor::Azure => azure::handle(ctx).await,
        Flavor::Anthropic => anthropic::handle(ctx).await,
        Flavor::Ollama => ollama::handle(ctx).await,
        Flavor::Cohere => cohere::handle(ctx).await,
        Flavor::Gemini => gemini::handle(ctx).await,
        Flavor::Bedrock => bedrock::handle(ctx).await,
    }
}

/// Renders an error in the request's flavour, for the answers given before the flavour's handler runs.
/// It lives here, beside the dispatch to the handlers, and not in `common`: the flavour modules import
/// `common`, so a dispatcher there would make `common` and every flavour import each other.
fn error(ctx: &Ctx, err: ApiError) -> Response {
    match ctx.flavor {
        Flavor::OpenAi => openai::error(ctx, err),
        Flavor::Azure => azure::error(ctx, err),
        Flavor::Anthropic => anthropic::error(ctx, err),
        Flavor::Ollama => ollama::error(ctx, err),
        Flavor::Cohere => cohere::error(ctx, err),
        Flavor::Gemini => gemini::error(ctx, err),
        Flavor::Bedrock => bedrock::error(ctx, err),
    }
}

fn body_model(body: Option<&serde_json::Value>, field: &str) -> Option<String> {
    body?.get(field)?.as_str().map(str::to_string)
}

fn header_map(h: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in h {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

async fn admin(handle: &MockHandle, method: &Method, path: &str, body: Body) -> Response {
    let json = |v: serde_json::Value| axum::Json(v).into_response();
    match (method.as_str(), path) {
        ("GET", "/mock/stats") => axum::Json(handle.stats()).into_response(),
        ("GET", "/mock/requests") => axum::Json(handle.requests()).into_response(),
        ("POST", "/mock/reset") => {
            handle.reset();
            json(serde_json::json!({"ok": true}))
        }
        ("GET", "/mock/behavior") => axum::Json(handle.behavior()).into_response(),
        ("PUT", "/mock/behavior") => {
            let raw = match axum::body::to_bytes(body, 1024 * 1024).await {
                Ok(b) => b,
                Err(e) => return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": e.to_string()}))).into_response(),
            };
            match serde_json::from_slice::<Behavior>(&raw) {
                Ok(b) => {
                    handle.set_behavior(b.clone());
                    axum::Json(b).into_response()
                }
                Err(e) => {
                    (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": format!("invalid behavior: {e}")}))).into_response()
                }
            }
        }
        (_, "/mock/stats" | "/mock/requests" | "/mock/reset" | "/mock/behavior") => {
            (StatusCode::METHOD_NOT_ALLOWED, axum::Json(serde_json::json!({"error": "method not allowed"}))).into_response()
        }
        _ => (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": format!("no admin route {path}")}))).into_response(),
    }
}
