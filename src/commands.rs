/*!
What each subcommand does with the library, and the exit code it ends with.
*/

use crate::cli::{Cli, CliCommand, Format, Global, TenantCommand, UsageError};
use crate::render::Printer;
use migrate_tenants::config::{MigrationSource, TenantSource};
use migrate_tenants::database::DatabaseUrl;
use migrate_tenants::lifecycle;
use migrate_tenants::migration_set::DownSql;
use migrate_tenants::report::{exit, RunKind};
use migrate_tenants::runner::{self, RunError};
use migrate_tenants::Command;
use std::io::Write;

/// Logging through env_logger (`RUST_LOG`, quiet by default). Every line passes through
/// the database URL's scrubber, so a password that reached a message is still hidden.
pub fn init_logging(global: &Global) {
    let url: Option<DatabaseUrl> = global.database_url().ok();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off"))
        .format(move |buf, record| {
            let message = match &url {
                Some(url) => url.scrub(&record.args().to_string()),
                None => record.args().to_string(),
            };
            writeln!(buf, "[{} {}] {message}", record.level(), record.target())
        })
        .init();
}

/// Runs the command; returns the process exit code.
pub fn dispatch(cli: Cli) -> i32 {
    let scrub = |text: String| match cli.global.database_url() {
        Ok(url) => url.scrub(&text),
        Err(_) => text,
    };
    let result = match &cli.command {
        CliCommand::List => list(&cli.global),
        CliCommand::Generate { name, no_transaction } => generate(&cli.global, name, *no_transaction),
        CliCommand::Tenant(cmd) => tenant(&cli.global, cmd),
        command => fleet(&cli.global, command),
    };
    match result {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("error: {}", scrub(message));
            code
        }
    }
}

type Outcome = Result<i32, (i32, String)>;

fn usage(e: UsageError) -> (i32, String) {
    (exit::USAGE, e.to_string())
}

fn run_error(e: RunError) -> (i32, String) {
    let hint = match &e {
        RunError::Unreachable(_) => "\nhint: is the server running, and are host, port and credentials right? (--connect-timeout sets how long to wait)",
        _ => "",
    };
    (e.exit_code(), format!("{e}{hint}"))
}

fn fleet(global: &Global, command: &CliCommand) -> Outcome {
    let include_shared = matches!(command, CliCommand::Down { shared: true, .. });
    let config = global.run_config(include_shared, None).map_err(usage)?;
    let (command, kind) = match command {
        CliCommand::Tenant(TenantCommand::List) => (Command::Status, RunKind::TenantList),
        other => {
            let command = other.fleet_command().expect("a fleet command");
            let kind = RunKind::from(&command);
            (command, kind)
        }
    };
    let mut printer = Printer::new(global.format, global.quiet, kind);
    let mut report = runner::run(&config, &command, &mut printer).map_err(run_error)?;
    report.command = kind;
    printer.finish(&report);
    Ok(report.exit_code())
}

fn list(global: &Global) -> Outcome {
    let source = global.migration_source().map_err(usage)?;
    let set = runner::load_set(&source).map_err(|e| (exit::USAGE, e.to_string()))?;
    if global.format == Format::Json {
        let rows: Vec<_> = set
            .migrations()
            .iter()
            .map(|m| {
                serde_json::json!({
                    "version": m.version,
                    "name": m.dir_name,
                    "down": match m.down { DownSql::Missing => "missing", DownSql::NoOp => "empty", DownSql::Sql(_) => "sql" },
                    "run_in_transaction": m.run_in_transaction,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return Ok(exit::SUCCESS);
    }
    println!("{} migration(s) from {}", set.migrations().len(), set.origin());
    for m in set.migrations() {
        let down = match m.down {
            DownSql::Missing => "no down.sql (irreversible)",
            DownSql::NoOp => "empty down.sql (reverts as a no-op)",
            DownSql::Sql(_) => "reversible",
        };
        let tx = if m.run_in_transaction {
            ""
        } else {
            ", runs outside a transaction"
        };
        println!("{}  {}  [{down}{tx}]", m.version, m.dir_name);
    }
    Ok(exit::SUCCESS)
}

fn generate(global: &Global, name: &str, no_transaction: bool) -> Outcome {
    let dir = global.generate_dir().map_err(usage)?;
    let created = migrate_tenants::generate::generate(&dir, name, chrono::Utc::now(), !no_transaction)
        .map_err(|e| (exit::USAGE, e.to_string()))?;
    println!("created {}", created.display());
    println!("  {}", created.join("up.sql").display());
    println!("  {}", created.join("down.sql").display());
    if global.migration_source().map_err(usage)? == MigrationSource::Embedded {
        println!(
            "note: this binary runs its embedded migrations; rebuild it (cargo build) to embed the new one, \
             or run with --migrations-dir {}",
            dir.display()
        );
    }
    Ok(exit::SUCCESS)
}

fn tenant(global: &Global, command: &TenantCommand) -> Outcome {
    let (names, kind) = match command {
        TenantCommand::List => return fleet(global, &CliCommand::Tenant(TenantCommand::List)),
        TenantCommand::Create { names, .. } => (names, RunKind::TenantCreate),
        TenantCommand::Drop { yes: false, .. } => {
            return Err((
                exit::USAGE,
                "tenant drop deletes the tenants' schemas and data: add --yes to confirm".into(),
            ));
        }
        TenantCommand::Drop { names, .. } => (names, RunKind::TenantDrop),
    };
    if global.tenants.any_given() {
        let why = "tenant create/drop take the tenant names as arguments; drop --tenants, --tenants-file, \
                   --tenants-query, --schema-pattern, --tenant and --exclude";
        return Err((exit::USAGE, why.into()));
    }
    let config = global
        .run_config(false, Some(TenantSource::List(names.clone())))
        .map_err(usage)?;
    let mut printer = Printer::new(global.format, global.quiet, kind);
    let report = match command {
        TenantCommand::Create { if_not_exists, .. } => lifecycle::create(&config, names, *if_not_exists, &mut printer),
        TenantCommand::Drop { force, .. } => lifecycle::drop(&config, names, *force, &mut printer),
        TenantCommand::List => unreachable!("handled above"),
    }
    .map_err(run_error)?;
    printer.finish(&report);
    Ok(report.exit_code())
}
