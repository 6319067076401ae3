/*!
The shared schema (`public` by default): the tenant registry, extensions and shared lookup
tables, with their own migration set and history in `"<shared>".__diesel_schema_migrations`.

`up` (and `status`, `tenant create`) handle it before any tenant: if its migrations fail, no
tenant is touched. `down` leaves it alone unless asked (`--shared`); then it is checked
for reversibility with the tenants, before anything changes, and reverted after every
tenant succeeded, since the tenants were built on it.
*/

use crate::catalog;
use crate::config::{Command, DownTarget, RunConfig, Settings};
use crate::control::RunControl;
use crate::database::Database;
use crate::error::{Blocked, Error};
use crate::harness::HarnessError;
use crate::observer::Observer;
use crate::plan;
use crate::report::TenantReport;
use crate::tenant_run::{Tenant, TenantRun};
use migrate_tenants_set::MigrationSet;

/// The shared schema's part of a run.
pub(crate) struct Shared<'c> {
    config: &'c RunConfig,
    /// The command as it applies to the shared set (`up --to` does not).
    command: Command,
    /// The set, when this run includes the shared schema.
    set: Option<&'c MigrationSet>,
    /// The run's journal, once it has begun.
    pub(crate) journal: Option<crate::journal::JournalRun>,
}

impl<'c> Shared<'c> {
    /// The shared part of a run of `command` (`None`: a run without one), checked before
    /// any database work.
    pub(crate) fn load(config: &'c RunConfig, command: Option<&Command>) -> Result<Shared<'c>, Error> {
        let command = match command {
            // A rollback reverts tenants' migrations only.
            None | Some(Command::Rollback { .. } | Command::Mark { .. }) => {
                return Ok(Shared {
                    config,
                    command: Command::Status,
                    set: None,
                    journal: None,
                })
            }
            Some(Command::Up { .. }) => Command::Up { to: None },
            Some(Command::Down(DownTarget::To(_))) if config.shared.include_in_down => {
                return Err(Error::Config(
                    "a target version names a tenant migration; the shared schema can only be reverted \
                     by a number of steps or entirely"
                        .into(),
                ));
            }
            Some(other) => other.clone(),
        };
        let included = !Self::reverts(&command) || config.shared.include_in_down;
        let set = config.shared.migrations.as_ref().filter(|_| included);
        Ok(Shared {
            config,
            command,
            set,
            journal: None,
        })
    }

    /// The shared set, when this run includes it.
    pub(crate) fn set(&self) -> Option<&'c MigrationSet> {
        self.set
    }

    fn reverts(command: &Command) -> bool {
        matches!(command, Command::Down(_) | Command::Redo { .. })
    }

    /// `down --shared`: refuses before any change when the shared set would need a
    /// migration without `down.sql`.
    pub(crate) fn refuse_irreversible(&self, db: &mut Database) -> Result<(), Error> {
        let Some(set) = self.set.filter(|_| Self::reverts(&self.command)) else {
            return Ok(());
        };
        let schema = std::slice::from_ref(&self.config.shared.schema);
        let states = catalog::read_states(&mut db.control, schema, set).map_err(|e| Error::Database {
            context: "reading the shared schema's state".into(),
            message: e.to_string(),
        })?;
        match plan::plan(&self.command, set, &states[0].applied_versions(set)) {
            Err(HarnessError::Irreversible(m)) => Err(Error::Irreversible {
                command: self.command.name(),
                blocked: vec![Blocked {
                    migration: format!("shared {m}"),
                    tenants: vec![self.config.shared.schema.to_string()],
                }],
            }),
            _ => Ok(()),
        }
    }

    /// Runs the shared migrations when they come before the tenants (`up`, `status`).
    pub(crate) fn before_tenants(
        &self,
        db: &mut Database,
        settings: &Settings,
        observer: &mut dyn Observer,
    ) -> Option<TenantReport> {
        let set = self.set.filter(|_| !Self::reverts(&self.command))?;
        let report = match self.config.dry_run {
            true => crate::dry_run::shared(self.config, &self.command, set, db),
            false => self.run(db, settings, set),
        };
        observer.shared_done(&report);
        Some(report)
    }

    /// Reverts the shared schema after the tenants (`down --shared`), unless one failed.
    pub(crate) fn after_tenants(
        &self,
        db: &mut Database,
        settings: &Settings,
        tenants: &[TenantReport],
        control: &RunControl,
        observer: &mut dyn Observer,
    ) -> Option<TenantReport> {
        let set = self.set.filter(|_| Self::reverts(&self.command))?;
        let report = if tenants.iter().any(TenantReport::failed) || control.stopped().is_some() {
            let tenant = Tenant {
                schema: self.config.shared.schema.clone(),
                exists: true,
                create_schema: false,
                applied: Vec::new(),
                undo: Vec::new(),
            };
            TenantRun::new(&tenant, &self.command, set)
                .skip("a tenant failed or the run stopped early; the shared schema was left as it is")
                .finish()
        } else if self.config.dry_run {
            crate::dry_run::shared(self.config, &self.command, set, db)
        } else {
            self.run(db, settings, set)
        };
        observer.shared_done(&report);
        Some(report)
    }

    /// Runs the command on the shared schema, on the control connection, under its lock.
    fn run(&self, db: &mut Database, settings: &Settings, set: &MigrationSet) -> TenantReport {
        let schema = self.config.shared.schema.clone();
        let exists = match catalog::read_states(&mut db.control, std::slice::from_ref(&schema), set) {
            Ok(states) => states[0].exists,
            Err(e) => {
                let tenant = Tenant {
                    schema,
                    exists: false,
                    create_schema: false,
                    applied: Vec::new(),
                    undo: Vec::new(),
                };
                let error = HarnessError::Database(format!("reading the shared schema: {e}"));
                return TenantRun::new(&tenant, &self.command, set).fail(&error).finish();
            }
        };
        let tenant = Tenant {
            schema,
            exists,
            create_schema: !exists,
            applied: Vec::new(),
            undo: Vec::new(),
        };
        let mut settings = Settings {
            search_path_suffix: Vec::new(),
            journal: self.journal.clone(),
            ..settings.clone()
        };
        // The shared schema is never a distributed schema (shared tables are reference tables).
        settings.citus.distribute_schemas = false;
        TenantRun::new(&tenant, &self.command, set)
            .allow_out_of_order(self.config.allow_out_of_order)
            .run_with(&mut db.control, &settings)
            .finish()
    }
}
