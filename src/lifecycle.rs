/*!
Tenant lifecycle: `tenant create` and `tenant drop`.

Creating a tenant is all or nothing: the schema, its history table and every migration run
in one transaction, so a failing migration leaves no schema behind. (A set with a
migration that must run outside a transaction cannot be atomic; then the schema is created,
migrated, and dropped again if a migration fails.) Dropping takes the tenant's lock,
refuses schemas that are not tenants unless forced, and never touches system schemas,
which [`SchemaName::tenant`] already refuses.
*/

use crate::config::{Command, RunConfig, Settings};
use crate::control::RunControl;
use crate::error::Error;
use crate::fleet::{Fleet, Worker};
use crate::harness::{HarnessError, TenantHarness};
use crate::observer::Observer;
use crate::plan::{self, Step};
use crate::report::{FleetReport, Outcome, RunKind, TenantReport};
use crate::tenant::{NameError, SchemaName};
use crate::tenant_run::{Tenant, TenantRun};
use diesel::PgConnection;
use migrate_tenants_set::MigrationSet;
use std::time::Instant;

/// Validates listed names strictly: a lifecycle command never skips a bad name.
/// The shared schema is refused too: creating or dropping it as a tenant would mix its
/// history with the tenants' or delete the tenant registry.
fn names(list: &[String], shared: &SchemaName) -> Result<Vec<SchemaName>, Error> {
    let mut schemas = Vec::new();
    let mut invalid = Vec::new();
    for name in list {
        match SchemaName::tenant(name) {
            Ok(schema) if schema == *shared => invalid.push(NameError::Shared(name.clone())),
            Ok(schema) => schemas.push(schema),
            Err(e) => invalid.push(e),
        }
    }
    if !invalid.is_empty() {
        return Err(crate::discovery::DiscoveryError::Invalid(invalid).into());
    }
    schemas.sort();
    schemas.dedup();
    Ok(schemas)
}

/// What `tenant create` does with a schema that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfExists {
    /// Fail that tenant.
    Fail,
    /// Migrate it like `up`.
    Migrate,
}

/// Creates each tenant and applies every migration to it atomically.
pub(crate) fn create(
    config: &RunConfig,
    list: &[String],
    if_exists: IfExists,
    observer: &mut dyn Observer,
) -> Result<FleetReport, Error> {
    let schemas = names(list, &config.shared.schema)?;
    let up = Command::Up { to: None };
    let mut fleet = Fleet::open(config, Some(&up), RunKind::TenantCreate, observer)?;
    fleet.journal_tenants(&schemas)?;
    if fleet.control.interrupted() || !fleet.shared_first(observer) {
        return Ok(fleet.finish(Vec::new(), observer));
    }
    if config.dry_run {
        let reports = crate::dry_run::create(config, &mut fleet.db, &schemas, if_exists == IfExists::Migrate)?;
        reports.iter().for_each(|r| observer.tenant_done(r));
        return Ok(fleet.finish(reports, observer));
    }
    let creator = Creator {
        allow_out_of_order: config.allow_out_of_order,
        set: &config.migrations,
        if_exists,
    };
    let create_one =
        |s: &SchemaName, w: &Worker<'_>| with_conn(w, s, |conn| creator.create_on(conn, s, w.settings, w.control));
    let reports = fleet.parallel(&schemas, observer, create_one, skipped);
    Ok(fleet.finish(reports, observer))
}

/// What `tenant drop` does with a schema that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfMissing {
    /// Fail that tenant.
    Fail,
    /// Skip it.
    Skip,
}

/// Drops each tenant schema (`CASCADE`) under its lock; `force` also drops schemas without
/// a history table.
pub(crate) fn drop(
    config: &RunConfig,
    list: &[String],
    force: bool,
    if_missing: IfMissing,
    observer: &mut dyn Observer,
) -> Result<FleetReport, Error> {
    let schemas = names(list, &config.shared.schema)?;
    let mut fleet = Fleet::open(config, None, RunKind::TenantDrop, observer)?;
    if config.dry_run {
        let skip_missing = if_missing == IfMissing::Skip;
        let reports = crate::dry_run::drop(config, &mut fleet.db, &schemas, force, skip_missing)?;
        reports.iter().for_each(|r| observer.tenant_done(r));
        return Ok(fleet.finish(reports, observer));
    }
    fleet.journal_tenants(&schemas)?;
    let drop_one = |s: &SchemaName, w: &Worker<'_>| with_conn(w, s, |conn| drop_tenant(conn, s, force, if_missing, w));
    let reports = fleet.parallel(&schemas, observer, drop_one, skipped);
    Ok(fleet.finish(reports, observer))
}

fn skipped(schema: &SchemaName, reason: &str) -> TenantReport {
    TenantReport::new(schema.clone(), Outcome::Skipped { reason: reason.into() })
}

/// Checks out a connection and runs `work`, turning every failure into the report (a
/// failure once the run is interrupted is reported as the interruption).
fn with_conn<F>(worker: &Worker<'_>, schema: &SchemaName, work: F) -> TenantReport
where
    F: FnOnce(&mut PgConnection) -> Result<TenantReport, HarnessError>,
{
    let started = Instant::now();
    let result = worker
        .workers
        .checkout()
        .map_err(HarnessError::Connection)
        .and_then(|mut conn| work(&mut conn));
    let report = result.unwrap_or_else(|e| {
        let e = match e {
            e if worker.control.interrupted() => HarnessError::Interrupted(e.to_string()),
            e => e,
        };
        TenantReport::new(schema.clone(), Outcome::from(&e))
    });
    report.took(started.elapsed())
}

fn drop_tenant(
    conn: &mut PgConnection,
    schema: &SchemaName,
    force: bool,
    if_missing: IfMissing,
    worker: &Worker<'_>,
) -> Result<TenantReport, HarnessError> {
    // Only the session SQL and the Citus mode of the run's settings (no timeouts).
    let settings = Settings {
        citus: worker.settings.citus,
        session_sql: worker.settings.session_sql.clone(),
        ..Settings::default()
    };
    let mut h = TenantHarness::lock(conn, schema, &settings, Some(worker.control))?;
    if !h.schema_exists()? {
        h.release()?;
        return match if_missing {
            IfMissing::Skip => {
                let mut report = skipped(schema, "schema does not exist");
                report.exists = false;
                Ok(report)
            }
            IfMissing::Fail => Err(HarnessError::MissingSchema(schema.to_string())),
        };
    }
    let version = if h.has_history()? {
        h.applied()?.first().cloned()
    } else if force {
        None
    } else {
        return Err(HarnessError::NotATenant(schema.to_string()));
    };
    h.drop_schema()?;
    h.release()?;
    let mut report = TenantReport::new(schema.clone(), Outcome::Changed);
    report.exists = false;
    report.version_before = version;
    Ok(report)
}

struct Creator<'c> {
    allow_out_of_order: bool,
    set: &'c MigrationSet,
    if_exists: IfExists,
}

impl Creator<'_> {
    fn create_on(
        &self,
        conn: &mut PgConnection,
        schema: &SchemaName,
        settings: &Settings,
        control: &RunControl,
    ) -> Result<TenantReport, HarnessError> {
        let mut h = TenantHarness::lock(conn, schema, settings, Some(control))?;
        if h.schema_exists()? {
            if self.if_exists == IfExists::Fail {
                return Err(HarnessError::SchemaExists(schema.to_string()));
            }
            h.release()?;
            let tenant = Tenant {
                schema: schema.clone(),
                exists: true,
                create_schema: false,
                applied: Vec::new(),
                undo: Vec::new(),
            };
            let up = Command::Up { to: None };
            return Ok(TenantRun::new(&tenant, &up, self.set)
                .controlled(control)
                .allow_out_of_order(self.allow_out_of_order)
                .run_with(conn, settings)
                .finish());
        }
        let steps = plan::plan(&Command::Up { to: None }, self.set, &[])?;
        let atomic = self.set.migrations().iter().all(|m| m.run_in_transaction);
        let applied = match atomic {
            true => match create_atomically(&mut h, &steps) {
                // A set that uses an enum value added by an earlier migration cannot run
                // in one transaction; it still gets a tenant that is all or nothing.
                Err(e) if adds_enum_values(self.set) && !h.interrupted() && e.transient().is_none() => {
                    create_then_compensate(&mut h, &steps)?
                }
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
            if h.interrupted() {
                return Err(HarnessError::Interrupted(format!("stopped before {}", m.dir_name)));
            }
            h.apply(m, in_transaction)?;
            applied.push(m.version.clone());
        }
    }
    Ok(applied)
}

fn nothing_left(e: HarnessError, what_happened: &str) -> HarnessError {
    match e {
        HarnessError::Migration { migration, message, .. } => HarnessError::Migration {
            migration,
            message: format!("{message}; {what_happened}"),
            transient: None,
        },
        other => HarnessError::Database(format!("{other}; {what_happened}")),
    }
}

/// Whether a migration of the set adds an enum value (`ALTER TYPE ... ADD VALUE`), which
/// PostgreSQL forbids using in the transaction that added it: such a set may fail in one
/// transaction and succeed migration by migration. Found by the lexer, not by the server's
/// (translated) message.
fn adds_enum_values(set: &MigrationSet) -> bool {
    set.migrations().iter().any(|m| {
        migrate_tenants_set::sql_lexer::split_statements(&m.up).is_ok_and(|statements| {
            statements
                .iter()
                .any(|st| st.starts_with(&["alter", "type"]) && st.text.to_ascii_lowercase().contains("add value"))
        })
    })
}
