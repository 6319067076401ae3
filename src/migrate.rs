/*!
`up`, `down`, `redo` and `status` over a fleet: check the command against the set, read
listed tenants before connecting, run the shared schema first, discover the tenants, read the
whole fleet's state in one catalog pass, refuse an irreversible revert before anything
changes, and hand only the tenants that have work to the workers, each holding one pooled
connection for that tenant's whole run.
*/

use crate::catalog::{self, TenantState};
use crate::config::{Command, MissingPolicy, RunConfig, TenantSource};
use crate::discovery::{self, Discovered};
use crate::error::{Blocked, Error};
use crate::fleet::{Fleet, FAIL_FAST_SKIP};
use crate::harness::HarnessError;
use crate::observer::Observer;
use crate::plan;
use crate::report::{FleetReport, RunKind, TenantReport};
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
    let listed = select_offline(config)?;
    let mut fleet = Fleet::open(config, Some(command), kind, observer)?;
    if !fleet.shared_first(observer) {
        return Ok(fleet.finish(Vec::new(), observer));
    }
    let found = match listed {
        Some(found) => found,
        None => select(
            config,
            discovery::read_from_database(&mut fleet.db.control, &config.tenants)?,
        )?,
    };
    observer.discovered(&found.tenants, &found.invalid);
    fleet.refused_names(found.invalid.iter().map(ToString::to_string).collect());
    let states = read_states(&mut fleet, &found.tenants, set)?;
    refuse_irreversible(command, set, &found.tenants, &states)?;
    fleet.shared.refuse_irreversible(&mut fleet.db)?;
    let reports = Migrate {
        fleet: &fleet,
        command,
        set,
    }
    .run(found.tenants, states, observer);
    Ok(fleet.finish(reports, observer))
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
            match blocked.iter_mut().find(|b| b.migration == m) {
                Some(b) => b.tenants.push(tenant.to_string()),
                None => blocked.push(Blocked {
                    migration: m,
                    tenants: vec![tenant.to_string()],
                }),
            }
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

/// The read-only parts of a migration run.
struct Migrate<'r> {
    fleet: &'r Fleet<'r>,
    command: &'r Command,
    set: &'r MigrationSet,
}

impl Migrate<'_> {
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
        let config = self.fleet.config;
        let (workers, command, set) = (&self.fleet.db.workers, self.command, self.set);
        let run_one = |t: &Tenant| {
            TenantRun::new(t, command, set)
                .run_on(workers, &config.settings)
                .finish()
        };
        let skip_one = |t: &Tenant| TenantRun::new(t, command, set).skip(FAIL_FAST_SKIP).finish();
        if config.fail_fast && reports.iter().any(TenantReport::failed) {
            // A tenant already failed in triage (e.g. a missing schema): start nothing.
            for report in work.iter().map(skip_one) {
                observer.tenant_done(&report);
                reports.push(report);
            }
        } else {
            reports.extend(self.fleet.parallel(&work, observer, run_one, skip_one));
        }
        reports
    }

    /// `Ok(report)` when the catalog settles the tenant; `Err(tenant)` when a worker must
    /// connect (and, unless it only reads, take the tenant's lock).
    fn triage(&self, schema: SchemaName, state: &TenantState) -> Result<TenantReport, Tenant> {
        let missing = self.fleet.config.missing;
        let tenant = Tenant {
            schema,
            exists: state.exists,
            create_schema: missing == MissingPolicy::Create && !state.exists,
        };
        if state.unreadable {
            return Err(tenant);
        }
        let applied = state.applied_versions(self.set);
        let mut run = TenantRun::new(&tenant, self.command, self.set);
        run.record_state(&applied);
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
        match plan::plan(self.command, self.set, &applied) {
            Ok(steps) if steps.is_empty() => Ok(run.finish()),
            _ => Err(tenant),
        }
    }
}
