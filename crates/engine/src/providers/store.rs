//! Where the providers the management API wrote are kept beyond one process, behind a small trait so the
//! engine knows no database (the `switchyard-store` crate implements it for SQLite and PostgreSQL). Specs
//! are kept as written, key values included (a literal, or `env.NAME` resolved at every start): unlike a
//! virtual key's value, which only has to be recognised, a provider key has to be sent.

use std::sync::Mutex;

use super::spec::ProviderSpec;
use crate::governance::store::StoreFuture;

/// The operations the gateway needs; each is one round trip. `put_provider` creates or replaces by name,
/// keeping a replaced provider's place in the order [`ProviderStore::load_providers`] returns.
pub trait ProviderStore: Send + Sync {
    /// Every stored provider, in the order they were first written.
    fn load_providers(&self) -> StoreFuture<'_, Vec<ProviderSpec>>;
    fn put_provider(&self, p: ProviderSpec) -> StoreFuture<'_, ()>;
    fn delete_provider(&self, name: String) -> StoreFuture<'_, bool>;
}

/// A provider store in memory: nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryProviderStore {
    specs: Mutex<Vec<ProviderSpec>>,
}

impl MemoryProviderStore {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<ProviderSpec>) -> T) -> T {
        f(&mut self.specs.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl ProviderStore for MemoryProviderStore {
    fn load_providers(&self) -> StoreFuture<'_, Vec<ProviderSpec>> {
        let all = self.with(|s| s.clone());
        Box::pin(async move { Ok(all) })
    }

    fn put_provider(&self, p: ProviderSpec) -> StoreFuture<'_, ()> {
        self.with(|s| match s.iter_mut().find(|x| x.provider == p.provider) {
            Some(slot) => *slot = p,
            None => s.push(p),
        });
        Box::pin(async { Ok(()) })
    }

    fn delete_provider(&self, name: String) -> StoreFuture<'_, bool> {
        let gone = self.with(|s| {
            let before = s.len();
            s.retain(|x| x.provider != name);
            s.len() != before
        });
        Box::pin(async move { Ok(gone) })
    }
}
