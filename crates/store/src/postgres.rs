//! For several replicas: one PostgreSQL database shared by every gateway, so a key created through one
//! replica's management API is seen by the others (when they next load) and every replica appends to the
//! same usage ledger.
//!
//! The URL (`postgres://user:password@host:5432/db?sslmode=require`) may carry the password, so it is never
//! logged or put into an error: only its host, port, database and user are. TLS is rustls with the system's
//! roots, as everywhere in the gateway; `sslmode` in the URL decides whether it is required and verified.
//! Specs are `JSONB` (queryable by an operator); they are sent and read as text so that no JSON codec of
//! sqlx is needed.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row};
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

/// Every replica holds its own pool; a few connections each keep a shared server's total modest.
const MAX_CONNECTIONS: u32 = 8;

/// A statement that runs longer than this is cancelled by the server, so a lock held elsewhere turns into an
/// error instead of a wait without end.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`GovernanceStore`] in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    /// `user@host:port/db`, without the password: what logs and errors may show.
    target: String,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`) and brings its schema up to date.
    /// Several replicas may do this at once: the migrator holds an advisory lock while it runs.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let unavailable = |message: String| StoreError::Unavailable { what: "connecting to the Postgres store", message };
        let options = PgConnectOptions::from_str(url)
            // sqlx's parse errors do not repeat the URL, but scrub anyway: the URL may hold a password.
            .map_err(|e| unavailable(format!("the URL is not a Postgres URL: {}", scrub(&e.to_string(), url))))?
            .options([("statement_timeout", format!("{}", STATEMENT_TIMEOUT.as_millis()))])
            .application_name("switchyard");
        let target = describe(&options);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| unavailable(format!("{target}: {}", scrub(&e.to_string(), url))))?;
        let migrator = migrate::migrator(migrate::POSTGRES).await.map_err(|e| unavailable(e.to_string()))?;
        migrator.run(&pool).await.map_err(|e| match migrate_error("connecting to the Postgres store", &target, e) {
            StoreError::Unavailable { what, message } => StoreError::Unavailable { what, message: scrub(&message, url) },
            invalid => invalid,
        })?;
        tracing::info!(database = %target, "Postgres store connected");
        Ok(PostgresStore { pool, target })
    }

    /// `user@host:port/db`: the database this store uses, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Closes the pool, waiting for the connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The ledger's records settled in `[from_ms, to_ms)`, oldest first, of one key if given.
    pub async fn usage(&self, virtual_key: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRecord>, StoreError> {
        const WHAT: &str = "reading the usage ledger";
        let rows = sqlx::query(
            "SELECT at_ms, request_id, virtual_key, team, customer, provider, model, prompt_tokens, \
             completion_tokens, cost_usd FROM usage_ledger \
             WHERE at_ms >= $1 AND at_ms < $2 AND ($3::text IS NULL OR virtual_key = $3) ORDER BY at_ms, seq",
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
        let sql = usage_totals_sql(Dialect::Postgres, q.group_by);
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
        // One snapshot of the three tables: a load never mixes states from before and after another write.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await.map_err(db_error(WHAT))?;
        let mut g = StoredGovernance::default();
        for r in sqlx::query("SELECT id, spec::text FROM customers ORDER BY id").fetch_all(&mut *tx).await.map_err(db_error(WHAT))? {
            let (id, spec): (String, String) = (r.try_get(0).map_err(db_error(WHAT))?, r.try_get(1).map_err(db_error(WHAT))?);
            g.customers.push(decode_spec::<Customer>("customers", &id, &spec, |c| &c.id)?);
        }
        for r in sqlx::query("SELECT id, spec::text FROM teams ORDER BY id").fetch_all(&mut *tx).await.map_err(db_error(WHAT))? {
            let (id, spec): (String, String) = (r.try_get(0).map_err(db_error(WHAT))?, r.try_get(1).map_err(db_error(WHAT))?);
            g.teams.push(decode_spec::<Team>("teams", &id, &spec, |t| &t.id)?);
        }
        for r in sqlx::query("SELECT id, spec::text, value_sha256 FROM virtual_keys ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error(WHAT))?
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
        sqlx::query("INSERT INTO customers (id, spec) VALUES ($1, $2::jsonb) ON CONFLICT (id) DO UPDATE SET spec = excluded.spec")
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
            "INSERT INTO teams (id, customer_id, spec) VALUES ($1, $2, $3::jsonb) \
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
            "INSERT INTO virtual_keys (id, value_sha256, team_id, customer_id, spec) VALUES ($1, $2, $3, $4, $5::jsonb) \
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
            let mut q = QueryBuilder::<Postgres>::new(
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
        // 4 parameters a row: 1000 rows stay far below Postgres' bound-parameter limit.
        for chunk in states.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Postgres>::new("INSERT INTO meter_states (name, window_start_ms, window_end_ms, used) ");
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

impl GovernanceStore for PostgresStore {
    fn load(&self) -> StoreFuture<'_, StoredGovernance> {
        Box::pin(self.load_all())
    }
    fn put_customer(&self, c: Customer) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_customer(c))
    }
    fn delete_customer(&self, id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.delete("deleting a customer", "DELETE FROM customers WHERE id = $1", id))
    }
    fn put_team(&self, t: Team) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_team(t))
    }
    fn delete_team(&self, id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.delete("deleting a team", "DELETE FROM teams WHERE id = $1", id))
    }
    fn put_key(&self, k: StoredKey) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_key(k))
    }
    fn delete_key(&self, id: String) -> StoreFuture<'_, bool> {
        Box::pin(self.delete("deleting a virtual key", "DELETE FROM virtual_keys WHERE id = $1", id))
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

/// `user@host:port/db` (or the socket directory for a local socket), never the password.
fn describe(o: &PgConnectOptions) -> String {
    let at = match o.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    };
    format!("{}@{at}/{}", o.get_username(), o.get_database().unwrap_or(o.get_username()))
}

/// Removes the URL's password (as written and percent-decoded) from a message.
fn scrub(message: &str, url: &str) -> String {
    let Some(password) = url_password(url) else { return message.to_string() };
    let mut out = message.to_string();
    for p in [password.clone(), percent_decode(&password)] {
        if !p.is_empty() {
            out = out.replace(&p, "***");
        }
    }
    out
}

/// The password part of `scheme://user:password@host...`, if any.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let url = "postgres://gw:s%3Acret@db.internal:6432/switchyard";
        assert_eq!(url_password(url).as_deref(), Some("s%3Acret"));
        assert_eq!(scrub("auth failed for s:cret and s%3Acret", url), "auth failed for *** and ***");
        assert_eq!(scrub("no password here", "postgres://gw@db/x"), "no password here");
        let o = PgConnectOptions::from_str(url).unwrap();
        let d = describe(&o);
        assert_eq!(d, "gw@db.internal:6432/switchyard");
        assert!(!d.contains("cret"));
    }
}
