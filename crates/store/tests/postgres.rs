//! The shared suite against `PostgresStore`, each test on its own throwaway server (see
//! `common/pg.rs`), and what only the shared store promises: replicas see each other's writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod common;

use common::pg::{server, PgServer};
use common::{customer, key, meter, usage, without_value, Raw};
use sqlx::postgres::PgPoolOptions;
use switchyard_engine::governance::store::{GovernanceStore, StoreError};
use switchyard_store::PostgresStore;

async fn raw(url: &str) -> Raw {
    Raw::Postgres(PgPoolOptions::new().max_connections(1).connect(url).await.unwrap())
}

async fn database(pg: &PgServer) -> String {
    pg.create_database("switchyard_test").await
}

#[tokio::test]
async fn postgres_passes_the_suite() {
    let Some(pg) = server().await else { return };
    let url = database(&pg).await;
    let store = PostgresStore::connect(&url).await.unwrap();
    common::suite(&store, &raw(&url).await).await;
    common::providers(&store, &raw(&url).await).await;
    store.close().await;
}

#[tokio::test]
async fn two_postgres_stores_on_one_database_see_each_others_writes() {
    let Some(pg) = server().await else { return };
    let url = database(&pg).await;
    // Both replicas start at once: the migrations run once, under the migrator's lock.
    let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());

    a.put_customer(customer("c1", "Acme")).await.unwrap();
    b.put_key(key("vk-a", "ci", None, 1)).await.unwrap();
    for s in [&a, &b] {
        let g = s.load().await.unwrap();
        assert_eq!(g.customers, vec![customer("c1", "Acme")]);
        assert_eq!(g.keys, vec![without_value(key("vk-a", "ci", None, 1))]);
    }
    assert!(a.delete_key("vk-a".into()).await.unwrap());
    assert!(!b.delete_key("vk-a".into()).await.unwrap());
    assert!(b.load().await.unwrap().keys.is_empty());

    // One ledger, written by both, in parallel.
    let (ra, rb) = tokio::join!(
        a.append_usage((0..500).map(|i| usage(i, Some("vk-a"))).collect()),
        b.append_usage((500..1000).map(|i| usage(i, Some("vk-b"))).collect()),
    );
    ra.unwrap();
    rb.unwrap();
    assert_eq!(a.usage(None, i64::MIN, i64::MAX).await.unwrap().len(), 1000);
    assert_eq!(b.usage(Some("vk-a"), i64::MIN, i64::MAX).await.unwrap(), (0..500).map(|i| usage(i, Some("vk-a"))).collect::<Vec<_>>());

    a.save_meters(vec![meter("vk:vk-a:budget", Some((0, 10)), 1.0)]).await.unwrap();
    b.save_meters(vec![meter("vk:vk-a:budget", Some((0, 10)), 2.5)]).await.unwrap();
    assert_eq!(a.load_meters().await.unwrap(), vec![meter("vk:vk-a:budget", Some((0, 10)), 2.5)]);

    // A third replica, started later, finds the schema in place.
    let c = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(c.load().await.unwrap().customers.len(), 1);
    assert!(!c.target().contains("password"));
}

#[tokio::test]
async fn corrupted_postgres_rows_are_invalid() {
    let Some(pg) = server().await else { return };
    let url = database(&pg).await;
    let store = PostgresStore::connect(&url).await.unwrap();
    let raw = raw(&url).await;
    common::corrupted_rows_are_invalid(&store, &raw).await;
    store.append_usage(vec![usage(1, None)]).await.unwrap();
    raw.execute("UPDATE usage_ledger SET prompt_tokens = -5").await;
    assert!(matches!(store.usage(None, i64::MIN, i64::MAX).await, Err(StoreError::Invalid(_))));
    let totals = store.usage_totals(Default::default()).await;
    assert!(matches!(&totals, Err(StoreError::Invalid(m)) if m.contains("input_tokens")), "{totals:?}");
}

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable_and_the_password_never_shows() {
    let Some(pg) = server().await else { return };
    // Wrong database on a live server: refused at once.
    let url = pg.url("no_such_db").replace("postgres@", "postgres:hunter2-secret@");
    let err = PostgresStore::connect(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { what: "connecting to the Postgres store", .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("no_such_db"), "{shown}");
    let err = PostgresStore::connect("mysql://x").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_postgres_store_from_a_newer_gateway_is_invalid() {
    let Some(pg) = server().await else { return };
    let url = database(&pg).await;
    common::newer_schema_is_invalid(|| PostgresStore::connect(&url), &raw(&url).await).await;
}

#[tokio::test]
async fn postgres_passes_the_request_log_suite() {
    let Some(pg) = server().await else { return };
    let store = PostgresStore::connect(&database(&pg).await).await.unwrap();
    common::reqlog::suite(&store).await;
    store.close().await;
}

#[tokio::test]
async fn a_postgres_text_search_is_bounded_per_page_and_pages_on() {
    let Some(pg) = server().await else { return };
    let store = PostgresStore::connect(&database(&pg).await).await.unwrap();
    common::reqlog::bounded_search(&store).await;
    store.close().await;
}
