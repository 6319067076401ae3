/*!
The migrations compiled into the binary.

Two views of the same `migrations/` directory: [`FILES`], the raw texts written by
`build.rs` (what the runner validates and runs), and [`DIESEL_MIGRATIONS`], diesel's own
`embed_migrations!` view, exported for applications that want to hand the same set to
diesel's `MigrationHarness` on a single-schema database. A test checks the two agree.
*/

use crate::migration_set::EmbeddedFiles;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

/// Raw files of every embedded migration directory, sorted by directory name.
pub const FILES: &[EmbeddedFiles] = include!(concat!(env!("OUT_DIR"), "/embedded_migrations.rs"));

/// Raw files of the shared-schema set (`migrations_shared/`; empty when absent).
pub const SHARED_FILES: &[EmbeddedFiles] = include!(concat!(env!("OUT_DIR"), "/embedded_shared_migrations.rs"));

/// The same migrations as diesel embeds them.
pub const DIESEL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration_set::{DownSql, MigrationSet};
    use diesel::migration::MigrationSource;
    use diesel::pg::Pg;

    #[test]
    fn both_embeddings_agree_with_diesel() {
        let ours = MigrationSet::embedded().unwrap();
        let diesel: Vec<_> = MigrationSource::<Pg>::migrations(&DIESEL_MIGRATIONS).unwrap();
        assert_eq!(ours.migrations().len(), diesel.len());
        for (m, d) in ours.migrations().iter().zip(&diesel) {
            assert_eq!(m.version, d.name().version().to_string());
            assert_eq!(m.dir_name, d.name().to_string());
            assert_eq!(m.run_in_transaction, d.metadata().run_in_transaction());
            assert_ne!(
                m.down,
                DownSql::Missing,
                "{}: sample migrations are reversible",
                m.dir_name
            );
        }
    }
}
