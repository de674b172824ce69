//! What governance keeps beyond one process, behind a small trait so the engine knows no database: the
//! entities written through the management API, the usage ledger, and the meters' use per window (so a
//! restart does not hand every key a fresh budget). Implementations live in the `switchyard-store` crate
//! (SQLite by default, Postgres for several replicas); [`MemoryStore`] keeps everything in memory, for a
//! gateway without a data directory and for tests.
//!
//! Writes on the request path never wait on a store: usage goes through a bounded batch channel
//! (`account`), and the meters' state is saved periodically.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::model::{Customer, Team, VirtualKeySpec};
use super::usage::{aggregate, UsageGroup, UsageQuery};

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the operation; `what` says which operation.
    #[error("store unavailable while {what}: {message}")]
    Unavailable { what: &'static str, message: String },
    /// What the store holds cannot be read back (a newer schema, a hand edit).
    #[error("store data is invalid: {0}")]
    Invalid(String),
}

/// A virtual key as stored: its spec without the value, and the value's SHA-256 (hex), never the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    pub spec: VirtualKeySpec,
    pub value_sha256: String,
}

/// Everything the management API wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredGovernance {
    pub customers: Vec<Customer>,
    pub teams: Vec<Team>,
    pub keys: Vec<StoredKey>,
}

/// One settled request, for the usage ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Unix ms when it was settled.
    pub at_ms: i64,
    pub request_id: String,
    /// The key's id (not its value: a stored id is never a value, see `StoredKey`), team and customer.
    pub virtual_key: Option<String>,
    pub team: Option<String>,
    pub customer: Option<String>,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

/// A meter's use in its current window, saved so that a restart resumes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterState {
    /// The meter's stable name: `vk:<id>:budget`, `team:<id>:tokens`, `provider:<name>:requests`, ...
    pub name: String,
    /// Unix ms of the window's start and end; `None` for a meter that never resets.
    pub window: Option<(i64, i64)>,
    pub used: f64,
}

/// The operations the gateway needs from a store. Each is one round trip and idempotent where it can be
/// (`put_*` creates or replaces by id).
pub trait GovernanceStore: Send + Sync {
    fn load(&self) -> StoreFuture<'_, StoredGovernance>;
    fn put_customer(&self, c: Customer) -> StoreFuture<'_, ()>;
    fn delete_customer(&self, id: String) -> StoreFuture<'_, bool>;
    fn put_team(&self, t: Team) -> StoreFuture<'_, ()>;
    fn delete_team(&self, id: String) -> StoreFuture<'_, bool>;
    fn put_key(&self, k: StoredKey) -> StoreFuture<'_, ()>;
    fn delete_key(&self, id: String) -> StoreFuture<'_, bool>;
    /// Appends settled requests to the ledger, in one transaction.
    fn append_usage(&self, batch: Vec<UsageRecord>) -> StoreFuture<'_, ()>;
    fn load_meters(&self) -> StoreFuture<'_, Vec<MeterState>>;
    /// Replaces the saved states of these meters.
    fn save_meters(&self, states: Vec<MeterState>) -> StoreFuture<'_, ()>;
    /// Totals of the ledger's records that match `q`, per group in order of the group's key (the group
    /// without one first), at most [`super::usage::MAX_GROUPS`] + 1 of them (one more than an answer
    /// shows, so that the caller can tell it was cut). Ungrouped: exactly one group, zero when nothing
    /// matches. A store that keeps no ledger says so.
    fn usage_totals(&self, q: UsageQuery) -> StoreFuture<'_, Vec<UsageGroup>> {
        let _ = q;
        Box::pin(async { Err(StoreError::Unavailable { what: "reading the usage ledger", message: "this store keeps no ledger".into() }) })
    }
}

/// A store in memory: nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<(StoredGovernance, Vec<UsageRecord>, Vec<MeterState>)>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut (StoredGovernance, Vec<UsageRecord>, Vec<MeterState>)) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The ledger so far (for tests and the in-memory usage API).
    pub fn usage(&self) -> Vec<UsageRecord> {
        self.with(|s| s.1.clone())
    }
}

fn put<T>(list: &mut Vec<T>, item: T, id: impl Fn(&T) -> &str) {
    let key = id(&item).to_string();
    match list.iter_mut().find(|x| id(x) == key) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

fn remove<T>(list: &mut Vec<T>, id: &str, key: impl Fn(&T) -> &str) -> bool {
    let before = list.len();
    list.retain(|x| key(x) != id);
    list.len() != before
}

impl GovernanceStore for MemoryStore {
    fn load(&self) -> StoreFuture<'_, StoredGovernance> {
        let g = self.with(|s| s.0.clone());
        Box::pin(async move { Ok(g) })
    }
    fn put_customer(&self, c: Customer) -> StoreFuture<'_, ()> {
        self.with(|s| put(&mut s.0.customers, c, |x| &x.id));
        Box::pin(async { Ok(()) })
    }
    fn delete_customer(&self, id: String) -> StoreFuture<'_, bool> {
        let gone = self.with(|s| remove(&mut s.0.customers, &id, |x| &x.id));
        Box::pin(async move { Ok(gone) })
    }
    fn put_team(&self, t: Team) -> StoreFuture<'_, ()> {
        self.with(|s| put(&mut s.0.teams, t, |x| &x.id));
        Box::pin(async { Ok(()) })
    }
    fn delete_team(&self, id: String) -> StoreFuture<'_, bool> {
        let gone = self.with(|s| remove(&mut s.0.teams, &id, |x| &x.id));
        Box::pin(async move { Ok(gone) })
    }
    fn put_key(&self, k: StoredKey) -> StoreFuture<'_, ()> {
        self.with(|s| put(&mut s.0.keys, k, |x| &x.spec.id));
        Box::pin(async { Ok(()) })
    }
    fn delete_key(&self, id: String) -> StoreFuture<'_, bool> {
        let gone = self.with(|s| remove(&mut s.0.keys, &id, |x| &x.spec.id));
        Box::pin(async move { Ok(gone) })
    }
    fn append_usage(&self, batch: Vec<UsageRecord>) -> StoreFuture<'_, ()> {
        self.with(|s| s.1.extend(batch));
        Box::pin(async { Ok(()) })
    }
    fn load_meters(&self) -> StoreFuture<'_, Vec<MeterState>> {
        let m = self.with(|s| s.2.clone());
        Box::pin(async move { Ok(m) })
    }
    fn save_meters(&self, states: Vec<MeterState>) -> StoreFuture<'_, ()> {
        self.with(|s| {
            for st in states {
                put(&mut s.2, st, |x| &x.name);
            }
        });
        Box::pin(async { Ok(()) })
    }
    fn usage_totals(&self, q: UsageQuery) -> StoreFuture<'_, Vec<UsageGroup>> {
        let groups = self.with(|s| aggregate(&s.1, &q));
        Box::pin(async move { Ok(groups) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_store_puts_replaces_and_deletes_by_id() {
        let s = MemoryStore::default();
        let team =
            |name: &str| Team { id: "t1".into(), name: name.into(), customer_id: None, budget: None, rate_limit: None, residency: None };
        s.put_team(team("a")).await.unwrap();
        s.put_team(team("b")).await.unwrap();
        assert_eq!(s.load().await.unwrap().teams, vec![team("b")]);
        assert!(s.delete_team("t1".into()).await.unwrap());
        assert!(!s.delete_team("t1".into()).await.unwrap());
        s.save_meters(vec![MeterState { name: "vk:a:budget".into(), window: None, used: 1.5 }]).await.unwrap();
        s.save_meters(vec![MeterState { name: "vk:a:budget".into(), window: None, used: 2.0 }]).await.unwrap();
        assert_eq!(s.load_meters().await.unwrap()[0].used, 2.0);
    }
}
