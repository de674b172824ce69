//! The request log: every finished request's [`RequestRecord`], kept for looking a request up by its
//! `x-request-id`, browsing with filters, and the dashboard's aggregates.
//!
//! Why it is built this way:
//! - **Off the request path.** [`LogSink`] is a [`RequestSink`](crate::observe::RequestSink) that only
//!   queues the record; one writer task writes batches (see [`crate::batch`]), drops are counted, and
//!   shutdown drains the queue. A periodic task prunes by age and by row count ([`prune_task`]).
//! - **One question, every store.** The question is parsed and checked here ([`LogQuery`],
//!   [`StatsQuery`]), so that SQLite, PostgreSQL and the in-memory ring ([`MemoryLog`], used when the gateway
//!   has no data directory) answer it the same way and the management API only renders.
//! - **Aggregates never scan the raw log.** Stores keep per-minute (and coarser) rollups updated in the
//!   same transaction as the rows; the latency percentiles come from a fixed log-spaced histogram
//!   ([`latency_bucket`]) kept in the rollup, so a 24 h dashboard reads a few thousand rollup rows. The
//!   stores return [`StatRow`]s; [`assemble`] turns them into the answer, in one place.
//! - **Keyset paging.** Pages are newest first by `(at_ms, id)`; the cursor is the position of the last
//!   row looked at, never an offset. Filters no index can serve (`q`, `error`) look at no more than
//!   [`MAX_SCANNED`] rows per page: a page may then hold fewer than `limit` records while `next_cursor`
//!   still leads on (see docs/management-api.md).

pub mod memory;
mod sink;

pub use memory::MemoryLog;
pub use sink::{prune_interval, prune_task, LogSink};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::governance::store::StoreFuture;
use crate::governance::usage::parse_time;
use crate::observe::RequestRecord;

/// The most records one page holds.
pub const MAX_LIMIT: usize = 200;
pub const DEFAULT_LIMIT: usize = 50;
/// The default time range: the last 24 hours.
pub const DEFAULT_RANGE_MS: i64 = 24 * 3_600_000;
/// Rows (matching the indexed filters) a page with a `q` or `error` filter looks at, at most; see the
/// module docs. Measured in docs/benchmarks.md.
pub const MAX_SCANNED: usize = 5_000;
/// Groups a stats answer holds at most (the busiest first); more are cut and the answer says so.
pub const MAX_STAT_GROUPS: usize = 200;
/// Latency histogram buckets (see [`latency_bucket`]).
pub const LATENCY_BUCKETS: usize = 64;
/// Buckets per doubling of the latency: each bucket spans a factor 2^(1/3) ≈ 1.26.
const BUCKETS_PER_DOUBLING: f64 = 3.0;
/// The search text kept per record, at most (characters).
const MAX_SEARCH_CHARS: usize = 2000;

/// The bucket of a latency: 0 for under 1 ms, then 3 buckets per doubling (bucket `i` holds
/// `[2^((i-1)/3), 2^(i/3))` ms), the last one open-ended (from about 27 minutes). A percentile read from
/// it is within about ±12% of the true value.
pub fn latency_bucket(ms: u64) -> usize {
    if ms < 1 {
        return 0;
    }
    let i = ((ms as f64).log2() * BUCKETS_PER_DOUBLING).floor() as usize + 1;
    i.min(LATENCY_BUCKETS - 1)
}

/// The `[low, high)` bounds of a bucket in ms.
fn bucket_bounds(i: usize) -> (f64, f64) {
    if i == 0 {
        return (0.0, 1.0);
    }
    let low = 2f64.powf((i - 1) as f64 / BUCKETS_PER_DOUBLING);
    (low, low * 2f64.powf(1.0 / BUCKETS_PER_DOUBLING))
}

/// The `p`-quantile (0..1) of a histogram, interpolated geometrically inside its bucket; `None` when empty.
pub fn percentile(hist: &[u64], p: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (p * total as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (i, &n) in hist.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let (low, high) = bucket_bounds(i);
            let within = (rank - seen as f64) / n as f64;
            let v = if i == 0 { high * within } else { low * (high / low).powf(within) };
            return Some(v.round() as u64);
        }
        seen += n;
    }
    None
}

/// Why a query was refused; `param` names the query parameter at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct QueryError {
    pub param: String,
    pub message: String,
}

fn refuse(param: &str, message: impl Into<String>) -> QueryError {
    QueryError { param: param.to_string(), message: message.into() }
}

/// Unix ms or RFC 3339.
fn time_param(name: &str, v: &str) -> Result<i64, QueryError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    parse_time(v).ok_or_else(|| {
        refuse(name, format!("\"{v}\" is neither Unix milliseconds (1767225600000) nor an RFC 3339 time (2026-01-01T00:00:00Z)"))
    })
}

/// Checks names, repeats and empty values; returns the parameters by name.
fn params_by_name<'a>(params: &'a [(String, String)], known: &[&str], what: &str) -> Result<HashMap<&'a str, &'a str>, QueryError> {
    let mut out = HashMap::new();
    for (name, value) in params {
        if !known.contains(&name.as_str()) {
            return Err(refuse(name, format!("unknown parameter; {what} takes {}", known.join(", "))));
        }
        if value.is_empty() {
            return Err(refuse(name, "is empty; leave the parameter out instead"));
        }
        if out.insert(name.as_str(), value.as_str()).is_some() {
            return Err(refuse(name, "given twice; give each parameter at most once"));
        }
    }
    Ok(out)
}

/// `from`/`to` with their defaults: the 24 h before `to`, `to` defaulting to `now_ms`.
fn range(p: &HashMap<&str, &str>, now_ms: i64) -> Result<(i64, i64), QueryError> {
    let to = p.get("to").map(|v| time_param("to", v)).transpose()?;
    let from = p.get("from").map(|v| time_param("from", v)).transpose()?;
    let to = to.unwrap_or(now_ms.max(from.map_or(i64::MIN, |f| f.saturating_add(1))));
    let from = from.unwrap_or(to.saturating_sub(DEFAULT_RANGE_MS));
    if from >= to {
        return Err(refuse("to", "must be later than from (the range is [from, to))"));
    }
    Ok((from, to))
}

/// Filters on who called and who answered, shared by the log and the stats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityFilter {
    /// A virtual key's id.
    pub virtual_key: Option<String>,
    pub team: Option<String>,
    pub customer: Option<String>,
    /// The provider that answered (or, for a request that failed, the last one tried).
    pub provider: Option<String>,
    /// The model that answered (or was last tried); in the log, also the model asked for.
    pub model: Option<String>,
}

impl EntityFilter {
    fn from(p: &HashMap<&str, &str>) -> EntityFilter {
        let s = |k: &str| p.get(k).map(|v| v.to_string());
        EntityFilter { virtual_key: s("virtual_key"), team: s("team"), customer: s("customer"), provider: s("provider"), model: s("model") }
    }

    /// Whether the rollup without keys, teams and customers can answer.
    pub fn names_callers(&self) -> bool {
        self.virtual_key.is_some() || self.team.is_some() || self.customer.is_some()
    }
}

/// `status=`: a code or a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Code(u16),
    /// 2, 4 or 5 (`2xx`, ...): codes `n*100..n*100+99`.
    Class(u16),
}

impl StatusFilter {
    /// The inclusive range of codes.
    pub fn codes(self) -> (u16, u16) {
        match self {
            StatusFilter::Code(c) => (c, c),
            StatusFilter::Class(c) => (c * 100, c * 100 + 99),
        }
    }
}

/// A page's position: the last row looked at. Opaque on the wire (hex of `at_ms` and id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at_ms: i64,
    pub id: String,
}

impl Cursor {
    pub fn of(r: &RequestRecord) -> Cursor {
        Cursor { at_ms: r.at_ms, id: r.id.clone() }
    }

    pub fn encode(&self) -> String {
        format!("{}\n{}", self.at_ms, self.id).bytes().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() % 2 != 0 || s.len() > 600 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
        let text = String::from_utf8(bytes?).ok()?;
        let (at, id) = text.split_once('\n')?;
        Some(Cursor { at_ms: at.parse().ok()?, id: id.to_string() })
    }

    /// Whether `(at_ms, id)` comes after this position, newest first.
    pub fn precedes(&self, at_ms: i64, id: &str) -> bool {
        at_ms < self.at_ms || (at_ms == self.at_ms && id < self.id.as_str())
    }
}

/// `GET /api/logs`: records with `at_ms` in `[from_ms, to_ms)` matching every filter, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct LogQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub entity: EntityFilter,
    pub status: Option<StatusFilter>,
    /// An error code or failure class, matched against the record's error, error class and its
    /// attempts' outcomes (lowercase).
    pub error: Option<String>,
    pub min_latency_ms: Option<u64>,
    /// Text searched in the attempt trail (lowercase).
    pub q: Option<String>,
    pub stream: Option<bool>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
    /// Rows a page with `q` or `error` looks at, at most ([`MAX_SCANNED`] from the API).
    pub scan_limit: usize,
}

const LOG_PARAMS: [&str; 14] = [
    "from",
    "to",
    "virtual_key",
    "team",
    "customer",
    "provider",
    "model",
    "status",
    "error",
    "min_latency_ms",
    "q",
    "stream",
    "limit",
    "cursor",
];

impl LogQuery {
    /// Every record of the last 24 hours before `now_ms`, one default page.
    pub fn recent(now_ms: i64) -> LogQuery {
        LogQuery {
            from_ms: now_ms - DEFAULT_RANGE_MS,
            to_ms: now_ms + 1,
            entity: EntityFilter::default(),
            status: None,
            error: None,
            min_latency_ms: None,
            q: None,
            stream: None,
            limit: DEFAULT_LIMIT,
            cursor: None,
            scan_limit: MAX_SCANNED,
        }
    }

    /// The query written as URL parameters; each mistake is refused naming its parameter.
    pub fn from_params(params: &[(String, String)], now_ms: i64) -> Result<LogQuery, QueryError> {
        let p = params_by_name(params, &LOG_PARAMS, "the log query")?;
        let (from_ms, to_ms) = range(&p, now_ms)?;
        let status = p
            .get("status")
            .map(|v| {
                let class = v.strip_suffix("xx").and_then(|d| d.parse::<u16>().ok()).filter(|d| (1..=5).contains(d));
                match (class, v.parse::<u16>()) {
                    (Some(c), _) => Ok(StatusFilter::Class(c)),
                    (None, Ok(c)) if (100..=599).contains(&c) => Ok(StatusFilter::Code(c)),
                    _ => Err(refuse("status", format!("\"{v}\" is neither a status code (502) nor a class (2xx, 4xx, 5xx)"))),
                }
            })
            .transpose()?;
        let min_latency_ms = p
            .get("min_latency_ms")
            .map(|v| v.parse::<u64>().map_err(|_| refuse("min_latency_ms", format!("\"{v}\" is not a whole number of milliseconds"))))
            .transpose()?;
        let stream = p
            .get("stream")
            .map(|v| match *v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(refuse("stream", format!("\"{v}\" is neither true nor false"))),
            })
            .transpose()?;
        let limit = match p.get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| refuse("limit", format!("\"{v}\" is not a number from 1 to {MAX_LIMIT}")))?,
        };
        let cursor = p
            .get("cursor")
            .map(|v| Cursor::decode(v).ok_or_else(|| refuse("cursor", "is not a cursor this gateway gave (pass next_cursor as it came)")))
            .transpose()?;
        let lower = |k: &str| p.get(k).map(|v| v.to_lowercase());
        if let Some(q) = p.get("q") {
            if q.chars().count() > 200 {
                return Err(refuse("q", "is longer than 200 characters"));
            }
        }
        Ok(LogQuery {
            from_ms,
            to_ms,
            entity: EntityFilter::from(&p),
            status,
            error: lower("error"),
            min_latency_ms,
            q: lower("q"),
            stream,
            limit,
            cursor,
            scan_limit: MAX_SCANNED,
        })
    }

    /// Whether the query has a filter no index serves, whose scan is bounded by `scan_limit`.
    pub fn scans(&self) -> bool {
        self.q.is_some() || self.error.is_some()
    }

    /// The filters an index or a cheap comparison serves (everything but `q` and `error`).
    pub fn matches_indexed(&self, r: &LogRow) -> bool {
        let rec = &r.record;
        let is = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        let e = &self.entity;
        rec.at_ms >= self.from_ms
            && rec.at_ms < self.to_ms
            && self.cursor.as_ref().is_none_or(|c| c.precedes(rec.at_ms, &rec.id))
            && is(&e.virtual_key, r.dims.virtual_key.as_deref())
            && is(&e.team, r.dims.team.as_deref())
            && is(&e.customer, r.dims.customer.as_deref())
            && is(&e.provider, r.dims.provider.as_deref())
            && e.model.as_deref().is_none_or(|m| r.dims.model.as_deref() == Some(m) || rec.model.as_deref() == Some(m))
            && self.status.is_none_or(|s| {
                let (lo, hi) = s.codes();
                rec.status.is_some_and(|c| (lo..=hi).contains(&c))
            })
            && self.min_latency_ms.is_none_or(|m| rec.latency_ms >= m)
            && self.stream.is_none_or(|s| rec.stream == s)
    }

    /// The filters that scan (`q`, `error`).
    pub fn matches_scanned(&self, r: &LogRow) -> bool {
        self.q.as_deref().is_none_or(|q| r.search.contains(q)) && self.error.as_deref().is_none_or(|e| r.errors.contains(&format!(" {e} ")))
    }
}

/// One page of the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogPage {
    /// Without their bodies.
    pub records: Vec<RequestRecord>,
    /// Where the next page starts; `None` when there is no more.
    pub next_cursor: Option<Cursor>,
}

/// A record as a store keeps it: the record, and what is derived from it for the filters and the rollups.
/// Derived once, here, so that every store files a record under the same values.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub record: Arc<RequestRecord>,
    pub dims: Dims,
    /// Lowercase text of the attempt trail: targets, keys, outcomes, statuses, messages.
    pub search: String,
    /// ` code class outcome ... ` (lowercase, space-delimited on both ends): what `error=` matches.
    pub errors: String,
}

/// What a record is grouped and filtered by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims {
    /// The provider that answered, else the last one sent to, else none.
    pub provider: Option<String>,
    /// Likewise the model.
    pub model: Option<String>,
    pub virtual_key: Option<String>,
    /// The key's name (shown; the id may be a secret, see `observe::Caller`).
    pub virtual_key_name: Option<String>,
    pub team: Option<String>,
    pub customer: Option<String>,
    /// The answering provider's tags, sorted and comma-joined; none when there are none.
    pub provider_tags: Option<String>,
    /// `2xx`, `4xx`, `5xx`, `other` or `none`.
    pub status_class: &'static str,
}

/// The counters of a rollup cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    /// Status 5xx or 429, or no status at all (the client left first).
    pub errors: u64,
    /// Served by a fallback (`fallback_index > 0`).
    pub fallbacks: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_nano_usd: u64,
}

impl Counters {
    pub fn of(r: &RequestRecord) -> Counters {
        let failed = r.status.is_none_or(|s| s >= 500 || s == 429);
        Counters {
            requests: 1,
            errors: u64::from(failed),
            fallbacks: u64::from(r.fell_back()),
            tokens_in: r.tokens_in.unwrap_or(0),
            tokens_out: r.tokens_out.unwrap_or(0),
            cost_nano_usd: r.cost_nano_usd.unwrap_or(0),
        }
    }

    pub fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.fallbacks += o.fallbacks;
        self.tokens_in += o.tokens_in;
        self.tokens_out += o.tokens_out;
        self.cost_nano_usd += o.cost_nano_usd;
    }
}

impl LogRow {
    pub fn new(record: Arc<RequestRecord>) -> LogRow {
        let r = &*record;
        let last = r.attempts.iter().rev().find(|a| !a.skipped).or(r.attempts.last());
        let mut tags = r.provider_tags.clone();
        tags.sort();
        let caller = r.caller.as_ref();
        let dims = Dims {
            provider: r.provider.clone().or_else(|| last.map(|a| a.provider.clone())),
            model: r.served_model.clone().or_else(|| last.map(|a| a.model.clone())),
            virtual_key: caller.map(|c| c.virtual_key_id.clone()),
            virtual_key_name: caller.map(|c| c.virtual_key.clone()),
            team: caller.and_then(|c| c.team.clone()),
            customer: caller.and_then(|c| c.customer.clone()),
            provider_tags: (!tags.is_empty()).then(|| tags.join(",")),
            status_class: r.status_class(),
        };
        let mut search = String::new();
        for a in &r.attempts {
            use std::fmt::Write as _;
            let _ = write!(search, "{} {} {}", a.target, a.key.as_deref().unwrap_or(""), a.outcome);
            if let Some(s) = a.status {
                let _ = write!(search, " {s}");
            }
            if let Some(m) = &a.message {
                let _ = write!(search, " {m}");
            }
            search.push('\n');
        }
        let mut search = search.to_lowercase();
        if let Some((cut, _)) = search.char_indices().nth(MAX_SEARCH_CHARS) {
            search.truncate(cut);
        }
        let mut errors = String::from(" ");
        let failures = r.error.iter().chain(&r.error_class).chain(r.attempts.iter().filter(|a| a.outcome != "success").map(|a| &a.outcome));
        for e in failures {
            let e = e.to_lowercase();
            if !errors.contains(&format!(" {e} ")) {
                errors.push_str(&e);
                errors.push(' ');
            }
        }
        LogRow { record, dims, search, errors }
    }

    /// The rollup cell of this record at `width_ms`, and its counters and latency bucket.
    pub fn bucket(&self, width_ms: i64) -> i64 {
        self.record.at_ms.div_euclid(width_ms) * width_ms
    }
}

/// What a stats answer is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsDim {
    Provider,
    Model,
    VirtualKey,
    Team,
    Customer,
    ProviderTags,
    StatusClass,
}

impl StatsDim {
    pub const ALL: [StatsDim; 7] = [
        StatsDim::Provider,
        StatsDim::Model,
        StatsDim::VirtualKey,
        StatsDim::Team,
        StatsDim::Customer,
        StatsDim::ProviderTags,
        StatsDim::StatusClass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StatsDim::Provider => "provider",
            StatsDim::Model => "model",
            StatsDim::VirtualKey => "virtual_key",
            StatsDim::Team => "team",
            StatsDim::Customer => "customer",
            StatsDim::ProviderTags => "provider_tags",
            StatsDim::StatusClass => "status_class",
        }
    }

    /// Whether the dimension needs the rollup that keeps callers.
    pub fn names_callers(self) -> bool {
        matches!(self, StatsDim::VirtualKey | StatsDim::Team | StatsDim::Customer)
    }

    /// A record's value for this dimension.
    pub fn of(self, d: &Dims) -> Option<String> {
        match self {
            StatsDim::Provider => d.provider.clone(),
            StatsDim::Model => d.model.clone(),
            StatsDim::VirtualKey => d.virtual_key.clone(),
            StatsDim::Team => d.team.clone(),
            StatsDim::Customer => d.customer.clone(),
            StatsDim::ProviderTags => d.provider_tags.clone(),
            StatsDim::StatusClass => Some(d.status_class.to_string()),
        }
    }
}

/// The intervals a series may use.
pub const INTERVALS: [(&str, i64); 5] = [("1m", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000), ("1d", 86_400_000)];

/// Buckets a default interval keeps the range under.
const MAX_DEFAULT_BUCKETS: i64 = 120;

/// `GET /api/stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsQuery {
    /// Rounded down to the interval: stats count whole buckets.
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_ms: i64,
    /// At most two, without repeats.
    pub group_by: Vec<StatsDim>,
    pub entity: EntityFilter,
}

const STATS_PARAMS: [&str; 9] = ["from", "to", "interval", "group_by", "virtual_key", "team", "customer", "provider", "model"];

impl StatsQuery {
    pub fn from_params(params: &[(String, String)], now_ms: i64) -> Result<StatsQuery, QueryError> {
        let p = params_by_name(params, &STATS_PARAMS, "the stats query")?;
        let (from, to_ms) = range(&p, now_ms)?;
        let names: Vec<&str> = INTERVALS.iter().map(|(n, _)| *n).collect();
        let interval_ms = match p.get("interval") {
            Some(v) => INTERVALS
                .iter()
                .find(|(n, _)| n == v)
                .map(|(_, ms)| *ms)
                .ok_or_else(|| refuse("interval", format!("\"{v}\" is not one of {}", names.join(", "))))?,
            None => {
                let span = to_ms - from;
                INTERVALS.iter().map(|(_, ms)| *ms).find(|ms| span / ms <= MAX_DEFAULT_BUCKETS).unwrap_or(86_400_000)
            }
        };
        let mut group_by = Vec::new();
        if let Some(v) = p.get("group_by") {
            for part in v.split(',').map(str::trim) {
                let dim = StatsDim::ALL.into_iter().find(|d| d.as_str() == part).ok_or_else(|| {
                    let all: Vec<&str> = StatsDim::ALL.iter().map(|d| d.as_str()).collect();
                    refuse("group_by", format!("\"{part}\" is not one of {}", all.join(", ")))
                })?;
                if group_by.contains(&dim) {
                    return Err(refuse("group_by", format!("\"{part}\" is given twice")));
                }
                group_by.push(dim);
            }
            if group_by.len() > 2 {
                return Err(refuse("group_by", "takes one or two dimensions, comma-separated"));
            }
        }
        Ok(StatsQuery { from_ms: from.div_euclid(interval_ms) * interval_ms, to_ms, interval_ms, group_by, entity: EntityFilter::from(&p) })
    }

    /// Whether the rollup that keeps keys, teams and customers is needed.
    pub fn names_callers(&self) -> bool {
        self.entity.names_callers() || self.group_by.iter().any(|d| d.names_callers())
    }

    /// Whether a record's dimensions pass the filters.
    pub fn matches(&self, d: &Dims) -> bool {
        let is = |want: &Option<String>, have: &Option<String>| want.as_ref().is_none_or(|w| have.as_ref() == Some(w));
        let e = &self.entity;
        is(&e.virtual_key, &d.virtual_key)
            && is(&e.team, &d.team)
            && is(&e.customer, &d.customer)
            && is(&e.provider, &d.provider)
            && is(&e.model, &d.model)
    }
}

/// One cell a store returns for a stats query: an interval bucket of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct StatRow {
    /// The bucket's start (a multiple of the interval).
    pub t_ms: i64,
    /// The group's value per `group_by` dimension, in its order.
    pub keys: Vec<Option<String>>,
    /// The virtual key's name, when grouped by virtual key.
    pub key_name: Option<String>,
    pub counters: Counters,
    /// [`LATENCY_BUCKETS`] counts.
    pub hist: Vec<u64>,
}

/// The figures of a group, a bucket, or everything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stat {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub fallbacks: u64,
    pub fallback_rate: f64,
}

impl Stat {
    fn of(c: &Counters, hist: &[u64]) -> Stat {
        Stat {
            requests: c.requests,
            errors: c.errors,
            p50_ms: percentile(hist, 0.50),
            p95_ms: percentile(hist, 0.95),
            tokens_in: c.tokens_in,
            tokens_out: c.tokens_out,
            cost_usd: c.cost_nano_usd as f64 / 1e9,
            fallbacks: c.fallbacks,
            fallback_rate: if c.requests == 0 { 0.0 } else { c.fallbacks as f64 / c.requests as f64 },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub t_ms: i64,
    #[serde(flatten)]
    pub stat: Stat,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatGroup {
    /// Dimension name to value (`null` for requests without one: no key, a key without a team).
    pub keys: BTreeMap<String, Option<String>>,
    /// Display names: the key's name for `virtual_key`, the value itself elsewhere.
    pub labels: BTreeMap<String, Option<String>>,
    pub totals: Stat,
    pub series: Vec<SeriesPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsAnswer {
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_ms: i64,
    pub group_by: Vec<StatsDim>,
    pub totals: Stat,
    /// The busiest first; at most [`MAX_STAT_GROUPS`].
    pub groups: Vec<StatGroup>,
    /// More groups matched than are shown.
    pub truncated: bool,
}

fn add_hist(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// Builds the answer from a store's rows (in any order).
pub fn assemble(q: &StatsQuery, rows: Vec<StatRow>) -> StatsAnswer {
    struct Acc {
        name: Option<String>,
        counters: Counters,
        hist: Vec<u64>,
        series: BTreeMap<i64, (Counters, Vec<u64>)>,
    }
    let mut total = (Counters::default(), vec![0u64; LATENCY_BUCKETS]);
    let mut groups: BTreeMap<Vec<Option<String>>, Acc> = BTreeMap::new();
    for row in rows {
        total.0.add(&row.counters);
        add_hist(&mut total.1, &row.hist);
        let g = groups.entry(row.keys).or_insert_with(|| Acc {
            name: None,
            counters: Counters::default(),
            hist: vec![0; LATENCY_BUCKETS],
            series: BTreeMap::new(),
        });
        if row.key_name.is_some() {
            g.name = row.key_name;
        }
        g.counters.add(&row.counters);
        add_hist(&mut g.hist, &row.hist);
        let point = g.series.entry(row.t_ms).or_insert_with(|| (Counters::default(), vec![0; LATENCY_BUCKETS]));
        point.0.add(&row.counters);
        add_hist(&mut point.1, &row.hist);
    }
    if q.group_by.is_empty() && groups.is_empty() {
        groups
            .insert(Vec::new(), Acc { name: None, counters: Counters::default(), hist: vec![0; LATENCY_BUCKETS], series: BTreeMap::new() });
    }
    let mut list: Vec<(Vec<Option<String>>, Acc)> = groups.into_iter().collect();
    // The busiest first; ties by value, so the order is stable.
    list.sort_by(|a, b| b.1.counters.requests.cmp(&a.1.counters.requests).then_with(|| a.0.cmp(&b.0)));
    let truncated = list.len() > MAX_STAT_GROUPS;
    list.truncate(MAX_STAT_GROUPS);
    let groups = list
        .into_iter()
        .map(|(keys, acc)| {
            let mut k = BTreeMap::new();
            let mut labels = BTreeMap::new();
            for (dim, value) in q.group_by.iter().zip(keys) {
                let label = if *dim == StatsDim::VirtualKey { acc.name.clone().or(value.clone()) } else { value.clone() };
                labels.insert(dim.as_str().to_string(), label);
                k.insert(dim.as_str().to_string(), value);
            }
            StatGroup {
                keys: k,
                labels,
                totals: Stat::of(&acc.counters, &acc.hist),
                series: acc.series.into_iter().map(|(t_ms, (c, h))| SeriesPoint { t_ms, stat: Stat::of(&c, &h) }).collect(),
            }
        })
        .collect();
    StatsAnswer {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        interval_ms: q.interval_ms,
        group_by: q.group_by.clone(),
        totals: Stat::of(&total.0, &total.1),
        groups,
        truncated,
    }
}

/// What one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows older than the age limit.
    pub aged: u64,
    /// Rows beyond the row limit (the oldest).
    pub over: u64,
}

/// Where the request log is kept. Implemented by the in-memory ring ([`MemoryLog`]) and by
/// `switchyard-store` (SQLite, PostgreSQL). Every call is one short transaction; none is made on the
/// request path.
pub trait RequestLogStore: Send + Sync {
    /// Appends the records and updates the rollups, in one transaction. A record whose id is already kept
    /// is skipped (a batch retried after a lost answer is not counted twice).
    fn write_batch(&self, batch: Vec<LogRow>) -> StoreFuture<'_, ()>;
    fn query(&self, q: LogQuery) -> StoreFuture<'_, LogPage>;
    /// One record, with its bodies when they were kept.
    fn get(&self, id: String) -> StoreFuture<'_, Option<RequestRecord>>;
    /// The rollup cells for `q`, bucketed at its interval and grouped by its dimensions.
    fn stat_rows(&self, q: StatsQuery) -> StoreFuture<'_, Vec<StatRow>>;
    /// Deletes rows with `at_ms < before_ms`, then the oldest beyond `max_rows`; rollups older than
    /// `rollups_before_ms`.
    fn prune(&self, before_ms: i64, max_rows: u64, rollups_before_ms: i64) -> StoreFuture<'_, Pruned>;

    /// The answer to `q`.
    fn stats(&self, q: StatsQuery) -> StoreFuture<'_, StatsAnswer> {
        Box::pin(async move {
            let rows = self.stat_rows(q.clone()).await?;
            Ok(assemble(&q, rows))
        })
    }
}

/// The rollups a store keeps: bucket widths (ms), each with and without the caller dimensions. A query is
/// answered from the widest width that divides its interval.
pub const ROLLUP_WIDTHS: [i64; 3] = [60_000, 900_000, 3_600_000];

/// The rollup width that serves `interval_ms`.
pub fn rollup_width(interval_ms: i64) -> i64 {
    ROLLUP_WIDTHS.iter().rev().copied().find(|w| interval_ms % w == 0).unwrap_or(ROLLUP_WIDTHS[0])
}

/// One rollup cell's key: width, whether it keeps callers, bucket start, and the dimensions (callers
/// blank when it does not keep them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    pub width_ms: i64,
    pub callers: bool,
    pub bucket_ms: i64,
    pub dims: Dims,
}

/// A batch's contribution to the rollups, summed per cell: what a store adds in its transaction.
pub fn rollup(batch: &[LogRow]) -> Vec<(RollupKey, Counters, Vec<u64>)> {
    let mut cells: BTreeMap<RollupKey, (Counters, Vec<u64>)> = BTreeMap::new();
    for row in batch {
        let c = Counters::of(&row.record);
        let bucket = latency_bucket(row.record.latency_ms);
        for width_ms in ROLLUP_WIDTHS {
            for callers in [false, true] {
                let dims = if callers {
                    row.dims.clone()
                } else {
                    Dims { virtual_key: None, virtual_key_name: None, team: None, customer: None, ..row.dims.clone() }
                };
                let key = RollupKey { width_ms, callers, bucket_ms: row.bucket(width_ms), dims };
                let cell = cells.entry(key).or_insert_with(|| (Counters::default(), vec![0; LATENCY_BUCKETS]));
                cell.0.add(&c);
                cell.1[bucket] += 1;
            }
        }
    }
    cells.into_iter().map(|(k, (c, h))| (k, c, h)).collect()
}

/// Bodies kept with a record are cut to this many bytes (on a character boundary).
pub fn truncate_body(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn latency_buckets_are_log_spaced_and_percentiles_land_within_a_bucket() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 1);
        assert_eq!(latency_bucket(2), 4);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
        for ms in [1u64, 7, 100, 950, 12_345, 600_000] {
            let (lo, hi) = bucket_bounds(latency_bucket(ms));
            assert!(lo <= ms as f64 && (ms as f64) < hi, "{ms} in [{lo}, {hi})");
        }
        let mut hist = vec![0u64; LATENCY_BUCKETS];
        for ms in 1..=1000u64 {
            hist[latency_bucket(ms)] += 1;
        }
        let p50 = percentile(&hist, 0.5).unwrap() as f64;
        let p95 = percentile(&hist, 0.95).unwrap() as f64;
        assert!((p50 / 500.0 - 1.0).abs() < 0.13, "{p50}");
        assert!((p95 / 950.0 - 1.0).abs() < 0.13, "{p95}");
        assert_eq!(percentile(&[0; LATENCY_BUCKETS], 0.5), None);
    }

    #[test]
    fn log_queries_are_checked_parameter_by_parameter() {
        let now = 1_800_000_000_000;
        let q = LogQuery::from_params(&params(&[("status", "5xx"), ("provider", "openai"), ("q", "Rate")]), now).unwrap();
        assert_eq!((q.from_ms, q.to_ms), (now - DEFAULT_RANGE_MS, now));
        assert_eq!(q.status, Some(StatusFilter::Class(5)));
        assert_eq!(q.q.as_deref(), Some("rate"));
        assert_eq!(q.limit, DEFAULT_LIMIT);
        let q =
            LogQuery::from_params(&params(&[("from", "2026-01-01T00:00:00Z"), ("to", "1767312000000"), ("status", "429")]), now).unwrap();
        assert_eq!((q.from_ms, q.to_ms, q.status), (1_767_225_600_000, 1_767_312_000_000, Some(StatusFilter::Code(429))));
        for (list, param) in [
            (vec![("limt", "5")], "limt"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "201")], "limit"),
            (vec![("status", "9xx")], "status"),
            (vec![("status", "abc")], "status"),
            (vec![("min_latency_ms", "-1")], "min_latency_ms"),
            (vec![("stream", "yes")], "stream"),
            (vec![("cursor", "zz")], "cursor"),
            (vec![("from", "yesterday")], "from"),
            (vec![("from", "2000"), ("to", "1000")], "to"),
            (vec![("team", "")], "team"),
            (vec![("team", "a"), ("team", "b")], "team"),
        ] {
            let e = LogQuery::from_params(&params(&list), now).unwrap_err();
            assert_eq!(e.param, param, "{list:?}: {e}");
        }
    }

    #[test]
    fn cursors_round_trip_and_order_newest_first() {
        let c = Cursor { at_ms: 1_700_000_000_123, id: "req-1:a_b.c".into() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        assert!(c.precedes(1_700_000_000_122, "zzz"));
        assert!(c.precedes(1_700_000_000_123, "req-0"));
        assert!(!c.precedes(1_700_000_000_123, "req-1:a_b.c"));
        assert!(!c.precedes(1_700_000_000_124, "a"));
    }

    #[test]
    fn stats_queries_choose_an_interval_and_check_the_grouping() {
        let now = 1_800_000_000_000;
        let q = StatsQuery::from_params(&params(&[("group_by", "provider,virtual_key")]), now).unwrap();
        assert_eq!(q.interval_ms, 900_000, "24 h in 15 min buckets: 96");
        assert_eq!(q.from_ms % q.interval_ms, 0);
        assert!(q.names_callers());
        let q = StatsQuery::from_params(&params(&[("from", &(now - 3_600_000).to_string()), ("to", &now.to_string())]), now).unwrap();
        assert_eq!(q.interval_ms, 60_000);
        assert_eq!(rollup_width(300_000), 60_000);
        assert_eq!(rollup_width(86_400_000), 3_600_000);
        for (list, param) in [
            (vec![("group_by", "provider,provider")], "group_by"),
            (vec![("group_by", "provider,model,team")], "group_by"),
            (vec![("group_by", "region")], "group_by"),
            (vec![("interval", "2m")], "interval"),
            (vec![("status", "5xx")], "status"),
        ] {
            let e = StatsQuery::from_params(&params(&list), now).unwrap_err();
            assert_eq!(e.param, param, "{list:?}: {e}");
        }
    }

    #[test]
    fn bodies_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_body("héllo".into(), 2), "h");
        assert_eq!(truncate_body("héllo".into(), 3), "hé");
        assert_eq!(truncate_body("abc".into(), 10), "abc");
    }
}
