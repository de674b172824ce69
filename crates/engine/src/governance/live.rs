//! Governance that changes while the gateway serves: the management API's writes, each checked exactly as
//! the configuration file is (cross-references, residency proof) and then applied by swapping in a new
//! immutable [`Governance`] snapshot. A request works on the snapshot it started with, so none sees half a
//! change; meters come from one registry by stable name, so a change resets no budget or limit.
//!
//! Source of truth: what the configuration file defines belongs to the file and is read-only here (a write
//! to one of its ids is refused with the file to edit instead); what the API writes belongs to the API.

use std::sync::Arc;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use serde_yaml_ng::{Mapping, Value as Yaml};
use tokio::sync::Mutex;

use super::meter::{Reading, Registry};
use super::model::{Customer, Team, VirtualKeySpec};
use super::shared::Shared;
use super::store::{GovernanceStore, MemoryStore, StoreError, StoredKey};
use super::usage::{UsageGroup, UsageQuery};
use super::{value_sha256, Governance, Readings, HASHED};
use crate::config::{check_governance, Config, ConfigIssue, GovernanceConfig};

/// Why a write was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The write would make an invalid configuration; every problem, with its path.
    #[error("{}", .0.iter().map(|i| format!("{}: {}", i.path, i.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigIssue>),
    /// The entity is defined in the configuration file.
    #[error("{0} is defined in the configuration file; change it there (the file is its source of truth)")]
    FromFile(String),
    #[error("no {0}")]
    NotFound(String),
    /// The store did not take the write; nothing changed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// What the API wrote, values included (held in memory only).
#[derive(Debug, Clone, Default)]
struct Written {
    customers: Vec<Customer>,
    teams: Vec<Team>,
    keys: Vec<(VirtualKeySpec, SecretString)>,
}

/// An entity for [`Live::put`].
#[derive(Debug, Clone)]
pub enum Entity {
    Customer(Customer),
    Team(Team),
    Key(VirtualKeySpec, SecretString),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Customer,
    Team,
    Key,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Customer => "customer",
            Kind::Team => "team",
            Kind::Key => "virtual key",
        }
    }
}

/// One entity as the API shows it: no value, where it comes from, and its meters' readings.
#[derive(Debug, Clone)]
pub struct Shown<T> {
    pub entity: T,
    pub from_file: bool,
    pub usage: Vec<Reading>,
    /// The same readings level by level: the entity's own budget and limits, a key's provider configs'.
    pub readings: Readings,
    /// A key whose id is its value: its id is a secret and must be masked wherever it is shown.
    pub id_is_value: bool,
}

pub struct Live {
    /// The configuration writes are checked against: the file's, with the providers the management API
    /// added (replaced by [`Live::reconfigure`]; the governance part is always the file's).
    cfg: ArcSwap<Config>,
    /// Writes are serialised here (they are rare); requests never take this lock.
    written: Mutex<Written>,
    registry: Registry,
    current: ArcSwap<Governance>,
    store: Arc<dyn GovernanceStore>,
}

impl Live {
    /// Governance from the configuration alone, with what the API writes kept in memory.
    pub fn new(cfg: &Config) -> Live {
        let registry = Registry::default();
        let current = ArcSwap::from_pointee(Governance::new(&cfg.governance, &registry));
        Live {
            cfg: ArcSwap::from_pointee(cfg.clone()),
            written: Mutex::new(Written::default()),
            registry,
            current,
            store: Arc::new(MemoryStore::default()),
        }
    }

    /// Governance from the configuration and what `store` kept: the entities the API wrote and the
    /// meters' use. Stored entities that no longer fit the configuration (a provider removed from the
    /// file, say) are an error naming each: starting without them could drop a key's residency policy.
    ///
    /// A stored entity that the file now defines (its id, or for a key its value) is superseded by the
    /// file, its source of truth from then on, and left out with a warning: this is what starting on a
    /// file made by `switchyard export` with the same store looks like.
    pub async fn with_store(cfg: &Config, store: Arc<dyn GovernanceStore>) -> Result<Live, WriteError> {
        Live::open(cfg, store, None).await
    }

    /// As [`Live::with_store`], the meters counted in `shared` (Redis) when given, with every other
    /// replica that shares it.
    pub async fn open(cfg: &Config, store: Arc<dyn GovernanceStore>, shared: Option<Arc<Shared>>) -> Result<Live, WriteError> {
        let stored = store.load().await?;
        let registry = shared.map(Registry::with_shared).unwrap_or_default();
        registry.restore(store.load_meters().await?);
        let written = from_stored(&cfg.governance, stored, true);
        let live = Live {
            cfg: ArcSwap::from_pointee(cfg.clone()),
            written: Mutex::new(Written::default()),
            current: ArcSwap::from_pointee(Governance::new(&cfg.governance, &registry)),
            registry,
            store,
        };
        let checked = live.check(&written)?;
        live.current.store(Arc::new(Governance::new(&checked, &live.registry)));
        *live.written.lock().await = written;
        Ok(live)
    }

    /// Takes up what other replicas wrote into a shared store (PostgreSQL): called every few seconds. A
    /// store that holds what this process holds changes nothing; otherwise the stored entities are checked
    /// as a write is and applied at once (`Ok(true)`), or, when they do not fit this process's file (a
    /// replica with another configuration), refused and kept out (`Err`), this process's state unchanged.
    pub async fn sync(&self) -> Result<bool, WriteError> {
        // Under the write lock: a write here (which stores, then applies) is never undone by a load that
        // began before it.
        let mut written = self.written.lock().await;
        let stored = self.store.load().await?;
        let next = from_stored(&self.cfg.load().governance, stored, false);
        if fingerprint(&written) == fingerprint(&next) {
            return Ok(false);
        }
        let checked = self.check(&next)?;
        self.current.store(Arc::new(Governance::new(&checked, &self.registry)));
        *written = next;
        Ok(true)
    }

    /// Totals from the usage ledger (see `usage`). Only meaningful when the gateway writes a ledger into
    /// this store (`Gateway::keeps_usage`).
    pub async fn usage(&self, q: UsageQuery) -> Result<Vec<UsageGroup>, StoreError> {
        self.store.usage_totals(q).await
    }

    /// Saves every meter's use to the store (called periodically and at shutdown).
    pub async fn save_meters(&self) -> Result<(), StoreError> {
        self.store.save_meters(self.registry.states()).await
    }

    /// The governance a request works with from start to end.
    pub fn snapshot(&self) -> Arc<Governance> {
        self.current.load_full()
    }

    /// The configuration; its `governance` is the file's.
    fn file(&self) -> Arc<Config> {
        self.cfg.load_full()
    }

    fn in_file(&self, kind: Kind, id: &str) -> bool {
        let cfg = self.file();
        let f = &cfg.governance;
        match kind {
            Kind::Customer => f.customers.iter().any(|c| c.id == id),
            Kind::Team => f.teams.iter().any(|t| t.id == id),
            Kind::Key => f.keys.iter().any(|(k, _)| k.id == id),
        }
    }

    /// Creates or replaces an entity by id: the whole result is checked, then stored, then swapped in.
    pub async fn put(&self, e: Entity) -> Result<(), WriteError> {
        let (kind, id) = match &e {
            Entity::Customer(c) => (Kind::Customer, c.id.clone()),
            Entity::Team(t) => (Kind::Team, t.id.clone()),
            Entity::Key(k, _) => (Kind::Key, k.id.clone()),
        };
        if self.in_file(kind, &id) {
            return Err(WriteError::FromFile(format!("{} \"{}\"", kind.noun(), shown_id(kind, &e))));
        }
        let mut w = self.written.lock().await;
        let mut next = w.clone();
        match e.clone() {
            Entity::Customer(c) => upsert(&mut next.customers, c, |x| &x.id),
            Entity::Team(t) => upsert(&mut next.teams, t, |x| &x.id),
            Entity::Key(k, v) => upsert(&mut next.keys, (k, v), |x| &x.0.id),
        }
        let checked = self.check(&next)?;
        match e {
            Entity::Customer(c) => self.store.put_customer(c).await?,
            Entity::Team(t) => self.store.put_team(t).await?,
            Entity::Key(k, v) => {
                let value_sha256 = value_sha256(v.expose_secret());
                self.store.put_key(StoredKey { spec: VirtualKeySpec { value: None, ..k }, value_sha256 }).await?
            }
        }
        self.current.store(Arc::new(Governance::new(&checked, &self.registry)));
        *w = next;
        Ok(())
    }

    pub async fn delete(&self, kind: Kind, id: &str) -> Result<(), WriteError> {
        if self.in_file(kind, id) {
            return Err(WriteError::FromFile(format!("this {}", kind.noun())));
        }
        let mut w = self.written.lock().await;
        let mut next = w.clone();
        let before = (next.customers.len(), next.teams.len(), next.keys.len());
        match kind {
            Kind::Customer => next.customers.retain(|c| c.id != id),
            Kind::Team => next.teams.retain(|t| t.id != id),
            Kind::Key => next.keys.retain(|k| k.0.id != id),
        }
        if before == (next.customers.len(), next.teams.len(), next.keys.len()) {
            return Err(WriteError::NotFound(kind.noun().to_string()));
        }
        let checked = self.check(&next)?;
        let id = id.to_string();
        match kind {
            Kind::Customer => self.store.delete_customer(id).await?,
            Kind::Team => self.store.delete_team(id).await?,
            Kind::Key => self.store.delete_key(id).await?,
        };
        self.current.store(Arc::new(Governance::new(&checked, &self.registry)));
        *w = next;
        Ok(())
    }

    /// A change of the providers (a management-API provider write): every entity is checked against
    /// `next` as a write is, residency proof included; only if all fit does `apply` run (the store write and
    /// the swap of the providers), with no governance write in between, and `next` becomes the
    /// configuration later writes are checked against. The entities themselves do not change.
    pub async fn reconfigure<F>(&self, next: Config, apply: F) -> Result<(), WriteError>
    where
        F: std::future::Future<Output = Result<(), WriteError>>,
    {
        let w = self.written.lock().await;
        self.check_against(&next, &w)?;
        apply.await?;
        self.cfg.store(Arc::new(next));
        drop(w);
        Ok(())
    }

    /// The file's entities with `next` as one `governance:` section, checked as a file is.
    fn check(&self, next: &Written) -> Result<GovernanceConfig, WriteError> {
        self.check_against(&self.file(), next)
    }

    fn check_against(&self, cfg: &Config, next: &Written) -> Result<GovernanceConfig, WriteError> {
        let f = &cfg.governance;
        let all_keys: Vec<&(VirtualKeySpec, SecretString)> = f.keys.iter().chain(&next.keys).collect();
        let customers: Vec<&Customer> = f.customers.iter().chain(&next.customers).collect();
        let teams: Vec<&Team> = f.teams.iter().chain(&next.teams).collect();
        check_governance(cfg, section(f, &customers, &teams, &all_keys)).map_err(WriteError::Invalid)
    }

    /// The residency report of what is served now: the file's keys and the API's, against the providers in
    /// force, by the same code as `switchyard check --explain`.
    pub async fn residency(&self) -> Result<Vec<super::residency::KeyReach>, WriteError> {
        let w = self.written.lock().await;
        let mut cfg = (*self.file()).clone();
        cfg.governance = self.check_against(&cfg, &w)?;
        drop(w);
        Ok(super::residency::report(&cfg))
    }

    /// The value of a key the API wrote (as its hash when it came from the store), so that a `PUT` that
    /// changes a key's settings without sending its value keeps the value callers present.
    pub async fn written_value(&self, id: &str) -> Option<SecretString> {
        self.written.lock().await.keys.iter().find(|(k, _)| k.id == id).map(|(_, v)| v.clone())
    }

    pub async fn keys(&self) -> Vec<Shown<VirtualKeySpec>> {
        let g = self.snapshot();
        let w = self.written.lock().await;
        let cfg = self.file();
        let file = cfg.governance.keys.iter().map(|k| (k, true));
        file.chain(w.keys.iter().map(|k| (k, false)))
            .map(|((spec, value), from_file)| {
                let readings = g.key_readings(value).unwrap_or_default();
                Shown {
                    entity: VirtualKeySpec { value: None, ..spec.clone() },
                    from_file,
                    usage: readings.flat(),
                    readings,
                    id_is_value: super::key_hash(value.expose_secret()) == super::key_hash(&spec.id),
                }
            })
            .collect()
    }

    pub async fn teams(&self) -> Vec<Shown<Team>> {
        let g = self.snapshot();
        let w = self.written.lock().await;
        self.file()
            .governance
            .teams
            .iter()
            .map(|t| (t, true))
            .chain(w.teams.iter().map(|t| (t, false)))
            .map(|(t, from_file)| {
                let readings = g.team_readings(&t.id).unwrap_or_default();
                Shown { entity: t.clone(), from_file, usage: readings.flat(), readings, id_is_value: false }
            })
            .collect()
    }

    pub async fn customers(&self) -> Vec<Shown<Customer>> {
        let g = self.snapshot();
        let w = self.written.lock().await;
        self.file()
            .governance
            .customers
            .iter()
            .map(|c| (c, true))
            .chain(w.customers.iter().map(|c| (c, false)))
            .map(|(c, from_file)| {
                let readings = g.customer_readings(&c.id).unwrap_or_default();
                Shown { entity: c.clone(), from_file, usage: readings.flat(), readings, id_is_value: false }
            })
            .collect()
    }
}

/// What the store holds, less what the file `f` defines now (the file is its source of truth; with `warn`,
/// each superseded entity is logged).
fn from_stored(f: &GovernanceConfig, stored: super::store::StoredGovernance, warn: bool) -> Written {
    let superseded = |kind: &str, shown: &str| {
        if warn {
            tracing::warn!(
                "the stored {kind} {shown} is defined in the configuration file now; the file's is used (the file is its source of truth)"
            );
        }
    };
    let customers = stored.customers.into_iter().filter(|c| {
        let file = f.customers.iter().any(|x| x.id == c.id);
        if file {
            superseded("customer", &format!("\"{}\"", c.id));
        }
        !file
    });
    let teams = stored.teams.into_iter().filter(|t| {
        let file = f.teams.iter().any(|x| x.id == t.id);
        if file {
            superseded("team", &format!("\"{}\"", t.id));
        }
        !file
    });
    let file_hashes: std::collections::HashSet<String> = f.keys.iter().map(|(_, v)| value_sha256(v.expose_secret())).collect();
    let keys = stored.keys.into_iter().filter(|k| {
        let file = f.keys.iter().any(|(x, _)| x.id == k.spec.id) || file_hashes.contains(&k.value_sha256);
        if file {
            // By name: its id may be its value.
            superseded("virtual key", &format!("named \"{}\"", k.spec.name));
        }
        !file
    });
    Written {
        customers: customers.collect(),
        teams: teams.collect(),
        keys: keys.map(|k| (k.spec, SecretString::from(format!("{HASHED}{}", k.value_sha256)))).collect(),
    }
}

/// What `w` holds, in an order of its own and with key values as their hashes: equal for the same
/// entities whether a value came from a write here (the value) or from the store (its hash).
fn fingerprint(w: &Written) -> (Vec<&Customer>, Vec<&Team>, Vec<(&VirtualKeySpec, String)>) {
    let mut customers: Vec<&Customer> = w.customers.iter().collect();
    customers.sort_by(|a, b| a.id.cmp(&b.id));
    let mut teams: Vec<&Team> = w.teams.iter().collect();
    teams.sort_by(|a, b| a.id.cmp(&b.id));
    let mut keys: Vec<(&VirtualKeySpec, String)> = w
        .keys
        .iter()
        .map(|(k, v)| {
            let v = v.expose_secret();
            (k, v.strip_prefix(HASHED).map_or_else(|| value_sha256(v), str::to_string))
        })
        .collect();
    keys.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    (customers, teams, keys)
}

/// How an entity is named in a refusal: a key by its name (its id may be its value).
fn shown_id(kind: Kind, e: &Entity) -> String {
    match (kind, e) {
        (Kind::Key, Entity::Key(k, _)) => k.name.clone(),
        (_, Entity::Customer(c)) => c.id.clone(),
        (_, Entity::Team(t)) => t.id.clone(),
        _ => String::new(),
    }
}

fn upsert<T>(list: &mut Vec<T>, item: T, id: impl Fn(&T) -> &String) {
    let key = id(&item).clone();
    match list.iter_mut().find(|x| *id(x) == key) {
        Some(slot) => *slot = item,
        None => list.push(item),
    }
}

/// The `governance:` section holding these entities, as the configuration checker reads it (values
/// written literally: they never leave memory).
fn section(f: &GovernanceConfig, customers: &[&Customer], teams: &[&Team], keys: &[&(VirtualKeySpec, SecretString)]) -> Yaml {
    let to = |v: Result<Yaml, serde_yaml_ng::Error>| v.unwrap_or(Yaml::Null);
    let mut m = Mapping::new();
    if let Some(r) = f.require_virtual_key {
        m.insert("require_virtual_key".into(), Yaml::Bool(r));
    }
    m.insert("default_max_tokens".into(), Yaml::Number(f.default_max_tokens.into()));
    m.insert("customers".into(), Yaml::Sequence(customers.iter().map(|c| to(serde_yaml_ng::to_value(c))).collect()));
    m.insert("teams".into(), Yaml::Sequence(teams.iter().map(|t| to(serde_yaml_ng::to_value(t))).collect()));
    let keys = keys
        .iter()
        .map(|(k, v)| {
            let mut y = to(serde_yaml_ng::to_value(k));
            if let Yaml::Mapping(map) = &mut y {
                map.insert("value".into(), Yaml::String(v.expose_secret().to_string()));
            }
            y
        })
        .collect();
    m.insert("virtual_keys".into(), Yaml::Sequence(keys));
    let levels = |l: &std::collections::BTreeMap<String, crate::config::LevelLimits>| {
        let mut out = Mapping::new();
        for (name, limits) in l {
            let mut lm = Mapping::new();
            if let Some(b) = &limits.budget {
                lm.insert("budget".into(), to(serde_yaml_ng::to_value(b)));
            }
            if let Some(r) = &limits.rate_limit {
                lm.insert("rate_limit".into(), to(serde_yaml_ng::to_value(r)));
            }
            out.insert(Yaml::String(name.clone()), Yaml::Mapping(lm));
        }
        Yaml::Mapping(out)
    };
    m.insert("providers".into(), levels(&f.providers));
    m.insert("models".into(), levels(&f.models));
    Yaml::Mapping(m)
}
