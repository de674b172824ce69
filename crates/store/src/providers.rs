//! The providers the management API wrote, in both databases: one row per provider, its spec as JSON, in
//! the order first written. Apart from the other tables because they are another engine trait, with their
//! own rule about secrets (see the migration): a provider's key values are kept, a virtual key's never.

use sqlx::Row;
use switchyard_engine::governance::store::{StoreError, StoreFuture};
use switchyard_engine::providers::spec::ProviderSpec;
use switchyard_engine::providers::store::ProviderStore;

use crate::{db_error, decode_spec, encode_spec, PostgresStore, SqliteStore};

const LOADING: &str = "loading providers";
const SAVING: &str = "saving a provider";
const DELETING: &str = "deleting a provider";

fn decode_rows(rows: Vec<(String, String)>) -> Result<Vec<ProviderSpec>, StoreError> {
    rows.iter().map(|(name, spec)| decode_spec::<ProviderSpec>("providers", name, spec, |p| &p.provider)).collect()
}

impl SqliteStore {
    async fn load_provider_specs(&self) -> Result<Vec<ProviderSpec>, StoreError> {
        let rows = sqlx::query("SELECT name, spec FROM providers ORDER BY seq").fetch_all(&self.pool).await.map_err(db_error(LOADING))?;
        let pairs = rows
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(db_error(LOADING))?, r.try_get(1).map_err(db_error(LOADING))?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        decode_rows(pairs)
    }

    async fn upsert_provider(&self, p: ProviderSpec) -> Result<(), StoreError> {
        // One statement: SQLite runs it under its single writer lock, so two writes never take one seq.
        sqlx::query(
            "INSERT INTO providers (name, seq, spec) VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM providers), ?2) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
        )
        .bind(&p.provider)
        .bind(encode_spec(SAVING, &p)?)
        .execute(&self.pool)
        .await
        .map_err(db_error(SAVING))?;
        Ok(())
    }

    async fn remove_provider(&self, name: String) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM providers WHERE name = ?1").bind(name).execute(&self.pool).await.map_err(db_error(DELETING))?;
        Ok(done.rows_affected() > 0)
    }
}

impl ProviderStore for SqliteStore {
    fn load_providers(&self) -> StoreFuture<'_, Vec<ProviderSpec>> {
        Box::pin(self.load_provider_specs())
    }
    fn put_provider(&self, p: ProviderSpec) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_provider(p))
    }
    fn delete_provider(&self, name: String) -> StoreFuture<'_, bool> {
        Box::pin(self.remove_provider(name))
    }
}

impl PostgresStore {
    async fn load_provider_specs(&self) -> Result<Vec<ProviderSpec>, StoreError> {
        let rows =
            sqlx::query("SELECT name, spec::text FROM providers ORDER BY seq").fetch_all(&self.pool).await.map_err(db_error(LOADING))?;
        let pairs = rows
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(db_error(LOADING))?, r.try_get(1).map_err(db_error(LOADING))?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        decode_rows(pairs)
    }

    async fn upsert_provider(&self, p: ProviderSpec) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO providers (name, spec) VALUES ($1, $2::jsonb) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec")
            .bind(&p.provider)
            .bind(encode_spec(SAVING, &p)?)
            .execute(&self.pool)
            .await
            .map_err(db_error(SAVING))?;
        Ok(())
    }

    async fn remove_provider(&self, name: String) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM providers WHERE name = $1").bind(name).execute(&self.pool).await.map_err(db_error(DELETING))?;
        Ok(done.rows_affected() > 0)
    }
}

impl ProviderStore for PostgresStore {
    fn load_providers(&self) -> StoreFuture<'_, Vec<ProviderSpec>> {
        Box::pin(self.load_provider_specs())
    }
    fn put_provider(&self, p: ProviderSpec) -> StoreFuture<'_, ()> {
        Box::pin(self.upsert_provider(p))
    }
    fn delete_provider(&self, name: String) -> StoreFuture<'_, bool> {
        Box::pin(self.remove_provider(name))
    }
}
