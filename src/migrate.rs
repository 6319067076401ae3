/*!
`up`, `down`, `redo` and `status` over a fleet: check the command against the set, read
listed tenants before connecting, run the shared schema first, discover the tenants, read the
whole fleet's state in one catalog pass, refuse an irreversible revert before anything
changes, and hand only the tenants that have work to the workers, each holding one pooled
connection for that tenant's whole run.
*/

use crate::catalog::{self, TenantState};
use crate::config::DownTarget;
use crate::config::{Command, MissingPolicy, RunConfig, TenantSource};
use crate::discovery::{self, Discovered};
use crate::error::{Blocked, Error, Refusal};
use crate::fleet::{Fleet, Worker};
use crate::harness::{HarnessError, Transient};
use crate::observer::Observer;
use crate::plan;
use crate::report::{FleetReport, Outcome, RunKind, TenantReport};
use crate::rollback::{resume_tenants, Resumed, Undo};
use crate::status;
use crate::tenant::SchemaName;
use crate::tenant_run::{Tenant, TenantRun};
use migrate_tenants_set::MigrationSet;
use std::time::Instant;

/// Runs `command` over the fleet described by `config`.
pub(crate) fn run(
    config: &RunConfig,
    command: &Command,
    kind: RunKind,
    observer: &mut dyn Observer,
) -> Result<FleetReport, Error> {
    let set = &config.migrations;
    plan::check_command(command, set)?;
    let from_journal = config.resume.is_some() || matches!(command, Command::Rollback { .. });
    let listed = if from_journal { None } else { select_offline(config)? };
    let mut fleet = Fleet::open(config, Some(command), kind, observer)?;
    let mut undo = Undo::default();
    // A pattern reads only the catalog: it is read (and a strict selection refused) before
    // the shared migrations change anything. A query may read a registry the shared
    // migrations create, so it runs after them.
    let listed = match listed {
        None if from_journal => Some(from_the_journal(config, command, &mut fleet, &mut undo)?),
        None if matches!(config.tenants, TenantSource::Pattern(_) | TenantSource::AllTenants) => {
            Some(discover(config, &mut fleet)?)
        }
        other => other,
    };
    if fleet.control.interrupted() || !fleet.shared_first(observer) {
        return Ok(fleet.finish(Vec::new(), observer));
    }
    let found = match listed {
        Some(found) => found,
        None => discover(config, &mut fleet).map_err(|e| match (e, fleet.shared_changed()) {
            (Error::Discovery(e), true) => Error::AfterShared(Box::new(Error::Discovery(e))),
            (e, _) => e,
        })?,
    };
    observer.discovered(&found.tenants, &found.invalid);
    let canary = config.canary.as_ref().filter(|_| matches!(command, Command::Up { .. }));
    let canaries = crate::canary::select(canary, &found.tenants)?;
    fleet.refused_names(found.invalid.iter().map(ToString::to_string).collect());
    let states = read_states(&mut fleet, &found.tenants, set)?;
    if let Command::Rollback { force, .. } = command {
        undo.check(&found.tenants, &states, set, *force)?;
    }
    refuse_irreversible(command, set, &found.tenants, &states)?;
    refuse_mixed_versions(config, command, set, &states)?;
    fleet.shared.refuse_irreversible(&mut fleet.db)?;
    refuse_non_atomic(config, command, set, &states)?;
    fleet.journal_tenants(&found.tenants)?;
    let migrate = Migrate {
        config,
        command,
        set,
        undo: &undo,
        canaries: canaries.as_ref(),
    };
    let mut reports = match config.dry_run {
        true => migrate.plan(&mut fleet, found.tenants, states, observer),
        false => migrate.run(&mut fleet, found.tenants, states, observer),
    };
    if *command != Command::Status {
        return Ok(fleet.finish(reports, observer));
    }
    let last_run = status::read_journal(&mut fleet.db.control, &config.journal_schema, set, &mut reports);
    let mut report = fleet.finish(reports, observer);
    report.versions = status::histogram(&report.tenants, set);
    report.last_run = last_run;
    Ok(report)
}

/// The tenants of a rollback (those the run changed, with what to revert on each) or of a
/// resumed `up` (those the run did not finish), selected like a list.
fn from_the_journal(
    config: &RunConfig,
    command: &Command,
    fleet: &mut Fleet<'_>,
    undo: &mut Undo,
) -> Result<Discovered, Error> {
    let schema = &config.journal_schema;
    let names = match (command, config.resume) {
        (Command::Rollback { run, .. }, _) => {
            *undo = Undo::read(&mut fleet.db.control, schema, *run, &config.migrations)?;
            undo.tenants()
        }
        (_, Some((resume, failed_only))) => {
            let current = fleet.journal_run().map(|j| j.id());
            let resumed = resume_tenants(&mut fleet.db.control, schema, resume, failed_only, current)?;
            return resumed_tenants(config, command, fleet, resumed);
        }
        _ => Vec::new(),
    };
    select(&strict(config), names)
}

/// A resumed `up`: the run's tenants, selected; the ones it does not select are carried over
/// (so resuming this run later still finds them). The resumed run's `up --to` target holds.
fn resumed_tenants(
    config: &RunConfig,
    command: &Command,
    fleet: &mut Fleet<'_>,
    resumed: Resumed,
) -> Result<Discovered, Error> {
    let to = match command {
        Command::Up { to } => to
            .as_deref()
            .and_then(|v| config.migrations.resolve_version(v))
            .map(|m| &m.version),
        _ => None,
    };
    if let Some(target) = &resumed.target {
        if to != Some(target) {
            return Err(Error::Refused {
                refusal: Refusal::NoSuchRun,
                message: format!(
                    "run {} applied migrations up to version {target} only; resume it with the same target version \
                     (without it, the resumed tenants would get migrations the others did not)",
                    resumed.id
                ),
            });
        }
    }
    log::info!(
        "resuming run {}: {} tenant(s) to run again",
        resumed.id,
        resumed.tenants.len()
    );
    let found = select(&strict(config), resumed.tenants)?;
    let carried: Vec<String> = resumed
        .unfinished
        .into_iter()
        .filter(|t| !found.tenants.iter().any(|s| s.as_str() == t))
        .collect();
    fleet.journal_carried(&carried, resumed.id)?;
    Ok(found)
}

/// Names from the journal are checked strictly, like a list.
fn strict(config: &RunConfig) -> RunConfig {
    RunConfig {
        strict: true,
        ..config.clone()
    }
}

/// Refuses `down --steps N` over tenants whose newest versions differ: the same N would
/// revert different migrations on each (after a partly failed run, rerunning it would
/// revert a second migration where the first one succeeded).
fn refuse_mixed_versions(
    config: &RunConfig,
    command: &Command,
    set: &MigrationSet,
    states: &[TenantState],
) -> Result<(), Error> {
    if config.allow_mixed_versions || !matches!(command, Command::Down(DownTarget::Steps(_))) {
        return Ok(());
    }
    let mut newest: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for state in states.iter().filter(|s| s.exists) {
        let version = state
            .applied_versions(set)
            .first()
            .cloned()
            .unwrap_or_else(|| "(none)".into());
        *newest.entry(version).or_default() += 1;
    }
    if newest.len() < 2 {
        return Ok(());
    }
    let shown: Vec<String> = newest
        .iter()
        .rev()
        .map(|(v, n)| {
            format!(
                "{} ({n} tenant(s))",
                set.get(v).map_or(v.as_str(), |m| m.dir_name.as_str())
            )
        })
        .collect();
    Err(Error::Refused {
        refusal: Refusal::MixedVersions,
        message: format!(
            "refusing to revert a number of steps: nothing was changed; the tenants are at different versions: {}. \
             The same number of steps would revert different migrations on each. Revert to a target version, \
             or exactly what one run applied, or allow it explicitly",
            shown.join(", ")
        ),
    })
}

/// Tenants from a query or a pattern, validated and selected.
fn discover(config: &RunConfig, fleet: &mut Fleet<'_>) -> Result<Discovered, Error> {
    let mut names = discovery::read_from_database(&mut fleet.db.control, &config.tenants)?;
    if config.tenants == TenantSource::AllTenants {
        // The shared schema has a history table too; it is simply not a tenant here.
        names.retain(|n| n != config.shared.schema.as_str());
    }
    if let Some(journal) = &config.journal {
        // The run journal's schema is the runner's own, never a tenant.
        names.retain(|n| n != journal.schema.as_str());
    }
    select(config, names)
}

/// Tenants from a list or a file are read and validated before connecting, so a bad name
/// stops the run before any SQL (shared migrations included).
fn select_offline(config: &RunConfig) -> Result<Option<Discovered>, Error> {
    match discovery::read_offline(&config.tenants)? {
        Some(names) => select(config, names).map(Some),
        None => Ok(None),
    }
}

/// Validation and selection. A list of names is always strict: a typo must not be skipped
/// silently. The shared schema is never a tenant.
fn select(config: &RunConfig, names: Vec<String>) -> Result<Discovered, Error> {
    let strict = config.strict || matches!(config.tenants, TenantSource::List(_));
    let selection = discovery::Selection {
        shard: config.shard,
        only: &config.only,
        exclude: &config.exclude,
        strict,
        shared: &config.shared.schema,
    };
    Ok(discovery::select(names, &selection)?)
}

fn read_states(fleet: &mut Fleet<'_>, tenants: &[SchemaName], set: &MigrationSet) -> Result<Vec<TenantState>, Error> {
    let clock = Instant::now();
    let states = catalog::read_states(&mut fleet.db.control, tenants, set).map_err(|e| Error::Database {
        context: "reading the tenants' state".into(),
        message: fleet.db.workers.scrub(&e.to_string()),
    })?;
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
) -> Result<(), Error> {
    if !matches!(command, Command::Down(_) | Command::Redo { .. }) {
        return Ok(());
    }
    let mut blocked: Vec<Blocked> = Vec::new();
    for (tenant, state) in tenants.iter().zip(states) {
        if let Err(HarnessError::Irreversible(m)) = plan::plan(command, set, &state.applied_versions(set)) {
            Blocked::add(&mut blocked, &m, tenant.to_string());
        }
    }
    if blocked.is_empty() {
        return Ok(());
    }
    Err(Error::Irreversible {
        command: command.name(),
        blocked,
    })
}

/// `up` in one transaction per tenant is refused before anything changes when a migration
/// it would apply must run outside a transaction.
fn refuse_non_atomic(
    config: &RunConfig,
    command: &Command,
    set: &MigrationSet,
    states: &[TenantState],
) -> Result<(), Error> {
    if !config.atomic || !matches!(command, Command::Up { .. }) {
        return Ok(());
    }
    let mut outside: Vec<&str> = Vec::new();
    for state in states {
        for step in plan::plan(command, set, &state.applied_versions(set)).unwrap_or_default() {
            let m = step.migration();
            if !m.run_in_transaction && !outside.contains(&m.dir_name.as_str()) {
                outside.push(&m.dir_name);
            }
        }
    }
    if outside.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "refusing an all-or-nothing up: nothing was changed; these migrations run outside a transaction: {}",
        outside.join(", ")
    )))
}

/// The read-only parts of a migration run.
struct Migrate<'r> {
    config: &'r RunConfig,
    command: &'r Command,
    set: &'r MigrationSet,
    /// A rollback's migrations per tenant.
    undo: &'r Undo,
    /// `up --canary`: these tenants first.
    canaries: Option<&'r std::collections::BTreeSet<SchemaName>>,
}

impl Migrate<'_> {
    /// A dry run: the catalog settles what it can (as in a real run), the planner predicts
    /// the rest; nothing is locked or changed.
    fn plan(
        &self,
        fleet: &mut Fleet<'_>,
        tenants: Vec<SchemaName>,
        states: Vec<TenantState>,
        observer: &mut dyn Observer,
    ) -> Vec<TenantReport> {
        let planner = crate::dry_run::Planner::new(self.config, self.command, self.set);
        let mut reports = Vec::with_capacity(tenants.len());
        for (schema, state) in tenants.into_iter().zip(states) {
            let report = match self.triage(schema, &state) {
                Ok(report) => report,
                Err(tenant) => planner.tenant(&mut fleet.db.control, tenant, state.unreadable),
            };
            observer.tenant_done(&report);
            reports.push(report);
        }
        reports
    }
}

impl Migrate<'_> {
    /// Reports every tenant: directly from the catalog when there is nothing to do,
    /// through the workers otherwise.
    fn run(
        &self,
        fleet: &mut Fleet<'_>,
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
        for _ in reports.iter().filter(|r| r.failed()) {
            // A tenant that failed in triage (e.g. a missing schema) counts towards the limit.
            fleet.control.failed();
        }
        let run_one = |t: &Tenant, worker: &Worker<'_>| self.run_tenant(t, worker);
        let skip_one = |t: &Tenant, why: &str| TenantRun::new(t, self.command, self.set).skip(why).finish();
        match self.canaries {
            Some(canaries) => {
                let waves = crate::canary::in_two_waves(fleet, canaries, work, &reports, observer, run_one, skip_one);
                reports.extend(waves);
            }
            None => reports.extend(fleet.parallel(&work, observer, run_one, skip_one)),
        }
        reports
    }

    /// `Ok(report)` when the catalog settles the tenant; `Err(tenant)` when a worker must
    /// connect (and, unless it only reads, take the tenant's lock).
    fn triage(&self, schema: SchemaName, state: &TenantState) -> Result<TenantReport, Tenant> {
        let missing = self.config.missing;
        let applied = state.applied_versions(self.set);
        let undo = self.undo.of(schema.as_str());
        let tenant = Tenant {
            schema,
            exists: state.exists,
            create_schema: missing == MissingPolicy::Create && !state.exists,
            applied: applied.clone(),
            undo,
        };
        if state.unreadable {
            return Err(tenant);
        }
        let run = TenantRun::new(&tenant, self.command, self.set);
        if !state.exists {
            return match (missing, self.command) {
                (MissingPolicy::Create, Command::Up { .. } | Command::Redo { .. }) => Err(tenant),
                (MissingPolicy::Error, _) => Ok(run
                    .fail(&HarnessError::MissingSchema(tenant.schema.to_string()))
                    .finish()),
                (MissingPolicy::Create, _) => Ok(run
                    .skip("schema does not exist (only up and redo create missing schemas)")
                    .finish()),
                _ => Ok(run.skip("schema does not exist").finish()),
            };
        }
        match plan::tenant_plan(self.command, self.set, &tenant.undo, &applied) {
            Ok(steps) if steps.is_empty() => Ok(run.finish()),
            Ok(steps) if !self.config.allow_out_of_order => {
                match plan::check_order(self.command, self.set, &applied, &steps) {
                    Err(e) => Ok(run.fail(&e).finish()),
                    Ok(()) => Err(tenant),
                }
            }
            _ => Err(tenant),
        }
    }
}

impl Migrate<'_> {
    /// One tenant, tried again (with backoff) while it fails for a passing reason.
    fn run_tenant(&self, tenant: &Tenant, worker: &Worker<'_>) -> TenantReport {
        let config = self.config;
        let mut attempts: Vec<TenantReport> = Vec::new();
        loop {
            let (report, transient) = TenantRun::new(tenant, self.command, self.set)
                .controlled(worker.control)
                .atomic_up(config.atomic)
                .allow_out_of_order(config.allow_out_of_order)
                .run_on(worker.workers, worker.settings)
                .finish_with_cause();
            // Only `up` is tried again: its plan (what is pending) is the same whatever an
            // earlier attempt committed; `down --steps` and `redo` count from the newest
            // applied version and would revert more than asked.
            let retry = matches!(self.command, Command::Up { .. })
                && attempts.len() < config.retries as usize
                && worker.control.stopped().is_none()
                && transient.is_some_and(|t| t != Transient::ConnectionLost || worker.workers.server_reachable());
            attempts.push(report);
            if !retry {
                return merge(attempts);
            }
            let delay = backoff(attempts.len() as u32);
            log::info!(
                "{}: {:?}; attempt {} in {} ms",
                tenant.schema,
                transient,
                attempts.len() + 1,
                delay.as_millis()
            );
            sleep_unless_stopped(delay, worker.control);
            if worker.control.stopped().is_some() {
                return merge(attempts);
            }
        }
    }
}

/// Sleeps `delay`, waking early when the run stops.
fn sleep_unless_stopped(delay: std::time::Duration, control: &crate::control::RunControl) {
    let until = std::time::Instant::now() + delay;
    while control.stopped().is_none() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
    }
}

/// 250 ms doubling per attempt, with up to 50% random jitter, so that runners that collided
/// do not collide again.
fn backoff(attempt: u32) -> std::time::Duration {
    let base = 250u64 << attempt.min(6);
    std::time::Duration::from_millis(base + fastrand::u64(0..=base / 2))
}

/// One report for all attempts at a tenant: the first one's starting state, everything each
/// attempt did, the last one's outcome.
fn merge(mut attempts: Vec<TenantReport>) -> TenantReport {
    let mut last = attempts.pop().expect("at least one attempt");
    if attempts.is_empty() {
        return last;
    }
    let mut done = TenantReport::new(last.schema.clone(), Outcome::Unchanged);
    for (i, attempt) in attempts.iter_mut().enumerate() {
        done.applied.append(&mut attempt.applied);
        done.reverted.append(&mut attempt.reverted);
        done.notes.append(&mut attempt.notes);
        if let Outcome::Failed { error, .. } = &attempt.outcome {
            done.notes
                .push(format!("attempt {} failed and was tried again: {error}", i + 1));
        }
        done.elapsed_ms += attempt.elapsed_ms;
    }
    done.applied.append(&mut last.applied);
    done.reverted.append(&mut last.reverted);
    done.notes.append(&mut last.notes);
    last.applied = done.applied;
    last.reverted = done.reverted;
    last.notes = done.notes;
    last.version_before = attempts[0].version_before.clone();
    last.retries = attempts.len() as u32;
    last.elapsed_ms += done.elapsed_ms;
    if last.outcome == Outcome::Unchanged && (!last.applied.is_empty() || !last.reverted.is_empty()) {
        last.outcome = Outcome::Changed;
    }
    last
}
