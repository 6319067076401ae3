/*!
The shared schema (`public` by default): the tenant registry, extensions and shared lookup
tables, with their own migration set and history in `"<shared>".__diesel_schema_migrations`.

`up` (and `status`, `tenant create`) handle it before any tenant: if its migrations fail, no
tenant is touched. `down` leaves it alone unless asked (`--shared`); then it is checked
for reversibility with the tenants, before anything changes, and reverted after every
tenant succeeded, since the tenants were built on it.
*/

use crate::catalog;
use crate::config::{Command, DownTarget, MigrationSource, RunConfig};
use crate::database::Database;
use crate::harness::{HarnessError, Settings};
use crate::migration_set::MigrationSet;
use crate::plan;
use crate::report::TenantReport;
use crate::runner::{Observer, RunError};
use crate::tenant_run::{Tenant, TenantRun};

/// The shared schema's part of a run.
pub(crate) struct Shared<'c> {
    config: &'c RunConfig,
    /// The command as it applies to the shared set (`up --to` does not).
    command: Command,
    /// The set, when this run includes the shared schema.
    set: Option<MigrationSet>,
}

impl<'c> Shared<'c> {
    /// Loads and validates the shared set when `command` includes it (before any
    /// database work).
    pub(crate) fn load(config: &'c RunConfig, command: &Command) -> Result<Shared<'c>, RunError> {
        let command = match command {
            Command::Up { .. } => Command::Up { to: None },
            Command::Down(DownTarget::To(_)) if config.shared.include_in_down => {
                return Err(RunError::Refused(
                    "--to names a tenant version; with --shared use --steps or --all".into(),
                ));
            }
            other => other.clone(),
        };
        let included = !Self::reverts(&command) || config.shared.include_in_down;
        let set = match (&config.shared.migrations, included) {
            (Some(MigrationSource::Embedded), true) => MigrationSet::embedded_shared()?,
            (Some(MigrationSource::Directory(dir)), true) => Some(MigrationSet::from_dir(dir)?),
            _ => None,
        };
        Ok(Shared { config, command, set })
    }

    fn reverts(command: &Command) -> bool {
        matches!(command, Command::Down(_) | Command::Redo { .. })
    }

    /// `down --shared`: refuses before any change when the shared set would need a
    /// migration without `down.sql`.
    pub(crate) fn refuse_irreversible(&self, db: &mut Database) -> Result<(), RunError> {
        let Some(set) = self.set.as_ref().filter(|_| Self::reverts(&self.command)) else {
            return Ok(());
        };
        let schema = std::slice::from_ref(&self.config.shared.schema);
        let states =
            catalog::read_states(&mut db.control.conn, schema, set).map_err(|e| RunError::Database(e.to_string()))?;
        match plan::plan(&self.command, set, &states[0].applied_versions(set)) {
            Err(HarnessError::Irreversible(m)) => Err(RunError::Refused(format!(
                "refusing to {}: nothing was changed\n  - shared migration {m} has no down.sql (irreversible)",
                self.command.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Runs the shared migrations when they come before the tenants (`up`, `status`).
    pub(crate) fn before_tenants(&self, db: &mut Database, observer: &mut dyn Observer) -> Option<TenantReport> {
        let set = self.set.as_ref().filter(|_| !Self::reverts(&self.command))?;
        let report = self.run(db, set);
        observer.shared_done(&report);
        Some(report)
    }

    /// Reverts the shared schema after the tenants (`down --shared`), unless one failed.
    pub(crate) fn after_tenants(
        &self,
        db: &mut Database,
        tenants: &[TenantReport],
        observer: &mut dyn Observer,
    ) -> Option<TenantReport> {
        let set = self.set.as_ref().filter(|_| Self::reverts(&self.command))?;
        let report = if tenants.iter().any(TenantReport::failed) {
            let tenant = Tenant {
                schema: self.config.shared.schema.clone(),
                exists: true,
                create_schema: false,
            };
            TenantRun::new(&tenant, &self.command, set)
                .skip("a tenant failed; the shared schema was left as it is")
                .finish()
        } else {
            self.run(db, set)
        };
        observer.shared_done(&report);
        Some(report)
    }

    /// Runs the command on the shared schema, on the control connection, under its lock.
    fn run(&self, db: &mut Database, set: &MigrationSet) -> TenantReport {
        let schema = self.config.shared.schema.clone();
        let exists = match catalog::read_states(&mut db.control.conn, std::slice::from_ref(&schema), set) {
            Ok(states) => states[0].exists,
            Err(e) => {
                let tenant = Tenant {
                    schema,
                    exists: false,
                    create_schema: false,
                };
                let error = HarnessError::Database(format!("reading the shared schema: {e}"));
                return TenantRun::new(&tenant, &self.command, set).fail(&error).finish();
            }
        };
        let tenant = Tenant {
            schema,
            exists,
            create_schema: !exists,
        };
        let settings = Settings {
            search_path_suffix: Vec::new(),
            lock_timeout: self.config.settings.lock_timeout,
        };
        TenantRun::new(&tenant, &self.command, set)
            .run_with(&mut db.control, &settings)
            .finish()
    }
}
