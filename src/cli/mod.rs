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
library calls and picks the exit code, `confirm` asks before fleet-wide reverts and drops,
`render` prints the reports (`plan` a dry run's, `json_lines` the streamed format, `names`
migration names for versions, `progress` the bar on a terminal), `runs` the run journal, and
`fleet_file` and `multi` run a command over several databases (`--fleet`).
*/

mod commands;
mod confirm;
mod ephemeral;
mod flags;
mod fleet_file;
mod generate;
mod json_lines;
mod locate;
mod multi;
mod names;
mod output;
mod plan;
mod progress;
mod render;
mod runs;
mod signals;

use output::errln;

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
    let token = crate::CancelToken::new();
    let received = signals::install(token.clone());
    let code = commands::dispatch(&cli, migrations, token);
    match received.exit_code() {
        Some(signal_code) if code == crate::exit::INTERRUPTED => signal_code,
        _ => code,
    }
}

/// Loads `.env` from the current directory or the nearest parent that has one; variables
/// already set win. A malformed line is worth a warning: dotenvy stops there (the lines
/// before it are loaded, the rest are not).
fn load_dotenv() {
    let Some(path) = std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.ancestors().map(|d| d.join(".env")).find(|p| p.is_file()))
    else {
        return;
    };
    match dotenvy::from_path(&path) {
        Ok(()) => log::debug!("loaded {}", path.display()),
        Err(dotenvy::Error::LineParse(line, at)) => errln!(
            "warning: {}: cannot parse the line {line:?} (at character {}); it and the lines after it were not \
             loaded (a value with spaces, `\\`, `#` or quotes goes in single quotes: TENANT_SCHEMA_PATTERN='tenant\\_%')",
            path.display(),
            at + 1
        ),
        Err(e) => errln!("warning: {}: {e}; it was not loaded", path.display()),
    }
}
