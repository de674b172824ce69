//! Providers that change while the gateway serves: the management API's `/api/providers` writes.
//!
//! A write is checked exactly as the configuration file is, against the whole result: the provider itself
//! goes through the loader's own decoding (written as a `providers.NAME` section, see [`spec`]), the routes
//! are checked again against the new set of providers, and every virtual key, team and customer is checked
//! again (cross-references and the residency proof: a write that would let a residency-restricted key reach
//! a provider its policy forbids is refused, naming the path). Only then is it stored and applied, by
//! swapping in a new immutable snapshot of the providers (`pool`): a request keeps the snapshot it started
//! with, and every provider or key that is still there keeps its health, cooldowns and slots.
//!
//! Source of truth, as for governance: the providers the gateway started with (its file, or the
//! environment when there is none) are read-only here (a write to one is refused with where to change it);
//! what the API writes belongs to the API and lives in the store beside the file.

pub mod spec;
pub mod store;

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::config::{self, Config, ConfigIssue, Env, ProcessEnv, ProviderConfig};
use crate::error::GatewayError;
use crate::governance::live::WriteError;
use crate::governance::store::StoreError;
use crate::Gateway;
use spec::ProviderSpec;
use store::{MemoryProviderStore, ProviderStore};

/// Why a provider write was not applied; nothing changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderWriteError {
    /// The write would make an invalid configuration; every problem, with its path (the body's for the
    /// provider itself, the file's for what it would break elsewhere).
    #[error("{}", .0.iter().map(|i| if i.path.is_empty() { i.message.clone() } else { format!("{}: {}", i.path, i.message) }).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ConfigIssue>),
    #[error("provider \"{0}\" comes from the gateway's configuration (its file, or the environment at start), which is its source of truth; change it there")]
    FromConfig(String),
    #[error("provider \"{0}\" exists already; PUT /api/providers/{0} replaces it")]
    Exists(String),
    #[error("no provider \"{0}\"")]
    NotFound(String),
    /// The store did not take the write.
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<WriteError> for ProviderWriteError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Invalid(issues) => ProviderWriteError::Invalid(issues),
            WriteError::Store(s) => ProviderWriteError::Store(s),
            other => ProviderWriteError::Internal(other.to_string()),
        }
    }
}

impl From<GatewayError> for ProviderWriteError {
    fn from(e: GatewayError) -> Self {
        ProviderWriteError::Internal(e.to_string())
    }
}

/// One provider the API wrote: as written, and as the loader made it.
#[derive(Debug, Clone)]
struct Written {
    spec: ProviderSpec,
    cfg: ProviderConfig,
}

/// One provider as the API shows it: its configuration (secrets in it: render with care) and, for one the
/// API wrote, the spec it was written with.
#[derive(Debug, Clone)]
pub struct ProviderView {
    pub cfg: ProviderConfig,
    pub spec: Option<ProviderSpec>,
    pub from_config: bool,
}

/// The configuration the gateway started with and the providers the API wrote.
pub struct Catalog {
    start: Config,
    /// Writes are serialised here (they are rare); requests never take this lock.
    written: Mutex<Vec<Written>>,
    store: Arc<dyn ProviderStore>,
}

impl Catalog {
    /// The gateway's configuration alone; what the API writes is kept in memory.
    pub fn new(cfg: &Config) -> Catalog {
        Catalog { start: cfg.clone(), written: Mutex::new(Vec::new()), store: Arc::new(MemoryProviderStore::default()) }
    }

    /// The configuration and the providers `store` kept, each checked as a write is. A stored provider
    /// that no longer fits (its `env.NAME` is not set, the file now defines its name) is an error naming
    /// it: starting without it could leave a virtual key pointing elsewhere.
    pub async fn load(cfg: &Config, store: Arc<dyn ProviderStore>) -> Result<Catalog, ProviderWriteError> {
        let mut written = Vec::new();
        let mut issues = Vec::new();
        for spec in store.load_providers().await? {
            let name = spec.provider.clone();
            if cfg.providers.iter().any(|p| p.name == name) {
                // The file is the source of truth for what it defines (as after `switchyard export`).
                tracing::warn!(
                    "the stored provider {name} is defined in the configuration file now; the file's is used (DELETE /api/providers/{name} is refused while the file defines it; remove it from the store by removing it from the file, starting, and deleting it)"
                );
                continue;
            }
            match decode(&spec, &ProcessEnv) {
                Ok(p) => written.push(Written { spec, cfg: p }),
                Err(e) => issues
                    .extend(e.into_iter().map(|i| ConfigIssue { path: format!("stored provider {name}: {}", i.path), message: i.message })),
            }
        }
        let catalog = Catalog { start: cfg.clone(), written: Mutex::new(Vec::new()), store };
        issues.extend(config::check_routes(&catalog.config_with(&written)));
        if !issues.is_empty() {
            return Err(ProviderWriteError::Invalid(issues));
        }
        *catalog.written.lock().await = written;
        Ok(catalog)
    }

    /// The configuration with every provider: the start's, then the API's in the order written.
    pub async fn config(&self) -> Config {
        self.config_with(&self.written.lock().await)
    }

    fn config_with(&self, written: &[Written]) -> Config {
        let mut cfg = self.start.clone();
        cfg.providers.extend(written.iter().map(|w| w.cfg.clone()));
        cfg
    }

    fn in_config(&self, name: &str) -> bool {
        self.start.providers.iter().any(|p| p.name == name)
    }
}

/// The provider a spec describes, through the loader; issues at the body's paths.
fn decode(spec: &ProviderSpec, env: &dyn Env) -> Result<ProviderConfig, Vec<ConfigIssue>> {
    let name = spec.provider.as_str();
    if name.is_empty() {
        return Err(vec![ConfigIssue {
            path: "provider".into(),
            message: "required: the provider's name (the prefix in \"name/model\")".into(),
        }]);
    }
    let section = spec.to_section()?;
    config::decode_provider(name, section, env).map_err(|issues| {
        issues.into_iter().map(|i| ConfigIssue { path: spec::body_path(name, &i.path, spec), message: i.message }).collect()
    })
}

impl Gateway {
    /// Every provider: the configuration's, then the API's.
    pub async fn providers(&self) -> Vec<ProviderView> {
        let w = self.catalog.written.lock().await;
        let start = self.catalog.start.providers.iter().map(|p| ProviderView { cfg: p.clone(), spec: None, from_config: true });
        start.chain(w.iter().map(|x| ProviderView { cfg: x.cfg.clone(), spec: Some(x.spec.clone()), from_config: false })).collect()
    }

    pub async fn provider(&self, name: &str) -> Option<ProviderView> {
        self.providers().await.into_iter().find(|p| p.cfg.name == name)
    }

    /// `POST` (`create`: refused if the name exists) or `PUT` (create or replace). Key values may be
    /// `env.NAME`, read from the gateway's environment as the file's are.
    pub async fn put_provider(&self, mut spec: ProviderSpec, create: bool) -> Result<ProviderView, ProviderWriteError> {
        let name = spec.provider.clone();
        if self.catalog.in_config(&name) {
            return Err(ProviderWriteError::FromConfig(name));
        }
        let mut w = self.catalog.written.lock().await;
        let at = w.iter().position(|x| x.spec.provider == name);
        if create && at.is_some() {
            return Err(ProviderWriteError::Exists(name));
        }
        let kept = spec.keep_values(at.map(|i| &w[i].spec));
        if !kept.is_empty() {
            return Err(ProviderWriteError::Invalid(kept));
        }
        let cfg = decode(&spec, &ProcessEnv).map_err(ProviderWriteError::Invalid)?;
        let mut next = w.clone();
        let entry = Written { spec: spec.clone(), cfg };
        match at {
            Some(i) => next[i] = entry.clone(),
            None => next.push(entry.clone()),
        }
        let store = Arc::clone(&self.catalog.store);
        self.apply(&next, async move { store.put_provider(spec).await.map_err(WriteError::from) }).await?;
        *w = next;
        Ok(ProviderView { cfg: entry.cfg, spec: Some(entry.spec), from_config: false })
    }

    pub async fn delete_provider(&self, name: &str) -> Result<(), ProviderWriteError> {
        if self.catalog.in_config(name) {
            return Err(ProviderWriteError::FromConfig(name.to_string()));
        }
        let mut w = self.catalog.written.lock().await;
        if !w.iter().any(|x| x.spec.provider == name) {
            return Err(ProviderWriteError::NotFound(name.to_string()));
        }
        let next: Vec<Written> = w.iter().filter(|x| x.spec.provider != name).cloned().collect();
        let store = Arc::clone(&self.catalog.store);
        let owned = name.to_string();
        self.apply(&next, async move { store.delete_provider(owned).await.map(drop).map_err(WriteError::from) }).await?;
        *w = next;
        Ok(())
    }

    /// Checks the configuration `next` makes (routes, then governance with the residency proof), then
    /// stores and swaps it in; the caller holds the catalog's lock.
    async fn apply(
        &self,
        next: &[Written],
        store: impl std::future::Future<Output = Result<(), WriteError>>,
    ) -> Result<(), ProviderWriteError> {
        let cfg = self.catalog.config_with(next);
        let issues = config::check_routes(&cfg);
        if !issues.is_empty() {
            return Err(ProviderWriteError::Invalid(issues));
        }
        // Built before anything is stored: the only step that can still fail (an HTTP client) fails first.
        let pool = self.next_pool(&cfg.providers)?;
        self.governance()
            .reconfigure(cfg, async move {
                store.await?;
                self.install_pool(pool);
                Ok(())
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::live::Live;
    use std::collections::BTreeMap;

    fn gateway(yaml: &str) -> Gateway {
        let cfg = config::parse_str(yaml, &BTreeMap::new()).unwrap();
        Gateway::new(&cfg).unwrap()
    }

    fn spec(v: serde_json::Value) -> ProviderSpec {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn writes_are_checked_like_the_file_and_the_files_providers_are_read_only() {
        let g = gateway("providers:\n  ollama: {base_url: \"http://127.0.0.1:1\", tags: [on-prem]}\n  local: {type: ollama, base_url: \"http://127.0.0.1:3\"}\n");
        let e = g.put_provider(spec(serde_json::json!({"provider": "ollama"})), false).await.unwrap_err();
        assert!(matches!(e, ProviderWriteError::FromConfig(_)), "{e:?}");
        let bad = spec(serde_json::json!({"provider": "v", "type": "vllm", "network_config": {"base_url": "ftp://x"}}));
        match g.put_provider(bad, true).await.unwrap_err() {
            ProviderWriteError::Invalid(i) => assert_eq!(i[0].path, "network_config.base_url", "{i:?}"),
            other => panic!("{other:?}"),
        }
        let ok = spec(serde_json::json!({"provider": "v", "type": "vllm", "network_config": {"base_url": "http://127.0.0.1:2"}}));
        g.put_provider(ok.clone(), true).await.unwrap();
        assert!(matches!(g.put_provider(ok, true).await.unwrap_err(), ProviderWriteError::Exists(_)));
        assert_eq!(g.plan("v/llama", &[]).unwrap().targets[0].label, "v/llama");
        g.delete_provider("v").await.unwrap();
        assert!(matches!(g.plan("v/llama", &[]).unwrap_err(), GatewayError::ModelNotFound { .. }));
        assert!(matches!(g.delete_provider("v").await.unwrap_err(), ProviderWriteError::NotFound(_)));
    }

    #[tokio::test]
    async fn a_write_that_would_take_a_restricted_key_to_a_forbidden_provider_is_refused() {
        let yaml = "providers:\n  ollama: {base_url: \"http://127.0.0.1:1\", tags: [on-prem]}\n";
        let cfg = config::parse_str(yaml, &BTreeMap::new()).unwrap();
        let g = Gateway::with_governance(&cfg, Live::new(&cfg)).unwrap();
        let onprem = spec(serde_json::json!({"provider": "vllm", "type": "vllm", "tags": ["on-prem"]}));
        g.put_provider(onprem, true).await.unwrap();
        let key: crate::governance::model::VirtualKeySpec = serde_json::from_value(serde_json::json!({
            "id": "vk-s", "name": "sensitive", "residency": {"allowed_tags": ["on-prem"]}, "provider_configs": [{"provider": "vllm"}]
        }))
        .unwrap();
        g.governance().put(crate::governance::live::Entity::Key(key, "vk-s".to_string().into())).await.unwrap();
        let cloud = spec(serde_json::json!({"provider": "vllm", "type": "vllm", "tags": ["cloud"]}));
        match g.put_provider(cloud, false).await.unwrap_err() {
            ProviderWriteError::Invalid(i) => assert!(i[0].path.starts_with("governance.virtual_keys[0].provider_configs[0]"), "{i:?}"),
            other => panic!("{other:?}"),
        }
        // Nor may the provider the key names go away.
        assert!(matches!(g.delete_provider("vllm").await.unwrap_err(), ProviderWriteError::Invalid(_)));
        assert_eq!(g.providers().await.len(), 2);
    }
}
