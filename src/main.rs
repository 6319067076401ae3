//! The `migrate-tenants` binary: parse flags, call the library, render its reports, and
//! pick the exit code in one place.

mod cli;
mod commands;
mod render;

use clap::Parser;

fn main() {
    // A missing .env is normal; a malformed one is worth a warning (dotenvy stops at the
    // bad line: the lines before it are loaded, the rest are not).
    if let Err(e) = dotenvy::dotenv() {
        if !e.not_found() {
            eprintln!("warning: .env: {e}; that line and the ones after it were not loaded (quote values with spaces)");
        }
    }
    let cli = cli::Cli::parse();
    commands::init_logging(&cli.global);
    std::process::exit(commands::dispatch(cli));
}
