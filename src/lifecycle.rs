/*!
Tenant lifecycle: `tenant create` and `tenant drop`.

Creating a tenant is all or nothing: the schema, its history table and every migration run
in one transaction, so a failing migration leaves no schema behind. (A set with a
migration that must run outside a transaction cannot be atomic; then the schema is created,
migrated, and dropped again if a migration fails.) Dropping takes the tenant's lock,
refuses schemas that are not tenants unless forced, and never touches system schemas,
which [`SchemaName::tenant`] already refuses.
*/

use crate::config::{Command, RunConfig};
use crate::database::{Pool, Session};
use crate::harness::{HarnessError, Settings, TenantHarness};
use crate::migration_set::MigrationSet;
use crate::plan::{self, Step};
use crate::report::{FleetReport, Outcome, RunKind, TenantReport};
use crate::runner::{self, load_set, Observer, RunError};
use crate::shared::Shared;
use crate::tenant::{NameError, SchemaName};
use crate::tenant_run::{checkout, Tenant, TenantRun};
use std::time::Instant;

/// Validates listed names strictly: a lifecycle command never skips a bad name.
/// The shared schema is refused too: creating or dropping it as a tenant would mix its
/// history with the tenants' or delete the tenant registry.
fn names(list: &[String], shared: &SchemaName) -> Result<Vec<SchemaName>, RunError> {
    let mut schemas = Vec::new();
    for name in list {
        let schema = SchemaName::tenant(name).map_err(|e| RunError::Refused(e.to_string()))?;
        if schema == *shared {
            return Err(RunError::Refused(NameError::Shared(name.clone()).to_string()));
        }
        schemas.push(schema);
    }
    schemas.sort();
    schemas.dedup();
    Ok(schemas)
}

/// Creates each tenant and applies every migration to it atomically.
pub fn create(
    config: &RunConfig,
    list: &[String],
    if_not_exists: bool,
    observer: &mut dyn Observer,
) -> Result<FleetReport, RunError> {
    let clock = Instant::now();
    let schemas = names(list, &config.shared.schema)?;
    let set = load_set(&config.migrations)?;
    let up = Command::Up { to: None };
    let shared = Shared::load(config, &up)?;
    let mut db = runner::connect(config)?;
    let mut fleet = FleetReport::new(RunKind::TenantCreate);
    fleet.shared = shared.before_tenants(&mut db, observer);
    if fleet.shared.as_ref().is_some_and(TenantReport::failed) {
        return Ok(fleet.finish(Vec::new(), clock));
    }
    let creator = Creator {
        config,
        set: &set,
        pool: &db.pool,
        if_not_exists,
    };
    let skipped = |s: &SchemaName| skipped(s, runner::FAIL_FAST_SKIP);
    let reports = runner::parallel(config, &schemas, observer, |s| creator.create(s), skipped);
    Ok(fleet.finish(reports, clock))
}

/// Drops each tenant schema (`CASCADE`) under its lock.
pub fn drop(
    config: &RunConfig,
    list: &[String],
    force: bool,
    observer: &mut dyn Observer,
) -> Result<FleetReport, RunError> {
    let clock = Instant::now();
    let schemas = names(list, &config.shared.schema)?;
    let db = runner::connect(config)?;
    let skipped = |s: &SchemaName| skipped(s, runner::FAIL_FAST_SKIP);
    let drop_one = |s: &SchemaName| with_session(&db.pool, config, s, |session| drop_tenant(session, s, force));
    let reports = runner::parallel(config, &schemas, observer, drop_one, skipped);
    Ok(FleetReport::new(RunKind::TenantDrop).finish(reports, clock))
}

fn skipped(schema: &SchemaName, reason: &str) -> TenantReport {
    TenantReport::new(schema.clone(), Outcome::Skipped { reason: reason.into() })
}

/// Checks out a connection and runs `work`, turning every failure into the report.
fn with_session<F>(pool: &Pool, config: &RunConfig, schema: &SchemaName, work: F) -> TenantReport
where
    F: FnOnce(&mut Session) -> Result<TenantReport, HarnessError>,
{
    let started = Instant::now();
    let result = checkout(pool, &config.database_url).and_then(|mut session| work(&mut session));
    let report = result.unwrap_or_else(|e| TenantReport::new(schema.clone(), e.outcome()));
    report.took(started.elapsed())
}

fn drop_tenant(session: &mut Session, schema: &SchemaName, force: bool) -> Result<TenantReport, HarnessError> {
    let mut h = TenantHarness::lock(session, schema, &Settings::default())?;
    if !h.schema_exists()? {
        return Err(HarnessError::Refused(format!("schema {schema} does not exist")));
    }
    let version = if h.has_history()? {
        h.applied()?.first().cloned()
    } else if force {
        None
    } else {
        return Err(HarnessError::Refused(format!(
            "schema {schema} has no __diesel_schema_migrations table, so it is not a tenant; refusing to drop it (use --force)"
        )));
    };
    h.drop_schema()?;
    h.release()?;
    let mut report = TenantReport::new(schema.clone(), Outcome::Changed);
    report.exists = false;
    report.version_before = version;
    Ok(report)
}

struct Creator<'c> {
    config: &'c RunConfig,
    set: &'c MigrationSet,
    pool: &'c Pool,
    if_not_exists: bool,
}

impl Creator<'_> {
    fn create(&self, schema: &SchemaName) -> TenantReport {
        with_session(self.pool, self.config, schema, |session| {
            self.create_on(session, schema)
        })
    }

    fn create_on(&self, session: &mut Session, schema: &SchemaName) -> Result<TenantReport, HarnessError> {
        let mut h = TenantHarness::lock(session, schema, &self.config.settings)?;
        if h.schema_exists()? {
            if !self.if_not_exists {
                let why = format!("schema {schema} already exists (use --if-not-exists to migrate it instead)");
                return Err(HarnessError::Refused(why));
            }
            h.release()?;
            let tenant = Tenant {
                schema: schema.clone(),
                exists: true,
                create_schema: false,
            };
            let up = Command::Up { to: None };
            return Ok(TenantRun::new(&tenant, &up, self.set)
                .run_with(session, &self.config.settings)
                .finish());
        }
        let steps = plan::plan(&Command::Up { to: None }, self.set, &[])?;
        let atomic = self.set.migrations().iter().all(|m| m.run_in_transaction);
        let applied = match atomic {
            true => match create_atomically(&mut h, &steps) {
                // A set that uses an enum value added by an earlier migration cannot run
                // in one transaction; it still gets a tenant that is all or nothing.
                Err(e) if e.to_string().contains("unsafe use of new value") => create_then_compensate(&mut h, &steps)?,
                other => other?,
            },
            false => create_then_compensate(&mut h, &steps)?,
        };
        h.release()?;
        let mut report = TenantReport::new(schema.clone(), Outcome::Changed);
        report.version_after = applied.last().cloned();
        report.applied_count = applied.len();
        report.applied = applied;
        Ok(report)
    }
}

/// One transaction: schema, history table and every migration, or nothing.
fn create_atomically(h: &mut TenantHarness<'_>, steps: &[Step<'_>]) -> Result<Vec<String>, HarnessError> {
    h.execute("BEGIN")?;
    let result = h.prepare(true).and_then(|()| apply_all(h, steps, true));
    match result {
        Ok(applied) => {
            h.execute("COMMIT")?;
            Ok(applied)
        }
        Err(e) => {
            let _ = h.execute("ROLLBACK");
            Err(nothing_left(e, "the schema was not created"))
        }
    }
}

/// For sets with non-transactional migrations: create, migrate, drop again on failure.
fn create_then_compensate(h: &mut TenantHarness<'_>, steps: &[Step<'_>]) -> Result<Vec<String>, HarnessError> {
    h.prepare(true)?;
    apply_all(h, steps, false).map_err(|e| match h.drop_schema() {
        Ok(()) => nothing_left(e, "the half-created schema was dropped again"),
        Err(drop) => HarnessError::Database(format!("{e}; dropping the half-created schema failed too: {drop}")),
    })
}

fn apply_all(h: &mut TenantHarness<'_>, steps: &[Step<'_>], in_transaction: bool) -> Result<Vec<String>, HarnessError> {
    let mut applied = Vec::new();
    for step in steps {
        if let Step::Apply(m) = step {
            h.apply(m, in_transaction)?;
            applied.push(m.version.clone());
        }
    }
    Ok(applied)
}

fn nothing_left(e: HarnessError, what_happened: &str) -> HarnessError {
    match e {
        HarnessError::Migration { migration, message } => HarnessError::Migration {
            migration,
            message: format!("{message}; {what_happened}"),
        },
        other => HarnessError::Database(format!("{other}; {what_happened}")),
    }
}
