//! Where governance lives beyond one process: SQL implementations of the engine's
//! [`GovernanceStore`](switchyard_engine::governance::store::GovernanceStore) and
//! [`ProviderStore`](switchyard_engine::providers::store::ProviderStore) (the providers the management API
//! wrote, in `providers`).
//!
//! - [`SqliteStore`]: the embedded default, one file in the data directory, for a single gateway.
//! - [`PostgresStore`]: for several replicas that must share the entities written through the management API
//!   and one usage ledger.
//! - The request log (`reqlog`): both SQL stores implement the engine's
//!   [`RequestLogStore`](switchyard_engine::reqlog::RequestLogStore), rows and rollups in one transaction.
//! - [`RedisCounters`]: the budgets' and rate limits' counters those replicas share
//!   ([`SharedCounters`](switchyard_engine::governance::shared::SharedCounters)).
//!
//! This crate stores and reads back; it holds no business rules (which key may do what, how a budget
//! resets): those are the engine's. The tables are deliberately plain: each entity is kept as the JSON of its
//! engine type beside the few columns an operator would query by (`team_id`, `customer_id`), so a new
//! optional field in the engine needs no migration. A virtual key's value is never stored, only its SHA-256.
//!
//! Migrations run when a store is opened, with sqlx's migrator (its `_sqlx_migrations` table, checksums that
//! catch an edited migration, and on Postgres an advisory lock so that replicas starting together do not
//! race). The SQL files under `migrations/sqlite` and `migrations/postgres` are embedded with `include_str!`
//! instead of sqlx's `migrate!` macro: the macro needs sqlx's proc-macro crate, which compiles both drivers
//! (and the bundled SQLite) a second time for the host, roughly doubling this crate's build for nothing.

mod migrate;
mod postgres;
mod providers;
mod redis;
mod reqlog;
mod sqlite;

pub use postgres::PostgresStore;
pub use redis::RedisCounters;
pub use sqlite::SqliteStore;

use serde::de::DeserializeOwned;
use switchyard_engine::governance::store::{MeterState, StoreError, StoredKey, UsageRecord};
use switchyard_engine::governance::usage::{GroupBy, UsageGroup, UsageQuery, MAX_GROUPS};

/// Rows per `INSERT` when appending usage: 10 columns each keeps a statement far below SQLite's 32,766 and
/// Postgres' 65,535 bound parameters, while a 10,000-record batch still takes only ten statements.
const ROWS_PER_STATEMENT: usize = 1000;

/// How long an operation may wait for a pooled connection: bounded, so a stuck database turns into an
/// `Unavailable` error the caller can report instead of an unbounded wait.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Maps a database error to the trait's `Unavailable`, naming the operation. Errors that say a stored value
/// could not be decoded are the data's fault, not the database's, and become `Invalid`.
fn db_error(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Invalid(format!("while {what}: {e}")),
        other => StoreError::Unavailable { what, message: other.to_string() },
    }
}

/// Maps a failed migration. A database migrated by a newer gateway (a migration we do not know) or whose
/// applied migration was edited is data we cannot read (`Invalid`), not a database that is down.
fn migrate_error(what: &'static str, target: &str, e: sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError as M;
    match e {
        M::VersionMissing(v) => StoreError::Invalid(format!(
            "{target} has migration {v} applied, which this gateway does not know: it was written by a newer version"
        )),
        M::VersionMismatch(v) => StoreError::Invalid(format!(
            "{target}: migration {v} was applied from a different text than this gateway's; migrations must never be edited"
        )),
        other => StoreError::Unavailable { what, message: format!("migrating {target}: {other}") },
    }
}

/// Refuses a batch with a cost or use that is not a number before anything is written: SQLite would store
/// NaN as NULL and fail the whole batch on a constraint, Postgres would keep a NaN that poisons every sum.
/// Both stores behave alike, and the error names the culprit.
fn check_finite(what: &str, name: &str, value: f64) -> Result<(), StoreError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("{what} {name:?}: {value} is not a finite number")))
    }
}

fn check_usage(batch: &[UsageRecord]) -> Result<(), StoreError> {
    batch.iter().try_for_each(|u| check_finite("the cost of request", &u.request_id, u.cost_usd))
}

fn check_meters(states: &[MeterState]) -> Result<(), StoreError> {
    states.iter().try_for_each(|m| check_finite("the use of meter", &m.name, m.used))
}

/// Reads an entity back from its JSON column, checking that it is the row's entity (a hand edit that moved
/// a spec under another id would otherwise silently rename it).
fn decode_spec<T: DeserializeOwned>(table: &str, row_id: &str, json: &str, id_of: impl Fn(&T) -> &str) -> Result<T, StoreError> {
    let value: T = serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("{table} row {row_id:?}: the stored spec cannot be read: {e}")))?;
    if id_of(&value) != row_id {
        return Err(StoreError::Invalid(format!("{table} row {row_id:?}: the stored spec has id {:?}", id_of(&value))));
    }
    Ok(value)
}

fn encode_spec<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    // The engine's types always serialize; this only guards against a future type that cannot.
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable { what, message: format!("cannot encode: {e}") })
}

/// A key as stored must carry a SHA-256 and never its value: the value is skipped when the spec is
/// serialized, and this refuses a hash that is not one (a caller passing the value by mistake).
fn check_key(k: &StoredKey) -> Result<(), StoreError> {
    let h = &k.value_sha256;
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid(format!("virtual key {:?}: value_sha256 is not a hex SHA-256 (64 hex digits)", k.spec.id)));
    }
    Ok(())
}

/// Token counts are `u64` in the engine and `BIGINT` in the database; no request comes near `i64::MAX`.
fn tokens_to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn tokens_from_db(field: &str, request_id: &str, n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Invalid(format!("usage of request {request_id:?}: {field} is {n}")))
}

/// One usage row as read back (for tests and, later, the usage API).
#[allow(clippy::too_many_arguments)]
fn usage_from_columns(
    at_ms: i64,
    request_id: String,
    virtual_key: Option<String>,
    team: Option<String>,
    customer: Option<String>,
    provider: String,
    model: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost_usd: f64,
) -> Result<UsageRecord, StoreError> {
    Ok(UsageRecord {
        prompt_tokens: tokens_from_db("prompt_tokens", &request_id, prompt_tokens)?,
        completion_tokens: tokens_from_db("completion_tokens", &request_id, completion_tokens)?,
        at_ms,
        request_id,
        virtual_key,
        team,
        customer,
        provider,
        model,
        cost_usd,
    })
}

/// The two SQL dialects, for the one query whose text differs between them.
#[derive(Clone, Copy)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// The ledger's totals for a query, as one statement: the filters are bound parameters, in this order:
/// from, to, virtual key, team, customer, provider, model, and the most groups to return. Only the
/// grouping expression is chosen by the query, from a fixed list, never written from its text.
fn usage_totals_sql(d: Dialect, group: Option<GroupBy>) -> String {
    let p = |n: usize| match d {
        Dialect::Sqlite => format!("?{n}"),
        Dialect::Postgres => format!("${n}"),
    };
    let text = |n: usize| match d {
        Dialect::Sqlite => p(n),
        Dialect::Postgres => format!("{}::TEXT", p(n)),
    };
    let float = match d {
        Dialect::Sqlite => "REAL",
        Dialect::Postgres => "DOUBLE PRECISION",
    };
    let grp = match group {
        None => "CAST(NULL AS TEXT)",
        Some(GroupBy::VirtualKey) => "virtual_key",
        Some(GroupBy::Team) => "team",
        Some(GroupBy::Customer) => "customer",
        Some(GroupBy::Provider) => "provider",
        Some(GroupBy::Model) => "model",
        Some(GroupBy::Day) => match d {
            Dialect::Sqlite => "strftime('%Y-%m-%d', at_ms / 1000, 'unixepoch')",
            Dialect::Postgres => "to_char(to_timestamp(at_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        },
    };
    let filters: Vec<String> = ["virtual_key", "team", "customer", "provider", "model"]
        .iter()
        .enumerate()
        .map(|(i, col)| format!("({} IS NULL OR {col} = {})", text(i + 3), p(i + 3)))
        .collect();
    let mut sql = format!(
        "SELECT {grp} AS grp, COUNT(*), CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT),          CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cost_usd), 0) AS {float})          FROM usage_ledger WHERE at_ms >= {} AND at_ms < {} AND {}",
        p(1),
        p(2),
        filters.join(" AND ")
    );
    if group.is_some() {
        sql.push_str(&format!(" GROUP BY grp ORDER BY grp NULLS FIRST LIMIT {}", p(8)));
    }
    sql
}

/// The most groups a store returns: one more than an answer shows, so that a cut answer can say so.
fn usage_groups_limit() -> i64 {
    i64::try_from(MAX_GROUPS + 1).unwrap_or(i64::MAX)
}

/// The query's filters in the order [`usage_totals_sql`] binds them after from and to.
fn usage_filters(q: &UsageQuery) -> [Option<&str>; 5] {
    [q.virtual_key.as_deref(), q.team.as_deref(), q.customer.as_deref(), q.provider.as_deref(), q.model.as_deref()]
}

fn group_from_columns(key: Option<String>, requests: i64, input: i64, output: i64, cost_usd: f64) -> Result<UsageGroup, StoreError> {
    let count = |field: &str, n: i64| {
        u64::try_from(n)
            .map_err(|_| StoreError::Invalid(format!("usage totals of group {key:?}: {field} is {n} (a row was edited by hand?)")))
    };
    Ok(UsageGroup {
        requests: count("requests", requests)?,
        input_tokens: count("input_tokens", input)?,
        output_tokens: count("output_tokens", output)?,
        key,
        cost_usd,
    })
}

fn meter_from_columns(name: String, start: Option<i64>, end: Option<i64>, used: f64) -> Result<MeterState, StoreError> {
    let window = match (start, end) {
        (Some(s), Some(e)) => Some((s, e)),
        (None, None) => None,
        _ => return Err(StoreError::Invalid(format!("meter {name:?}: a window needs both its start and its end"))),
    };
    Ok(MeterState { name, window, used })
}

/// The last state per meter name, in first-seen order: one `INSERT .. ON CONFLICT DO UPDATE` may not touch
/// the same row twice (Postgres refuses it), and the last state given is the one meant.
fn last_per_name(states: Vec<MeterState>) -> Vec<MeterState> {
    let mut out: Vec<MeterState> = Vec::with_capacity(states.len());
    let mut index = std::collections::HashMap::with_capacity(states.len());
    for s in states {
        match index.get(&s.name) {
            Some(&i) => out[i] = s,
            None => {
                index.insert(s.name.clone(), out.len());
                out.push(s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_state_of_a_meter_wins() {
        let m = |name: &str, used| MeterState { name: name.into(), window: None, used };
        let got = last_per_name(vec![m("a", 1.0), m("b", 2.0), m("a", 3.0)]);
        assert_eq!(got, vec![m("a", 3.0), m("b", 2.0)]);
    }

    #[test]
    fn a_window_needs_both_ends() {
        assert!(meter_from_columns("m".into(), Some(1), None, 0.0).is_err());
        assert_eq!(meter_from_columns("m".into(), Some(1), Some(2), 0.5).unwrap().window, Some((1, 2)));
    }
}
