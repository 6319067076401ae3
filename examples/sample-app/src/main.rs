//! The sample application's deploy artifact: `sample-app-migrate up`, `status`, `tenant create`,
//! ... with the application's own migrations compiled in.

/// The sample application's migrations (the repository's top-level `migrations/`).
pub const MIGRATIONS: migrate_tenants::EmbeddedMigrations = migrate_tenants::embed_migrations!("../../migrations");

fn main() {
    migrate_tenants::cli::main(&MIGRATIONS)
}
