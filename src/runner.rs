/*!
The fleet runner: loads and checks the migration set and the tenant list, connects, runs
the shared schema's migrations, discovers tenants, reads the whole fleet's state in one
catalog pass, and hands the tenants that have work to `concurrency` worker threads, each
holding one pooled connection per tenant for that tenant's whole run.

Reports flow from the workers over a channel to the calling thread, which passes each to
the [`Observer`] as it arrives (so output never interleaves) and collects them into the
returned [`FleetReport`]. Nothing here prints or exits.
*/

use crate::catalog::{self, TenantState};
use crate::config::{Command, MigrationSource, MissingPolicy, RunConfig, TenantSource};
use crate::database::{Database, Pool, Unreachable};
use crate::discovery::{self, Discovered, DiscoveryError};
use crate::harness::HarnessError;
use crate::migration_set::{MigrationSet, SetError};
use crate::plan::{self, CommandError};
use crate::report::{exit, FleetReport, RunKind, TenantReport};
use crate::shared::Shared;
use crate::tenant::{NameError, SchemaName};
use crate::tenant_run::{Tenant, TenantRun};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// Receives progress while a run is under way (on the thread that called [`run`]).
pub trait Observer {
    /// Tenants were discovered (after selection) and some names were refused.
    fn discovered(&mut self, _tenants: &[SchemaName], _invalid: &[NameError]) {}
    /// The shared schema's migrations are done.
    fn shared_done(&mut self, report: &TenantReport) {
        self.tenant_done(report);
    }
    /// One tenant is done.
    fn tenant_done(&mut self, _report: &TenantReport) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// A run that could not start, or stopped before reaching the tenants.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The migration set is invalid.
    #[error(transparent)]
    Set(#[from] SetError),
    /// The command does not fit the set (unknown version, ...).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Tenant discovery failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The database is unreachable.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
    /// The run was refused before touching any tenant.
    #[error("{0}")]
    Refused(String),
    /// A fleet-wide query failed.
    #[error("{0}")]
    Database(String),
}

impl RunError {
    /// The exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Unreachable(_) => exit::UNREACHABLE,
            RunError::Database(_) => exit::TENANT_FAILED,
            _ => exit::USAGE,
        }
    }
}

/// Why a tenant was not started under `--fail-fast`.
pub(crate) const FAIL_FAST_SKIP: &str = "not started: an earlier tenant failed (--fail-fast)";

/// Loads and validates a migration set.
pub fn load_set(source: &MigrationSource) -> Result<MigrationSet, SetError> {
    match source {
        MigrationSource::Embedded => MigrationSet::embedded(),
        MigrationSource::Directory(dir) => MigrationSet::from_dir(dir),
    }
}

/// Runs `command` over the fleet described by `config`.
pub fn run(config: &RunConfig, command: &Command, observer: &mut dyn Observer) -> Result<FleetReport, RunError> {
    let clock = Instant::now();
    let set = load_set(&config.migrations)?;
    plan::check_command(command, &set)?;
    let shared = Shared::load(config, command)?;
    let listed = select_offline(config)?;
    let mut db = connect(config)?;
    let mut fleet = FleetReport::new(RunKind::from(command));
    fleet.shared = shared.before_tenants(&mut db, observer);
    if fleet.shared.as_ref().is_some_and(TenantReport::failed) {
        return Ok(fleet.finish(Vec::new(), clock));
    }
    let found = match listed {
        Some(found) => found,
        None => select(
            config,
            discovery::read_from_database(&mut db.control.conn, &config.tenants)?,
        )?,
    };
    observer.discovered(&found.tenants, &found.invalid);
    fleet.invalid_names = found.invalid.iter().map(ToString::to_string).collect();
    let states = read_states(&mut db, &found.tenants, &set)?;
    refuse_irreversible(command, &set, &found.tenants, &states)?;
    shared.refuse_irreversible(&mut db)?;
    let fleet_run = FleetRun {
        config,
        command,
        set: &set,
        pool: &db.pool,
    };
    let reports = fleet_run.run(found.tenants, states, observer);
    if let Some(report) = shared.after_tenants(&mut db, &reports, observer) {
        fleet.shared = Some(report);
    }
    Ok(fleet.finish(reports, clock))
}

/// Connects (exit code 3 when the server cannot be reached).
pub(crate) fn connect(config: &RunConfig) -> Result<Database, RunError> {
    Ok(Database::connect(
        &config.database_url,
        config.concurrency,
        config.connect_timeout,
    )?)
}

/// Tenants from a list or a file are read and validated before connecting, so a bad name
/// stops the run before any SQL (shared migrations included).
fn select_offline(config: &RunConfig) -> Result<Option<Discovered>, RunError> {
    match discovery::read_offline(&config.tenants)? {
        Some(names) => select(config, names).map(Some),
        None => Ok(None),
    }
}

/// Validation and selection. A hand-typed list (`--tenants`) is always strict: a typo
/// must not be skipped silently. The shared schema is never a tenant.
fn select(config: &RunConfig, names: Vec<String>) -> Result<Discovered, RunError> {
    let strict = config.strict || matches!(config.tenants, TenantSource::List(_));
    let selection = discovery::Selection {
        only: &config.only,
        exclude: &config.exclude,
        strict,
        shared: &config.shared.schema,
    };
    Ok(discovery::select(names, &selection)?)
}

fn read_states(db: &mut Database, tenants: &[SchemaName], set: &MigrationSet) -> Result<Vec<TenantState>, RunError> {
    let clock = Instant::now();
    let states = catalog::read_states(&mut db.control.conn, tenants, set)
        .map_err(|e| RunError::Database(format!("reading the tenants' state: {}", db.url.scrub(&e.to_string()))))?;
    log::info!(
        "catalog pass: {} tenant(s) read in {} ms",
        tenants.len(),
        clock.elapsed().as_millis()
    );
    Ok(states)
}

/// Refuses a `down`/`redo` that would need a migration without `down.sql` on any tenant,
/// before any tenant is touched.
fn refuse_irreversible(
    command: &Command,
    set: &MigrationSet,
    tenants: &[SchemaName],
    states: &[TenantState],
) -> Result<(), RunError> {
    if !matches!(command, Command::Down(_) | Command::Redo { .. }) {
        return Ok(());
    }
    let mut blocked: Vec<(String, Vec<&str>)> = Vec::new();
    for (tenant, state) in tenants.iter().zip(states) {
        if let Err(HarnessError::Irreversible(m)) = plan::plan(command, set, &state.applied_versions(set)) {
            match blocked.iter_mut().find(|(name, _)| *name == m) {
                Some((_, list)) => list.push(tenant.as_str()),
                None => blocked.push((m, vec![tenant.as_str()])),
            }
        }
    }
    if blocked.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = blocked
        .iter()
        .map(|(m, ts)| {
            format!(
                "\n  - {m} has no down.sql (irreversible); needed on {} tenant(s): {}",
                ts.len(),
                preview(ts)
            )
        })
        .collect();
    Err(RunError::Refused(format!(
        "refusing to {}: nothing was changed{}",
        command.name(),
        lines.concat()
    )))
}

fn preview(names: &[&str]) -> String {
    let shown: Vec<&str> = names.iter().take(5).copied().collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The shared, read-only parts of a fleet run.
struct FleetRun<'r> {
    config: &'r RunConfig,
    command: &'r Command,
    set: &'r MigrationSet,
    pool: &'r Pool,
}

impl FleetRun<'_> {
    /// Reports every tenant: directly from the catalog when there is nothing to do,
    /// through the workers otherwise.
    fn run(
        &self,
        tenants: Vec<SchemaName>,
        states: Vec<TenantState>,
        observer: &mut dyn Observer,
    ) -> Vec<TenantReport> {
        let mut reports = Vec::with_capacity(tenants.len());
        let mut work = Vec::new();
        for (schema, state) in tenants.into_iter().zip(states) {
            match self.triage(schema, &state) {
                Ok(report) => {
                    observer.tenant_done(&report);
                    reports.push(report);
                }
                Err(tenant) => work.push(tenant),
            }
        }
        let run_one = |t: &Tenant| {
            TenantRun::new(t, self.command, self.set)
                .run_on(self.pool, &self.config.database_url, &self.config.settings)
                .finish()
        };
        let skip_one = |t: &Tenant| TenantRun::new(t, self.command, self.set).skip(FAIL_FAST_SKIP).finish();
        if self.config.fail_fast && reports.iter().any(TenantReport::failed) {
            // A tenant already failed in triage (e.g. a missing schema): start nothing.
            for report in work.iter().map(skip_one) {
                observer.tenant_done(&report);
                reports.push(report);
            }
        } else {
            reports.extend(parallel(self.config, &work, observer, run_one, skip_one));
        }
        reports
    }

    /// `Ok(report)` when the catalog settles the tenant; `Err(tenant)` when a worker must
    /// connect (and, unless it only reads, take the tenant's lock).
    fn triage(&self, schema: SchemaName, state: &TenantState) -> Result<TenantReport, Tenant> {
        let create = self.config.missing == MissingPolicy::Create;
        let tenant = Tenant {
            schema,
            exists: state.exists,
            create_schema: create && !state.exists,
        };
        if state.unreadable {
            return Err(tenant);
        }
        let applied = state.applied_versions(self.set);
        let mut run = TenantRun::new(&tenant, self.command, self.set);
        run.record_state(&applied);
        if !state.exists {
            return match (self.config.missing, self.command) {
                (MissingPolicy::Create, Command::Up { .. } | Command::Redo { .. }) => Err(tenant),
                (MissingPolicy::Create, _) => Ok(run
                    .skip("schema does not exist (up --missing create would create it)")
                    .finish()),
                (MissingPolicy::Skip, _) => Ok(run.skip("schema does not exist (--missing skip)").finish()),
                (MissingPolicy::Error, _) => Ok(run
                    .fail(&HarnessError::MissingSchema(tenant.schema.to_string()))
                    .finish()),
            };
        }
        match plan::plan(self.command, self.set, &applied) {
            Ok(steps) if steps.is_empty() => Ok(run.finish()),
            _ => Err(tenant),
        }
    }
}

/// Runs `work` on `config.concurrency` threads; each item's report goes to `observer`
/// (on this thread) as soon as it is done. After a failure with `fail_fast`, items not
/// yet started get `skipped(item)` instead of `each(item)`.
pub(crate) fn parallel<W, F, S>(
    config: &RunConfig,
    work: &[W],
    observer: &mut dyn Observer,
    each: F,
    skipped: S,
) -> Vec<TenantReport>
where
    W: Sync,
    F: Fn(&W) -> TenantReport + Sync,
    S: Fn(&W) -> TenantReport + Sync,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<TenantReport>();
    let workers = config.concurrency.clamp(1, work.len().max(1));
    let mut reports = Vec::with_capacity(work.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop, each, skipped) = (&next, &stop, &each, &skipped);
            scope.spawn(move || {
                while let Some(item) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let report = if stop.load(Ordering::Relaxed) {
                        skipped(item)
                    } else {
                        each(item)
                    };
                    if report.failed() && config.fail_fast {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if tx.send(report).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for report in rx {
            observer.tenant_done(&report);
            reports.push(report);
        }
    });
    reports
}
