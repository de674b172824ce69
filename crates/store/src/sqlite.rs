//! The embedded default: one SQLite file in the data directory (`<data-dir>/switchyard.db`).
//!
//! WAL journaling lets the management API read while the usage batcher writes, and with `synchronous =
//! NORMAL` a commit does not wait for an fsync (a power cut may lose the last commits, never corrupt the
//! file: the right trade for a ledger written in batches off the request path). SQLite allows one writer at
//! a time; the busy timeout makes a second writer wait briefly for the first instead of failing at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite};
use switchyard_engine::governance::model::{Customer, Team, VirtualKeySpec};
use switchyard_engine::governance::store::{
    GovernanceStore, MeterState, StoreError, StoreFuture, StoredGovernance, StoredKey, UsageRecord,
};

use crate::{
    check_key, check_meters, check_usage, db_error, decode_spec, encode_spec, group_from_columns, last_per_name, meter_from_columns,
    migrate, migrate_error, tokens_to_db, usage_filters, usage_from_columns, usage_groups_limit, usage_totals_sql, Dialect,
    ACQUIRE_TIMEOUT, ROWS_PER_STATEMENT,
};
use switchyard_engine::governance::usage::{UsageGroup, UsageQuery};

/// How long a statement waits for another connection's write lock before it fails as `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Readers run beside the single writer in WAL mode; a few connections are plenty for one gateway.
const MAX_CONNECTIONS: u32 = 4;

/// A [`GovernanceStore`] in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if missing) the database at `path`, and brings its schema
    /// up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let unavailable = |message: String| StoreError::Unavailable { what: "opening the SQLite store", message };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Blocking, but once at startup and only a mkdir.
            std::fs::create_dir_all(parent).map_err(|e| unavailable(format!("cannot create {}: {e}", parent.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let migrator = migrate::migrator(migrate::SQLITE).await.map_err(|e| unavailable(e.to_string()))?;
        migrator.run(&pool).await.map_err(|e| migrate_error("opening the SQLite store", &path.display().to_string(), e))?;
        tracing::info!(path = %path.display(), "SQLite store open");
        Ok(SqliteStore { pool, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pool, waiting for the connections to finish (so the WAL is checkpointed into the file).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The ledger's records settled in `[from_ms, to_ms)`, oldest first, of one key if given.
    pub async fn usage(&self, virtual_key: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRecord>, StoreError> {
        const WHAT: &str = "reading the usage ledger";
        let rows = sqlx::query(
            "SELECT at_ms, request_id, virtual_key, team, customer, provider, model, prompt_tokens, \
             completion_tokens, cost_usd FROM usage_ledger \
             WHERE at_ms >= ?1 AND at_ms < ?2 AND (?3 IS NULL OR virtual_key = ?3) ORDER BY at_ms, seq",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(virtual_key)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error(WHAT))?;
        rows.iter()
            .map(|r| {
                usage_from_columns(
                    r.try_get(0).map_err(db_error(WHAT))?,
                    r.try_get(1).map_err(db_error(WHAT))?,
                    r.try_get(2).map_err(db_error(WHAT))?,
                    r.try_get(3).map_err(db_error(WHAT))?,
                    r.try_get(4).map_err(db_error(WHAT))?,
                    r.try_get(5).map_err(db_error(WHAT))?,
                    r.try_get(6).map_err(db_error(WHAT))?,
                    r.try_get(7).map_err(db_error(WHAT))?,
                    r.try_get(8).map_err(db_error(WHAT))?,
                    r.try_get(9).map_err(db_error(WHAT))?,
                )
            })
            .collect()
    }

    async fn totals(&self, q: UsageQuery) -> Result<Vec<UsageGroup>, StoreError> {
        const WHAT: &str = "totalling the usage ledger";
        let sql = usage_totals_sql(Dialect::Sqlite, q.group_by);
        let mut query = sqlx::query(&sql).bind(q.from_or_min()).bind(q.to_or_max());
        for f in usage_filters(&q) {
            query = query.bind(f);
        }
        if q.group_by.is_some() {
            query = query.bind(usage_groups_limit());
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db_error(WHAT))?;
        rows.iter()
            .map(|r| {
                group_from_columns(
                    r.try_get(0).map_err(db_error(WHAT))?,
                    r.try_get(1).map_err(db_error(WHAT))?,
                    r.try_get(2).map_err(db_error(WHAT))?,
                    r.try_get(3).map_err(db_error(WHAT))?,
                    r.try_get(4).map_err(db_error(WHAT))?,
                )
            })
            .collect()
    }

    async fn load_all(&self) -> Result<StoredGovernance, StoreError> {
        const WHAT: &str = "loading governance";
        let mut tx = self.pool.begin().await.map_err(db_error(WHAT))?;
        let mut g = StoredGovernance::default();
        for r in sqlx::query("SELECT id, spec FROM customers ORDER BY id").fetch_all(&mut *tx).await.map_err(db_error(WHAT))? {
            let (id, spec): (String, String) = (r.try_get(0).map_err(db_error(WHAT))?, r.try_get(1).map_err(db_error(WHAT))?);
            g.customers.push(decode_spec::<Customer>("customers", &id, &spec, |c| &c.id)?);
        }
        for r in sqlx::query("SELECT id, spec FROM teams ORDER BY id").fetch_all(&mut *tx).await.map_err(db_error(WHAT))? {
            let (id, spec): (String, String) = (r.try_get(0).map_err(db_error(WHAT))?, r.try_get(1).map_err(db_error(WHAT))?);
            g.teams.push(decode_spec::<Team>("teams", &id, &spec, |t| &t.id)?);
        }
        for r in
            sqlx::query("SELECT id, spec, value_sha256 FROM virtual_keys ORDER BY id").fetch_all(&mut *tx).await.map_err(db_error(WHAT))?
        {
            let (id, spec, value_sha256): (String, String, String) =
                (r.try_get(0).map_err(db_error(WHAT))?, r.try_get(1).map_err(db_error(WHAT))?, r.try_get(2).map_err(db_error(WHAT))?);
            let spec = decode_spec::<VirtualKeySpec>("virtual_keys", &id, &spec, |k| &k.id)?;
            g.keys.push(StoredKey { spec, value_sha256 });
        }
        tx.commit().await.map_err(db_error(WHAT))?;
        Ok(g)
    }

    async fn upsert_customer(&self, c: Customer) -> Result<(), StoreError> {
        const WHAT: &str = "saving a customer";
        sqlx::query("INSERT INTO customers (id, spec) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET spec = excluded.spec")
            .bind(&c.id)
            .bind(encode_spec(WHAT, &c)?)
            .execute(&self.pool)
            .await
            .map_err(db_error(WHAT))?;
        Ok(())
    }

    async fn upsert_team(&self, t: Team) -> Result<(), StoreError> {
        const WHAT: &str = "saving a team";
        sqlx::query(
            "INSERT INTO teams (id, customer_id, spec) VALUES (?1, ?2, ?3) \
             ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, spec = excluded.spec",
        )
        .bind(&t.id)
        .bind(&t.customer_id)
        .bind(encode_spec(WHAT, &t)?)
        .execute(&self.pool)
        .await
        .map_err(db_error(WHAT))?;
        Ok(())
    }

    async fn upsert_key(&self, k: StoredKey) -> Result<(), StoreError> {
        const WHAT: &str = "saving a virtual key";
        check_key(&k)?;
        // `VirtualKeySpec` never serializes its value, so the JSON holds no secret.
        sqlx::query(
            "INSERT INTO virtual_keys (id, value_sha256, team_id, customer_id, spec) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (id) DO UPDATE SET value_sha256 = excluded.value_sha256, team_id = excluded.team_id, \
             customer_id = excluded.customer_id, spec = excluded.spec",
        )
        .bind(&k.spec.id)
        .bind(&k.value_sha256)
        .bind(&k.spec.team_id)
        .bind(&k.spec.customer_id)
        .bind(encode_spec(WHAT, &k.spec)?)
        .execute(&self.pool)
        .await
        .map_err(db_error(WHAT))?;
        Ok(())
    }

    async fn delete(&self, what: &'static str, sql: &'static str, id: String) -> Result<bool, StoreError> {
        let done = sqlx::query(sql).bind(id).execute(&self.pool).await.map_err(db_error(what))?;
        Ok(done.rows_affected() > 0)
    }

    async fn append(&self, batch: Vec<UsageRecord>) -> Result<(), StoreError> {
        const WHAT: &str = "appending usage";
        check_usage(&batch)?;
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(db_error(WHAT))?;
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO usage_ledger (at_ms, request_id, virtual_key, team, customer, provider, model, \
                 prompt_tokens, completion_tokens, cost_usd) ",
            );
            q.push_values(chunk, |mut row, u| {
                row.push_bind(u.at_ms)
                    .push_bind(&u.request_id)
                    .push_bind(&u.virtual_key)
                    .push_bind(&u.team)
                    .push_bind(&u.customer)
                    .push_bind(&u.provider)
                    .push_bind(&u.model)
                    .push_bind(tokens_to_db(u.prompt_tokens))
                    .push_bind(tokens_to_db(u.completion_tokens))
                    .push_bind(u.cost_usd);
            });
            q.build().execute(&mut *tx).await.map_err(db_error(WHAT))?;
        }
        tx.commit().await.map_err(db_error(WHAT))?;
        Ok(())
    }

    async fn meters(&self) -> Result<Vec<MeterState>, StoreError> {
        const WHAT: &str = "loading meter states";
        let rows = sqlx::query("SELECT name, window_start_ms, window_end_ms, used FROM meter_states ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error(WHAT))?;
        rows.iter()
            .map(|r| {
                meter_from_columns(
                    r.try_get(0).map_err(db_error(WHAT))?,
                    r.try_get(1).map_err(db_error(WHAT))?,
                    r.try_get(2).map_err(db_error(WHAT))?,
                    r.try_get(3).map_err(db_error(WHAT))?,
                )
            })
            .collect()
    }

    async fn upsert_meters(&self, states: Vec<MeterState>) -> Result<(), StoreError> {
        const WHAT: &str = "saving meter states";
        check_meters(&states)?;
        let states = last_per_name(states);
        if states.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(db_error(WHAT))?;
        // 4 parameters a row: 1000 rows stay far below SQLite's bound-parameter limit.
        for chunk in states.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO meter_states (name, window_start_ms, window_end_ms, used) ");
            q.push_values(chunk, |mut row, m| {
                row.push_bind(&m.name).push_bind(m.window.map(|w| w.0)).push_bind(m.window.map(|w| w.1)).push_bind(m.used);
            });
            q.push(
                " ON CONFLICT (name) DO UPDATE SET window_start_ms = excluded.window_start_ms, \
                 window_end_ms = excluded.window_end_ms, used = excluded.used",
            );
            q.build().execute(&mut *tx).await.map_err(db_error(WHAT))?;
        }
        tx.commit().await.map_err(db_error(WHAT))?;
        Ok(())
    }
}

impl GovernanceStore for SqliteStore {
    fn load(&self) -> StoreFuture<'_, StoredGovernance> {
        Box::pin(self.load_all())
    }
    fn put_customer(&self, c: Customer) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_customer(c))
    }
    fn delete_customer(&self, id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.delete("deleting a customer", "DELETE FROM customers WHERE id = ?1", id))
    }
    fn put_team(&self, t: Team) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_team(t))
    }
    fn delete_team(&self, id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.delete("deleting a team", "DELETE FROM teams WHERE id = ?1", id))
    }
    fn put_key(&self, k: StoredKey) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_key(k))
    }
    fn delete_key(&self, id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.delete("deleting a virtual key", "DELETE FROM virtual_keys WHERE id = ?1", id))
    }
    fn append_usage(&self, batch: Vec<UsageRecord>) -> StoreFuture<'_, ()> {
        Box::pin(self.append(batch))
    }
    fn load_meters(&self) -> StoreFuture<'_, Vec<MeterState>> {
        Box::pin(self.meters())
    }
    fn save_meters(&self, states: Vec<MeterState>) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_meters(states))
    }
    fn usage_totals(&self, q: UsageQuery) -> StoreFuture<'_, Vec<UsageGroup>> {
        Box::pin(self.totals(q))
    }
}
