//! The schema migrations, embedded in the binary and run by sqlx's migrator when a store opens.
//!
//! Each file is `migrations/<backend>/<version>_<description>.sql`, the layout sqlx-cli uses, so an operator
//! can also apply them by hand. They are listed here rather than found by `sqlx::migrate!` (see the crate
//! docs for why); a test checks that the list and the directories agree, so a new file cannot be forgotten.
//! A migration, once released, is never edited: the migrator keeps each one's checksum and refuses to open
//! a database whose applied migration has changed. Add a new file instead.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// (version, description, SQL)
type Embedded = &'static [(i64, &'static str, &'static str)];

pub(crate) const SQLITE: Embedded = &[
    (1, "governance", include_str!("../migrations/sqlite/0001_governance.sql")),
    (2, "providers", include_str!("../migrations/sqlite/0002_providers.sql")),
    (3, "request_logs", include_str!("../migrations/sqlite/0003_request_logs.sql")),
];

pub(crate) const POSTGRES: Embedded = &[
    (1, "governance", include_str!("../migrations/postgres/0001_governance.sql")),
    (2, "providers", include_str!("../migrations/postgres/0002_providers.sql")),
    (3, "request_logs", include_str!("../migrations/postgres/0003_request_logs.sql")),
];

#[derive(Debug)]
struct Source(Embedded);

impl MigrationSource<'static> for Source {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), false)
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

pub(crate) async fn migrator(embedded: Embedded) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Source(embedded)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        for (dir, embedded) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir);
            let mut files: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sql"))
                .collect();
            files.sort();
            let listed: Vec<String> = embedded.iter().map(|(v, d, _)| format!("{v:04}_{d}.sql")).collect();
            assert_eq!(files, listed, "migrations/{dir} and src/migrate.rs disagree");
            assert!(embedded.windows(2).all(|w| w[0].0 < w[1].0), "versions must increase");
        }
    }
}
