//! The stock `migrate-tenants` binary: no migrations of its own, it reads a directory at run
//! time. Applications build their own binary with `migrate_tenants::cli::main(&MIGRATIONS)`.

fn main() {
    migrate_tenants::cli::main_with_directory()
}
