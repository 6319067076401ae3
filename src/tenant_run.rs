/*!
One tenant's run: lock it, re-read its history, run its plan, and turn what happened into
its [`TenantReport`]. Every failure ends up in the report, never as an early exit, so a
half-migrated tenant is always reported with the version it was left at.
*/

use crate::config::{Command, Settings};
use crate::database::Workers;
use crate::harness::{self, HarnessError, TenantHarness};
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
    /// `CREATE SCHEMA` before migrating (it is missing and `--missing create` was given).
    pub(crate) create_schema: bool,
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
        self.report.outcome = Outcome::from(error);
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
        let mut h = TenantHarness::lock(conn, &self.tenant.schema, settings)?;
        if matches!(self.command, Command::Up { .. } | Command::Redo { .. }) {
            h.prepare(self.tenant.create_schema)?;
            if self.tenant.create_schema {
                self.report.notes.push("schema created".into());
            }
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
                if m.down == DownSql::NoOp {
                    let note = format!("{}: down.sql is empty; only its history row was removed", m.dir_name);
                    self.report.notes.push(note);
                }
            }
        }
        Ok(())
    }

    /// The report: outcome, versions before and after, counts, elapsed time.
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
