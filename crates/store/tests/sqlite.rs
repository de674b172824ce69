//! The shared suite against `SqliteStore` in a temp dir, and what only the embedded store promises: the file
//! and its directory are created, WAL mode, and a reopened store keeps everything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use std::path::Path;

use common::{customer, key, meter, usage, without_value, Raw};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::Row;
use switchyard_engine::governance::store::{GovernanceStore, StoreError};
use switchyard_store::SqliteStore;

async fn raw(path: &Path) -> Raw {
    let url = format!("sqlite://{}", path.display());
    Raw::Sqlite(SqlitePoolOptions::new().max_connections(1).connect(&url).await.unwrap())
}

#[tokio::test]
async fn sqlite_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.db");
    let store = SqliteStore::open(&path).await.unwrap();
    common::suite(&store, &raw(&path).await).await;
    common::providers(&store, &raw(&path).await).await;
}

#[tokio::test]
async fn sqlite_creates_the_file_and_its_directory_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("nested").join("switchyard.db");
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(path.is_file());
    assert_eq!(store.path(), path);
    let Raw::Sqlite(pool) = raw(&path).await else { unreachable!() };
    let mode: String = sqlx::query("PRAGMA journal_mode").fetch_one(&pool).await.unwrap().get(0);
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_reopened_sqlite_store_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.put_customer(customer("c1", "Acme")).await.unwrap();
        store.put_team(common::team("t1", "Platform", Some("c1"))).await.unwrap();
        store.put_key(key("vk-a", "ci", Some("t1"), 1)).await.unwrap();
        store.append_usage((0..250).map(|i| usage(i, Some("vk-a"))).collect()).await.unwrap();
        store.save_meters(vec![meter("vk:vk-a:budget", Some((10, 20)), 0.75)]).await.unwrap();
        store.close().await;
    }
    // Reopening runs the migrations again: they must see that they are applied.
    let store = SqliteStore::open(&path).await.unwrap();
    let g = store.load().await.unwrap();
    assert_eq!(g.customers, vec![customer("c1", "Acme")]);
    assert_eq!(g.teams, vec![common::team("t1", "Platform", Some("c1"))]);
    assert_eq!(g.keys, vec![without_value(key("vk-a", "ci", Some("t1"), 1))]);
    assert_eq!(store.load_meters().await.unwrap(), vec![meter("vk:vk-a:budget", Some((10, 20)), 0.75)]);
    let ledger = store.usage(None, i64::MIN, i64::MAX).await.unwrap();
    assert_eq!(ledger, (0..250).map(|i| usage(i, Some("vk-a"))).collect::<Vec<_>>());
    assert_eq!(store.usage(Some("vk-a"), 1_700_000_000_000, 1_700_000_000_010).await.unwrap().len(), 10);
    assert!(store.usage(Some("vk-b"), i64::MIN, i64::MAX).await.unwrap().is_empty());
}

#[tokio::test]
async fn corrupted_sqlite_rows_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let raw = raw(&path).await;
    common::corrupted_rows_are_invalid(&store, &raw).await;

    // SQLite checks no types: text that is not JSON, a number where a spec should be, negative tokens.
    store.put_team(common::team("t1", "Platform", None)).await.unwrap();
    raw.execute("UPDATE teams SET spec = 'not json'").await;
    assert!(matches!(store.load().await, Err(StoreError::Invalid(_))));
    raw.execute("UPDATE teams SET spec = 42").await;
    let err = store.load().await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    raw.execute("DELETE FROM teams").await;
    store.append_usage(vec![usage(1, None)]).await.unwrap();
    raw.execute("UPDATE usage_ledger SET prompt_tokens = -5").await;
    assert!(matches!(store.usage(None, i64::MIN, i64::MAX).await, Err(StoreError::Invalid(_))));
    let totals = store.usage_totals(Default::default()).await;
    assert!(matches!(&totals, Err(StoreError::Invalid(m)) if m.contains("input_tokens")), "{totals:?}");
}

#[tokio::test]
async fn an_unopenable_path_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the parent directory should be.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let err = SqliteStore::open(dir.path().join("file").join("switchyard.db")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { what: "opening the SQLite store", .. }), "{err:?}");
}

#[tokio::test]
async fn a_sqlite_store_from_a_newer_gateway_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    common::newer_schema_is_invalid(|| SqliteStore::open(&path), &raw(&path).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sqlite_writers_wait_for_each_other() {
    // SQLite has one writer at a time: the others must wait (busy timeout), not fail.
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path().join("switchyard.db")).await.unwrap());
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("vk-{t}");
                store.append_usage((0..500).map(|i| usage(t * 1000 + i, Some(&id))).collect()).await.unwrap();
                store.put_key(key(&id, "k", None, t as u8)).await.unwrap();
                store.save_meters(vec![meter(&format!("vk:{id}:budget"), None, t as f64)]).await.unwrap();
                store.load().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.usage(None, i64::MIN, i64::MAX).await.unwrap().len(), 16 * 500);
    assert_eq!(store.load().await.unwrap().keys.len(), 16);
    assert_eq!(store.load_meters().await.unwrap().len(), 16);
}

#[tokio::test]
async fn sqlite_passes_the_request_log_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("switchyard.db")).await.unwrap();
    common::reqlog::suite(&store).await;
}

#[tokio::test]
async fn a_sqlite_text_search_is_bounded_per_page_and_pages_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("switchyard.db")).await.unwrap();
    common::reqlog::bounded_search(&store).await;
}
