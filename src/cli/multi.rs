/*!
The command line over several databases (`--fleet FILE`): `up`, `down`, `redo`, `status`
and `tenant create|drop|list` through the library's [`Databases`], printed grouped by
database — each database's block (a `== name ==` header, then what a single-database run
prints) as soon as that database is done, then one line for the whole fleet — or as one JSON
document `{"command", "databases": [{"name", "exit_code", "report" | "error"}], "summary",
"exit_code", "elapsed_ms"}`.
*/

use super::commands::{gate, run_error, runner};
use super::flags::{Cli, CliCommand, Format, Global, TenantCommand, UsageError};
use super::output::{errln, outln};
use super::render::{run_line, summary, tenant_line};
use super::Migrations;
use crate::report::exit;
use crate::{
    DatabaseReport, Databases, DatabasesObserver, DatabasesReport, NameError, RunInfo, RunKind, SchemaName, Task,
    TenantSource,
};

type Outcome = Result<i32, (i32, String)>;

/// Whether the run is over a fleet file (`--fleet`, `MIGRATE_TENANTS_FLEET`) or names
/// databases (`--database`, refused without a fleet).
pub(super) fn requested(global: &Global) -> bool {
    global.fleet.is_some() || !global.databases.is_empty()
}

/// Whether `command` runs over a fleet (the others need no database).
pub(super) fn takes(command: &CliCommand) -> bool {
    !matches!(
        command,
        CliCommand::List | CliCommand::Lint { .. } | CliCommand::Generate { .. } | CliCommand::Completions { .. }
    )
}

/// Runs `cli`'s command over the fleet file's databases.
pub(super) fn dispatch(cli: &Cli, migrations: Migrations, cancel: crate::CancelToken) -> Outcome {
    let global = &cli.global;
    let usage = |e: UsageError| (exit::USAGE, e.to_string());
    let fleet = databases(global, migrations, &cli.command)?.cancel_token(cancel);
    let fleet = Databases::new(fleet);
    let fleet = super::fleet_file::read(global.fleet.as_deref().expect("checked"))
        .map_err(usage)?
        .into_iter()
        .fold(fleet, Databases::database)
        .select(global.databases.clone());
    let (task, kind) = task(&cli.command)?;
    if super::confirm::needed(global, &cli.command).is_some() {
        return Err((
            exit::USAGE,
            "a down or redo over several databases is not asked about one database at a time: nothing was \
             changed; add --yes to confirm (--dry-run shows the plan first)"
                .into(),
        ));
    }
    let mut printer = FleetPrinter {
        format: global.format,
        quiet: global.quiet,
        kind,
        check: matches!(cli.command, CliCommand::Status { check: true, .. }),
    };
    let report = match &task {
        Some(task) => fleet.run(task, &mut printer),
        None => fleet.list_tenants(&mut printer),
    }
    .map_err(|e| hinted(run_error(e)))?;
    Ok(printer.finish(&report))
}

/// The base runner: every global setting, no database, no tenant source (the fleet file
/// gives each database's).
fn databases(global: &Global, migrations: Migrations, command: &CliCommand) -> Result<crate::Runner, (i32, String)> {
    let usage = |m: &str| (exit::USAGE, m.to_string());
    if global.fleet.is_none() {
        return Err(usage(
            "--database selects databases of a fleet file: give the file with --fleet FILE (or MIGRATE_TENANTS_FLEET)",
        ));
    }
    if std::env::args().any(|a| a == "--database-url" || a.starts_with("--database-url=")) {
        return Err(usage(
            "--fleet and --database-url exclude each other: the fleet file names each database's URL variable",
        ));
    }
    let t = &global.tenants;
    let source_flag = !t.tenants.is_empty()
        || t.tenants_file.is_some()
        || t.tenants_query.is_some()
        || t.schema_pattern.is_some()
        || t.all_tenants;
    if source_flag {
        return Err(usage(
            "with --fleet, each database's tenant source is in the fleet file: drop --tenants, --tenants-file, \
             --tenants-query, --schema-pattern and --all-tenants",
        ));
    }
    if matches!(
        command,
        CliCommand::Tenant(TenantCommand::Create { .. } | TenantCommand::Drop { .. })
    ) && t.any_given()
    {
        return Err(usage(
            "tenant create/drop take the tenant names as arguments; drop --tenant and --exclude",
        ));
    }
    if matches!(command, CliCommand::Verify { .. } | CliCommand::Drift) {
        return Err(usage(
            "verify and drift work on one database: run them with --database-url",
        ));
    }
    let journal = matches!(
        command,
        CliCommand::Up { resume: Some(_), .. }
            | CliCommand::Up { only_failed: true, .. }
            | CliCommand::Down { run: Some(_), .. }
            | CliCommand::Runs { .. }
    );
    if journal {
        return Err(usage(
            "run ids belong to one database's journal: run `runs`, `up --resume`/`--only-failed` and `down --run` \
             with --database-url for that database",
        ));
    }
    let placeholder = Some(TenantSource::List(Vec::new()));
    let runner = global
        .settings(runner(global, migrations)?, placeholder)
        .map_err(|e| (exit::USAGE, e.to_string()))?;
    Ok(super::commands::command_options(runner, command))
}

/// The library task (`None`: `tenant list`) and what the reports call it.
fn task(command: &CliCommand) -> Result<(Option<Task>, RunKind), (i32, String)> {
    Ok(match command {
        CliCommand::Tenant(TenantCommand::List) => (None, RunKind::TenantList),
        CliCommand::Tenant(TenantCommand::Create {
            names, if_not_exists, ..
        }) => {
            let task = Task::CreateTenants {
                names: names.clone(),
                if_exists_migrate: *if_not_exists,
            };
            (Some(task), RunKind::TenantCreate)
        }
        CliCommand::Tenant(TenantCommand::Drop { yes: false, .. }) => {
            return Err((
                exit::USAGE,
                "tenant drop deletes the tenants' schemas and data: add --yes to confirm".into(),
            ))
        }
        CliCommand::Tenant(TenantCommand::Drop {
            names,
            force,
            if_exists,
            ..
        }) => {
            let task = Task::DropTenants {
                names: names.clone(),
                force: *force,
                if_exists: *if_exists,
            };
            (Some(task), RunKind::TenantDrop)
        }
        other => {
            let task = other.task().expect("a fleet command");
            let kind = task.kind();
            (Some(task), kind)
        }
    })
}

/// The CLI's hints for the fleet's own refusals.
fn hinted((code, message): (i32, String)) -> (i32, String) {
    let hint = if message.contains("creating tenants needs exactly one database") {
        "\nhint: name it with --database NAME"
    } else if message.contains("name the database to drop it from") {
        "\nhint: --database NAME"
    } else if message.contains("more than one database") {
        "\nhint: a tenant lives in one database: drop the stray schema, or fix the databases' tenant sources"
    } else {
        ""
    };
    (code, format!("{message}{hint}"))
}

/// Prints each database's block when it is done, then the fleet's summary.
struct FleetPrinter {
    format: Format,
    quiet: bool,
    kind: RunKind,
    /// `status --check`: each database's exit code is its gate.
    check: bool,
}

impl DatabasesObserver for FleetPrinter {
    fn discovered(&mut self, database: &str, tenants: &[SchemaName], invalid: &[NameError]) {
        if self.format == Format::Human {
            for e in invalid {
                errln!("[{database}] skipped invalid tenant name: {e}");
            }
            if tenants.is_empty() {
                errln!("warning: [{database}] no tenants found");
            }
        }
    }

    fn waiting(&mut self, database: &str, tenant: &SchemaName, holder: &str) {
        if self.format == Format::Human {
            outln!("[{database}] {tenant}: waiting for its lock, held by {holder}");
        }
    }

    fn warning(&mut self, database: &str, message: &str) {
        errln!("warning: [{database}] {message}");
    }

    fn database_done(&mut self, db: &DatabaseReport) {
        if self.format == Format::Human {
            self.block(db);
        }
    }

    fn started(&mut self, _database: &str, _run: &RunInfo) {}
}

impl FleetPrinter {
    /// One database's part, as a single-database run prints it, under a header.
    fn block(&self, db: &DatabaseReport) {
        outln!("== {} ==", db.name);
        let report = match &db.result {
            Ok(report) => report,
            Err(e) => {
                let (code, message) = hinted(run_error_ref(e));
                outln!("error (exit {code}): {message}");
                return;
            }
        };
        outln!("{}", run_line(&report.run));
        if !self.quiet {
            outln!("{} tenant(s)", report.tenants.len());
            if let Some(shared) = &report.shared {
                outln!("shared schema {}", tenant_line(shared, self.kind));
            }
            for tenant in &report.tenants {
                outln!("{}", tenant_line(tenant, self.kind));
                for note in &tenant.notes {
                    outln!("    note: {note}");
                }
            }
        }
        outln!("{}", summary(report));
    }

    /// Prints the fleet's summary (human) or the whole document (json); returns the exit code.
    fn finish(&self, report: &DatabasesReport) -> i32 {
        let codes: Vec<i32> = report.databases.iter().map(|db| self.code(db)).collect();
        let code = match self.check {
            true => combine_gates(&codes),
            false => report.exit_code(),
        };
        match self.format {
            Format::Json => {
                let doc = self.json(report, &codes, code);
                outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            // The whole fleet's document on one line.
            Format::JsonLines => {
                let doc = self.json(report, &codes, code);
                outln!("{}", serde_json::to_string(&doc).unwrap_or_default());
            }
            Format::Human => outln!("{}", fleet_summary(report)),
        }
        code
    }

    /// A database's exit code (its gate under `status --check`).
    fn code(&self, db: &DatabaseReport) -> i32 {
        match (&db.result, self.check) {
            (Ok(report), true) => gate(report),
            _ => db.exit_code(),
        }
    }

    fn json(&self, report: &DatabasesReport, codes: &[i32], code: i32) -> serde_json::Value {
        let databases: Vec<serde_json::Value> = report
            .databases
            .iter()
            .zip(codes)
            .map(|(db, code)| match &db.result {
                Ok(r) => serde_json::json!({ "name": db.name, "exit_code": code, "report": r }),
                Err(e) => {
                    let (_, message) = hinted(run_error_ref(e));
                    serde_json::json!({ "name": db.name, "exit_code": code, "error": { "message": message } })
                }
            })
            .collect();
        serde_json::json!({
            "command": report.command,
            "databases": databases,
            "summary": report.summary,
            "exit_code": code,
            "elapsed_ms": report.elapsed_ms,
        })
    }
}

/// The CLI's message for a database's own error.
fn run_error_ref(e: &crate::Error) -> (i32, String) {
    let code = e.exit_code();
    let hint = match e {
        crate::Error::Unreachable(_) => "\nhint: is the server running, and are host, port and credentials right?",
        _ => "",
    };
    (code, format!("{e}{hint}"))
}

/// `status --check` over several databases: the worst gate (1, then 5, then 4), except
/// that databases agreeing on another code (3 when none answered) keep it.
fn combine_gates(codes: &[i32]) -> i32 {
    if let Some(first) = codes.first().filter(|f| codes.iter().all(|c| c == *f)) {
        return *first;
    }
    [exit::INTERRUPTED, exit::TENANT_FAILED, exit::AHEAD, exit::BEHIND]
        .into_iter()
        .find(|worst| codes.contains(worst))
        .unwrap_or(exit::TENANT_FAILED)
}

/// The fleet's line, e.g. `up: 2 database(s), 1 failed (us); 4 tenant(s): 2 changed, ...`.
fn fleet_summary(report: &DatabasesReport) -> String {
    let s = &report.summary;
    let failed: Vec<&str> = report
        .databases
        .iter()
        .filter(|db| db.exit_code() != exit::SUCCESS)
        .map(|db| db.name.as_str())
        .collect();
    let failed = match failed.is_empty() {
        true => "all succeeded".to_string(),
        false => format!("{} failed ({})", failed.len(), failed.join(", ")),
    };
    let t = &s.tenants;
    format!(
        "{} over {} database(s), {failed}: {} tenant(s): {} changed, {} unchanged, {} failed, {} skipped; \
         {} migration(s) applied, {} reverted in {} ms",
        report.command.name(),
        s.databases,
        t.tenants,
        t.changed,
        t.unchanged,
        t.failed,
        t.skipped,
        t.applied,
        t.reverted,
        report.elapsed_ms
    )
}
