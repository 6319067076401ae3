/*!
What each subcommand does with the library, and the exit code it ends with. Library errors
come back typed; this is where the CLI adds the hints that name its flags.
*/

use super::flags::{Cli, CliCommand, Format, Global, RunRef, RunsCommand, TenantCommand, UsageError};
use super::locate;
use super::output::{errln, outln};
use super::render::Printer;
use super::Migrations;
use crate::database::DatabaseUrl;
use crate::report::exit;
use crate::{DiscoveryError, DownSql, Error, MigrationSet, Refusal, Resume, RunKind, Runner, Task, TenantSource};
use std::io::Write;

/// Logging through env_logger (`RUST_LOG`, quiet by default). Every line passes through
/// the database URL's scrubber, so a password that reached a message is still hidden.
pub fn init_logging(global: &Global) {
    let url: Option<DatabaseUrl> = global.database_url().ok();
    let level = match global.verbose {
        0 => "off",
        1 => "migrate_tenants=info",
        _ => "migrate_tenants=debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
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
pub(super) fn dispatch(cli: &Cli, migrations: Migrations, cancel: crate::CancelToken) -> i32 {
    let scrub = |text: String| match cli.global.database_url() {
        Ok(url) => url.scrub(&text),
        Err(_) => text,
    };
    let result = match &cli.command {
        command if super::multi::requested(&cli.global) && super::multi::takes(command) => {
            super::multi::dispatch(cli, migrations, cancel)
        }
        CliCommand::List => list(&cli.global, migrations),
        CliCommand::Verify { ephemeral } => verify(&cli.global, migrations, *ephemeral),
        CliCommand::Drift => drift(&cli.global, migrations),
        CliCommand::Lint { deny_warnings, allow } => lint(&cli.global, migrations, *deny_warnings, allow),
        CliCommand::Generate { name, no_transaction } => generate(&cli.global, migrations, name, *no_transaction),
        CliCommand::Tenant(cmd) => tenant(&cli.global, migrations, cmd, cancel),
        CliCommand::Runs { show, limit } => runs(&cli.global, migrations, show.as_ref(), *limit),
        CliCommand::Completions { shell } => Ok(completions(*shell)),
        command => fleet(&cli.global, migrations, command, cancel),
    };
    match result {
        Ok(code) => code,
        Err((code, message)) => {
            let message = scrub(message);
            if cli.global.format == Format::Json {
                // A script reading stdout gets a document in every case.
                let doc = serde_json::json!({ "error": { "message": message, "exit_code": code } });
                outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            if cli.global.format == Format::JsonLines {
                outln!("{}", super::json_lines::error(&message, code));
            }
            errln!("error: {message}");
            code
        }
    }
}

type Outcome = Result<i32, (i32, String)>;

fn usage(e: UsageError) -> (i32, String) {
    (exit::USAGE, e.to_string())
}

/// The library's error with the hints that name this CLI's flags.
pub(super) fn run_error(e: Error) -> (i32, String) {
    let hint = match &e {
        Error::Unreachable(_) => "\nhint: is the server running, and are host, port and credentials right? (--connect-timeout sets how long to wait)",
        Error::Discovery(DiscoveryError::Invalid(_)) => "\nhint: a tenant name is 1-63 bytes of a-z, 0-9 and _, not starting with a digit or pg_",
        Error::Discovery(DiscoveryError::NotFound(_)) => "\nhint: every --tenant must be among the tenants the source returns",
        Error::Command(_) => "\nhint: `list` shows the known migrations",
        Error::Irreversible { .. } => "\nhint: give the migration a down.sql, or revert fewer steps (--steps, --to)",
        Error::Journal(_) => "\nhint: --journal-schema SCHEMA picks another schema for the run journal; --no-journal runs without one",
        Error::Refused { refusal: Refusal::MixedVersions, .. } => "\nhint: `down --to VERSION` takes every tenant to the same version; `down --run ID` reverts exactly what one run applied (`runs` lists them); --yes reverts the steps anyway",
        Error::Refused { refusal: Refusal::BuiltUpon, .. } => "\nhint: roll back the later runs first (`runs` lists them), or add --force to revert under them",
        Error::Refused { refusal: Refusal::NoSuchRun, .. } => "\nhint: `runs` lists the journal's runs",
        _ => "",
    };
    (e.exit_code(), format!("{e}{hint}"))
}

/// The runner for this binary's migrations: the embedded set, or a located directory.
pub(super) fn runner(global: &Global, migrations: Migrations) -> Result<Runner, (i32, String)> {
    let (tenant, shared) = sets(global, migrations)?;
    remember_names(global, migrations, tenant.as_ref(), shared.as_ref());
    let runner = match tenant {
        Some(set) => Runner::new(set).shared_migrations(shared),
        None => match migrations {
            Migrations::Embedded(embedded) => Runner::new(embedded),
            Migrations::Directory => unreachable!("a directory binary always loads its set"),
        },
    };
    Ok(runner)
}

/// Remembers the migrations' names for human output (an embedded set is read again here:
/// an invalid one fails the run with its own error later).
fn remember_names(
    global: &Global,
    migrations: Migrations,
    tenant: Option<&MigrationSet>,
    shared: Option<&MigrationSet>,
) {
    let remember = |tenant, shared| super::names::remember(tenant, shared, &global.shared_schema);
    match (migrations, tenant) {
        (Migrations::Embedded(embedded), None) => {
            let tenant = embedded.tenant_set().ok();
            let shared = embedded.shared_set().ok().flatten();
            remember(tenant.as_ref(), shared.as_ref());
        }
        _ => remember(tenant, shared),
    }
}

/// The directory sets of the stock binary (`None` for an embedded binary, which refuses
/// the directory flags).
fn sets(
    global: &Global,
    migrations: Migrations,
) -> Result<(Option<MigrationSet>, Option<MigrationSet>), (i32, String)> {
    if let Migrations::Embedded(_) = migrations {
        if global.migrations_dir.is_some() || global.shared_migrations_dir.is_some() {
            return Err(usage(UsageError(
                "this binary runs the migrations compiled into it; --migrations-dir and --shared-migrations-dir \
                 are for the stock migrate-tenants binary"
                    .into(),
            )));
        }
        return Ok((None, None));
    }
    let located = locate::migrations_dir(global.migrations_dir.as_deref()).map_err(usage)?;
    log::info!("migrations: {} (from {})", located.dir.display(), located.how);
    let set = MigrationSet::from_dir(&located.dir).map_err(|e| run_error(Error::InvalidSet(e)))?;
    let shared = match locate::shared_dir(global.shared_migrations_dir.as_deref(), &located.dir) {
        Some(dir) => {
            log::info!("shared migrations: {} (from {})", dir.dir.display(), dir.how);
            Some(MigrationSet::from_dir(&dir.dir).map_err(|e| run_error(Error::InvalidSet(e)))?)
        }
        None => None,
    };
    Ok((Some(set), shared))
}

/// The runner settings a fleet command's own flags give (one database or several).
pub(super) fn command_options(runner: Runner, command: &CliCommand) -> Runner {
    let plan = command.plan();
    let runner = runner
        .revert_shared(matches!(command, CliCommand::Down { shared: true, .. }))
        .atomic(matches!(command, CliCommand::Up { atomic: true, .. }))
        .allow_out_of_order(matches!(
            command,
            CliCommand::Up {
                allow_out_of_order: true,
                ..
            }
        ))
        .allow_mixed_versions(matches!(command, CliCommand::Down { yes: true, .. }))
        .dry_run(plan.planning())
        .dry_run_sql(plan.sql);
    match command.canary() {
        Some(canary) => runner.canary(canary),
        None => runner,
    }
}

fn fleet(global: &Global, migrations: Migrations, command: &CliCommand, cancel: crate::CancelToken) -> Outcome {
    let plan = command.plan();
    let resume = match command {
        CliCommand::Up {
            resume: Some(run),
            only_failed,
            ..
        } => Some((
            match run {
                RunRef::Latest => Resume::Latest,
                RunRef::Id(id) => Resume::Run(*id),
            },
            *only_failed,
        )),
        CliCommand::Up { only_failed: true, .. } => Some((Resume::Latest, true)),
        _ => None,
    };
    let from_journal = resume.is_some() || matches!(command, CliCommand::Down { run: Some(_), .. });
    if from_journal && global.tenant_source_given() {
        return Err((
            exit::USAGE,
            "--resume, --only-failed and --run take their tenants from the run journal: drop the tenant source \
             flags (--tenant and --exclude narrow the journal's tenants)"
                .into(),
        ));
    }
    let journal_tenants = from_journal.then(|| TenantSource::List(Vec::new()));
    let runner = global
        .configure(runner(global, migrations)?, journal_tenants)
        .map_err(usage)?
        .cancel_token(cancel);
    let mut runner = command_options(runner, command);
    if let Some((run, failed_only)) = resume {
        runner = runner.resume(run, failed_only);
    }
    let (kind, task) = match command {
        CliCommand::Tenant(TenantCommand::List) => (RunKind::TenantList, None),
        other => {
            let task = other.task().expect("a fleet command");
            (task.kind(), Some(task))
        }
    };
    if let (Some(what), Some(task)) = (super::confirm::needed(global, command), &task) {
        super::confirm::ask(&runner, task, what)?;
    }
    let behind_only = matches!(command, CliCommand::Status { behind_only: true, .. });
    let mut printer = Printer::new(global.format, global.quiet, kind)
        .planning(plan)
        .behind_only(behind_only);
    let mut progress = super::progress::Progress::new(&mut printer, !global.quiet);
    let report = match task {
        Some(task) => runner.run(&task, &mut progress),
        None => runner.list_tenants(&mut progress),
    }
    .map_err(|e| names_hint(run_error(e), global));
    drop(progress);
    let report = report?;
    printer.finish(&report);
    match command {
        CliCommand::Status { check: true, .. } => Ok(gate(&report)),
        _ => Ok(report.exit_code()),
    }
}

/// A one-document command's JSON: pretty for `json`, one line for `json-lines`.
fn print_json(format: Format, value: &impl serde::Serialize) {
    let text = match format {
        Format::JsonLines => serde_json::to_string(value),
        _ => serde_json::to_string_pretty(value),
    };
    outln!("{}", text.unwrap_or_default());
}

/// `status --check`: 0 only when the whole fleet is current (an interrupted check says so).
pub(super) fn gate(report: &crate::FleetReport) -> i32 {
    if report.stopped == Some(crate::StopReason::Interrupted) {
        return exit::INTERRUPTED;
    }
    let tenants = report.tenants.iter().chain(report.shared.as_ref());
    let mut code = exit::SUCCESS;
    for t in tenants {
        let this = if t.failed() || !t.exists {
            exit::TENANT_FAILED
        } else if !t.unknown.is_empty() {
            exit::AHEAD
        } else if t.pending_count > 0 {
            exit::BEHIND
        } else if !t.changed_since_applied.is_empty() {
            exit::CHANGED
        } else {
            exit::SUCCESS
        };
        code = match (code, this) {
            (exit::TENANT_FAILED, _) | (_, exit::TENANT_FAILED) => exit::TENANT_FAILED,
            (exit::AHEAD, _) | (_, exit::AHEAD) => exit::AHEAD,
            (exit::BEHIND, _) | (_, exit::BEHIND) => exit::BEHIND,
            (exit::CHANGED, _) | (_, exit::CHANGED) => exit::CHANGED,
            _ => exit::SUCCESS,
        };
    }
    code
}

/// Where invalid names come from, for a fleet command's refusal.
fn names_hint((code, message): (i32, String), global: &Global) -> (i32, String) {
    if !message.contains("invalid tenant name") {
        return (code, message);
    }
    let why = if global.tenants.strict {
        "--strict makes any invalid name stop the run; without it, names from a file, a query or a pattern are skipped"
    } else {
        "names given with --tenants (or TENANTS) are always checked strictly: a typo must not be skipped"
    };
    (code, format!("{message}\nhint: {why}"))
}

/// `runs` and `runs show ID`.
fn runs(global: &Global, migrations: Migrations, show: Option<&RunsCommand>, limit: usize) -> Outcome {
    let runner = global
        .configure(runner(global, migrations)?, Some(TenantSource::List(Vec::new())))
        .map_err(usage)?;
    match show {
        Some(RunsCommand::Show { id }) => {
            let detail = runner.run_detail(*id).map_err(run_error)?;
            super::runs::show(global.format, &detail);
        }
        None => {
            let runs = runner.runs(limit).map_err(run_error)?;
            super::runs::list(global.format, &runs);
        }
    }
    Ok(exit::SUCCESS)
}

fn list(global: &Global, migrations: Migrations) -> Outcome {
    let invalid = |e| run_error(Error::InvalidSet(e));
    let (set, shared) = match sets(global, migrations)? {
        (Some(set), shared) => (set, shared),
        (None, _) => match migrations {
            Migrations::Embedded(embedded) => (
                embedded.tenant_set().map_err(invalid)?,
                embedded.shared_set().map_err(invalid)?,
            ),
            Migrations::Directory => unreachable!("a directory binary always loads its set"),
        },
    };
    let sets: Vec<(&str, &MigrationSet)> = std::iter::once(("tenant", &set))
        .chain(shared.as_ref().map(|s| ("shared", s)))
        .collect();
    if global.format != Format::Human {
        let rows: Vec<_> = sets
            .iter()
            .flat_map(|(which, set)| set.migrations().iter().map(move |m| (*which, m)))
            .map(|(which, m)| {
                serde_json::json!({
                    "set": which,
                    "version": m.version,
                    "name": m.dir_name,
                    "down": match m.down { DownSql::Missing => "missing", DownSql::NoOp => "empty", DownSql::Sql(_) => "sql" },
                    "run_in_transaction": m.run_in_transaction,
                })
            })
            .collect();
        print_json(global.format, &rows);
        return Ok(exit::SUCCESS);
    }
    for (which, set) in sets {
        let info = crate::SetInfo::of(set);
        let title = if which == "shared" { "shared schema: " } else { "" };
        outln!("{title}{} migration(s) from {}", info.migrations, info.origin);
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
            outln!("{}  {}  [{down}{tx}]", m.version, m.dir_name);
        }
    }
    Ok(exit::SUCCESS)
}

fn drift(global: &Global, migrations: Migrations) -> Outcome {
    let runner = global.configure(runner(global, migrations)?, None).map_err(usage)?;
    let report = runner.drift().map_err(|e| names_hint(run_error(e), global))?;
    if global.format != Format::Human {
        print_json(global.format, &report);
    } else {
        for d in &report.drifted {
            let version = super::names::tenant(d.version.as_deref());
            outln!("{}: differs from {} (both at {version}):", d.tenant, d.reference);
            for line in &d.differences {
                outln!("    {line}");
            }
        }
        for u in &report.unreadable {
            outln!("{u}: not compared");
        }
        let groups: Vec<String> = report
            .versions
            .iter()
            .map(|g| {
                let structures = if g.structures == 1 {
                    String::new()
                } else {
                    format!(", {} structures", g.structures)
                };
                format!(
                    "{}: {} tenant(s){structures}",
                    super::names::tenant(g.version.as_deref()),
                    g.tenants
                )
            })
            .collect();
        outln!(
            "drift: {} tenant(s) [{}]: {} drifted, {} not compared",
            report.tenants,
            groups.join("; "),
            report.drifted.len(),
            report.unreadable.len()
        );
    }
    Ok(if report.clean() {
        exit::SUCCESS
    } else {
        exit::TENANT_FAILED
    })
}

fn verify(global: &Global, migrations: Migrations, ephemeral: bool) -> Outcome {
    if global.tenants.any_given() {
        return Err((
            exit::USAGE,
            "verify works on scratch schemas, never on tenants: drop the tenant flags".into(),
        ));
    }
    let cluster = match ephemeral {
        true => Some(super::ephemeral::Ephemeral::start().map_err(|e| (exit::UNREACHABLE, e))?),
        false => None,
    };
    let scratch_only = Some(TenantSource::List(Vec::new()));
    let runner = match &cluster {
        // No database URL is needed: the throwaway cluster is the database.
        Some(cluster) => global
            .settings(runner(global, migrations)?, scratch_only)
            .map(|r| r.database_url(&cluster.url)),
        None => global.configure(runner(global, migrations)?, scratch_only),
    }
    .map_err(usage)?;
    let report = runner.verify().map_err(run_error)?;
    if global.format != Format::Human {
        print_json(global.format, &report);
    } else {
        for p in &report.problems {
            let at = p.migration.as_deref().map_or(String::new(), |m| format!("{m}: "));
            outln!("{at}{}: {}", p.kind, p.message);
            for d in &p.differences {
                outln!("    {d}");
            }
        }
        for note in &report.notes {
            outln!("note: {note}");
        }
        outln!(
            "verify: {} migration(s), {} down.sql checked: {} problem(s)",
            report.migrations,
            report.reversible_checked,
            report.problems.len()
        );
    }
    Ok(if report.passed() {
        exit::SUCCESS
    } else {
        exit::TENANT_FAILED
    })
}

fn lint(global: &Global, migrations: Migrations, deny_warnings: bool, allow: &[String]) -> Outcome {
    let set = match sets(global, migrations)? {
        (Some(set), _) => set,
        (None, _) => match migrations {
            Migrations::Embedded(embedded) => embedded.tenant_set().map_err(|e| run_error(Error::InvalidSet(e)))?,
            Migrations::Directory => unreachable!("a directory binary always loads its set"),
        },
    };
    let config = crate::LintConfig { allow: allow.to_vec() };
    let unknown = config.unknown_rules();
    if !unknown.is_empty() {
        let known: Vec<&str> = crate::Rule::all().iter().map(|r| r.id).collect();
        return Err((
            exit::USAGE,
            format!(
                "--allow {}: no such rule (rules: {})",
                unknown.join(", "),
                known.join(", ")
            ),
        ));
    }
    let report = crate::lint(&set, &config);
    if global.format != Format::Human {
        print_json(global.format, &report);
    } else {
        for finding in &report.findings {
            outln!("{finding}");
            outln!("    why: {}", finding.why);
            outln!("    fix: {}", finding.fix);
        }
        let info = crate::SetInfo::of(&set);
        outln!(
            "lint: {} migration(s) from {}: {} error(s), {} warning(s), {} allowed",
            report.migrations,
            info.origin,
            report.errors(),
            report.warnings(),
            report.allowed
        );
    }
    let failed = report.errors() > 0 || (deny_warnings && report.warnings() > 0);
    Ok(if failed { exit::TENANT_FAILED } else { exit::SUCCESS })
}

fn generate(global: &Global, migrations: Migrations, name: &str, no_transaction: bool) -> Outcome {
    let dir = match locate::migrations_dir(global.migrations_dir.as_deref()) {
        Ok(located) => located.dir,
        // Nothing yet: a new project's first migration goes to ./migrations.
        Err(e) if e.0.starts_with(locate::NOT_FOUND) => std::path::PathBuf::from("migrations"),
        Err(e) => return Err(usage(e)),
    };
    let created = super::generate::generate(&dir, name, chrono::Utc::now(), !no_transaction)
        .map_err(|e| (exit::USAGE, e.to_string()))?;
    outln!("created {}", created.display());
    outln!("  {}", created.join("up.sql").display());
    outln!("  {}", created.join("down.sql").display());
    if let Migrations::Embedded(embedded) = migrations {
        let (package, _) = embedded.package();
        outln!("note: {package} runs the migrations compiled into it: rebuild it (cargo build) to embed the new one");
    }
    Ok(exit::SUCCESS)
}

fn tenant(global: &Global, migrations: Migrations, command: &TenantCommand, cancel: crate::CancelToken) -> Outcome {
    let (task, kind) = match command {
        TenantCommand::List => return fleet(global, migrations, &CliCommand::Tenant(TenantCommand::List), cancel),
        TenantCommand::Create {
            names, if_not_exists, ..
        } => (
            Task::CreateTenants {
                names: names.clone(),
                if_exists_migrate: *if_not_exists,
            },
            RunKind::TenantCreate,
        ),
        TenantCommand::Drop {
            names,
            force,
            if_exists,
            ..
        } => (
            Task::DropTenants {
                names: names.clone(),
                force: *force,
                if_exists: *if_exists,
            },
            RunKind::TenantDrop,
        ),
    };
    if global.tenants.any_given() {
        let why = "tenant create/drop take the tenant names as arguments; drop --tenants, --tenants-file, \
                   --tenants-query, --schema-pattern, --tenant and --exclude";
        return Err((exit::USAGE, why.into()));
    }
    let names = match &task {
        Task::CreateTenants { names, .. } | Task::DropTenants { names, .. } => names.clone(),
        _ => Vec::new(),
    };
    let plan = command.plan();
    let runner = global
        .configure(runner(global, migrations)?, Some(TenantSource::List(names)))
        .map_err(usage)?
        .dry_run(plan.planning())
        .dry_run_sql(plan.sql)
        .cancel_token(cancel);
    if matches!(command, TenantCommand::Drop { yes: false, .. }) && !plan.planning() {
        super::confirm::drop(&runner, &task)?;
    }
    let mut printer = Printer::new(global.format, global.quiet, kind).planning(plan);
    let mut progress = super::progress::Progress::new(&mut printer, !global.quiet);
    let report = runner.run(&task, &mut progress).map_err(run_error);
    drop(progress);
    let report = report?;
    printer.finish(&report);
    Ok(report.exit_code())
}

/// `completions SHELL`: the completion script for this binary's name.
fn completions(shell: clap_complete::Shell) -> i32 {
    use clap::CommandFactory;
    let name = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "migrate-tenants".into());
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    super::output::script(&String::from_utf8_lossy(&script));
    exit::SUCCESS
}
