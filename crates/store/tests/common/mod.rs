//! What every store must do, written once and run against each backend (`tests/sqlite.rs`,
//! `tests/postgres.rs`), plus a throwaway PostgreSQL server for the Postgres tests.
//!
//! The suite sees a store only through the engine's `GovernanceStore` trait, and through `Raw`, a second
//! connection to the same database, for what the trait does not show: that no key value is ever written,
//! the ledger's rows, and hand-corrupted rows.

#![allow(dead_code)] // each test binary uses part of this module

pub mod pg;
pub mod reqlog;

use std::time::Duration;

use sqlx::{PgPool, Row, SqlitePool};
use switchyard_engine::governance::model::{Budget, Customer, Period, ProviderGrant, RateLimit, Residency, Team, VirtualKeySpec};
use switchyard_engine::governance::store::{GovernanceStore, MeterState, StoreError, StoredKey, UsageRecord};
use switchyard_engine::governance::usage::{aggregate, GroupBy, UsageGroup, UsageQuery};

/// A second connection to the store's database, for checks below the trait.
pub enum Raw {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Raw {
    pub async fn execute(&self, sql: &str) -> u64 {
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).execute(p).await.unwrap().rows_affected(),
            Raw::Postgres(p) => sqlx::query(sql).execute(p).await.unwrap().rows_affected(),
        }
    }

    /// The first column of every row, as text.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).fetch_all(p).await.unwrap().iter().map(|r| r.get::<String, _>(0)).collect(),
            Raw::Postgres(p) => sqlx::query(sql).fetch_all(p).await.unwrap().iter().map(|r| r.get::<String, _>(0)).collect(),
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        match self {
            Raw::Sqlite(p) => sqlx::query(sql).fetch_one(p).await.unwrap().get::<i64, _>(0),
            Raw::Postgres(p) => sqlx::query(sql).fetch_one(p).await.unwrap().get::<i64, _>(0),
        }
    }

    /// Every text in the entity tables, to search for secrets.
    pub async fn everything(&self) -> String {
        let mut all = Vec::new();
        for t in ["customers", "teams"] {
            all.extend(self.texts(&format!("SELECT id || ' ' || spec{} FROM {t}", self.cast())).await);
        }
        all.extend(
            self.texts(&format!(
                "SELECT id || ' ' || value_sha256 || ' ' || COALESCE(team_id, '') || ' ' || spec{} FROM virtual_keys",
                self.cast()
            ))
            .await,
        );
        all.join("\n")
    }

    fn cast(&self) -> &'static str {
        match self {
            Raw::Sqlite(_) => "",
            Raw::Postgres(_) => "::text",
        }
    }
}

/// A SHA-256 in hex, different per seed (the store does not check that it is the hash of anything).
pub fn hash(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

pub fn customer(id: &str, name: &str) -> Customer {
    Customer {
        id: id.into(),
        name: name.into(),
        budget: Some(Budget { max_limit: 100.5, reset_duration: Some(Period::Months(1)), calendar_aligned: true }),
        rate_limit: Some(RateLimit {
            request_max_limit: Some(1000),
            request_reset_duration: Some(Period::Fixed(Duration::from_secs(60))),
            token_max_limit: None,
            token_reset_duration: None,
        }),
    }
}

pub fn team(id: &str, name: &str, customer: Option<&str>) -> Team {
    Team {
        id: id.into(),
        name: name.into(),
        customer_id: customer.map(Into::into),
        budget: None,
        rate_limit: None,
        residency: Some(Residency { allowed_tags: vec!["eu".into()], denied_tags: vec![] }),
    }
}

/// A key whose spec carries its value, as the management API receives it: the store must drop it.
pub fn key(id: &str, name: &str, team: Option<&str>, seed: u8) -> StoredKey {
    StoredKey {
        spec: VirtualKeySpec {
            id: id.into(),
            name: name.into(),
            description: "for the suite".into(),
            value: Some(format!("sk-secret-value-{id}")),
            is_active: true,
            team_id: team.map(Into::into),
            customer_id: None,
            provider_configs: vec![ProviderGrant {
                provider: "openai".into(),
                allowed_models: vec!["gpt-4o-mini".into()],
                weight: 2.0,
                budget: Some(Budget { max_limit: 5.0, reset_duration: None, calendar_aligned: false }),
                rate_limit: None,
            }],
            budget: Some(Budget {
                max_limit: 10.0,
                reset_duration: Some(Period::Fixed(Duration::from_secs(86_400))),
                calendar_aligned: false,
            }),
            rate_limit: Some(RateLimit {
                request_max_limit: None,
                request_reset_duration: None,
                token_max_limit: Some(50_000),
                token_reset_duration: Some(Period::Fixed(Duration::from_secs(3600))),
            }),
            max_concurrent: Some(4),
            residency: Some(Residency { allowed_tags: vec![], denied_tags: vec!["us".into()] }),
            log_bodies: false,
        },
        value_sha256: hash(seed),
    }
}

/// What a key reads back as: the same, without its value.
pub fn without_value(mut k: StoredKey) -> StoredKey {
    k.spec.value = None;
    k
}

pub fn usage(i: usize, key: Option<&str>) -> UsageRecord {
    UsageRecord {
        at_ms: 1_700_000_000_000 + i as i64,
        request_id: format!("req-{i}"),
        virtual_key: key.map(Into::into),
        team: key.map(|_| "t1".into()),
        customer: None,
        provider: "openai".into(),
        model: "gpt-4o-mini".into(),
        prompt_tokens: 100 + i as u64,
        completion_tokens: 7,
        cost_usd: 0.000_125 * (i as f64 + 1.0),
    }
}

pub fn meter(name: &str, window: Option<(i64, i64)>, used: f64) -> MeterState {
    MeterState { name: name.into(), window, used }
}

/// Entities: create, replace by id, delete (telling whether a row went), and never a key's value.
pub async fn entities(store: &dyn GovernanceStore, raw: &Raw) {
    let empty = store.load().await.unwrap();
    assert!(empty.customers.is_empty() && empty.teams.is_empty() && empty.keys.is_empty(), "{empty:?}");

    store.put_customer(customer("c2", "Beta")).await.unwrap();
    store.put_customer(customer("c1", "Acme")).await.unwrap();
    store.put_team(team("t1", "Platform", Some("c1"))).await.unwrap();
    store.put_key(key("vk-a", "ci", Some("t1"), 1)).await.unwrap();
    store.put_key(key("vk-b", "batch", None, 2)).await.unwrap();

    let g = store.load().await.unwrap();
    assert_eq!(g.customers, vec![customer("c1", "Acme"), customer("c2", "Beta")]);
    assert_eq!(g.teams, vec![team("t1", "Platform", Some("c1"))]);
    assert_eq!(g.keys, vec![without_value(key("vk-a", "ci", Some("t1"), 1)), without_value(key("vk-b", "batch", None, 2))]);

    // put is an upsert by id: the second write replaces the first, every column of it.
    store.put_customer(customer("c1", "Acme Corp")).await.unwrap();
    store.put_team(team("t1", "Platform", None)).await.unwrap();
    store.put_key(key("vk-a", "ci-renamed", None, 3)).await.unwrap();
    let g = store.load().await.unwrap();
    assert_eq!(g.customers[0], customer("c1", "Acme Corp"));
    assert_eq!(g.customers.len(), 2);
    assert_eq!(g.teams, vec![team("t1", "Platform", None)]);
    assert_eq!(g.keys[0], without_value(key("vk-a", "ci-renamed", None, 3)));
    assert_eq!(g.keys.len(), 2);
    assert_eq!(raw.count("SELECT COUNT(*) FROM virtual_keys WHERE team_id IS NULL").await, 2);

    // No key value, anywhere, ever.
    let all = raw.everything().await;
    assert!(!all.contains("sk-secret-value"), "a key value reached the database:\n{all}");
    assert!(all.contains(&hash(3)));

    // A hash that is not one (a value passed by mistake) is refused, and nothing is written.
    let mut bad = key("vk-c", "oops", None, 4);
    bad.value_sha256 = "sk-secret-value-vk-c".into();
    assert!(matches!(store.put_key(bad).await, Err(StoreError::Invalid(_))));
    assert!(!raw.everything().await.contains("sk-secret-value"));

    // delete says whether a row went.
    assert!(store.delete_customer("c2".into()).await.unwrap());
    assert!(!store.delete_customer("c2".into()).await.unwrap());
    assert!(store.delete_team("t1".into()).await.unwrap());
    assert!(!store.delete_team("t1".into()).await.unwrap());
    assert!(store.delete_key("vk-b".into()).await.unwrap());
    assert!(!store.delete_key("vk-b".into()).await.unwrap());
    assert!(!store.delete_key("never-was".into()).await.unwrap());
    let g = store.load().await.unwrap();
    assert_eq!(g.customers, vec![customer("c1", "Acme Corp")]);
    assert!(g.teams.is_empty());
    assert_eq!(g.keys, vec![without_value(key("vk-a", "ci-renamed", None, 3))]);
}

/// The ledger: a batch of 10,000 records in one call, every field kept; an empty batch is fine.
pub async fn ledger(store: &dyn GovernanceStore, raw: &Raw) -> Vec<UsageRecord> {
    store.append_usage(Vec::new()).await.unwrap();
    let batch: Vec<UsageRecord> = (0..10_000).map(|i| usage(i, if i % 3 == 0 { Some("vk-a") } else { None })).collect();
    let started = std::time::Instant::now();
    store.append_usage(batch.clone()).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "10,000 records took {took:?}");
    assert_eq!(raw.count("SELECT COUNT(*) FROM usage_ledger").await, 10_000);
    assert_eq!(raw.count("SELECT COUNT(*) FROM usage_ledger WHERE virtual_key = 'vk-a'").await, 3334);
    assert_eq!(
        raw.count("SELECT CAST(SUM(prompt_tokens) AS BIGINT) FROM usage_ledger").await,
        (0..10_000i64).map(|i| 100 + i).sum::<i64>()
    );
    store.append_usage(vec![usage(10_000, Some("vk-b"))]).await.unwrap();
    assert_eq!(raw.count("SELECT COUNT(*) FROM usage_ledger").await, 10_001);

    // A cost that is not a number refuses the batch, naming the request, and writes none of it.
    let mut poisoned: Vec<UsageRecord> = (20_000..20_010).map(|i| usage(i, None)).collect();
    poisoned[7].cost_usd = f64::NAN;
    let err = store.append_usage(poisoned).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("req-20007")), "{err:?}");
    assert_eq!(raw.count("SELECT COUNT(*) FROM usage_ledger").await, 10_001);
    batch
}

/// Meters: saved states replace earlier ones by name; windows and never-resetting meters both kept.
pub async fn meters(store: &dyn GovernanceStore) {
    assert!(store.load_meters().await.unwrap().is_empty());
    store.save_meters(vec![meter("vk:a:budget", Some((1_000, 2_000)), 1.25), meter("team:t1:tokens", None, 300.0)]).await.unwrap();
    store.save_meters(Vec::new()).await.unwrap();
    // A later state replaces the earlier one, also within one batch (the last one given wins).
    store
        .save_meters(vec![
            meter("vk:a:budget", Some((2_000, 3_000)), 0.5),
            meter("provider:openai:requests", Some((0, 60_000)), 3.0),
            meter("provider:openai:requests", Some((0, 60_000)), 4.0),
        ])
        .await
        .unwrap();
    let err = store.save_meters(vec![meter("vk:a:budget", None, 9.0), meter("vk:b:budget", None, f64::INFINITY)]).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("vk:b:budget")), "{err:?}");
    let mut got = store.load_meters().await.unwrap();
    got.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        got,
        vec![
            meter("provider:openai:requests", Some((0, 60_000)), 4.0),
            meter("team:t1:tokens", None, 300.0),
            meter("vk:a:budget", Some((2_000, 3_000)), 0.5),
        ]
    );
}

/// Far from the suite's other records, an hour apart: three weeks of days.
const TOTALS_FROM: i64 = 1_800_000_000_000;

/// Records of every shape the totals split by: with and without a key, team or customer, several providers
/// and models, over many days.
fn varied(i: usize) -> UsageRecord {
    let pick = |n: usize, of: &[&str]| of[i % n % of.len()].to_string();
    UsageRecord {
        at_ms: TOTALS_FROM + i as i64 * 3_600_000 + (i % 7) as i64,
        request_id: format!("varied-{i}"),
        virtual_key: (i % 4 != 0).then(|| pick(5, &["vk-a", "vk-b", "vk-c", "vk-d", "vk-e"])),
        team: (i % 3 != 0).then(|| pick(2, &["vision", "research"])),
        customer: (i % 5 == 0).then(|| "acme".to_string()),
        provider: pick(3, &["openai", "ollama", "anthropic"]),
        model: pick(4, &["gpt-4o", "llava", "claude", "qwen"]),
        prompt_tokens: 10 + (i % 13) as u64,
        completion_tokens: (i % 17) as u64,
        cost_usd: 0.000_001 * (i % 11) as f64,
    }
}

fn same_totals(got: &[UsageGroup], want: &[UsageGroup], what: &str) {
    let counts = |g: &[UsageGroup]| g.iter().map(|g| (g.key.clone(), g.requests, g.input_tokens, g.output_tokens)).collect::<Vec<_>>();
    assert_eq!(counts(got), counts(want), "{what}");
    for (a, b) in got.iter().zip(want) {
        // Sums of the same numbers in another order differ only in the last bits.
        assert!((a.cost_usd - b.cost_usd).abs() < 1e-12, "{what}: {a:?} vs {b:?}");
    }
}

/// Totals: every grouping and filter agrees with the engine's own reading of the same records, the
/// range is `[from, to)`, and an ungrouped query is one group even when nothing matches.
pub async fn totals(store: &dyn GovernanceStore) {
    let records: Vec<UsageRecord> = (0..500).map(varied).collect();
    store.append_usage(records.clone()).await.unwrap();
    let base = UsageQuery { from_ms: Some(TOTALS_FROM), ..UsageQuery::default() };
    let mut queries = vec![base.clone()];
    for g in GroupBy::ALL {
        queries.push(UsageQuery { group_by: Some(g), ..base.clone() });
    }
    queries.extend([
        UsageQuery { virtual_key: Some("vk-b".into()), group_by: Some(GroupBy::Model), ..base.clone() },
        UsageQuery { team: Some("vision".into()), provider: Some("ollama".into()), group_by: Some(GroupBy::Day), ..base.clone() },
        UsageQuery { customer: Some("acme".into()), model: Some("llava".into()), ..base.clone() },
        // Exactly a day's hours: from is in, to is out.
        UsageQuery { to_ms: Some(TOTALS_FROM + 24 * 3_600_000), group_by: Some(GroupBy::Team), ..base.clone() },
        UsageQuery { virtual_key: Some("nobody".into()), group_by: Some(GroupBy::Customer), ..base.clone() },
    ]);
    for q in &queries {
        let got = store.usage_totals(q.clone()).await.unwrap();
        same_totals(&got, &aggregate(&records, q), &format!("{q:?}"));
    }
    let day = store.usage_totals(UsageQuery { group_by: Some(GroupBy::Day), ..base.clone() }).await.unwrap();
    assert_eq!(day.len(), 22, "{day:?}");
    assert_eq!(day[0].key.as_deref(), Some("2027-01-15"));
    assert_eq!(day.iter().map(|g| g.requests).sum::<u64>(), 500);
    let nothing =
        store.usage_totals(UsageQuery { to_ms: Some(TOTALS_FROM), from_ms: Some(TOTALS_FROM - 1), ..base.clone() }).await.unwrap();
    assert_eq!(nothing, vec![UsageGroup::default()]);
    let grouped_nothing =
        store.usage_totals(UsageQuery { model: Some("none".into()), group_by: Some(GroupBy::Model), ..base }).await.unwrap();
    assert!(grouped_nothing.is_empty(), "{grouped_nothing:?}");
}

/// The whole shared suite, in order, on a fresh store.
pub async fn suite(store: &dyn GovernanceStore, raw: &Raw) {
    entities(store, raw).await;
    ledger(store, raw).await;
    totals(store).await;
    meters(store).await;
}

/// A database migrated by a newer gateway is refused as `Invalid` (not `Unavailable`: retrying will not
/// help), after `mark_newer` records a migration this build does not know.
pub async fn newer_schema_is_invalid<F, Fut, S>(open: F, raw: &Raw)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<S, StoreError>>,
{
    let first = open().await;
    assert!(first.is_ok());
    drop(first);
    let (bool_true, blob) = match raw {
        Raw::Sqlite(_) => ("1", "x'00'"),
        Raw::Postgres(_) => ("true", "'\\x00'::bytea"),
    };
    raw.execute(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', {bool_true}, {blob}, 0)"
    ))
    .await;
    match open().await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("9999") && m.contains("newer"), "{m}"),
        Err(e) => panic!("expected Invalid, got {e:?}"),
        Ok(_) => panic!("a database from a newer gateway was opened"),
    }
}

/// Hand-corrupted rows come back as `Invalid`, never a panic, and the other operations still work.
pub async fn corrupted_rows_are_invalid(store: &dyn GovernanceStore, raw: &Raw) {
    store.put_customer(customer("c1", "Acme")).await.unwrap();
    store.put_key(key("vk-a", "ci", None, 1)).await.unwrap();
    store.save_meters(vec![meter("vk:a:budget", Some((1, 2)), 1.0)]).await.unwrap();

    // A field the engine does not know (its types deny unknown fields): a newer schema or a hand edit.
    raw.execute(r#"UPDATE customers SET spec = '{"id":"c1","bogus":true}' WHERE id = 'c1'"#).await;
    let err = store.load().await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("customers") && m.contains("c1")), "{err:?}");

    // A spec moved under another id.
    raw.execute(r#"UPDATE customers SET spec = '{"id":"c9"}' WHERE id = 'c1'"#).await;
    assert!(matches!(store.load().await, Err(StoreError::Invalid(_))));
    raw.execute("DELETE FROM customers").await;
    assert_eq!(store.load().await.unwrap().keys.len(), 1);

    // A key's spec of the wrong shape.
    raw.execute(r#"UPDATE virtual_keys SET spec = '{"id":"vk-a","provider_configs":"all"}'"#).await;
    assert!(matches!(store.load().await, Err(StoreError::Invalid(_))));

    // Half a window.
    raw.execute("UPDATE meter_states SET window_end_ms = NULL").await;
    let err = store.load_meters().await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("vk:a:budget")), "{err:?}");

    // Writes still work, and a put repairs a row.
    store.put_key(key("vk-a", "ci", None, 1)).await.unwrap();
    store.save_meters(vec![meter("vk:a:budget", None, 2.0)]).await.unwrap();
    assert_eq!(store.load().await.unwrap().keys.len(), 1);
    assert_eq!(store.load_meters().await.unwrap(), vec![meter("vk:a:budget", None, 2.0)]);
}

/// Providers the management API wrote: created, replaced in place (keeping their order), deleted, read back
/// whole (key values included: a provider key has to be sent), and a hand-moved row is `Invalid`.
pub async fn providers(store: &dyn switchyard_engine::providers::store::ProviderStore, raw: &Raw) {
    use switchyard_engine::providers::spec::ProviderSpec;
    let spec = |name: &str, url: &str| -> ProviderSpec {
        serde_json::from_value(serde_json::json!({
            "provider": name,
            "keys": [{"name": "k1", "value": "sk-literal", "weight": 1.0}, {"name": "k2", "value": "env.OPENAI_API_KEY"}],
            "network_config": {"base_url": url, "default_request_timeout_in_seconds": 60},
            "custom_provider_config": {"base_provider_type": "openai", "allowed_requests": {"chat_completion": true}},
            "tags": ["on-prem"]
        }))
        .unwrap()
    };
    assert!(store.load_providers().await.unwrap().is_empty());
    store.put_provider(spec("vllm-local", "http://a:8000")).await.unwrap();
    store.put_provider(spec("ollama-local", "http://b:11434")).await.unwrap();
    store.put_provider(spec("vllm-local", "http://c:8000")).await.unwrap();
    let all = store.load_providers().await.unwrap();
    assert_eq!(all, vec![spec("vllm-local", "http://c:8000"), spec("ollama-local", "http://b:11434")], "replaced in place");
    assert!(store.delete_provider("vllm-local".into()).await.unwrap());
    assert!(!store.delete_provider("vllm-local".into()).await.unwrap());
    store.put_provider(spec("vllm-local", "http://d:8000")).await.unwrap();
    let names: Vec<String> = store.load_providers().await.unwrap().into_iter().map(|p| p.provider).collect();
    assert_eq!(names, ["ollama-local", "vllm-local"], "a re-created provider comes last");
    raw.execute("UPDATE providers SET name = 'moved' WHERE name = 'ollama-local'").await;
    match store.load_providers().await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("moved"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
