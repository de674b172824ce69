//! The request log in both databases: rows in `request_logs`, rollups in `request_rollups` (see migration
//! 0003), behind the engine's [`RequestLogStore`].
//!
//! The statements are written once, here, for both dialects ([`Sql`] numbers the placeholders as each
//! wants), so that SQLite and PostgreSQL answer the same question with the same text. Every value a caller
//! gave is a bound parameter; only the choice of columns comes from the query's shape, from fixed lists.
//! A batch is appended and its rollups added in one transaction, so the stats never disagree with the
//! rows (a batch retried after a lost answer is skipped row by row: its ids are already there).

use sqlx::{Postgres, Row, Sqlite};
use switchyard_engine::governance::store::{StoreError, StoreFuture};
use switchyard_engine::observe::RequestRecord;
use switchyard_engine::reqlog::{
    rollup, rollup_width, Counters, Cursor, LogPage, LogQuery, LogRow, Pruned, RequestLogStore, StatRow, StatsDim, StatsQuery,
    LATENCY_BUCKETS,
};

use crate::{db_error, Dialect, PostgresStore, SqliteStore};

/// Rows per insert statement: 16 parameters each stays far below SQLite's 32,766.
const LOG_ROWS_PER_STATEMENT: usize = 500;
/// Rollup cells per upsert statement: 81 parameters each.
const CELLS_PER_STATEMENT: usize = 200;
/// Rows deleted per statement when pruning, so that no delete holds the writer's lock for long.
const PRUNE_CHUNK: i64 = 5_000;

/// A bound value.
enum Arg {
    I(i64),
    T(String),
    B(bool),
    NullI,
    NullT,
}

/// A statement being written: its text and its arguments, numbered for the dialect.
struct Sql {
    d: Dialect,
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn new(d: Dialect) -> Sql {
        Sql { d, text: String::new(), args: Vec::new() }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder for `a`.
    fn arg(&mut self, a: Arg) -> &mut Self {
        self.args.push(a);
        let n = self.args.len();
        match self.d {
            // Anonymous: SQLite looks a numbered parameter's name up in a list, once per parameter, which
            // makes binding a statement of thousands of parameters quadratic.
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => self.text.push_str(&format!("${n}")),
        }
        self
    }

    fn text_or_null(&mut self, v: Option<&str>) -> &mut Self {
        self.arg(v.map_or(Arg::NullT, |s| Arg::T(s.to_string())))
    }

    fn int_or_null(&mut self, v: Option<i64>) -> &mut Self {
        self.arg(v.map_or(Arg::NullI, Arg::I))
    }

    fn sqlite(&self) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for a in &self.args {
            q = match a {
                Arg::I(v) => q.bind(*v),
                Arg::T(v) => q.bind(v.as_str()),
                Arg::B(v) => q.bind(*v),
                Arg::NullI => q.bind(None::<i64>),
                Arg::NullT => q.bind(None::<&str>),
            };
        }
        q
    }

    fn postgres(&self) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(&self.text);
        for a in &self.args {
            q = match a {
                Arg::I(v) => q.bind(*v),
                Arg::T(v) => q.bind(v.as_str()),
                Arg::B(v) => q.bind(*v),
                Arg::NullI => q.bind(None::<i64>),
                Arg::NullT => q.bind(None::<&str>),
            };
        }
        q
    }
}

fn db_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `LIKE` pattern for "contains `s`", with `\` escaping the wildcards.
fn contains_pattern(s: &str) -> String {
    let mut p = String::from("%");
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn encode_record(r: &RequestRecord) -> Result<String, StoreError> {
    let bare = RequestRecord { request_body: None, response_body: None, ..r.clone() };
    serde_json::to_string(&bare).map_err(|e| StoreError::Invalid(format!("request {:?} cannot be encoded: {e}", r.id)))
}

fn decode_record(json: &str) -> Result<RequestRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Invalid(format!("a request_logs row cannot be read: {e}")))
}

/// `INSERT ... RETURNING id` for a chunk of rows; ids already kept are skipped.
fn insert_sql(d: Dialect, rows: &[LogRow]) -> Result<Sql, StoreError> {
    let mut s = Sql::new(d);
    s.push(
        "INSERT INTO request_logs (id, at_ms, virtual_key, team, customer, provider, model, asked_model, status, latency_ms, \
         stream, search, errors, record, request_body, response_body) VALUES ",
    );
    for (i, row) in rows.iter().enumerate() {
        let r = &row.record;
        if i > 0 {
            s.push(", ");
        }
        s.push("(").arg(Arg::T(r.id.clone())).push(", ").arg(Arg::I(r.at_ms)).push(", ");
        for v in [&row.dims.virtual_key, &row.dims.team, &row.dims.customer, &row.dims.provider, &row.dims.model, &r.model] {
            s.text_or_null(v.as_deref()).push(", ");
        }
        s.int_or_null(r.status.map(i64::from)).push(", ").arg(Arg::I(db_int(r.latency_ms))).push(", ").arg(Arg::B(r.stream)).push(", ");
        s.arg(Arg::T(row.search.clone())).push(", ").arg(Arg::T(row.errors.clone())).push(", ").arg(Arg::T(encode_record(r)?));
        if matches!(d, Dialect::Postgres) {
            s.push("::jsonb");
        }
        s.push(", ").text_or_null(r.request_body.as_deref()).push(", ").text_or_null(r.response_body.as_deref()).push(")");
    }
    s.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
    Ok(s)
}

const COUNTERS: [&str; 6] = ["requests", "errors", "fallbacks", "tokens_in", "tokens_out", "cost_nano_usd"];
const DIM_COLUMNS: [&str; 7] = ["provider", "model", "provider_tags", "status_class", "virtual_key", "team", "customer"];

fn hist_columns() -> impl Iterator<Item = String> {
    (0..LATENCY_BUCKETS).map(|i| format!("h{i}"))
}

/// Adds a batch's cells to the rollups.
fn upsert_sql(d: Dialect, cells: &[(switchyard_engine::reqlog::RollupKey, Counters, Vec<u64>)]) -> Sql {
    let mut s = Sql::new(d);
    let hist: Vec<String> = hist_columns().collect();
    s.push(&format!(
        "INSERT INTO request_rollups (width_ms, callers, bucket_ms, {}, virtual_key_name, {}, {}) VALUES ",
        DIM_COLUMNS.join(", "),
        COUNTERS.join(", "),
        hist.join(", ")
    ));
    for (i, (k, c, h)) in cells.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.push("(").arg(Arg::I(k.width_ms)).push(", ");
        match d {
            Dialect::Sqlite => s.arg(Arg::I(i64::from(k.callers))),
            Dialect::Postgres => s.arg(Arg::B(k.callers)),
        };
        s.push(", ").arg(Arg::I(k.bucket_ms));
        let dims = &k.dims;
        for v in [
            &dims.provider,
            &dims.model,
            &dims.provider_tags,
            &Some(dims.status_class.to_string()),
            &dims.virtual_key,
            &dims.team,
            &dims.customer,
            &dims.virtual_key_name,
        ] {
            s.push(", ").arg(Arg::T(v.clone().unwrap_or_default()));
        }
        for v in [c.requests, c.errors, c.fallbacks, c.tokens_in, c.tokens_out, c.cost_nano_usd] {
            s.push(", ").arg(Arg::I(db_int(v)));
        }
        for v in h {
            s.push(", ").arg(Arg::I(db_int(*v)));
        }
        s.push(")");
    }
    let adds: Vec<String> =
        COUNTERS.iter().map(|c| c.to_string()).chain(hist).map(|c| format!("{c} = request_rollups.{c} + excluded.{c}")).collect();
    s.push(&format!(
        " ON CONFLICT (width_ms, callers, bucket_ms, {}) DO UPDATE SET virtual_key_name = excluded.virtual_key_name, {}",
        DIM_COLUMNS.join(", "),
        adds.join(", ")
    ));
    s
}

/// Which model column a branch of a page filters on: `model=` matches the model that answered or the
/// model asked for, written as two branches (each served by its own index, in time order) instead of an
/// `OR` that no index serves.
#[derive(Clone, Copy)]
enum ModelBranch {
    Served,
    /// Asked for, and not already matched by the first branch.
    AskedOnly,
}

/// The `WHERE` of a page: range, cursor, and the filters indexes serve; with `scanned`, also `q` and
/// `error`; with `bound`, only rows up to the bounded scan's last.
fn page_where(s: &mut Sql, q: &LogQuery, scanned: bool, branch: Option<ModelBranch>, bound: Option<&Cursor>) {
    s.push(" WHERE at_ms >= ").arg(Arg::I(q.from_ms)).push(" AND at_ms < ").arg(Arg::I(q.to_ms));
    // A plain `at_ms` bound beside each row-value test, so that the planner has a range on the time
    // index and does not rely on the `OR` alone.
    if let Some(c) = &q.cursor {
        s.push(" AND at_ms <= ").arg(Arg::I(c.at_ms));
        s.push(" AND (at_ms < ").arg(Arg::I(c.at_ms)).push(" OR (at_ms = ").arg(Arg::I(c.at_ms));
        s.push(" AND id < ").arg(Arg::T(c.id.clone())).push("))");
    }
    let e = &q.entity;
    for (col, v) in [("virtual_key", &e.virtual_key), ("team", &e.team), ("customer", &e.customer), ("provider", &e.provider)] {
        if let Some(v) = v {
            s.push(&format!(" AND {col} = ")).arg(Arg::T(v.clone()));
        }
    }
    match (&e.model, branch) {
        (Some(m), Some(ModelBranch::Served)) => {
            s.push(" AND model = ").arg(Arg::T(m.clone()));
        }
        (Some(m), Some(ModelBranch::AskedOnly)) => {
            s.push(" AND asked_model = ").arg(Arg::T(m.clone()));
            s.push(" AND (model IS NULL OR model <> ").arg(Arg::T(m.clone())).push(")");
        }
        _ => {}
    }
    if let Some(st) = q.status {
        let (lo, hi) = st.codes();
        s.push(" AND status BETWEEN ").arg(Arg::I(i64::from(lo))).push(" AND ").arg(Arg::I(i64::from(hi)));
    }
    if let Some(m) = q.min_latency_ms {
        s.push(" AND latency_ms >= ").arg(Arg::I(db_int(m)));
    }
    if let Some(b) = q.stream {
        s.push(" AND stream = ").arg(Arg::B(b));
    }
    if scanned {
        if let Some(t) = &q.q {
            s.push(" AND search LIKE ").arg(Arg::T(contains_pattern(t))).push(" ESCAPE '\\'");
        }
        if let Some(e) = &q.error {
            s.push(" AND errors LIKE ").arg(Arg::T(contains_pattern(&format!(" {e} ")))).push(" ESCAPE '\\'");
        }
    }
    if let Some(b) = bound {
        s.push(" AND at_ms >= ").arg(Arg::I(b.at_ms));
        s.push(" AND (at_ms > ").arg(Arg::I(b.at_ms)).push(" OR (at_ms = ").arg(Arg::I(b.at_ms));
        s.push(" AND id >= ").arg(Arg::T(b.id.clone())).push("))");
    }
}

/// `SELECT <outer> ... ORDER BY at_ms DESC, id DESC LIMIT limit [OFFSET offset]` over the rows a page
/// may show (`cols`: outer, and what each branch selects, `at_ms` and `id` among them; `window`: limit
/// and offset).
fn select_rows(s: &mut Sql, q: &LogQuery, cols: (&str, &str), scanned: bool, bound: Option<&Cursor>, window: (i64, i64)) {
    let ((outer, inner), (limit, offset)) = (cols, window);
    let tail = |s: &mut Sql, limit: i64| {
        s.push(" ORDER BY at_ms DESC, id DESC LIMIT ").arg(Arg::I(limit));
        if offset > 0 {
            s.push(" OFFSET ").arg(Arg::I(offset));
        }
    };
    if q.entity.model.is_none() {
        s.push(&format!("SELECT {outer} FROM request_logs"));
        page_where(s, q, scanned, None, bound);
        tail(s, limit);
        return;
    }
    s.push(&format!("SELECT {outer} FROM (SELECT * FROM ("));
    for (i, branch) in [ModelBranch::Served, ModelBranch::AskedOnly].into_iter().enumerate() {
        if i > 0 {
            s.push(") AS served UNION ALL SELECT * FROM (");
        }
        s.push(&format!("SELECT {inner} FROM request_logs"));
        page_where(s, q, scanned, Some(branch), bound);
        s.push(" ORDER BY at_ms DESC, id DESC LIMIT ").arg(Arg::I(limit + offset));
    }
    s.push(") AS asked) AS rows");
    tail(s, limit);
}

/// The row a bounded scan stops at: the `scan_limit`th row matching the indexed filters.
fn boundary_sql(d: Dialect, q: &LogQuery) -> Sql {
    let mut s = Sql::new(d);
    select_rows(&mut s, q, ("at_ms, id", "at_ms, id"), false, None, (1, db_int(q.scan_limit.max(1) as u64 - 1)));
    s
}

fn page_sql(d: Dialect, q: &LogQuery, bound: Option<&Cursor>) -> Sql {
    let mut s = Sql::new(d);
    let (outer, inner) = match d {
        Dialect::Sqlite => ("record", "at_ms, id, record"),
        Dialect::Postgres => ("record", "at_ms, id, record::text AS record"),
    };
    let outer = if q.entity.model.is_none() && matches!(d, Dialect::Postgres) { "record::text" } else { outer };
    select_rows(&mut s, q, (outer, inner), true, bound, (db_int(q.limit as u64 + 1), 0));
    s
}

/// The page from the rows fetched (at most `limit + 1`) and the scan's bound.
fn page_from(q: &LogQuery, mut records: Vec<RequestRecord>, bound: Option<Cursor>) -> LogPage {
    if records.len() > q.limit {
        records.truncate(q.limit);
        let next_cursor = records.last().map(Cursor::of);
        return LogPage { records, next_cursor };
    }
    LogPage { records, next_cursor: bound }
}

fn dim_column(d: StatsDim) -> &'static str {
    // The rollup's columns are named as the API names the dimensions.
    d.as_str()
}

/// Columns: t, the group's values (one per dimension), the key's name, the counters, the histogram.
fn stats_sql(d: Dialect, q: &StatsQuery) -> Sql {
    let mut s = Sql::new(d);
    let sum = |c: &str| match d {
        Dialect::Sqlite => format!("SUM({c})"),
        Dialect::Postgres => format!("CAST(SUM({c}) AS BIGINT)"),
    };
    let groups: Vec<&str> = q.group_by.iter().map(|g| dim_column(*g)).collect();
    let sums: Vec<String> = COUNTERS.iter().map(|c| c.to_string()).chain(hist_columns()).map(|c| sum(&c)).collect();
    s.push("SELECT (bucket_ms / ").arg(Arg::I(q.interval_ms)).push(") * ").arg(Arg::I(q.interval_ms)).push(" AS t");
    for g in &groups {
        s.push(&format!(", {g}"));
    }
    s.push(&format!(", MAX(virtual_key_name), {} FROM request_rollups WHERE width_ms = ", sums.join(", ")));
    s.arg(Arg::I(rollup_width(q.interval_ms))).push(" AND callers = ");
    match d {
        Dialect::Sqlite => s.arg(Arg::I(i64::from(q.names_callers()))),
        Dialect::Postgres => s.arg(Arg::B(q.names_callers())),
    };
    s.push(" AND bucket_ms >= ").arg(Arg::I(q.from_ms)).push(" AND bucket_ms < ").arg(Arg::I(q.to_ms));
    let e = &q.entity;
    for (col, v) in
        [("virtual_key", &e.virtual_key), ("team", &e.team), ("customer", &e.customer), ("provider", &e.provider), ("model", &e.model)]
    {
        if let Some(v) = v {
            s.push(&format!(" AND {col} = ")).arg(Arg::T(v.clone()));
        }
    }
    s.push(" GROUP BY t");
    for g in &groups {
        s.push(&format!(", {g}"));
    }
    s
}

/// A stats row from its columns (see [`stats_sql`]).
fn stat_row(q: &StatsQuery, t_ms: i64, keys: Vec<String>, name: Option<String>, nums: Vec<i64>) -> Result<StatRow, StoreError> {
    let n = |i: usize| {
        u64::try_from(nums[i]).map_err(|_| StoreError::Invalid(format!("request_rollups: a negative count ({}) was summed", nums[i])))
    };
    let counters = Counters { requests: n(0)?, errors: n(1)?, fallbacks: n(2)?, tokens_in: n(3)?, tokens_out: n(4)?, cost_nano_usd: n(5)? };
    let hist = (0..LATENCY_BUCKETS).map(|i| n(COUNTERS.len() + i)).collect::<Result<Vec<u64>, StoreError>>()?;
    let by_key = q.group_by.contains(&StatsDim::VirtualKey);
    Ok(StatRow {
        t_ms,
        keys: keys.into_iter().map(|k| (!k.is_empty()).then_some(k)).collect(),
        key_name: name.filter(|n| by_key && !n.is_empty()),
        counters,
        hist,
    })
}

fn prune_sqls(d: Dialect) -> (&'static str, &'static str, &'static str, &'static str) {
    match d {
        Dialect::Sqlite => (
            "DELETE FROM request_logs WHERE seq IN (SELECT seq FROM request_logs WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
            "DELETE FROM request_logs WHERE seq IN (SELECT seq FROM request_logs ORDER BY at_ms, id LIMIT ?1)",
            "SELECT COUNT(*) FROM request_logs",
            "DELETE FROM request_rollups WHERE (width_ms = ?1 AND bucket_ms < ?2) OR bucket_ms < ?3",
        ),
        Dialect::Postgres => (
            "DELETE FROM request_logs WHERE seq IN (SELECT seq FROM request_logs WHERE at_ms < $1 ORDER BY at_ms LIMIT $2)",
            "DELETE FROM request_logs WHERE seq IN (SELECT seq FROM request_logs ORDER BY at_ms, id LIMIT $1)",
            "SELECT COUNT(*) FROM request_logs",
            "DELETE FROM request_rollups WHERE (width_ms = $1 AND bucket_ms < $2) OR bucket_ms < $3",
        ),
    }
}

const WRITING: &str = "writing the request log";
const READING: &str = "reading the request log";
const PRUNING: &str = "pruning the request log";

/// The rows of a batch the database took (those whose ids were not there yet).
fn inserted(batch: Vec<LogRow>, ids: &std::collections::HashSet<String>) -> Vec<LogRow> {
    batch.into_iter().filter(|r| ids.contains(&r.record.id)).collect()
}

macro_rules! log_store {
    ($store:ty, $dialect:expr, $bind:ident) => {
        impl $store {
            async fn log_write(&self, batch: Vec<LogRow>) -> Result<(), StoreError> {
                if batch.is_empty() {
                    return Ok(());
                }
                // Repeats inside one batch: the first is kept (one statement may not insert an id twice).
                let mut seen = std::collections::HashSet::new();
                let batch: Vec<LogRow> = batch.into_iter().filter(|r| seen.insert(r.record.id.clone())).collect();
                let mut tx = self.pool.begin().await.map_err(db_error(WRITING))?;
                let mut ids = std::collections::HashSet::new();
                for chunk in batch.chunks(LOG_ROWS_PER_STATEMENT) {
                    let sql = insert_sql($dialect, chunk)?;
                    for row in sql.$bind().fetch_all(&mut *tx).await.map_err(db_error(WRITING))? {
                        ids.insert(row.try_get::<String, _>(0).map_err(db_error(WRITING))?);
                    }
                }
                let cells = rollup(&inserted(batch, &ids));
                for chunk in cells.chunks(CELLS_PER_STATEMENT) {
                    upsert_sql($dialect, chunk).$bind().execute(&mut *tx).await.map_err(db_error(WRITING))?;
                }
                tx.commit().await.map_err(db_error(WRITING))?;
                Ok(())
            }

            async fn log_query(&self, q: LogQuery) -> Result<LogPage, StoreError> {
                let bound = if q.scans() {
                    let sql = boundary_sql($dialect, &q);
                    match sql.$bind().fetch_optional(&self.pool).await.map_err(db_error(READING))? {
                        Some(r) => {
                            Some(Cursor { at_ms: r.try_get(0).map_err(db_error(READING))?, id: r.try_get(1).map_err(db_error(READING))? })
                        }
                        None => None,
                    }
                } else {
                    None
                };
                let sql = page_sql($dialect, &q, bound.as_ref());
                let rows = sql.$bind().fetch_all(&self.pool).await.map_err(db_error(READING))?;
                let records = rows
                    .iter()
                    .map(|r| decode_record(&r.try_get::<String, _>(0).map_err(db_error(READING))?))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(page_from(&q, records, bound))
            }

            async fn log_get(&self, id: String) -> Result<Option<RequestRecord>, StoreError> {
                let sql = match $dialect {
                    Dialect::Sqlite => "SELECT record, request_body, response_body FROM request_logs WHERE id = ?1",
                    Dialect::Postgres => "SELECT record::text, request_body, response_body FROM request_logs WHERE id = $1",
                };
                let Some(row) = sqlx::query(sql).bind(&id).fetch_optional(&self.pool).await.map_err(db_error(READING))? else {
                    return Ok(None);
                };
                let mut r = decode_record(&row.try_get::<String, _>(0).map_err(db_error(READING))?)?;
                r.request_body = row.try_get(1).map_err(db_error(READING))?;
                r.response_body = row.try_get(2).map_err(db_error(READING))?;
                Ok(Some(r))
            }

            async fn log_stats(&self, q: StatsQuery) -> Result<Vec<StatRow>, StoreError> {
                const WHAT: &str = "reading the request log's rollups";
                let sql = stats_sql($dialect, &q);
                let rows = sql.$bind().fetch_all(&self.pool).await.map_err(db_error(WHAT))?;
                let g = q.group_by.len();
                rows.iter()
                    .map(|r| {
                        let t: i64 = r.try_get(0).map_err(db_error(WHAT))?;
                        let keys = (0..g).map(|i| r.try_get::<String, _>(1 + i).map_err(db_error(WHAT))).collect::<Result<Vec<_>, _>>()?;
                        let name: Option<String> = r.try_get(1 + g).map_err(db_error(WHAT))?;
                        let nums = (0..COUNTERS.len() + LATENCY_BUCKETS)
                            .map(|i| r.try_get::<i64, _>(2 + g + i).map_err(db_error(WHAT)))
                            .collect::<Result<Vec<_>, _>>()?;
                        stat_row(&q, t, keys, name, nums)
                    })
                    .collect()
            }

            async fn log_prune(&self, before_ms: i64, max_rows: u64, rollups_before_ms: i64) -> Result<Pruned, StoreError> {
                let (aged_sql, over_sql, count_sql, rollups_sql) = prune_sqls($dialect);
                let mut p = Pruned::default();
                loop {
                    let n = sqlx::query(aged_sql)
                        .bind(before_ms)
                        .bind(PRUNE_CHUNK)
                        .execute(&self.pool)
                        .await
                        .map_err(db_error(PRUNING))?
                        .rows_affected();
                    p.aged += n;
                    if n < PRUNE_CHUNK as u64 {
                        break;
                    }
                }
                let count: i64 =
                    sqlx::query(count_sql).fetch_one(&self.pool).await.map_err(db_error(PRUNING))?.try_get(0).map_err(db_error(PRUNING))?;
                let mut excess = u64::try_from(count).unwrap_or(0).saturating_sub(max_rows);
                while excess > 0 {
                    let chunk = excess.min(PRUNE_CHUNK as u64);
                    let n = sqlx::query(over_sql).bind(db_int(chunk)).execute(&self.pool).await.map_err(db_error(PRUNING))?.rows_affected();
                    p.over += n;
                    if n == 0 {
                        break;
                    }
                    excess = excess.saturating_sub(n);
                }
                // The minute rollups go with the rows; the coarser ones are kept for the stats' retention.
                sqlx::query(rollups_sql)
                    .bind(switchyard_engine::reqlog::ROLLUP_WIDTHS[0])
                    .bind(before_ms)
                    .bind(rollups_before_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(db_error(PRUNING))?;
                Ok(p)
            }
        }

        impl RequestLogStore for $store {
            fn write_batch(&self, batch: Vec<LogRow>) -> StoreFuture<'_, ()> {
                Box::pin(self.log_write(batch))
            }
            fn query(&self, q: LogQuery) -> StoreFuture<'_, LogPage> {
                Box::pin(self.log_query(q))
            }
            fn get(&self, id: String) -> StoreFuture<'_, Option<RequestRecord>> {
                Box::pin(self.log_get(id))
            }
            fn stat_rows(&self, q: StatsQuery) -> StoreFuture<'_, Vec<StatRow>> {
                Box::pin(self.log_stats(q))
            }
            fn prune(&self, before_ms: i64, max_rows: u64, rollups_before_ms: i64) -> StoreFuture<'_, Pruned> {
                Box::pin(self.log_prune(before_ms, max_rows, rollups_before_ms))
            }
        }
    };
}

log_store!(SqliteStore, Dialect::Sqlite, sqlite);
log_store!(PostgresStore, Dialect::Postgres, postgres);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_in_searched_text_are_literal() {
        assert_eq!(contains_pattern("rate_limited"), "%rate\\_limited%");
        assert_eq!(contains_pattern("100%"), "%100\\%%");
        assert_eq!(contains_pattern("a\\b"), "%a\\\\b%");
    }
}
