/*!
Plans before changes: a dry run reads the fleet's state and says, per tenant, what the real
run would do, changing nothing in the database (no schema, history table or journal row; no
advisory lock is taken).

Each tenant's [`TenantPlan`] lists its steps in order and, when asked, the exact SQL the real
run would send: the same [`StepSql`] builder the harness sends from, composed in the order
[`TenantRun`](crate::tenant_run) runs it (lock, history table, history read, each step in
its own transaction or all in one, release). The script runs as it is under psql.
*/

use crate::catalog::{self, TenantState};
use crate::config::{Command, RunConfig, Settings};
use crate::database::Database;
use crate::error::Error;
use crate::harness::{self, HarnessError};
use crate::plan::{self, Step};
use crate::report::TenantReport;
use crate::step_sql::{self, StepSql};
use crate::tenant::SchemaName;
use crate::tenant_run::{runs_atomically, Tenant, TenantRun};
use diesel::PgConnection;
use migrate_tenants_set::{DownSql, MigrationSet};
use serde::Serialize;

/// What a real run would do on one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TenantPlan {
    /// The steps, in the order they would run.
    pub steps: Vec<PlannedStep>,
    /// All steps would run in one transaction (`redo`, `up --atomic`, `tenant create`).
    pub atomic: bool,
    /// The schema would be created first.
    pub creates_schema: bool,
    /// The schema would be dropped (`tenant drop`).
    pub drops_schema: bool,
    /// The exact SQL the run would send (with [`Runner::dry_run_sql`](crate::Runner::dry_run_sql)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
}

/// One step of a [`TenantPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PlannedStep {
    /// Apply or revert.
    pub action: StepAction,
    /// The migration's version.
    pub version: String,
    /// The migration's directory name (e.g. `2024-01-01-000005_add_users_last_login_at`).
    pub migration: String,
    /// It runs in a transaction (else alone, not rolled back on failure).
    pub transactional: bool,
    /// It has no `down.sql`: once applied it cannot be reverted.
    pub irreversible: bool,
    /// A revert whose `down.sql` is empty: only the history row is removed.
    pub empty_down: bool,
}

/// What a [`PlannedStep`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepAction {
    /// Run `up.sql` and record the version.
    Apply,
    /// Run `down.sql` and forget the version.
    Revert,
}

impl PlannedStep {
    fn of(step: Step<'_>) -> PlannedStep {
        let m = step.migration();
        PlannedStep {
            action: match step {
                Step::Apply(_) => StepAction::Apply,
                Step::Revert(_) => StepAction::Revert,
            },
            version: m.version.clone(),
            migration: m.dir_name.clone(),
            transactional: m.run_in_transaction,
            irreversible: m.down == DownSql::Missing,
            empty_down: matches!(step, Step::Revert(_)) && m.down == DownSql::NoOp,
        }
    }
}

/// Plans a command on tenants whose state the catalog pass read.
pub(crate) struct Planner<'r> {
    config: &'r RunConfig,
    command: &'r Command,
    set: &'r MigrationSet,
}

impl<'r> Planner<'r> {
    pub(crate) fn new(config: &'r RunConfig, command: &'r Command, set: &'r MigrationSet) -> Planner<'r> {
        Planner { config, command, set }
    }

    /// The plan of a tenant the catalog could not settle; `reread`: its history must be read
    /// here (the catalog pass could not read it).
    pub(crate) fn tenant(&self, conn: &mut PgConnection, mut tenant: Tenant, reread: bool) -> TenantReport {
        if reread {
            match harness::applied_versions(conn, &tenant.schema) {
                Ok(applied) => tenant.applied = applied,
                Err(e) => return TenantRun::new(&tenant, self.command, self.set).fail(&e).finish(),
            }
        }
        self.plan(&tenant, &self.config.settings, self.config.atomic)
    }

    /// The plan of `tenant` from its applied versions, with the SQL when asked for.
    fn plan(&self, tenant: &Tenant, settings: &Settings, atomic_up: bool) -> TenantReport {
        let run = TenantRun::new(tenant, self.command, self.set);
        let steps = match self.steps(tenant) {
            Ok(steps) => steps,
            Err(e) => return run.fail(&e).finish(),
        };
        let atomic = runs_atomically(self.command, atomic_up, &steps);
        let sql = self.config.dry_run_sql.then(|| {
            let b = StepSql::new(&tenant.schema, settings);
            let prepare = matches!(self.command, Command::Up { .. } | Command::Redo { .. });
            migrate_script(&b, settings, &steps, atomic, prepare.then_some(tenant.create_schema))
        });
        let plan = TenantPlan {
            steps: steps.iter().map(|s| PlannedStep::of(*s)).collect(),
            atomic,
            creates_schema: tenant.create_schema,
            drops_schema: false,
            sql,
        };
        run.planned(predict(&tenant.applied, &steps), plan).finish()
    }

    /// The steps, refused as the real run would refuse them (a rollback's from the journal).
    fn steps<'a>(&'a self, tenant: &'a Tenant) -> Result<Vec<Step<'a>>, HarnessError> {
        let applied = &tenant.applied;
        let steps = plan::tenant_plan(self.command, self.set, &tenant.undo, applied)?;
        if !self.config.allow_out_of_order {
            plan::check_order(self.command, self.set, applied, &steps)?;
        }
        Ok(steps)
    }
}

/// The applied versions (newest first) after `steps`.
fn predict(applied: &[String], steps: &[Step<'_>]) -> Vec<String> {
    let mut after = applied.to_vec();
    for step in steps {
        match step {
            Step::Apply(m) => after.push(m.version.clone()),
            Step::Revert(m) => after.retain(|v| *v != m.version),
        }
    }
    after.sort_by(|a, b| b.cmp(a));
    after.dedup();
    after
}

/// The shared schema's plan (`up`, `status`, `tenant create`; `down --shared`).
pub(crate) fn shared(config: &RunConfig, command: &Command, set: &MigrationSet, db: &mut Database) -> TenantReport {
    let schema = config.shared.schema.clone();
    let state = catalog::read_states(&mut db.control, std::slice::from_ref(&schema), set);
    let (exists, applied) = match state {
        Ok(states) => (states[0].exists, states[0].applied_versions(set)),
        Err(e) => {
            let tenant = tenant(schema, false, false, Vec::new());
            let error = HarnessError::Database(format!("reading the shared schema: {e}"));
            return TenantRun::new(&tenant, command, set).fail(&error).finish();
        }
    };
    let settings = Settings {
        search_path_suffix: Vec::new(),
        ..config.settings.clone()
    };
    let tenant = tenant(schema, exists, !exists, applied);
    Planner::new(config, command, set).plan(&tenant, &settings, false)
}

fn tenant(schema: SchemaName, exists: bool, create_schema: bool, applied: Vec<String>) -> Tenant {
    Tenant {
        schema,
        exists,
        create_schema,
        applied,
        undo: Vec::new(),
    }
}

/// `tenant create` planned: a new schema gets every migration (in one transaction when all
/// allow it); an existing one fails, or with `migrate_existing` is planned like `up`.
pub(crate) fn create(
    config: &RunConfig,
    db: &mut Database,
    schemas: &[SchemaName],
    migrate_existing: bool,
) -> Result<Vec<TenantReport>, Error> {
    let set = &config.migrations;
    let states = read(db, schemas, set)?;
    let up = Command::Up { to: None };
    let planner = Planner::new(config, &up, set);
    let reports = schemas.iter().zip(states).map(|(schema, state)| match state.exists {
        true if !migrate_existing => {
            let t = tenant(schema.clone(), true, false, Vec::new());
            let error = HarnessError::SchemaExists(schema.to_string());
            TenantRun::new(&t, &up, set).fail(&error).finish()
        }
        true => planner.plan(
            &tenant(schema.clone(), true, false, state.applied_versions(set)),
            &config.settings,
            false,
        ),
        false => planner.new_tenant(schema),
    });
    Ok(reports.collect())
}

impl Planner<'_> {
    /// A new tenant: schema, history table and every migration.
    fn new_tenant(&self, schema: &SchemaName) -> TenantReport {
        let t = tenant(schema.clone(), false, true, Vec::new());
        let steps = plan::plan(self.command, self.set, &[]).unwrap_or_default();
        let atomic = self.set.migrations().iter().all(|m| m.run_in_transaction);
        let sql = self.config.dry_run_sql.then(|| {
            let b = StepSql::new(schema, &self.config.settings);
            let mut script = Script::default();
            script.push(b.lock());
            script.push(format!("{};", b.schema_exists()));
            let body = steps_script(&b, &self.config.settings, &steps, atomic, Some(b.prepare(true)));
            script.push(body);
            script.push(b.release());
            script.text
        });
        let plan = TenantPlan {
            steps: steps.iter().map(|s| PlannedStep::of(*s)).collect(),
            atomic,
            creates_schema: true,
            drops_schema: false,
            sql,
        };
        let mut report = TenantRun::new(&t, self.command, self.set)
            .planned(predict(&[], &steps), plan)
            .finish();
        report.exists = false;
        report
    }
}

/// `tenant drop` planned: a missing schema is skipped or fails, a schema without a history
/// table fails unless `force`.
pub(crate) fn drop(
    config: &RunConfig,
    db: &mut Database,
    schemas: &[SchemaName],
    force: bool,
    skip_missing: bool,
) -> Result<Vec<TenantReport>, Error> {
    let set = &config.migrations;
    let states = read(db, schemas, set)?;
    let status = Command::Status;
    let reports = schemas.iter().zip(states).map(|(schema, state)| {
        let applied = state.applied_versions(set);
        let t = tenant(schema.clone(), state.exists, false, applied.clone());
        let run = TenantRun::new(&t, &status, set);
        if !state.exists && skip_missing {
            return run.skip("schema does not exist").finish();
        }
        let refused = match (state.exists, state.has_history || force) {
            (false, _) => Some(HarnessError::MissingSchema(schema.to_string())),
            (true, false) => Some(HarnessError::NotATenant(schema.to_string())),
            (true, true) => None,
        };
        if let Some(e) = refused {
            return run.fail(&e).finish();
        }
        let sql = config.dry_run_sql.then(|| drop_script(schema, state.has_history));
        let plan = TenantPlan {
            steps: Vec::new(),
            atomic: false,
            creates_schema: false,
            drops_schema: true,
            sql,
        };
        let mut report = run.planned(Vec::new(), plan).finish();
        report.exists = false;
        report.version_after = None;
        report.version_before = applied.first().cloned();
        report
    });
    Ok(reports.collect())
}

fn read(db: &mut Database, schemas: &[SchemaName], set: &MigrationSet) -> Result<Vec<TenantState>, Error> {
    catalog::read_states(&mut db.control, schemas, set).map_err(|e| Error::Database {
        context: "reading the tenants' state".into(),
        message: db.workers.scrub(&e.to_string()),
    })
}

/// What `tenant drop` sends (without a run's settings: the harness locks it with the defaults).
fn drop_script(schema: &SchemaName, has_history: bool) -> String {
    let b = StepSql::new(schema, &Settings::default());
    let mut script = Script::default();
    script.push(b.lock());
    script.push(format!("{};", b.schema_exists()));
    script.push(format!("{};", b.history_exists()));
    if has_history {
        script.push(format!("{};", b.applied()));
    }
    script.push(format!("{};", b.drop_schema()));
    script.push(b.release());
    script.text
}

/// A script, one piece per line group.
#[derive(Default)]
struct Script {
    text: String,
}

impl Script {
    fn push(&mut self, sql: impl AsRef<str>) {
        let sql = sql.as_ref().trim_end();
        if sql.is_empty() {
            return;
        }
        self.text.push_str(sql);
        self.text.push('\n');
    }
}

/// What `up`, `down` and `redo` send to one tenant: lock, history table (`prepare`:
/// `Some(create_schema)` for `up` and `redo`), history read, the steps, release.
fn migrate_script(b: &StepSql, settings: &Settings, steps: &[Step<'_>], atomic: bool, prepare: Option<bool>) -> String {
    let mut script = Script::default();
    script.push(b.lock());
    if let Some(create_schema) = prepare {
        script.push(b.prepare(create_schema));
    }
    script.push(format!("{};", b.applied()));
    script.push(steps_script(b, settings, steps, atomic, None));
    script.push(b.release());
    script.text
}

/// The steps, all in one transaction (`atomic`, opened by `first` when given, e.g. the
/// schema's creation) or each on its own.
fn steps_script(b: &StepSql, settings: &Settings, steps: &[Step<'_>], atomic: bool, first: Option<String>) -> String {
    let mut script = Script::default();
    if atomic {
        script.push("BEGIN;");
    }
    if let Some(first) = first {
        script.push(first);
    }
    for step in steps {
        script.push(format!("-- {}", describe(*step)));
        script.push(step_script(b, settings, *step, atomic));
    }
    if atomic {
        script.push("COMMIT;");
    }
    script.text
}

fn describe(step: Step<'_>) -> String {
    match step {
        Step::Apply(m) => format!("apply {}", m.dir_name),
        Step::Revert(m) => format!("revert {}", m.dir_name),
    }
}

/// One step as the harness sends it (`TenantHarness::apply`/`revert`/`step`).
fn step_script(b: &StepSql, settings: &Settings, step: Step<'_>, in_tx: bool) -> String {
    let (m, body, bookkeeping) = match step {
        Step::Apply(m) => (m, m.up.as_str(), b.record(&m.version)),
        Step::Revert(m) => match &m.down {
            DownSql::Sql(down) => (m, down.as_str(), b.forget(&m.version)),
            // An empty down.sql only removes the history row; a missing one is refused
            // before any plan is made.
            _ => return format!("{};", b.forget(&m.version)),
        },
    };
    let wide = settings.database_wide.contains(&m.version);
    if m.run_in_transaction || in_tx {
        let prefix = b.transaction_prefix(in_tx, wide, step_sql::next_marker());
        return b.transaction_batch(&prefix, body, &bookkeeping, in_tx);
    }
    outside_transaction(b, body, &bookkeeping, wide)
}

/// A step outside a transaction: `search_path`, the single statement, the checks and the
/// bookkeeping, then `RESET search_path` (under the database-wide lock when `wide`).
fn outside_transaction(b: &StepSql, body: &str, bookkeeping: &str, wide: bool) -> String {
    let mut script = Script::default();
    if wide {
        script.push(format!("{};", StepSql::wide_lock()));
    }
    script.push(b.enter(false));
    script.push(format!("{}\n;", body.trim_end()));
    script.push(b.outside_finish(body, bookkeeping));
    script.push(format!("{};", StepSql::outside_reset()));
    if wide {
        script.push(format!("{};", StepSql::wide_unlock()));
    }
    script.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use migrate_tenants_set::{Origin, RawMigration};

    #[test]
    fn predicted_versions_follow_the_steps() {
        let raw = |v: &str| RawMigration {
            dir_name: format!("{v}_m"),
            up: Some("SELECT 1;".into()),
            down: Some("SELECT 1;".into()),
            metadata: None,
        };
        let set = MigrationSet::validate(Origin::Directory("t".into()), vec![raw("1"), raw("2"), raw("3")]).unwrap();
        let applied = vec!["1".to_string()];
        let up = plan::plan(&Command::Up { to: None }, &set, &applied).unwrap();
        assert_eq!(predict(&applied, &up), ["3", "2", "1"]);
        let all = vec!["3".to_string(), "2".to_string(), "1".to_string()];
        let down = plan::plan(&Command::Down(crate::DownTarget::Steps(2)), &set, &all).unwrap();
        assert_eq!(predict(&all, &down), ["1"]);
    }
}
