/*!
The command line (feature `cli`): `up`, `down`, `redo`, `status`, `list`, `generate` and
`tenant create|drop|list`, as one function an application's binary calls with its embedded
migrations:

```no_run
pub const MIGRATIONS: migrate_tenants::EmbeddedMigrations = migrate_tenants::embed_migrations!("tests/fixtures/basic");

fn main() {
    migrate_tenants::cli::main(&MIGRATIONS)
}
```

`flags` holds what the user typed (clap types live only there), `locate` finds a migrations
directory the way the diesel CLI does (for the stock binary), `commands` turns flags into
library calls and picks the exit code, and `render` prints the reports.
*/

mod commands;
mod flags;
mod generate;
mod locate;
mod render;

use crate::source::EmbeddedMigrations;
use clap::Parser;

/// Which migrations a binary runs.
#[derive(Debug, Clone, Copy)]
enum Migrations {
    /// The application's own set, compiled in.
    Embedded(&'static EmbeddedMigrations),
    /// The stock binary: a directory read at run time.
    Directory,
}

/// The whole command line for an application binary with its embedded migrations; exits with
/// the documented exit code.
pub fn main(migrations: &'static EmbeddedMigrations) -> ! {
    std::process::exit(run(Migrations::Embedded(migrations)))
}

/// The stock `migrate-tenants` binary: migrations read from a directory (`--migrations-dir`,
/// `MIGRATION_DIRECTORY`, `diesel.toml`, or `./migrations`); exits with the documented exit
/// code.
pub fn main_with_directory() -> ! {
    std::process::exit(run(Migrations::Directory))
}

fn run(migrations: Migrations) -> i32 {
    load_dotenv();
    let cli = flags::Cli::parse();
    commands::init_logging(&cli.global);
    commands::dispatch(&cli, migrations)
}

/// Loads `.env` from the current directory or the nearest parent that has one; variables
/// already set win. A malformed line is worth a warning: dotenvy stops there (the lines
/// before it are loaded, the rest are not).
fn load_dotenv() {
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => eprintln!(
            "warning: .env: {e}; that line and the ones after it were not loaded \
             (put a value with spaces, `\\`, `#` or quotes in single quotes: TENANT_SCHEMA_PATTERN='tenant\\_%')"
        ),
    }
}
