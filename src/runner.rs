/*!
The fleet runner: loads and checks the migration set, connects, runs the shared schema's
migrations, discovers tenants, reads the whole fleet's state in one catalog pass, and
hands the tenants that have work to `concurrency` worker threads, each holding one pooled
connection per tenant for that tenant's whole run.

Reports flow from the workers over a channel to the calling thread, which passes each to
the [`Observer`] as it arrives (so output never interleaves) and collects them into the
returned [`FleetReport`]. Nothing here prints or exits.
*/

use crate::catalog::{self, TenantState};
use crate::config::{Command, MigrationSource, MissingPolicy, RunConfig};
use crate::database::{Database, Pool, Session, Unreachable};
use crate::discovery::{self, DiscoveryError};
use crate::harness::{HarnessError, TenantHarness};
use crate::migration_set::{MigrationSet, SetError};
use crate::plan::{self, CommandError, Step};
use crate::report::{exit, FleetReport, Outcome, TenantReport};
use crate::tenant::{NameError, SchemaName};
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
    let set = load_set(&config.migrations)?;
    plan::check_command(command, &set)?;
    let shared = shared_set(config, command)?;
    let Started {
        mut db,
        mut fleet,
        clock,
    } = match start(config, command, shared.as_ref(), observer)? {
        Start::Continue(started) => started,
        Start::SharedFailed(fleet) => return Ok(fleet),
    };
    let found = discover(config, &mut db, &mut fleet, observer)?;
    let catalog_clock = Instant::now();
    let states = catalog::read_states(&mut db.control.conn, &found, &set)
        .map_err(|e| RunError::Database(format!("reading the tenants' state: {}", db.url.scrub(&e.to_string()))))?;
    log::info!(
        "catalog pass: {} tenant(s) read in {} ms",
        found.len(),
        catalog_clock.elapsed().as_millis()
    );
    refuse_irreversible(command, &set, &found, &states)?;
    let fleet_run = FleetRun {
        config,
        command,
        set: &set,
        pool: &db.pool,
    };
    let reports = fleet_run.run(found, states, observer);
    if let Some(shared) = revert_shared(config, command, shared.as_ref(), &mut db, &reports) {
        observer.shared_done(&shared);
        fleet.shared = Some(shared);
    }
    Ok(fleet.finish(reports, clock))
}

/// A run that is connected and past the shared schema.
pub(crate) struct Started {
    pub(crate) db: Database,
    pub(crate) fleet: FleetReport,
    pub(crate) clock: Instant,
}

/// What [`start`] found.
pub(crate) enum Start {
    /// Go on to the tenants.
    Continue(Started),
    /// The shared migrations failed: the run ends here, no tenant touched.
    SharedFailed(FleetReport),
}

/// Connects and runs the shared schema's migrations (when `command` includes them).
pub(crate) fn start(
    config: &RunConfig,
    command: &Command,
    shared_set: Option<&MigrationSet>,
    observer: &mut dyn Observer,
) -> Result<Start, RunError> {
    let clock = Instant::now();
    let mut db = Database::connect(&config.database_url, config.concurrency, config.connect_timeout)?;
    let mut fleet = FleetReport::new(command.name());
    if let Some(shared) = shared_set.filter(|_| !reverts(command)) {
        let report = run_shared(&mut db.control, config, command, shared);
        observer.shared_done(&report);
        let failed = report.failed();
        fleet.shared = Some(report);
        if failed {
            return Ok(Start::SharedFailed(fleet.finish(Vec::new(), clock)));
        }
    }
    Ok(Start::Continue(Started { db, fleet, clock }))
}

/// Whether `command` reverts: the shared schema then goes after the tenants (it is
/// what they were built on), and only with `--shared`.
fn reverts(command: &Command) -> bool {
    matches!(command, Command::Down(_) | Command::Redo { .. })
}

/// `down --shared`: after every tenant succeeded, revert the shared schema too.
fn revert_shared(
    config: &RunConfig,
    command: &Command,
    shared: Option<&MigrationSet>,
    db: &mut Database,
    tenants: &[TenantReport],
) -> Option<TenantReport> {
    let shared = shared.filter(|_| reverts(command))?;
    if tenants.iter().any(TenantReport::failed) {
        let tenant = Tenant {
            schema: config.shared.schema.clone(),
            exists: true,
            create: false,
        };
        let run = TenantRun::new(&tenant, command, shared);
        return Some(
            run.skip("a tenant failed; the shared schema was left as it is")
                .finish(),
        );
    }
    Some(run_shared(&mut db.control, config, command, shared))
}

/// Reads, validates and selects the tenants; records refused names in the report.
pub(crate) fn discover(
    config: &RunConfig,
    db: &mut Database,
    fleet: &mut FleetReport,
    observer: &mut dyn Observer,
) -> Result<Vec<SchemaName>, RunError> {
    let names = discovery::read_names(&mut db.control.conn, &config.tenants)?;
    let found = discovery::select(names, &config.only, &config.exclude, config.strict)?;
    observer.discovered(&found.tenants, &found.invalid);
    fleet.invalid_names = found.invalid.iter().map(ToString::to_string).collect();
    Ok(found.tenants)
}

/// The shared set, when this command runs it: `up` always (when there is a set), `down`
/// and `redo` only when asked to.
pub(crate) fn shared_set(config: &RunConfig, command: &Command) -> Result<Option<MigrationSet>, RunError> {
    let wanted = match command {
        Command::Up { .. } | Command::Status => true,
        Command::Down(_) | Command::Redo { .. } => config.shared.include_in_down,
    };
    match (&config.shared.migrations, wanted) {
        (Some(source), true) => {
            let set = match source {
                MigrationSource::Embedded => MigrationSet::embedded_shared()?,
                MigrationSource::Directory(dir) => Some(MigrationSet::from_dir(dir)?),
            };
            if let Some(set) = &set {
                if !matches!(command, Command::Up { to: None } | Command::Status) {
                    plan::check_command(command, set)?;
                }
            }
            Ok(set)
        }
        _ => Ok(None),
    }
}

/// Runs the shared schema's migrations on the control connection, under its own lock.
fn run_shared(control: &mut Session, config: &RunConfig, command: &Command, set: &MigrationSet) -> TenantReport {
    // `up --to` names a tenant version: the shared set always goes all the way up.
    let command = match command {
        Command::Up { .. } => Command::Up { to: None },
        other => other.clone(),
    };
    let tenant = Tenant {
        schema: config.shared.schema.clone(),
        exists: true,
        create: true,
    };
    let mut run = TenantRun::new(&tenant, &command, set);
    if command == Command::Status {
        run.status(control, &[]);
    } else {
        run.execute(control, &[]);
    }
    run.finish()
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

/// One tenant to work on.
pub(crate) struct Tenant {
    pub(crate) schema: SchemaName,
    pub(crate) exists: bool,
    /// Create the schema if it is missing.
    pub(crate) create: bool,
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
        if self.config.fail_fast && reports.iter().any(TenantReport::failed) {
            // A tenant already failed in triage (e.g. a missing schema): start nothing.
            for tenant in &work {
                let report = self.skipped(tenant);
                observer.tenant_done(&report);
                reports.push(report);
            }
        } else {
            reports.extend(self.run_workers(work, observer));
        }
        reports
    }

    /// `Ok(report)` when the catalog settles the tenant; `Err(tenant)` when a worker must
    /// take its lock.
    fn triage(&self, schema: SchemaName, state: &TenantState) -> Result<TenantReport, Tenant> {
        let applied = state.applied_versions(self.set);
        let tenant = Tenant {
            schema,
            exists: state.exists,
            create: self.config.missing == MissingPolicy::Create,
        };
        let mut run = TenantRun::new(&tenant, self.command, self.set);
        run.record_state(&applied);
        if !state.exists {
            return match (self.config.missing, self.command) {
                (MissingPolicy::Create, Command::Up { .. } | Command::Redo { .. }) => Err(tenant),
                (MissingPolicy::Create, _) => Ok(run.note("schema does not exist").finish()),
                (MissingPolicy::Skip, _) => Ok(run.skip("schema does not exist (--missing skip)").finish()),
                (MissingPolicy::Error, _) => Ok(run
                    .fail(HarnessError::MissingSchema(tenant.schema.to_string()))
                    .finish()),
            };
        }
        if *self.command == Command::Status {
            return Ok(run.finish());
        }
        match plan::plan(self.command, self.set, &applied) {
            Ok(steps) if steps.is_empty() => Ok(run.finish()),
            _ => Err(tenant),
        }
    }

    fn run_workers(&self, work: Vec<Tenant>, observer: &mut dyn Observer) -> Vec<TenantReport> {
        parallel(self.config, &work, observer, |t| self.migrate(t), |t| self.skipped(t))
    }

    fn skipped(&self, tenant: &Tenant) -> TenantReport {
        TenantRun::new(tenant, self.command, self.set)
            .skip(FAIL_FAST_SKIP)
            .finish()
    }

    /// One tenant on one pooled connection, start to finish.
    fn migrate(&self, tenant: &Tenant) -> TenantReport {
        let mut run = TenantRun::new(tenant, self.command, self.set);
        match self.pool.get() {
            Ok(mut session) => run.execute(&mut session, &self.config.search_path_suffix),
            Err(e) => run.fail_with(
                None,
                format!(
                    "no database connection: {}",
                    self.config.database_url.scrub(&e.to_string())
                ),
            ),
        }
        run.finish()
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

/// The state of one tenant's run, turned into its report at the end.
pub(crate) struct TenantRun<'r> {
    tenant: &'r Tenant,
    command: &'r Command,
    set: &'r MigrationSet,
    started: Instant,
    report: TenantReport,
    /// Applied versions, newest first, kept current as steps succeed.
    applied: Vec<String>,
}

impl<'r> TenantRun<'r> {
    pub(crate) fn new(tenant: &'r Tenant, command: &'r Command, set: &'r MigrationSet) -> Self {
        let mut report = TenantReport::new(tenant.schema.clone(), Outcome::Unchanged);
        report.exists = tenant.exists;
        TenantRun {
            tenant,
            command,
            set,
            started: Instant::now(),
            report,
            applied: Vec::new(),
        }
    }

    pub(crate) fn record_state(&mut self, applied_desc: &[String]) {
        self.applied = applied_desc.to_vec();
        self.report.version_before = self.applied.first().cloned();
    }

    pub(crate) fn note(mut self, note: &str) -> Self {
        self.report.notes.push(note.to_string());
        self
    }

    pub(crate) fn skip(mut self, reason: &str) -> Self {
        self.report.outcome = Outcome::Skipped {
            reason: reason.to_string(),
        };
        self
    }

    fn fail(mut self, error: HarnessError) -> Self {
        self.fail_with(error.migration().map(str::to_string), error.to_string());
        self
    }

    pub(crate) fn fail_with(&mut self, migration: Option<String>, error: String) {
        self.report.outcome = Outcome::Failed { migration, error };
    }

    /// Reads the tenant's state under its lock (for the shared schema's `status`).
    fn status(&mut self, session: &mut Session, suffix: &[SchemaName]) {
        let result = TenantHarness::lock(session, &self.tenant.schema, suffix).and_then(|mut h| {
            let applied = h.applied()?;
            h.release()?;
            Ok(applied)
        });
        match result {
            Ok(applied) => self.record_state(&applied),
            Err(e) => self.fail_with(e.migration().map(str::to_string), e.to_string()),
        }
    }

    /// Locks the tenant, re-reads its history, and runs its plan.
    pub(crate) fn execute(&mut self, session: &mut Session, suffix: &[SchemaName]) {
        if let Err(e) = self.execute_locked(session, suffix) {
            self.fail_with(e.migration().map(str::to_string), e.to_string());
        }
    }

    fn execute_locked(&mut self, session: &mut Session, suffix: &[SchemaName]) -> Result<(), HarnessError> {
        let mut h = TenantHarness::lock(session, &self.tenant.schema, suffix)?;
        if matches!(self.command, Command::Up { .. } | Command::Redo { .. }) {
            if !self.tenant.exists && self.tenant.create {
                self.report.notes.push("schema created".into());
            }
            h.prepare(self.tenant.create)?;
            self.report.exists = true;
        }
        let applied = h.applied()?;
        self.record_state(&applied);
        let steps = plan::plan(self.command, self.set, &applied)?;
        log::info!("{}: {} step(s) to run", self.tenant.schema, steps.len());
        for step in steps {
            self.step(&mut h, step)?;
        }
        h.release()
    }

    fn step(&mut self, h: &mut TenantHarness<'_>, step: Step<'_>) -> Result<(), HarnessError> {
        match step {
            Step::Apply(m) => {
                h.apply(m, false)?;
                self.applied.push(m.version.clone());
                self.applied.sort_by(|a, b| b.cmp(a));
                self.report.applied.push(m.version.clone());
            }
            Step::Revert(m) => {
                h.revert(m, false)?;
                self.applied.retain(|v| *v != m.version);
                self.report.reverted.push(m.version.clone());
                if m.down == crate::migration_set::DownSql::NoOp {
                    self.report.notes.push(format!(
                        "{}: down.sql is empty; only its history row was removed",
                        m.dir_name
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn finish(mut self) -> TenantReport {
        let r = &mut self.report;
        let changed = !r.applied.is_empty() || !r.reverted.is_empty();
        if changed && r.outcome == Outcome::Unchanged {
            r.outcome = Outcome::Changed;
        }
        r.version_after = self.applied.first().cloned();
        r.applied_count = self.applied.len();
        r.unknown = self
            .applied
            .iter()
            .filter(|v| self.set.get(v).is_none())
            .cloned()
            .collect();
        r.pending_count = self
            .set
            .migrations()
            .iter()
            .filter(|m| !self.applied.contains(&m.version))
            .count();
        self.report.took(self.started.elapsed())
    }
}
