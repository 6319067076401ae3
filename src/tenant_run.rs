/*!
One tenant's run: lock it, re-read its history, run its plan, and turn what happened into
its [`TenantReport`]. Every failure ends up in the report, never as an early exit, so a
half-migrated tenant is always reported with the version it was left at.
*/

use crate::config::{Command, Settings};
use crate::control::RunControl;
use crate::database::Workers;
use crate::harness::{self, HarnessError, TenantHarness, Transient};
use crate::plan::{self, Step};
use crate::report::{Outcome, TenantReport};
use crate::tenant::SchemaName;
use diesel::PgConnection;
use migrate_tenants_set::{DownSql, MigrationSet};
use std::time::Instant;

/// One tenant to work on.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub(crate) schema: SchemaName,
    /// The schema exists (as far as the catalog pass knows).
    pub(crate) exists: bool,
    /// `CREATE SCHEMA` before migrating (it is missing and the run creates missing schemas).
    pub(crate) create_schema: bool,
    /// Applied versions, newest first, as the catalog pass read them (the report's state
    /// when the tenant fails before its history is read again under the lock).
    pub(crate) applied: Vec<String>,
    /// A rollback: the migrations to revert, newest first (from the run journal).
    pub(crate) undo: Vec<migrate_tenants_set::Migration>,
}

/// The state of one tenant's run, turned into its report by [`TenantRun::finish`].
pub(crate) struct TenantRun<'r> {
    tenant: &'r Tenant,
    command: &'r Command,
    set: &'r MigrationSet,
    started: Instant,
    report: TenantReport,
    /// Applied versions, newest first, kept current as steps succeed.
    applied: Vec<String>,
    control: Option<&'r RunControl>,
    /// `up` applies all of the tenant's pending migrations in one transaction.
    atomic_up: bool,
    /// Why the failure may pass, when the tenant failed.
    transient: Option<Transient>,
    /// `up` may apply a migration older than the newest applied one.
    allow_out_of_order: bool,
}

impl<'r> TenantRun<'r> {
    pub(crate) fn new(tenant: &'r Tenant, command: &'r Command, set: &'r MigrationSet) -> Self {
        let mut report = TenantReport::new(tenant.schema.clone(), Outcome::Unchanged);
        report.exists = tenant.exists;
        let mut run = TenantRun {
            tenant,
            command,
            set,
            started: Instant::now(),
            report,
            applied: Vec::new(),
            control: None,
            atomic_up: false,
            transient: None,
            allow_out_of_order: false,
        };
        run.record_state(&tenant.applied);
        run
    }

    /// Reports the backend to `control` (so an interruption can cancel it) and stops between
    /// migrations once the run is interrupted.
    pub(crate) fn controlled(mut self, control: &'r RunControl) -> Self {
        self.control = Some(control);
        self
    }

    /// `up` applies all pending migrations in one transaction.
    pub(crate) fn atomic_up(mut self, atomic: bool) -> Self {
        self.atomic_up = atomic;
        self
    }

    /// `up` applies a pending migration older than the newest applied one instead of
    /// refusing the tenant.
    pub(crate) fn allow_out_of_order(mut self, allow: bool) -> Self {
        self.allow_out_of_order = allow;
        self
    }

    /// Records the applied versions (newest first) as the state before the run.
    pub(crate) fn record_state(&mut self, applied_desc: &[String]) {
        self.applied = applied_desc.to_vec();
        self.report.version_before = self.applied.first().cloned();
    }

    pub(crate) fn skip(mut self, reason: &str) -> Self {
        self.report.outcome = Outcome::Skipped {
            reason: reason.to_string(),
        };
        self
    }

    pub(crate) fn fail(mut self, error: &HarnessError) -> Self {
        let interrupted = self.control.is_some_and(RunControl::interrupted);
        self.transient = error.transient();
        self.report.outcome = match error {
            HarnessError::Interrupted(_) => Outcome::from(error),
            // A statement cancelled by the interruption fails with the server's message.
            _ if interrupted => Outcome::from(&HarnessError::Interrupted(error.to_string())),
            _ => Outcome::from(error),
        };
        self
    }

    /// Checks out a connection and runs the command on it (`status` only reads).
    pub(crate) fn run_on(self, workers: &Workers, settings: &Settings) -> Self {
        match workers.checkout().map_err(HarnessError::Connection) {
            Ok(mut conn) => self.run_with(&mut conn, settings),
            Err(e) => self.fail(&e),
        }
    }

    /// Runs the command on `session`.
    pub(crate) fn run_with(mut self, conn: &mut PgConnection, settings: &Settings) -> Self {
        let result = if *self.command == Command::Status {
            harness::applied_versions(conn, &self.tenant.schema).map(|applied| self.record_state(&applied))
        } else {
            self.execute(conn, settings)
        };
        match result {
            Ok(()) => self,
            Err(e) => self.fail(&e),
        }
    }

    /// Locks the tenant, re-reads its history, and runs its plan.
    fn execute(&mut self, conn: &mut PgConnection, settings: &Settings) -> Result<(), HarnessError> {
        let mut h = TenantHarness::lock(conn, &self.tenant.schema, settings, self.control)?;
        if matches!(self.command, Command::Up { .. } | Command::Redo { .. }) {
            h.prepare(self.tenant.create_schema)?;
            if self.tenant.create_schema {
                self.report.notes.push("schema created".into());
            }
            self.report.exists = true;
        }
        let applied = h.applied()?;
        self.record_state(&applied);
        let steps = plan::tenant_plan(self.command, self.set, &self.tenant.undo, &applied)?;
        if !self.allow_out_of_order {
            plan::check_order(self.command, self.set, &applied, &steps)?;
        }
        log::info!("{}: {} step(s) to run", self.tenant.schema, steps.len());
        if self.atomic(&steps, settings) {
            self.all_or_nothing(&mut h, steps)?;
        } else {
            for step in steps {
                self.check_interrupt(step)?;
                self.step(&mut h, step, false)?;
            }
        }
        h.release()
    }

    /// Whether the steps run in one transaction: `redo` whenever every step can (as the
    /// diesel CLI does) except on Citus, `up` when asked to. (Citus cancels a transaction
    /// that drops a table and creates one with a sequence in the same distributed schema as
    /// "involved in a distributed deadlock": a redo of a `CREATE TABLE` with a `bigserial`.)
    fn atomic(&self, steps: &[Step<'_>], settings: &Settings) -> bool {
        let redo_on_citus = matches!(self.command, Command::Redo { .. }) && settings.citus.statement_by_statement;
        !redo_on_citus && runs_atomically(self.command, self.atomic_up, steps)
    }

    /// Runs every step in one transaction; on failure the tenant is left exactly as before.
    fn all_or_nothing(&mut self, h: &mut TenantHarness<'_>, steps: Vec<Step<'_>>) -> Result<(), HarnessError> {
        let before = (
            self.applied.clone(),
            self.report.applied.len(),
            self.report.reverted.len(),
            self.report.notes.len(),
        );
        h.execute("BEGIN")?;
        let mut failed = None;
        let result = steps
            .into_iter()
            .try_for_each(|step| {
                self.check_interrupt(step)?;
                self.step(h, step, true).inspect_err(|_| failed = Some(step))
            })
            .and_then(|()| h.execute("COMMIT"));
        if let Err(e) = result {
            let _ = h.execute("ROLLBACK");
            if let Some(step) = failed {
                h.journal_failure(step.migration(), matches!(step, Step::Apply(_)), &e);
            }
            // What this attempt did is reported only if it may have been kept; the history is
            // read again by the next run either way.
            self.applied = before.0;
            self.report.applied.truncate(before.1);
            self.report.reverted.truncate(before.2);
            self.report.notes.truncate(before.3);
            return Err(rolled_back_whole(e));
        }
        Ok(())
    }

    /// Stops before `step` once the run is interrupted.
    fn check_interrupt(&self, step: Step<'_>) -> Result<(), HarnessError> {
        match self.control {
            Some(control) if control.interrupted() => Err(HarnessError::Interrupted(format!(
                "stopped before {}",
                step.migration().dir_name
            ))),
            _ => Ok(()),
        }
    }

    fn step(&mut self, h: &mut TenantHarness<'_>, step: Step<'_>, in_tx: bool) -> Result<(), HarnessError> {
        if let Command::Mark { force, .. } = self.command {
            let applied = matches!(step, Step::Apply(_));
            h.mark(step.migration(), applied, *force)?;
            let v = step.migration().version.clone();
            match applied {
                true => {
                    self.applied.push(v.clone());
                    self.applied.sort_by(|a, b| b.cmp(a));
                    self.report.applied.push(v);
                }
                false => {
                    self.applied.retain(|a| *a != v);
                    self.report.reverted.push(v);
                }
            }
            self.report.notes.push(format!(
                "{} marked {} without running it",
                step.migration().dir_name,
                if applied { "applied" } else { "pending" }
            ));
            return Ok(());
        }
        match step {
            Step::Apply(m) => {
                h.apply(m, in_tx)?;
                self.applied.push(m.version.clone());
                self.applied.sort_by(|a, b| b.cmp(a));
                self.report.applied.push(m.version.clone());
            }
            Step::Revert(m) => {
                h.revert(m, in_tx)?;
                self.applied.retain(|v| *v != m.version);
                self.report.reverted.push(m.version.clone());
                if m.down == DownSql::NoOp {
                    let note = format!("{}: down.sql is empty; only its history row was removed", m.dir_name);
                    self.report.notes.push(note);
                }
            }
        }
        Ok(())
    }

    /// A dry run's report: `plan` says what would be done, `predicted` the applied versions
    /// (newest first) the tenant would end with.
    pub(crate) fn planned(mut self, predicted: Vec<String>, plan: crate::dry_run::TenantPlan) -> Self {
        if !plan.steps.is_empty() || plan.creates_schema || plan.drops_schema {
            self.report.outcome = Outcome::Changed;
        }
        self.applied = predicted;
        self.report.plan = Some(plan);
        self
    }

    /// The report, and why its failure may pass (a retry may succeed).
    pub(crate) fn finish_with_cause(self) -> (TenantReport, Option<Transient>) {
        let transient = self.transient;
        (self.finish(), transient)
    }

    /// The report: outcome, versions before and after, counts, elapsed time.
    pub(crate) fn finish(mut self) -> TenantReport {
        let r = &mut self.report;
        let changed = !r.applied.is_empty() || !r.reverted.is_empty();
        if changed && r.outcome == Outcome::Unchanged {
            r.outcome = Outcome::Changed;
        }
        r.version_after = self.applied.first().cloned();
        if r.outcome == Outcome::Unchanged {
            r.past_target = plan::past_target(self.command, self.set, &self.applied);
        }
        r.applied_count = self.applied.len();
        r.unknown = self
            .applied
            .iter()
            .filter(|v| self.set.get(v).is_none())
            .cloned()
            .collect();
        r.pending = self
            .set
            .migrations()
            .iter()
            .filter(|m| !self.applied.contains(&m.version))
            .map(|m| m.version.clone())
            .collect();
        r.pending_count = r.pending.len();
        self.report.took(self.started.elapsed())
    }
}

/// Whether `steps` run in one transaction: `redo` whenever every step can (as the diesel CLI
/// does), `up` when asked to (`atomic_up`).
pub(crate) fn runs_atomically(command: &Command, atomic_up: bool, steps: &[Step<'_>]) -> bool {
    let wanted = match command {
        Command::Redo { .. } => true,
        Command::Up { .. } => atomic_up,
        _ => false,
    };
    wanted && steps.len() > 1 && steps.iter().all(|s| s.migration().run_in_transaction)
}

/// The error of a step inside an all-or-nothing transaction, saying that nothing was kept.
fn rolled_back_whole(e: HarnessError) -> HarnessError {
    const WHOLE: &str = "the whole run on this tenant was one transaction and was rolled back: it is as it was before";
    const UNKNOWN: &str = "the whole run on this tenant was one transaction, and the connection was lost: it was \
                           rolled back unless its COMMIT had reached the server; the next run reads the history again";
    if e.to_string().contains(crate::harness::SPLIT) {
        return e; // says itself what was committed
    }
    if matches!(e.transient(), Some(crate::harness::Transient::ConnectionLost))
        || e.to_string().contains("the connection was lost")
    {
        return HarnessError::Database(format!("{e}; {UNKNOWN}"));
    }
    match e {
        HarnessError::Migration { migration, message, .. } => HarnessError::Migration {
            migration,
            message: format!("{message}; {WHOLE}"),
            transient: None,
        },
        HarnessError::Interrupted(why) => HarnessError::Interrupted(format!("{why}; {WHOLE}")),
        other => HarnessError::Database(format!("{other}; {WHOLE}")),
    }
}
