//! A test application: its own tenant and shared sets, embedded, and `cli::main`.

/// The application's migrations (with `migrations_shared/` beside them).
pub const MIGRATIONS: migrate_tenants::EmbeddedMigrations = migrate_tenants::embed_migrations!();

fn main() {
    migrate_tenants::cli::main(&MIGRATIONS)
}
